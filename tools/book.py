"""Book tooling: paired notebooks for Colab, the Colab install line, and the student edition.

    python tools/book.py sync      # write book/*.ipynb (no outputs) from the MyST sources
    python tools/book.py check     # fail if a notebook or a Colab install line has drifted
    python tools/book.py student   # build the student edition into _build/student/

The MyST Markdown files in book/ are the sources. Each has a paired .ipynb without outputs,
because Colab opens only real notebooks; `check` (run by the tests) fails when they drift.
The repository URL lives in _config.yml (repository.url); `sync` writes it into every
chapter's Colab install line.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]
INSTALL_LINE = re.compile(r'(%pip install -q "aebonet-lib @ git\+)([^"@]+)(@[^"]*")')
# A solution from its {solution-start} fence to the closing fence of its {solution-end} directive.
SOLUTION_BLOCK = re.compile(r"^(`{3,}|:{3,})\{solution-start\}.*?^\1\{solution-end\}[^\n]*\n(?:\1[ \t]*\n)?", re.M | re.S)
# A {glue} role: its value exists only in an executed notebook, and the student edition is not executed.
GLUE_ROLE = re.compile(r"\{glue(?::\w+)?\}`[^`]+`")
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
    """Return the repository URL the Colab install line points at."""
    return load_config()["repository"]["url"].rstrip("/")


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
    so its title gets the number written in ("# 3. Unsupervised pretraining").
    """
    notebook = jupytext.read(source)
    number = chapter_number(source)
    for cell in notebook.cells:
        if number and cell.cell_type == "markdown" and cell.source.startswith("# "):
            cell.source = f"# {number}. {cell.source[2:]}"
            break
    for number, cell in enumerate(notebook.cells):
        cell.id = f"cell-{number}"  # fixed ids: the same source always gives the same notebook
    notebook.metadata.pop("jupytext", None)
    notebook.metadata["colab"] = {"provenance": []}
    notebook.metadata["accelerator"] = "GPU"
    return nbformat.writes(notebook) + "\n"


def fixed_install_line(text: str) -> str:
    """Return a chapter's text with its Colab install line pointing at the configured repository."""
    return INSTALL_LINE.sub(lambda m: f"{m.group(1)}{repo_url()}{m.group(3)}", text)


def sync() -> None:
    """Write the Colab install line and the paired .ipynb of every chapter."""
    for source in chapter_sources():
        if not source.exists():
            print(f"missing {source.relative_to(ROOT)} (listed in _toc.yml)")
            continue
        text = source.read_text()
        if fixed_install_line(text) != text:
            source.write_text(fixed_install_line(text))
        source.with_suffix(".ipynb").write_text(notebook_text(source))
        print(f"synced {source.relative_to(ROOT)}")


def drift() -> list[str]:
    """Return one line per chapter whose notebook or install line differs from what sync writes."""
    problems = []
    for source in chapter_sources():
        if not source.exists():
            problems.append(f"{source.relative_to(ROOT)}: listed in _toc.yml but missing")
            continue
        text = source.read_text()
        if fixed_install_line(text) != text:
            problems.append(f"{source.relative_to(ROOT)}: Colab install line does not use {repo_url()}")
        paired = source.with_suffix(".ipynb")
        if not paired.exists() or paired.read_text() != notebook_text(source):
            problems.append(f"{paired.relative_to(ROOT)}: out of date with {source.name}")
    return problems


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
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
