"""The book: every chapter executed, the strict build, the pages in a real browser, the editions."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import book  # noqa: E402  (tools/book.py)

BUILD = ROOT / "_build" / "test"
HTML = BUILD / "_build" / "html"
EXECUTED = BUILD / "_build" / "jupyter_execute"
CHAPTERS = [p.relative_to(ROOT).with_suffix("") for p in book.chapter_sources()]
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
def build() -> subprocess.CompletedProcess:
    """Build the whole book from scratch, strictly: warnings are errors, every reference must resolve."""
    shutil.rmtree(BUILD, ignore_errors=True)
    BUILD.mkdir(parents=True)
    env = {**os.environ, "AEBONET_CACHE": str(BUILD / "cache"), "PYTHONUNBUFFERED": "1"}
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jupyter_book), "build", str(ROOT), "--path-output", str(BUILD), "-W", "-n", "--keep-going"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    (BUILD / "build.log").write_text(proc.stdout + proc.stderr)
    return proc


def test_book_builds_strictly(build):
    log = (build.stdout + build.stderr)[-6000:]
    assert build.returncode == 0, f"jupyter-book build failed (full log in {BUILD / 'build.log'}):\n{log}"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=str)
def test_chapter_executes_without_errors(build, chapter):
    notebook = EXECUTED / chapter.with_suffix(".ipynb")
    assert notebook.exists(), f"{chapter} was not executed; see {BUILD / 'build.log'}"
    cells = json.loads(notebook.read_text())["cells"]
    code_cells = [c for c in cells if c["cell_type"] == "code"]
    assert code_cells, f"{chapter} has no code cells"
    errors = [o for c in code_cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{chapter}: {errors[0].get('ename')}: {errors[0].get('evalue')}"
    assert (HTML / chapter.with_suffix(".html")).exists()


class ImageSources(HTMLParser):
    """Collect the src of every <img> in a page."""

    def __init__(self):
        super().__init__()
        self.sources: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.sources += [value for name, value in attrs if name == "src" and value]


def chromium() -> str | None:
    """Return the path of Debian's chromium, if installed."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def rendered_dom(page: Path) -> str:
    """Return a page's DOM after headless Chromium has loaded it and run its scripts."""
    cmd = [chromium(), *CHROMIUM_FLAGS, "--virtual-time-budget=5000", "--dump-dom", page.as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout


@pytest.mark.parametrize("chapter", CHAPTERS, ids=str)
def test_page_renders_in_browser(build, chapter):
    if chromium() is None:
        pytest.skip("chromium is not installed (make test installs it)")
    page = HTML / chapter.with_suffix(".html")
    dom = rendered_dom(page)
    assert "<article" in dom and len(re.sub(r"<[^>]+>", "", dom)) > 500, f"{page} rendered almost nothing"
    assert "Traceback" not in dom, f"{page} shows a traceback"
    assert 'class="output traceback' not in dom and "output error" not in dom
    parser = ImageSources()
    parser.feed(dom)
    local = [s for s in parser.sources if not s.startswith(("http:", "https:", "data:"))]
    missing = [s for s in local if not (page.parent / s.split("#")[0]).exists()]
    assert not missing, f"{page} references missing images: {missing}"


def test_screenshots_for_a_person(build):
    if chromium() is None:
        pytest.skip("chromium is not installed (make test installs it)")
    pages = [HTML / CHAPTERS[0].with_suffix(".html"), HTML / CHAPTERS[-1].with_suffix(".html")]
    for page in pages:
        shot = BUILD / f"screenshot-{page.stem}.png"
        cmd = [chromium(), *CHROMIUM_FLAGS, "--window-size=1280,2400", "--hide-scrollbars",
               f"--screenshot={shot}", page.as_uri()]
        subprocess.run(cmd, capture_output=True, timeout=120, check=True)
        assert shot.stat().st_size > 20_000, f"{shot} looks empty"


def test_notebooks_and_setup_cells_in_sync():
    problems = book.drift()
    assert not problems, "run `make sync`:\n" + "\n".join(problems)


NUMBERED = [source for source in book.chapter_sources() if book.chapter_number(source)]


def test_every_chapter_has_setup_cell_objectives_and_exercises():
    for source in NUMBERED:
        text = source.read_text()
        first_code = text.split("```{code-cell}", 2)[1]
        assert "google.colab" in first_code and book.setup_cell().strip() in first_code, f"{source.name}: first cell must set up Colab"
        assert "AEBONET_DATA" in text, f"{source.name}: no one-setting switch to real data"
        assert "Learning objectives" in text or "learning objectives" in text, f"{source.name}: no objectives"
        assert text.count("{exercise}") >= 2, f"{source.name}: needs at least two exercises"
        assert text.count("{solution-start}") >= 2, f"{source.name}: needs worked solutions"
        assert "student-stub" in text, f"{source.name}: needs a coding exercise with a student stub"


def exercise_labels(text: str) -> list[str]:
    """Return the labels of the {exercise} directives that MyST parses in a chapter, in order."""
    fences = MarkdownIt("commonmark").parse(text)
    return [line for token in fences if token.type == "fence" and token.info.strip() == "{exercise}"
            for line in token.content.splitlines() if line.startswith(":label:")]


def test_student_edition_drops_solutions_and_keeps_stubs(tmp_path):
    out = book.write_student_sources(tmp_path / "student")
    for source in NUMBERED:
        text = (out / source.relative_to(ROOT)).read_text()
        assert "{solution-start}" not in text and "{solution-end}" not in text
        assert exercise_labels(text) == exercise_labels(source.read_text()), f"{source.name}: lost an exercise"
        assert "{glue" not in text, f"{source.name}: a glue role in the unexecuted student edition"
        assert "NotImplementedError(\"Student exercise" in text, f"{source.name}: no stub in the student edition"
        assert ":tags: [student-stub]" in text
    config = (out / "_config.yml").read_text()
    assert "hide_solutions: true" in config


def test_student_edition_builds_strictly(tmp_path):
    out = book.write_student_sources(tmp_path / "student")
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jupyter_book), "build", str(out), "--path-output", str(tmp_path / "html"), "-W", "-n", "--keep-going"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, f"student edition build failed:\n{(proc.stdout + proc.stderr)[-3000:]}"
    page = (tmp_path / "html" / "_build" / "html" / "book" / "ch4_regression.html").read_text()
    assert "Student exercise" in page and "regression-ex4" in page
