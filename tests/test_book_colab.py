"""Colab: one set-up cell that installs an uploaded wheel or the repository of _config.yml, forces no restart and
never ends in pip's error; every chapter links the Colab page."""

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


def first_cell(path: Path) -> str:
    """Return the code of the first code cell of a chapter's MyST source or paired notebook."""
    if path.suffix == ".ipynb":
        return next("".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")
    return path.read_text().split("```{code-cell}", 2)[1].split("\n```\n", 1)[0]


def test_setup_cell_installs_the_course_from_config():
    config = book.load_config()["repository"]
    assert f'"aebonet-lib @ git+{config["url"].rstrip("/")}@{config.get("branch", "main")}"' in book.setup_cell()


STUDENT_PAGES = [s for s in book.chapter_sources() if s.stem != "teachers"]   # the pages a student runs


def test_every_page_and_notebook_starts_with_that_cell():
    for source in STUDENT_PAGES:
        for path in (source, source.with_suffix(".ipynb")):
            assert book.setup_cell().strip() in first_cell(path), f"{path.name}: its first cell is not book.setup_cell(); run make sync"


def test_install_forces_no_restart():
    cell = book.setup_cell()
    assert '"--no-deps"' in cell, "without --no-deps pip may upgrade Colab's TensorFlow, Keras or ipywidgets"
    assert not re.search(r"--upgrade|-U\b", cell)
    named = re.findall(r'"([A-Za-z0-9_.-]+)[<>=!~ @]', cell)
    assert not set(named) & set(PREINSTALLED), f"the set-up cell names preinstalled packages: {named}"


def run_setup_cell(monkeypatch, tmp_path, pip_works):
    """Run the set-up cell as on Colab, in tmp_path, with pip faked; return pip's commands and what it printed."""
    import builtins
    import subprocess
    import types

    calls, printed = [], []
    gpu = types.SimpleNamespace(config=types.SimpleNamespace(list_physical_devices=lambda kind: ["GPU:0"]))
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setitem(sys.modules, "tensorflow", gpu)
    monkeypatch.chdir(tmp_path)

    def pip(command, **kwargs):
        calls.append(command)
        return subprocess.CompletedProcess(command, 0 if pip_works(command[-2]) else 1)

    monkeypatch.setattr(subprocess, "run", pip)
    monkeypatch.setattr(builtins, "print", lambda *args, **kwargs: printed.append(" ".join(map(str, args))))
    exec(book.setup_cell(), {})
    return [command[-2] for command in calls], printed


def test_setup_cell_installs_an_uploaded_wheel_first(monkeypatch, tmp_path):
    (tmp_path / "aebonet_lib-0.1.0-py3-none-any.whl").write_bytes(b"")
    installed, printed = run_setup_cell(monkeypatch, tmp_path, pip_works=lambda course: True)
    assert installed == ["aebonet_lib-0.1.0-py3-none-any.whl"] and printed == []


def test_setup_cell_without_a_wheel_installs_from_the_repository(monkeypatch, tmp_path):
    installed, printed = run_setup_cell(monkeypatch, tmp_path, pip_works=lambda course: True)
    assert installed == [book.course_requirement()] and printed == []


def test_setup_cell_falls_back_to_the_repository_when_the_wheel_fails(monkeypatch, tmp_path):
    (tmp_path / "aebonet_lib-0.1.0-py3-none-any.whl").write_bytes(b"")
    installed, printed = run_setup_cell(monkeypatch, tmp_path, pip_works=lambda course: "git+" in course)
    assert installed == ["aebonet_lib-0.1.0-py3-none-any.whl", book.course_requirement()] and printed == []


def test_setup_cell_says_what_to_do_when_nothing_installs(monkeypatch, tmp_path):
    installed, printed = run_setup_cell(monkeypatch, tmp_path, pip_works=lambda course: False)
    assert installed == [book.course_requirement()]
    assert len(printed) == 1 and "upload aebonet_lib-*.whl" in printed[0] and "make wheel" in printed[0]


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
