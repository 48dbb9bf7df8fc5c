"""The exercises: numbered per chapter, graded, each coding exercise with a stub, a solution and a check.

Fast: these tests read the MyST sources; the teacher edition's build (test_book.py) runs every
check cell against the worked solution, and the student chapter 1 below runs them against the stubs.
The checks themselves and the grader are tested in test_grading.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import book  # noqa: E402  (tools/book.py)
from aebonet_lib import exercises as exercises_lib  # noqa: E402

GRADES = book.GRADES
NUMBERED = [s for s in book.chapter_sources() if book.chapter_number(s)]
exercises, grade = book.exercises, book.grade_of


@pytest.mark.parametrize("source", NUMBERED, ids=lambda p: p.stem)
def test_every_exercise_has_a_title_with_its_difficulty(source):
    for exercise in exercises(source.read_text()):
        assert grade(exercise["title"]), (f"{source.name}: {exercise['label']} needs a title ending in "
                                          "(easy), (medium), (hard) or (project ...), or starting with Think!")


@pytest.mark.parametrize("source", NUMBERED, ids=lambda p: p.stem)
def test_three_graded_coding_exercises_per_chapter(source):
    grades = [grade(e["title"]) for e in exercises(source.read_text())]
    assert all(g in grades for g in GRADES), f"{source.name}: needs an easy, a medium and a hard coding exercise, has {grades}"


@pytest.mark.parametrize("source", NUMBERED, ids=lambda p: p.stem)
def test_graded_exercises_have_stub_solution_and_a_check_with_their_number(source):
    chapter = book.chapter_number(source)
    for position, exercise in enumerate(exercises(source.read_text()), start=1):
        body, label = exercise["body"], exercise["label"]
        if grade(exercise["title"]) not in GRADES:
            continue
        assert re.search(r":tags: \[remove-cell, student-stub\]\n(.*\n)*?\s+raise NotImplementedError\(\"Student exercise: ", body), \
            f"{source.name}: {label} has no student stub raising NotImplementedError(\"Student exercise: ...\")"
        assert "\n    ...\n" in body, f"{source.name}: {label}'s stub needs a ... placeholder"
        assert f"{{solution-start}} {label}" in body, f"{source.name}: {label} has no worked solution"
        after = body.split("{solution-end}", 1)[-1]
        checks = re.findall(r'course\.check\("([\d.]+)"', after)
        assert checks == [f"{chapter}.{position}"], (f"{source.name}: {label} is exercise {chapter}.{position}; "
                                                     f"after its solution expected course.check(\"{chapter}.{position}\", ...), found {checks}")
        assert f"{chapter}.{position}" in exercises_lib.EXERCISES, \
            f"{source.name}: {label} needs a hidden check in aebonet_lib.exercises (see tests/test_grading.py)"


def test_prose_cites_exercises_by_number():
    for source in book.chapter_sources():
        text = source.read_text()
        assert not re.search(r"\{ref\}`[^`]*<[a-z]+-ex\d+>`", text), f"{source.name}: cite exercises with {{numref}}, not {{ref}}"


def test_intro_and_pages_outside_the_chapters_are_not_numbered():
    assert book.chapter_number(ROOT / "book" / "intro.md") is None
    assert [book.chapter_number(s) for s in NUMBERED] == list(range(1, len(NUMBERED) + 1))


@pytest.mark.skipif(os.environ.get("AEBONET_FAST_TESTS") == "1", reason="executes a chapter")
def test_student_chapter_runs_and_says_what_is_not_done(tmp_path):
    """The student edition of chapter 1 runs from top to bottom, each check saying 'not done yet'."""
    out = book.write_student_sources(tmp_path / "student")
    notebook = tmp_path / "ch1_reading.ipynb"
    notebook.write_text(book.notebook_text(out / "book" / "ch1_reading.md"))
    jupyter = Path(sys.executable).with_name("jupyter")
    cmd = [str(jupyter), "nbconvert", "--to", "notebook", "--execute", "--inplace", str(notebook),
           "--ExecutePreprocessor.timeout=600"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT / "book",
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, f"the student chapter 1 failed:\n{proc.stderr[-3000:]}"
    outputs = "".join(o.get("text", "") if isinstance(o.get("text", ""), str) else "".join(o["text"])
                      for cell in json.loads(notebook.read_text())["cells"] for o in cell.get("outputs", []))
    graded = [e for e in exercises((ROOT / "book" / "ch1_reading.md").read_text()) if grade(e["title"]) in GRADES]
    for position in range(1, len(graded) + 1):
        assert f"Exercise 1.{position}: not done yet (Student exercise:" in outputs
