"""The graded exercises: what each one asks for, its weight, and the check that grades it.

A check calls the student's function on fresh random inputs and compares it with a reference
computed inside the check; it never reads printed text. While the student's code runs, the
library function that *is* the answer raises (see `forbidden`), so calling it is no answer.
`verify` runs one check (the chapters' check cells call it through `course.check`);
`grade_namespace` runs every check of a chapter on the functions a notebook defined, the way
`python tools/book.py grade` does.
"""

from __future__ import annotations

import contextlib
import importlib
from dataclasses import dataclass

import numpy as np

# The weight of an exercise in a chapter's grade, by difficulty: defined here once; the teachers'
# page shows this table, and tests/test_grading.py checks the chapters' titles against it.
WEIGHTS = {"easy": 1, "medium": 2, "hard": 3}


@dataclass(frozen=True)
class Exercise:
    """One graded exercise: its number, label, difficulty, the names it defines and its check."""

    number: str
    label: str
    difficulty: str
    answers: tuple[str, ...]
    check: str  # "module:function" inside aebonet_lib.exercises

    @property
    def chapter(self) -> int:
        """Return the chapter number."""
        return int(self.number.split(".")[0])

    @property
    def weight(self) -> int:
        """Return the exercise's weight in its chapter's grade."""
        return WEIGHTS[self.difficulty]


def _table(rows: str) -> dict[str, Exercise]:
    """Return the exercises of a whitespace table: number label difficulty answers module:check."""
    found = {}
    for line in rows.strip().splitlines():
        number, label, difficulty, answers, check = line.split()
        found[number] = Exercise(number, label, difficulty, tuple(answers.split(",")), check)
    return found


EXERCISES = _table("""
1.1 reading-ex4     easy   carpal_count             reading:check_carpal_count
1.2 reading-ex1     medium toy_maturity_score       reading:check_toy_maturity_score
1.3 reading-ex5     hard   age_from_score           reading:check_age_from_score
2.1 data-ex4        easy   age_share                reading:check_age_share
2.2 data-ex1        medium prepare_one              reading:check_prepare_one
2.5 data-ex5        hard   band_weights             reading:check_band_weights
2.6 data-ex6        hard   augmentation             networks:check_augmentation
3.1 pretraining-ex4 easy   conv_block_params        numbers:check_conv_block_params
3.2 pretraining-ex2 medium constant_accuracy        numbers:check_constant_accuracy
3.3 pretraining-ex5 hard   receptive_field          numbers:check_receptive_field
3.6 pretraining-ex6 hard   conv_block,build_decoder networks:check_decoder
4.1 regression-ex5  easy   head_params              numbers:check_head_params
4.2 regression-ex2  medium sex_mean_baseline        numbers:check_sex_mean_baseline
4.3 regression-ex6  hard   ridge_predict            numbers:check_ridge_predict
4.7 regression-ex7  hard   add_head,train_step      networks:check_head_and_step
5.1 gpu-ex4         easy   lost_in_fp16             numbers:check_lost_in_fp16
5.2 gpu-ex5         medium fair_recipe              numbers:check_fair_recipe
5.3 gpu-ex1         hard   schedule_hours           numbers:check_schedule_hours
5.6 gpu-ex6         hard   scaled_step              training:check_scaled_step
6.1 evaluation-ex4  easy   error_summary            numbers:check_error_summary
6.2 evaluation-ex2  medium images_needed            numbers:check_images_needed
6.3 evaluation-ex5  hard   paired_interval          numbers:check_paired_interval
6.6 evaluation-ex6  hard   grad_cam                 training:check_grad_cam
7.1 beyond-ex5      easy   n_labels                 numbers:check_n_labels
7.2 beyond-ex1      medium mae_floor                numbers:check_mae_floor
7.3 beyond-ex6      hard   fit_power_law            numbers:check_fit_power_law
7.7 beyond-ex7      hard   PatchMask,masked_loss    training:check_masked_objective
""")


def of_chapter(chapter: int) -> list[Exercise]:
    """Return a chapter's graded exercises in order."""
    return [e for e in EXERCISES.values() if e.chapter == chapter]


def check_function(exercise: Exercise):
    """Return the check function of an exercise (its module is imported only now)."""
    module, name = exercise.check.split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def written_by_student(answer) -> None:
    """Fail unless `answer` was defined in the notebook, not imported from a library."""
    module = getattr(answer, "__module__", None)
    assert callable(answer), f"expected a function or class, got {type(answer).__name__}"
    assert module == "__main__", (f"{getattr(answer, '__name__', answer)} comes from {module}: "
                                  "write it yourself in the notebook")


def code_words(function) -> set[str]:
    """Return the names and string constants a function's code uses, nested functions included."""
    code = getattr(function, "__code__", None)
    stack, words = [code] if code else [], set()
    while stack:
        code = stack.pop()
        words |= set(code.co_names) | {c for c in code.co_consts if isinstance(c, str)}
        stack += [c for c in code.co_consts if hasattr(c, "co_names")]
    return words


def _shortcut(*args, **kwargs):
    """Stand in for a library function that is the answer: using it is no answer."""
    raise AssertionError("this calls the library function that is the exercise's answer: write it yourself")


@contextlib.contextmanager
def forbidden(*targets):
    """Make each (owner, attribute) raise while the block runs: the module or class attribute,
    and for a plain function also its code, so that an imported alias raises too."""
    saved = []
    try:
        for owner, name in targets:
            original = getattr(owner, name, None)
            if original is None:
                continue
            saved.append((owner, name, original, getattr(original, "__code__", None), name in vars(owner)))
            setattr(owner, name, _shortcut)
            if saved[-1][3] is not None and not original.__code__.co_freevars:
                original.__code__ = _shortcut.__code__
        yield
    finally:
        for owner, name, original, code, own in reversed(saved):
            setattr(owner, name, original) if own else delattr(owner, name)  # an inherited one is inherited again
            if code is not None:
                original.__code__ = code


def verify(number: str, *answers, seed: int | None = None) -> None:
    """Run exercise `number`'s check on the student's answers; raise AssertionError if one is wrong.

    A fresh seed draws new inputs every time (pass `seed` to repeat a run).
    """
    exercise = EXERCISES[number]
    assert len(answers) == len(exercise.answers), (f"exercise {number} checks {', '.join(exercise.answers)}: "
                                                   f"pass {len(exercise.answers)}, got {len(answers)}")
    for answer in answers:
        written_by_student(answer)
    check_function(exercise)(*answers, rng=np.random.default_rng(seed))


def grade_one(exercise: Exercise, namespace: dict, seed: int | None = None) -> dict:
    """Return {number, label, status, score, weight} for one exercise, from a notebook's namespace."""
    row = {"exercise": exercise.number, "label": exercise.label, "weight": exercise.weight, "score": 0}
    missing = [name for name in exercise.answers if name not in namespace]
    if missing:
        return {**row, "status": f"missing {', '.join(missing)}"}
    try:
        verify(exercise.number, *(namespace[name] for name in exercise.answers), seed=seed)
    except NotImplementedError:
        return {**row, "status": "not done yet"}
    except AssertionError as err:
        return {**row, "status": f"not right yet: {str(err)[:200]}"}
    except Exception as err:  # noqa: BLE001  (a student's code may raise anything)
        return {**row, "status": f"error: {type(err).__name__}: {str(err)[:200]}"}
    return {**row, "status": "correct", "score": 1}


def grade_namespace(namespace: dict, chapters: list[int], seed: int | None = None) -> list[dict]:
    """Return one row per graded exercise of `chapters`, grading the functions in `namespace`."""
    return [grade_one(e, namespace, seed) for chapter in chapters for e in of_chapter(chapter)]


def weighted_total(rows: list[dict]) -> float:
    """Return the weighted score of graded rows, in per cent of the weights."""
    weights = sum(row["weight"] for row in rows)
    return round(100 * sum(row["weight"] * row["score"] for row in rows) / weights, 1) if weights else 0.0
