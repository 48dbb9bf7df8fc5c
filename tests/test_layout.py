"""The package's layout: no import cycles, small modules, the recipe in one place (ARCHITECTURE.md)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "aebonet_lib"
MAX_LINES = 500


def module_name(path: Path) -> str:
    """Return the dotted name of a module file of the package."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    """Return every module of the package by dotted name."""
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def runtime_nodes(tree: ast.AST):
    """Yield every node of a tree except those under `if TYPE_CHECKING:` (imports for type hints only)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            continue
        yield node
        yield from runtime_nodes(node)


def imported(path: Path, known: set[str]) -> set[str]:
    """Return the package modules a file imports anywhere in it (functions included)."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = set()
    for node in runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    found |= parent_packages(found) - parent_packages({module_name(path)})  # a.b.c runs a.b's __init__ first
    return {name for name in found if name in known and name != module_name(path)}


def parent_packages(names: set[str]) -> set[str]:
    """Return every package above the given dotted names: 'a.b' and 'a' for 'a.b.c'."""
    return {name.rsplit(".", depth)[0] for name in names for depth in range(1, name.count(".") + 1)}


def import_graph() -> dict[str, set[str]]:
    """Return module -> the package modules it imports."""
    found = modules()
    return {name: imported(path, set(found)) for name, path in found.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """Return one import cycle as a list of modules, or None when the graph has none."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for other in sorted(graph[node]):
            if state.get(other) == "open":
                return stack[stack.index(other):] + [other]
            if other not in state and (cycle := visit(other)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_importing_a_submodule_counts_as_importing_its_package():
    # _engine.realism once imported phantom.children, whose package's __init__ imported _engine.realism back:
    # `import aebonet_lib._engine.realism` failed in a fresh interpreter, though no module named the other.
    assert parent_packages({"aebonet_lib.phantom.children"}) == {"aebonet_lib.phantom", "aebonet_lib"}
    assert "aebonet_lib.phantom" in import_graph()["aebonet_lib._engine.realism"]


def test_find_cycle_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_package_has_no_import_cycles():
    graph = import_graph()
    assert len(graph) > 30 and graph["aebonet_lib._engine.runner"] >= {"aebonet_lib.paper"}
    assert find_cycle(graph) is None


@pytest.mark.parametrize("name", sorted(modules()))
def test_no_module_is_over_500_lines(name):
    lines = len(modules()[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines; split it (ARCHITECTURE.md)"


def test_the_recipe_does_not_depend_on_the_machinery():
    recipe_imports = import_graph()["aebonet_lib.paper"]
    assert not {name for name in recipe_imports if name.startswith(("aebonet_lib._engine", "aebonet_lib.data",
                                                                      "aebonet_lib.experiments"))}


MARKER = re.compile(r"#\s*(?:our choice|beyond the paper) \(([^)]+)\)")


def choice_markers() -> dict[str, list[str]]:
    """Return each marked topic with the places that mark it: `# our choice (TOPIC)` after code, or above it."""
    found: dict[str, list[str]] = {}
    for name, path in modules().items():
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if not (match := MARKER.search(line)):
                continue
            code = line[:match.start()].strip() or (lines[i + 1].strip() if i + 1 < len(lines) else "")
            if code and not code.startswith(("#", '"', "'")):
                found.setdefault(match.group(1), []).append(f"{name}:{i + 1}")
    return found


def test_every_choice_is_marked_where_it_is_made():
    from aebonet_lib import paper

    topics = [row[0] for row in paper.CHOICES]
    assert len(topics) >= 8 and all(len(row) == 4 for row in paper.CHOICES) and len(set(topics)) == len(topics)
    markers = choice_markers()
    assert not [t for t in topics if t not in markers], "CHOICES rows with no `# our choice (TOPIC)` at a code line"
    assert not [t for t in markers if t not in topics], "markers naming no CHOICES row"


def test_choice_markers_need_code_beside_or_below_them():
    assert MARKER.search("x = 1  # our choice (pooling): 2x2").group(1) == "pooling"
    assert MARKER.search("# beyond the paper (masked-image objective)").group(1) == "masked-image objective"
    assert MARKER.search("# our choice: no topic") is None


def test_the_option_names_match_the_presets_and_need_no_tensorflow():
    from aebonet_lib import config, options

    assert options.PRESET_NAMES == tuple(config.PRESETS)
    code = ("import sys; from aebonet_lib import options; from aebonet_lib._engine import cli_parser; cli_parser.build_parser(); "
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.split() == ["False", "False"]


def test_help_answers_without_starting_tensorflow():
    code = ("import sys, contextlib, io\nfrom aebonet_lib._engine import cli\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    try:\n        cli.main(['--help'])\n    except SystemExit:\n        pass\n"
            "print('tensorflow' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.split() == ["False"]


# The two faces (ARCHITECTURE.md): the chapters import the student library, never the engine.
BOOK = ROOT / "book"
MAX_STUDENT_MODULES, MAX_STUDENT_LINES = 15, 5_500


def code_cells(page: Path) -> str:
    """Return the Python of a book page's code cells (magics and cell options left out)."""
    cells = re.findall(r"```\{code-cell\}[^\n]*\n(.*?)```", page.read_text(), re.S)
    lines = [line for cell in cells for line in cell.splitlines() if not line.lstrip().startswith(("%", "!", ":"))]
    return "\n".join(lines)


def chapter_imports(source: str, known: dict[str, Path]) -> set[str]:
    """Return the package modules that Python code imports: `from P import M` names module P.M when M is one."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in known}
        elif isinstance(node, ast.ImportFrom) and node.module in known:
            modules_named = {f"{node.module}.{alias.name}" for alias in node.names} & set(known)
            found |= modules_named or {node.module}
            if len(modules_named) < len(node.names):
                found.add(node.module)
    return found


def student_modules() -> set[str]:
    """Return the package modules that the book's pages import, all pages together."""
    known = modules()
    return set().union(*(chapter_imports(code_cells(page), known) for page in sorted(BOOK.glob("*.md"))))


def test_chapter_imports_are_read_from_the_code_cells():
    known = modules()
    source = ("from aebonet_lib import paper, course\nfrom aebonet_lib.data import loading\n"
              "from aebonet_lib.config import PRESETS\nimport aebonet_lib.speed\n")
    assert chapter_imports(source, known) == {"aebonet_lib.paper", "aebonet_lib.course", "aebonet_lib.data.loading",
                                              "aebonet_lib.config", "aebonet_lib.speed"}
    assert chapter_imports("from aebonet_lib._engine import runner", known) == {"aebonet_lib._engine.runner"}


def test_the_chapters_import_only_the_student_library():
    imported = student_modules()
    engine = sorted(name for name in imported if name.startswith("aebonet_lib._engine"))
    assert not engine, f"the book imports the engine directly: {engine}; go through a student module (ARCHITECTURE.md)"
    assert "aebonet_lib.speed" in chapter_imports(code_cells(BOOK / "ch5_gpu.md"), modules())


def test_the_student_library_is_small():
    imported = student_modules()
    lines = sum(len(modules()[name].read_text().splitlines()) for name in imported)
    assert len(imported) <= MAX_STUDENT_MODULES, f"the book imports {len(imported)} modules: {sorted(imported)}"
    assert lines <= MAX_STUDENT_LINES, f"the modules the book imports hold {lines} lines"
