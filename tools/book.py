"""Book tooling: paired notebooks for Colab, the Colab set-up cell, and the student edition.

    python tools/book.py sync      # write book/*.ipynb (no outputs) from the MyST sources
    python tools/book.py check     # fail if a notebook or a Colab set-up cell has drifted
    python tools/book.py student   # build the student edition into _build/student/
    python tools/book.py exercises # list every exercise: number, difficulty, title
    python tools/book.py grade [--fast] NOTEBOOK...  # run returned notebooks, then grade their functions
    python tools/book.py time DATA PRESET OUT.csv [CHAPTER...]  # execute chapters on DATA, one row of seconds each

The MyST Markdown files in book/ are the sources. Each has a paired .ipynb without outputs,
because Colab opens only real notebooks; `check` (run by the tests) fails when they drift.
The repository URL lives in _config.yml (repository.url); `sync` writes every page's first cell,
which on Colab installs an uploaded wheel (`make wheel`) or, without one, the course from that URL.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]
# The first cell of every page. On Colab it installs the course without its dependencies (Colab
# already has TensorFlow, Keras, ipywidgets and the rest; upgrading them would force a restart), plus
# the one package the chapters need that Colab lacks: from an uploaded wheel when there is one (a
# course without a published repository), else from the repository of _config.yml. A failed install
# ends in one line that says what to do, never in pip's error.
SETUP_CELL = re.compile(r"^# Run me first\..*?(?=^```)", re.M | re.S)
COLAB_EXTRAS = "pydicom>=2.4"
SETUP_TEMPLATE = """\
# Run me first. On Colab this installs the course library (about a minute); elsewhere it does nothing.
import sys
if "google.colab" in sys.modules:
    import glob, importlib, os, subprocess
    # An uploaded wheel first (made by `make wheel`; see "Running on Colab"), else the course's repository.
    wheels = sorted(glob.glob("aebonet_lib-*.whl") + glob.glob("/content/aebonet_lib-*.whl")
                    + glob.glob("/content/drive/MyDrive/aebonet/aebonet_lib-*.whl"), key=os.path.getmtime)
    for course in wheels[-1:] + ["{url}"]:
        pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", course, "{extras}"]
        if subprocess.run(pip, capture_output=True).returncode == 0:
            break
    else:
        print("Could not install the course: upload aebonet_lib-*.whl (made by `make wheel`) to /content, "
              "as the page Running on Colab shows, and run this cell again.")
    importlib.invalidate_caches()
    import tensorflow as tf
    if not tf.config.list_physical_devices("GPU"):
        print("No GPU: choose Runtime > Change runtime type > GPU, then run this cell again.")
"""
# A solution from its {solution-start} fence to the closing fence of its {solution-end} directive.
SOLUTION_BLOCK = re.compile(r"^(`{3,}|:{3,})\{solution-start\}.*?^\1\{solution-end\}[^\n]*\n(?:\1[ \t]*\n)?", re.M | re.S)
# A {glue} role: its value exists only in an executed notebook, and the student edition is not executed.
GLUE_ROLE = re.compile(r"\{glue(?::\w+)?\}`[^`]+`")
# Colab has no myst_nb: a paired notebook imports glue from the course instead (myst_nb's where installed).
MYST_GLUE_IMPORT = re.compile(r"^(\s*)from myst_nb import glue$", re.M)
STUDENT_STUB_TAG = "student-stub"


def load_config() -> dict:
    """Return the book's _config.yml as a dict."""
    return yaml.safe_load((ROOT / "_config.yml").read_text())


def chapter_sources() -> list[Path]:
    """Return the MyST sources listed in _toc.yml, in reading order."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    names = [toc["root"]]
    for part in toc.get("parts", [{"chapters": toc.get("chapters", [])}]):
        names += [entry["file"] for entry in part.get("chapters", [])]
    return [ROOT / f"{name}.md" for name in names]


def repo_url() -> str:
    """Return the repository URL the Colab set-up cell installs from."""
    return load_config()["repository"]["url"].rstrip("/")


def course_requirement() -> str:
    """Return the pip requirement of the course at _config.yml's repository and branch."""
    branch = load_config()["repository"].get("branch", "main")
    return f"aebonet-lib @ git+{repo_url()}@{branch}"


def setup_cell() -> str:
    """Return the code of every page's first cell: on Colab, install an uploaded wheel or the course's repository."""
    return SETUP_TEMPLATE.format(url=course_requirement(), extras=COLAB_EXTRAS)


def chapter_number(source: Path) -> int | None:
    """Return a chapter's number in the numbered part of _toc.yml (1, 2, ...), or None for other pages."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    for part in toc.get("parts", []):
        if part.get("numbered"):
            names = [entry["file"] for entry in part.get("chapters", [])]
            name = f"{source.parent.name}/{source.stem}"   # also for the student edition's copies
            return names.index(name) + 1 if name in names else None
    return None


def notebook_text(source: Path) -> str:
    """Return the paired notebook of a MyST source as .ipynb text, without outputs.

    The book numbers its chapters from _toc.yml; a notebook on Colab has no table of contents,
    so its title gets the number written in ("# 3. Unsupervised pretraining"). Colab has no
    myst_nb either, so the notebook imports `glue` from aebonet_lib.course.
    """
    notebook = jupytext.read(source)
    number = chapter_number(source)
    for cell in notebook.cells:
        if number and cell.cell_type == "markdown" and cell.source.startswith("# "):
            cell.source = f"# {number}. {cell.source[2:]}"
            break
    for number, cell in enumerate(notebook.cells):
        cell.id = f"cell-{number}"  # fixed ids: the same source always gives the same notebook
        if cell.cell_type == "code":
            cell.source = MYST_GLUE_IMPORT.sub(r"\1from aebonet_lib.course import glue", cell.source)
    notebook.metadata.pop("jupytext", None)
    notebook.metadata["colab"] = {"provenance": []}
    notebook.metadata["accelerator"] = "GPU"
    return nbformat.writes(notebook) + "\n"


def fixed_setup_cell(text: str) -> str:
    """Return a page's text with its first cell's Colab set-up as `setup_cell` writes it."""
    return SETUP_CELL.sub(lambda m: setup_cell(), text, count=1)


def sync() -> None:
    """Write the Colab set-up cell and the paired .ipynb of every chapter."""
    for source in chapter_sources():
        if not source.exists():
            print(f"missing {source.relative_to(ROOT)} (listed in _toc.yml)")
            continue
        text = source.read_text()
        if fixed_setup_cell(text) != text:
            source.write_text(fixed_setup_cell(text))
        source.with_suffix(".ipynb").write_text(notebook_text(source))
        print(f"synced {source.relative_to(ROOT)}")


def drift() -> list[str]:
    """Return one line per chapter whose notebook or set-up cell differs from what sync writes."""
    problems = []
    for source in chapter_sources():
        if not source.exists():
            problems.append(f"{source.relative_to(ROOT)}: listed in _toc.yml but missing")
            continue
        text = source.read_text()
        if fixed_setup_cell(text) != text:
            problems.append(f"{source.relative_to(ROOT)}: its first cell is not the Colab set-up `sync` writes")
        paired = source.with_suffix(".ipynb")
        if not paired.exists() or paired.read_text() != notebook_text(source):
            problems.append(f"{paired.relative_to(ROOT)}: out of date with {source.name}")
    return problems


GRADES = ("easy", "medium", "hard")
GRADE_COLUMNS = ["notebook", "exercise", "label", "weight", "score", "status"]


def exercises(text: str) -> list[dict]:
    """Return each {exercise} of a chapter's source in order: title, label, difficulty and its source text."""
    from markdown_it import MarkdownIt

    lines = text.splitlines(keepends=True)
    found = []
    for token in MarkdownIt("commonmark").parse(text):
        if token.type == "fence" and token.info.startswith("{exercise}"):
            label = next((line.split(":label:")[1].strip() for line in token.content.splitlines()
                          if line.startswith(":label:")), "")
            title = token.info[len("{exercise}"):].strip()
            found.append({"title": title, "label": label, "grade": grade_of(title), "start": token.map[0]})
    for this, following in zip(found, found[1:] + [{"start": len(lines)}]):
        this["body"] = "".join(lines[this["start"]:following["start"]])
    return found


def grade_of(title: str) -> str | None:
    """Return an exercise title's difficulty: easy, medium, hard, project, think, or None if untagged."""
    if title.startswith("Think!"):
        return "think"
    tag = re.search(r"\((easy|medium|hard|project)\b[^)]*\)\s*$", title)
    return tag.group(1) if tag else None


def exercise_table() -> list[dict]:
    """Return one row per exercise of the numbered chapters: number (3.2), label, title, difficulty."""
    rows = []
    for source in chapter_sources():
        chapter = chapter_number(source)
        if not chapter or not source.exists():
            continue
        for position, exercise in enumerate(exercises(source.read_text()), start=1):
            title = re.sub(r"\s*\((easy|medium|hard|project)\b[^)]*\)\s*$", "", exercise["title"])
            rows.append({"number": f"{chapter}.{position}", "label": exercise["label"],
                         "title": title.removeprefix("Think! ") or title, "difficulty": exercise["grade"]})
    return rows


# Names an assignment may call and still be kept by `definitions` (no data loading, no training).
LIGHT_CALLS = {"np", "math", "range", "list", "dict", "tuple", "set", "int", "float", "str", "len", "sorted",
               "zip", "enumerate", "min", "max", "sum", "round", "Path"}
GRADER_CELL = """\
import json as _json
from aebonet_lib import exercises as _exercises
with open({path!r}, "w") as _out:
    _json.dump(_exercises.grade_namespace(dict(globals()), {chapters!r}), _out)
"""


def call_roots(node: ast.AST) -> set[str]:
    """Return the first name of everything a statement calls (np for np.array, f for f(x))."""
    roots = set()
    for call in (n for n in ast.walk(node) if isinstance(n, ast.Call)):
        target = call.func
        while isinstance(target, (ast.Attribute, ast.Subscript, ast.Call)):
            target = target.func if isinstance(target, ast.Call) else target.value
        roots.add(target.id if isinstance(target, ast.Name) else "?")
    return roots


def definitions(sources: list[str]) -> list[str]:
    """Return the statements of code cells that grading needs: imports, functions, classes and light assignments.

    An assignment is kept when it calls only functions the cells define or LIGHT_CALLS, so that
    `TABLES = {...toy_maturity_score(...)...}` stays and `d = loading.load_data(...)` goes.
    """
    kept, defined = [], set()
    for source in sources:
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue  # IPython magics such as %pip
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                defined.add(node.name)
            light = isinstance(node, (ast.Assign, ast.AnnAssign)) and call_roots(node) <= defined | LIGHT_CALLS
            if light or isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef)):
                kept.append(ast.unparse(node))  # with its decorators, which a source segment leaves out
    return kept


def course_exercises():
    """Return aebonet_lib.exercises of this repository (the grader's checks, not an installed copy)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from aebonet_lib import exercises

    return exercises


def notebook_chapters(path: Path, sources: list[str], notebook) -> list[int]:
    """Return the chapter a returned notebook belongs to: from its file name (ch3_...), its title, or its answers."""
    exercises = course_exercises()

    found = re.match(r"ch(\d+)_", path.name)
    title = next((c.source for c in notebook.cells if c.cell_type == "markdown"), "")
    found = found or re.match(r"#\s*(\d+)\.\s", title)
    if found:
        return [int(found.group(1))]
    code = "\n".join(sources)
    return sorted({e.chapter for e in exercises.EXERCISES.values()
                   if any(re.search(rf"^(def|class) {name}\b", code, re.M) for name in e.answers)})


def run_and_grade(sources: list[str], chapters: list[int], folder: Path, timeout: int) -> list[dict] | None:
    """Run code cells in a fresh kernel, then grade the functions they defined; None if grading did not finish."""
    import os
    import secrets
    import tempfile

    import nbclient

    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    client = nbclient.NotebookClient(notebook, timeout=timeout, allow_errors=True, interrupt_on_timeout=True,
                                     resources={"metadata": {"path": str(folder)}})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    result = Path(tempfile.mkdtemp(prefix="grade-")) / f"{secrets.token_hex(8)}.json"
    try:
        with client.setup_kernel(env=env):
            for index, cell in enumerate(notebook.cells):
                try:
                    client.execute_cell(cell, index)
                except nbclient.exceptions.CellTimeoutError:
                    pass
            # the grader's cell is made only now: the student's cells could not know where it writes
            notebook.cells.append(nbformat.v4.new_code_cell(GRADER_CELL.format(path=str(result), chapters=chapters)))
            client.execute_cell(notebook.cells[-1], len(notebook.cells) - 1)
    except nbclient.exceptions.DeadKernelError:
        pass  # a notebook that kills its kernel is graded as not finished
    rows = json.loads(result.read_text()) if result.exists() else None
    shutil.rmtree(result.parent, ignore_errors=True)
    return rows


def grade_notebook(path: Path, fast: bool = False, timeout: int = 1800) -> list[dict]:
    """Return a returned notebook's rows: one per graded exercise of its chapter, then its weighted total."""
    exercises = course_exercises()

    notebook = nbformat.read(path, as_version=4)
    sources = [cell.source for cell in notebook.cells if cell.cell_type == "code"]
    chapters = notebook_chapters(path, sources, notebook)
    rows = run_and_grade(definitions(sources) if fast else sources, chapters, path.parent, timeout)
    if rows is None:
        rows = [{"exercise": e.number, "label": e.label, "weight": e.weight, "score": 0,
                 "status": "grading did not finish"} for c in chapters for e in exercises.of_chapter(c)]
    total = {"exercise": "total", "label": "", "weight": sum(r["weight"] for r in rows),
             "score": exercises.weighted_total(rows), "status": "weighted per cent"}
    return [{"notebook": path.name, **row} for row in [*rows, total]]


def grade(paths: list[str], fast: bool = False, out: str = "grades.csv") -> list[dict]:
    """Grade returned notebooks by running their code and then the checks on their functions; write grades.csv.

    Nothing the notebook printed is read. With `fast`, only each notebook's imports, functions,
    classes and light assignments run (no data loading, no training): seconds instead of minutes.
    """
    import csv

    rows = [row for path in paths for row in grade_notebook(Path(path), fast)]
    with open(out, "w", newline="") as handle:
        writer = csv.DictWriter(handle, GRADE_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return rows


def student_text(text: str) -> str:
    """Return a chapter's source with the solutions cut out and the exercise stubs shown."""
    text = SOLUTION_BLOCK.sub("", text)
    text = GLUE_ROLE.sub("*(computed when you run this chapter)*", text)
    return text.replace(f":tags: [remove-cell, {STUDENT_STUB_TAG}]", f":tags: [{STUDENT_STUB_TAG}]")


def write_student_sources(out: Path) -> Path:
    """Copy the book's sources into `out` as the student edition; return the folder."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for name in ("_toc.yml", "references.bib", "tools/offline_mathjax.py"):
        if (ROOT / name).exists():
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / name, out / name)
    config = load_config()
    config["title"] += " (student edition)"
    config["execute"]["execute_notebooks"] = "off"
    config["sphinx"]["config"]["hide_solutions"] = True
    (out / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    for source in chapter_sources():
        target = out / source.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(student_text(source.read_text()))
    for extra in (ROOT / "book").iterdir():
        if extra.suffix not in (".md", ".ipynb") and extra.is_file():
            shutil.copy(extra, out / "book" / extra.name)
    return out


def student() -> int:
    """Build the student edition: HTML without solutions, and notebooks to hand out."""
    sources = write_student_sources(ROOT / "_build" / "student_src")
    notebooks = ROOT / "_build" / "student" / "notebooks"
    notebooks.mkdir(parents=True, exist_ok=True)
    for source in chapter_sources():
        student_source = sources / source.relative_to(ROOT)
        (notebooks / source.with_suffix(".ipynb").name).write_text(notebook_text(student_source))
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jupyter_book), "build", str(sources), "--path-output", str(ROOT / "_build" / "student"), "--keep-going"]
    code = subprocess.call(cmd)
    print(f"Student edition: {ROOT / '_build/student/_build/html/index.html'}; notebooks in {notebooks}")
    return code


def time_chapters(data: str, preset: str, out: Path, chapters: list[str]) -> None:
    """Execute each chapter notebook on `data` at `preset`, appending its wall time and the machine's load to `out`."""
    import csv
    import datetime
    import os
    import platform
    import time

    env = {**os.environ, "AEBONET_DATA": data, "AEBONET_PRESET": preset}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    for chapter in chapters or [s.stem for s in chapter_sources()]:
        start = time.perf_counter()
        command = [sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
                   str(ROOT / "book" / f"{chapter}.ipynb"), "--output-dir", str(out.parent / "executed"),
                   "--ExecutePreprocessor.timeout=-1"]
        code = subprocess.run(command, env=env, capture_output=True).returncode
        row = {"chapter": chapter, "preset": preset, "seconds": round(time.perf_counter() - start),
               "exit_code": code, "load_1min": round(os.getloadavg()[0], 1), "cores": os.cpu_count(), "cpu": cpu,
               "commit": commit, "finished": datetime.datetime.now().isoformat(timespec="seconds")}
        new = not out.exists()
        with out.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)
        print(f"{chapter}: {row['seconds']} s, exit {code}, load {row['load_1min']:.1f}")


def main(argv: list[str]) -> int:
    """Run one of: sync, check, student."""
    command = argv[1] if len(argv) > 1 else ""
    if command == "sync":
        sync()
        return 0
    if command == "check":
        problems = drift()
        print("\n".join(problems) or "notebooks in sync")
        return 1 if problems else 0
    if command == "student":
        return student()
    if command == "exercises":
        for row in exercise_table():
            print(f"{row['number']:>5}  {row['difficulty'] or '?':<8} {row['title']}  ({row['label']})")
        return 0
    if command == "grade":
        fast = "--fast" in argv
        rows = grade([a for a in argv[2:] if a != "--fast"], fast=fast)
        for row in rows:
            print(f"{row['notebook']}  {row['exercise']:>5}  {row['score']:>5}  {row['status']}")
        print("table in grades.csv: a score per exercise and each notebook's weighted total")
        return 0
    if command == "time" and len(argv) >= 5:
        time_chapters(argv[2], argv[3], Path(argv[4]), argv[5:])
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
