"""Writing files so that an interrupted program never leaves a half-written one."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

import pandas as pd

from aebonet_lib.errors import AebonetError


def default_mode() -> int:
    """Return the permission bits a plain open() would give a new file (0o666 less the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file beside `path` and move it over `path` only when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, default_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` (same suffix) for a library to write; move it into place on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, default_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented JSON, atomically."""
    with atomic_write(path) as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=str)
        f.write("\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file, with a clear error when it is missing or broken."""
    path = Path(path)
    if not path.is_file():
        raise AebonetError(f"{path}: file not found")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AebonetError(f"{path}: not valid JSON ({e}); delete it or restore it from a backup") from None


def require_empty_dir(path: str | os.PathLike, option: str = "--out") -> Path:
    """Return `path` as a Path, refusing an existing non-empty folder so that nothing is overwritten."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise AebonetError(f"{option} {path}: exists and is a file; give a folder path")
    if path.is_dir() and any(path.iterdir()):
        raise AebonetError(f"{option} {path}: folder exists and is not empty; choose a new folder or empty it first")
    return path


def refuse_overwrite(paths, force: bool, option: str = "--out") -> None:
    """Refuse to replace existing files unless `force`, and a folder where a file is to be written."""
    paths = [Path(p) for p in paths if p is not None]
    folders = [p for p in paths if p.is_dir()]
    if folders:
        raise AebonetError(f"{option} {folders[0]}: is a folder; give a file path")
    existing = [str(p) for p in paths if p.exists()]
    if existing and not force:
        them = "it" if len(existing) == 1 else "them"
        raise AebonetError(f"{option} {' and '.join(existing)}: already exist{'s' if len(existing) == 1 else ''}; "
                           f"pass --force to replace {them}, or choose another path")


def read_table(table: str | os.PathLike | pd.DataFrame, hint: str) -> pd.DataFrame:
    """Return a table given as a DataFrame or a CSV path; a missing file is an error that says `hint`."""
    if isinstance(table, pd.DataFrame):
        return table
    path = Path(table)
    if not path.is_file():
        raise AebonetError(f"{path}: file not found; {hint}")
    return pd.read_csv(path)

def save_table(table: pd.DataFrame, path: str | os.PathLike) -> tuple[Path, Path]:
    """Write a table as CSV and as Markdown beside it (PATH.csv, PATH.md), atomically; return both paths."""
    csv_path, md_path = Path(path).with_suffix(".csv"), Path(path).with_suffix(".md")
    with atomic_write(csv_path) as f:
        table.to_csv(f)
    with atomic_write(md_path) as f:
        f.write(table.to_markdown(floatfmt="g") + "\n")
    return csv_path, md_path
