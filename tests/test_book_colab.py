"""Colab: one install line from _config.yml that forces no restart, and every chapter links the Colab page."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import book  # noqa: E402  (tools/book.py)

# Packages Colab preinstalls: upgrading or downgrading any of them asks for a runtime restart.
PREINSTALLED = ("tensorflow", "keras", "ipywidgets", "numpy", "pandas", "matplotlib", "scikit-learn")


def install_lines(path: Path) -> list[str]:
    """Return the %pip install lines of a chapter's MyST source or paired notebook."""
    if path.suffix == ".ipynb":
        text = "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")
    else:
        text = path.read_text()
    return [line.strip() for line in text.splitlines() if "%pip install" in line]


def test_install_line_comes_from_config():
    config = book.load_config()["repository"]
    line = book.install_line()
    assert f'git+{config["url"].rstrip("/")}@{config.get("branch", "main")}"' in line


STUDENT_PAGES = [s for s in book.chapter_sources() if s.stem != "teachers"]   # the pages a student runs


def test_every_page_and_notebook_installs_with_that_line():
    for source in STUDENT_PAGES:
        for path in (source, source.with_suffix(".ipynb")):
            lines = install_lines(path)
            assert lines == [book.install_line()], f"{path.name}: install line {lines} is not {book.install_line()!r}; run make sync"


def test_install_forces_no_restart():
    line = book.install_line()
    assert "--no-deps" in line, "without --no-deps pip may upgrade Colab's TensorFlow, Keras or ipywidgets"
    assert not re.search(r"--upgrade|-U\b", line)
    named = re.findall(r'"([A-Za-z0-9_.-]+)[<>=!~ @]', line)
    assert not set(named) & set(PREINSTALLED), f"the install line names preinstalled packages: {named}"


def test_every_chapter_links_the_colab_page_at_its_top():
    for source in STUDENT_PAGES:
        if source.stem == "colab":
            continue
        text = source.read_text()
        first_prose = text.split("```{code-cell}", 2)[1].split("\n```\n", 1)[1][:400]
        assert "<colab>`" in first_prose, f"{source.name}: link {{doc}}`Running on Colab <colab>` right after the setup cell"


def test_paired_notebooks_carry_the_chapter_number_in_their_title():
    for source in book.chapter_sources():
        number = book.chapter_number(source)
        cells = json.loads(source.with_suffix(".ipynb").read_text())["cells"]
        title = next("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
        if number:
            assert title.startswith(f"# {number}. "), f"{source.name}: notebook title {title[:40]!r}"


def test_paired_notebooks_do_not_import_myst_nb():
    """Colab has no myst_nb: the notebooks Colab opens glue through aebonet_lib.course.glue."""
    for source in book.chapter_sources():
        cells = json.loads(source.with_suffix(".ipynb").read_text())["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        assert "myst_nb" not in code, f"{source.with_suffix('.ipynb').name} imports myst_nb; run make sync"
