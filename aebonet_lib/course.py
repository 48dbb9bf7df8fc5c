"""What every chapter does at its top: one setting picks the data, the preset and the run folders.

    DATA = os.environ.get("AEBONET_DATA", "phantom")   # or the folder holding the RSNA data
    config = course.config_for(DATA)                    # `cpu` on the phantom, `paper` on real data
    RUNS = course.runs_dir(DATA, config)                # models trained by one chapter, reused by the next

Two more settings, both optional: AEBONET_PRESET picks another preset (on real data on a CPU:
`rsna-class`, 64 px, a chapter in a class period; `rsna-cpu`, 128 px, the recipe of the shipped
results), and AEBONET_RUNS puts the run folders elsewhere (on Colab: a folder on Google Drive).
The exercises call `check` to tell a student whether an answer is right (aebonet_lib.exercises).
"""

from __future__ import annotations

import inspect
import os
import textwrap
import time
import warnings
from pathlib import Path

from aebonet_lib import exercises
from aebonet_lib._engine.cache import cache_root
from aebonet_lib._engine.modelfiles import INPUT_STRUCTURE_WARNING
from aebonet_lib.config import PRESETS, Config, get_config
from aebonet_lib.data.loading import is_phantom
from aebonet_lib.errors import AebonetError

LIBRARY = Path(__file__).resolve().parent  # the installed aebonet_lib folder (its shipped results/ are inside)

# A chapter calls loaded models directly (Grad-CAM, predict): hide Keras 3.10's warning about their
# one image input there too (_engine.modelfiles.quiet_input_structure says why); only a chapter imports this.
warnings.filterwarnings("ignore", category=UserWarning, message=INPUT_STRUCTURE_WARNING)


def preset_for(source: str) -> str:
    """Return the preset a chapter uses: $AEBONET_PRESET if set, else 'cpu' on the phantom, 'paper' on real data."""
    name = os.environ.get("AEBONET_PRESET", "").strip()
    if not name:
        return "cpu" if is_phantom(str(source)) else "paper"
    if name not in PRESETS:
        raise AebonetError(f"AEBONET_PRESET={name!r} is not a preset: choose one of {', '.join(PRESETS)}")
    return name


def config_for(source: str, **overrides) -> Config:
    """Return the chapter's Config for a data source, with any fields overridden."""
    return get_config(preset_for(source), **overrides)


def data_tag(source: str) -> str:
    """Return a short folder name for a data source: 'phantom' or the dataset folder's name."""
    return str(source).replace(":", "-") if is_phantom(str(source)) else Path(source).resolve().name


def runs_dir(source: str, config: Config) -> Path:
    """Return the folder where the chapters keep trained runs for this data and preset."""
    root = Path(os.environ["AEBONET_RUNS"]) if os.environ.get("AEBONET_RUNS") else cache_root() / "runs"
    return root / f"{data_tag(source)}-{config.name}"


def print_wrapped(text, width: int = 78) -> None:
    """Print text with its long lines wrapped (continuations indented), so that long messages fit the page."""
    for line in str(text).splitlines():
        print(textwrap.fill(line, width, subsequent_indent="      "))


def elapsed(start: float) -> str:
    """Return the time since `start` (a time.perf_counter() value) in words: '17 seconds' or '4 minutes'."""
    seconds = time.perf_counter() - start
    return f"{seconds:.0f} seconds" if seconds < 90 else f"{seconds / 60:.0f} minutes"


def check(exercise: str, *answers) -> None:
    """Run an exercise's check on the student's answers: say it is right, not done yet, or raise saying what is wrong.

    `course.check("3.6", conv_block, build_decoder)` runs the graded check of exercise 3.6
    (aebonet_lib.exercises) on fresh random inputs; a function without arguments that asserts
    is run as it is, for an ungraded exercise (no grade comes from it: the grader runs the
    registered checks itself). A stub that still raises NotImplementedError is
    reported, not raised, so that a student notebook runs from top to bottom before every
    exercise is done.
    """


    own_test = len(answers) == 1 and inspect.isfunction(answers[0]) and not inspect.signature(answers[0]).parameters
    if own_test:
        (test,) = answers  # a test without arguments that asserts (an ungraded exercise)
    else:
        def test():
            exercises.verify(exercise, *answers)
    try:
        test()
    except NotImplementedError as err:
        print(f"Exercise {exercise}: not done yet ({err}). Fill in the ... and run this cell again.")
        return
    except AssertionError as err:
        raise AssertionError(f"Exercise {exercise}: not right yet: {err}") from None
    print(f"Exercise {exercise}: correct.")


def graded_exercises(chapter: int | None = None) -> list:
    """Return the graded exercises the grader scores (number, weight, answers), all or one chapter's (teachers' page)."""
    return list(exercises.EXERCISES.values()) if chapter is None else exercises.of_chapter(chapter)


def exercise_weights() -> dict[str, int]:
    """Return the grader's weight of an exercise by its difficulty (easy, medium, hard)."""
    return dict(exercises.WEIGHTS)


def glue(name: str, value, display: bool = True) -> None:
    """Glue a value into the book's text with myst_nb where it is installed; elsewhere (Colab) only show it.

    The paired notebooks (book/*.ipynb, the ones Colab opens) import this glue: Colab has no myst_nb.
    """
    try:
        from myst_nb import glue as myst_glue
    except ImportError:
        if display:
            from IPython.display import display as show
            show(value)
        return
    myst_glue(name, value, display)
