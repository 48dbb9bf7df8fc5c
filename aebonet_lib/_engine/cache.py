"""The one-time preprocessing cache: decode every radiograph once, train from arrays (chapters 2 and 5).

Decoding a 2000-pixel PNG takes tens of milliseconds; reading a 256 x 256 row of a
memory-mapped array takes microseconds. So every image is decoded, checked and
preprocessed once, in parallel, into a cache folder:

    images.npy      uint8 (N, S, S), opened as a memory map
    table.csv       id, boneage, male, split, path: one row per image in images.npy
    manifest.json   preprocessing parameters, and each source file's size, time and SHA-256

A later build compares the manifest with the dataset: when nothing changed it only
opens the arrays; when some files or labels changed it decodes only the changed files.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import hashlib
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from aebonet_lib._engine import hardware
from aebonet_lib._engine.files import atomic_path, atomic_write, read_json, write_json
from aebonet_lib._engine.imagefiles import MAX_PIXELS, decode_image, image_problem
from aebonet_lib.data.preprocess import PreprocessParams, preprocess, to_uint8
from aebonet_lib.errors import AebonetError

CACHE_FORMAT = 1
MANIFEST = "manifest.json"
IMAGES = "images.npy"
TABLE = "table.csv"
ALL_IMAGES_PREFIX = ".all-images."  # every row's image, while a build runs: one file per build, named by mkstemp
ALL_IMAGES = ".all-images.tmp.npy"  # the one name builds used before, which a killed build may have left
LOCK = ".build.lock"  # held by the build under way (fcntl.flock)
TABLE_COLUMNS = ["id", "boneage", "male", "split", "path"]
MIN_IMAGES_PER_WORKER = 8  # below this many images per process, decoding in this process is faster


@dataclass
class Cache:
    """Hold an opened cache: the image memmap, its table, and the images left out."""

    path: Path
    X: np.ndarray  # uint8 (N, S, S) memmap
    table: pd.DataFrame  # TABLE_COLUMNS, one row per image in X
    params: PreprocessParams
    bad: pd.DataFrame  # id, path, problem: source images that could not be used
    manifest: dict


def cache_root(root: str | os.PathLike | None = None) -> Path:
    """Return the folder for caches and phantom datasets: `root`, else $AEBONET_CACHE, else ~/.cache/aebonet."""
    return Path(root or os.environ.get("AEBONET_CACHE") or Path.home() / ".cache" / "aebonet").expanduser()


def is_cache(path) -> bool:
    """Tell whether `path` is a cache folder (it holds a manifest.json)."""
    return Path(path).is_dir() and (Path(path) / MANIFEST).is_file()


def file_sha256(path: str | os.PathLike) -> str:
    """Return the SHA-256 of a file's contents, in hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(functools.partial(f.read, 1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def table_sha256(table: pd.DataFrame) -> str:
    """Return a fingerprint of the rows to cache: ids, files, labels and sets."""
    return hashlib.sha256(table[TABLE_COLUMNS].to_csv(index=False).encode()).hexdigest()


def file_unchanged(entry: dict) -> bool:
    """Tell whether a source file still has the size and time recorded, or at least the same contents."""
    try:
        stat = os.stat(entry["path"])
    except OSError:
        return False
    if stat.st_size == entry["size"] and stat.st_mtime_ns == entry["mtime_ns"]:
        return True
    return stat.st_size == entry["size"] and file_sha256(entry["path"]) == entry["sha256"]


def is_current(cache_dir: Path, table: pd.DataFrame, params: PreprocessParams, max_pixels: int = MAX_PIXELS) -> bool:
    """Tell whether the cache in `cache_dir` was built from exactly these rows, files and parameters."""
    if not is_cache(cache_dir) or not (cache_dir / IMAGES).is_file():
        return False
    manifest = read_json(cache_dir / MANIFEST)
    return (manifest.get("format") == CACHE_FORMAT and manifest.get("params") == params.to_dict()
            and manifest.get("table_sha256") == table_sha256(table)
            and manifest.get("max_pixels", MAX_PIXELS) == max_pixels
            and all(file_unchanged(entry) for entry in manifest["files"]))


def prepare_file(path: str, params: PreprocessParams, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray | None, dict]:
    """Decode, check and preprocess one image file; return the uint8 image (None if bad) and its file record."""
    stat = os.stat(path)
    data = Path(path).read_bytes()
    entry = {"path": path, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
             "sha256": hashlib.sha256(data).hexdigest(), "problem": None}
    try:
        image = decode_image(data, Path(path).name, max_pixels)
        entry["problem"] = image_problem(image)
    except AebonetError as e:
        entry["problem"] = str(e).removeprefix(f"{Path(path).name}: ")
    except Exception as e:  # an image that crashes a decoder is a bad input, never a crash mid-build
        entry["problem"] = f"cannot decode the image ({type(e).__name__}: {e}); re-export or remove it"
    if entry["problem"]:
        return None, entry
    return to_uint8(preprocess(image, params)), entry


def prepare_file_safely(path: str, params: PreprocessParams,
                        max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray | None, dict]:
    """Run `prepare_file`, turning a file that vanished or cannot be opened into a bad input."""
    try:
        return prepare_file(path, params, max_pixels)
    except OSError as e:
        return None, {"path": path, "size": -1, "mtime_ns": -1, "sha256": "", "problem": f"cannot read the file ({e.strerror})"}


def start_worker() -> None:
    """Keep each worker process to one OpenCV thread, so that N workers use N cores."""
    cv2.setNumThreads(1)


def prepared_files(paths: Sequence[str], params: PreprocessParams, workers: int,
                   max_pixels: int = MAX_PIXELS) -> Iterator[tuple[np.ndarray | None, dict]]:
    """Yield `prepare_file` results for `paths` in order, computed by `workers` processes.

    Workers are started fresh ("spawn"), not forked: a forked copy of a process that
    already ran OpenCV's or TensorFlow's threads can hang forever. A small job runs in
    this process, where starting workers would cost more than it saves. As always with
    multiprocessing, a script that calls this at its top level needs an
    `if __name__ == "__main__":` guard (notebooks and the `aebonet` command do not).
    """
    work = functools.partial(prepare_file_safely, params=params, max_pixels=max_pixels)
    if workers <= 1 or len(paths) < MIN_IMAGES_PER_WORKER * workers:
        yield from map(work, paths)
        return
    with multiprocessing.get_context("spawn").Pool(workers, initializer=start_worker) as pool:
        yield from pool.imap(work, paths, chunksize=max(1, min(16, len(paths) // (8 * workers))))


def reusable_files(cache_dir: Path, params: PreprocessParams) -> tuple[dict[str, tuple[dict, int]], np.ndarray | None]:
    """Return the previous build's file records (path -> (record, row in images.npy)) and images, if reusable."""
    if not is_cache(cache_dir) or not (cache_dir / IMAGES).is_file():
        return {}, None
    manifest = read_json(cache_dir / MANIFEST)
    if manifest.get("format") != CACHE_FORMAT or manifest.get("params") != params.to_dict():
        return {}, None
    rows = np.cumsum([entry["problem"] is None for entry in manifest["files"]]) - 1
    return {e["path"]: (e, int(r)) for e, r in zip(manifest["files"], rows)}, np.load(cache_dir / IMAGES, mmap_mode="r")


def copy_unchanged(out: np.ndarray, paths: Sequence[str], params: PreprocessParams, cache_dir: Path) -> list[dict | None]:
    """Copy the images of unchanged files from the old cache into `out`; return their records (None: to decode)."""
    old, old_X = reusable_files(cache_dir, params)
    entries: list[dict | None] = [None] * len(paths)
    for i, path in enumerate(paths):
        if path in old and file_unchanged(old[path][0]) and old[path][0]["problem"] is None:  # a bad file: again
            entries[i], old_row = old[path]
            if entries[i]["problem"] is None:
                out[i] = old_X[old_row]
    return entries


def fill_images(out: np.ndarray, paths: Sequence[str], params: PreprocessParams, cache_dir: Path,
                workers: int, progress: bool, max_pixels: int = MAX_PIXELS) -> list[dict]:
    """Write every image into `out`, decoding only new or changed files, and return the file records."""
    entries = copy_unchanged(out, paths, params, cache_dir)
    todo = [i for i, e in enumerate(entries) if e is None]
    with tqdm(total=len(todo), desc="preparing images", unit="img", disable=not progress or not todo) as bar:
        for i, (image, entry) in zip(todo, prepared_files([paths[i] for i in todo], params, workers, max_pixels)):
            entries[i] = entry
            if image is not None:
                out[i] = image
            bar.update()
    return entries


def size_text(nbytes: int) -> str:
    """Return a number of bytes for people: kB, MB or GB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes / 1e3:.1f} kB"


def require_free_space(cache_dir: Path, nbytes: int) -> None:
    """Refuse to start a build that the disk under `cache_dir` has no room for."""
    free = shutil.disk_usage(cache_dir).free
    if free < nbytes:
        raise AebonetError(f"{cache_dir}: the cache needs {size_text(nbytes)} of free disk space, {size_text(free)} "
                           "available; free some space, or give another --out folder (cache_dir) on a larger disk")


def reserve(f, size: int) -> None:
    """Reserve `size` bytes of disk for an open file: blocks allocated at once, or zeros written where that fails."""
    try:
        os.posix_fallocate(f.fileno(), 0, size)
        return
    except (AttributeError, OSError) as e:  # no posix_fallocate (macOS), or a file system without it
        if getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
            raise
    f.seek(0, os.SEEK_END)
    block = bytes(1 << 20)
    while f.tell() < size:
        f.write(block[: size - f.tell()])
    f.flush()


def allocate_images(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """Create a uint8 .npy file at `path` with its disk space reserved, and return it as a writable memmap.

    np.lib.format.open_memmap makes a sparse file, whose blocks are taken only when the
    memory map writes them: on a full disk the process then dies of SIGBUS. Reserved
    first, a full disk is an OSError (ENOSPC) before any image is written.
    """
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": shape})
        reserve(f, f.tell() + int(np.prod(shape)))
    return np.lib.format.open_memmap(path, "r+")


def keep_good_rows(all_path: Path, good: np.ndarray, out_path: Path) -> None:
    """Move the image array to `out_path`, first dropping the rows of bad images if there are any."""
    if good.all():
        os.replace(all_path, out_path)
        return
    every = np.load(all_path, mmap_mode="r")
    kept = allocate_images(out_path, (int(good.sum()), *every.shape[1:]))
    for row, i in enumerate(np.flatnonzero(good)):
        kept[row] = every[i]
    kept.flush()
    del kept, every
    all_path.unlink()


def is_cache_file(path: Path) -> bool:
    """Tell whether a file is one a cache build writes, finished or left half-written by a killed build."""
    names = (MANIFEST, IMAGES, TABLE)
    return (path.name in (*names, LOCK) or path.name.startswith(ALL_IMAGES_PREFIX)
            or any(path.name.startswith(f".{Path(name).stem}.") for name in names))


def remove_leftovers(cache_dir: Path) -> None:
    """Delete the temporary files of builds that were killed (called with the build lock held, so none is running)."""
    for path in cache_dir.iterdir():
        if path.name.startswith(".") and path.name != LOCK and is_cache_file(path):
            path.unlink(missing_ok=True)


@contextlib.contextmanager
def build_lock(cache_dir: Path) -> Iterator[None]:
    """Hold the cache folder's lock while a build runs: a second build in the same folder waits for the first."""
    with open(cache_dir / LOCK, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"{cache_dir}: another process is building this cache; waiting for it to finish", file=sys.stderr,
                  flush=True)
            fcntl.flock(f, fcntl.LOCK_EX)
        yield  # closing the file releases the lock


def check_source(cache_dir: Path, source: str, force: bool) -> None:
    """Refuse to replace a cache built from another dataset, unless `force`."""
    if force or not source or not is_cache(cache_dir):
        return
    built_from = read_json(cache_dir / MANIFEST).get("source") or ""
    if built_from and Path(built_from).resolve() != Path(source).resolve():
        raise AebonetError(f"{cache_dir}: holds the cache of {built_from}, not of {source}; choose another --out folder, "
                           "or pass --force (force=True) to replace it")


def require_cache_folder(cache_dir: Path) -> None:
    """Refuse to build in a non-empty folder that is not a cache, so that no user file is overwritten."""
    if cache_dir.exists() and not cache_dir.is_dir():
        raise AebonetError(f"{cache_dir}: exists and is a file; give a folder path for the cache")
    if cache_dir.is_dir() and any(cache_dir.iterdir()) and not any(map(is_cache_file, cache_dir.iterdir())):
        raise AebonetError(f"{cache_dir}: folder exists, is not empty and is not a cache; choose a new folder for the cache")


def write_images(table: pd.DataFrame, params: PreprocessParams, cache_dir: Path, workers: int,
                 progress: bool, max_pixels: int = MAX_PIXELS) -> list[dict]:
    """Build images.npy in `cache_dir` for the rows of `table`; return one file record per row."""
    shape = (len(table), params.image_size, params.image_size)
    require_free_space(cache_dir, int(np.prod(shape)))
    fd, name = tempfile.mkstemp(prefix=ALL_IMAGES_PREFIX, suffix=".tmp.npy", dir=cache_dir)
    os.close(fd)
    every = Path(name)  # every row, bad ones too, before the bad rows are dropped
    try:
        X = allocate_images(every, shape)
        entries = fill_images(X, list(table["path"]), params, cache_dir, workers, progress, max_pixels)
        X.flush()
        del X
        (cache_dir / MANIFEST).unlink(missing_ok=True)  # from here on the folder is not a valid cache
        with atomic_path(cache_dir / IMAGES) as final:
            keep_good_rows(every, np.array([e["problem"] is None for e in entries], dtype=bool), final)
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise AebonetError(f"{cache_dir}: the disk filled up while writing the cache ({size_text(int(np.prod(shape)))} "
                           "of images); free some space, or give another --out folder (cache_dir) on a larger disk") from None
    finally:
        every.unlink(missing_ok=True)
    return entries


def build_cache(table: pd.DataFrame, params: PreprocessParams, cache_dir: str | os.PathLike, source: str = "",
                workers: int | None = None, progress: bool = True, force: bool = False,
                max_pixels: int = MAX_PIXELS) -> Cache:
    """Decode, check and preprocess every row's image once into `cache_dir`, reusing what has not changed.

    `table` has one row per image with columns id, boneage, male, split and path.
    Images that cannot be used (unreadable, truncated, empty, constant) are left out
    of images.npy and listed in the returned cache's `bad` table. A cache of another
    `source` in `cache_dir` is replaced only with `force`; two builds in one folder take turns.
    """
    cache_dir = Path(cache_dir)
    table = table.reset_index(drop=True)
    if is_current(cache_dir, table, params, max_pixels):
        return open_cache(cache_dir)
    require_cache_folder(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with build_lock(cache_dir):
        if not is_current(cache_dir, table, params, max_pixels):  # else a build that held the lock made this very cache
            check_source(cache_dir, source, force)
            remove_leftovers(cache_dir)
            write_cache(table, params, cache_dir, source, workers, progress, max_pixels)
    return open_cache(cache_dir)


def write_cache(table: pd.DataFrame, params: PreprocessParams, cache_dir: Path, source: str, workers: int | None,
                progress: bool, max_pixels: int = MAX_PIXELS) -> None:
    """Write images.npy, table.csv and, last, manifest.json in `cache_dir` (with its build lock held)."""
    entries = write_images(table, params, cache_dir, workers or hardware.available_cpus(), progress, max_pixels)
    good = [e["problem"] is None for e in entries]
    with atomic_write(cache_dir / TABLE) as f:
        table.loc[good, TABLE_COLUMNS].to_csv(f, index=False)
    write_json(cache_dir / MANIFEST, {
        "format": CACHE_FORMAT, "params": params.to_dict(), "source": source, "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "n_images": int(sum(good)), "table_sha256": table_sha256(table), "max_pixels": max_pixels,
        "files": [{"id": i, **e} for i, e in zip(table["id"], entries)],
    })


def read_cache_table(path: Path) -> pd.DataFrame:
    """Read a cache's table.csv: ids and sets as text, ages and sexes as float32 with NaN for unknown."""
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    for column in ("boneage", "male"):
        table[column] = pd.to_numeric(table[column].replace("", np.nan)).astype(np.float32)
    return table


def open_cache(cache_dir: str | os.PathLike) -> Cache:
    """Open a cache folder: the images as a read-only memmap, the table, and the list of bad images."""
    cache_dir = Path(cache_dir)
    if not is_cache(cache_dir):
        raise AebonetError(f"{cache_dir}: not a cache folder (no {MANIFEST}); make one with `aebonet prepare --out {cache_dir}`")
    manifest = read_json(cache_dir / MANIFEST)
    X = np.load(cache_dir / IMAGES, mmap_mode="r")
    table = read_cache_table(cache_dir / TABLE)
    if len(table) != len(X):
        raise AebonetError(f"{cache_dir}: {TABLE} has {len(table)} rows but {IMAGES} {len(X)} images; "
                           "delete the folder and prepare it again")
    bad = pd.DataFrame([(e["id"], e["path"], e["problem"]) for e in manifest["files"] if e["problem"]],
                       columns=["id", "path", "problem"])
    return Cache(cache_dir, X, table, PreprocessParams.from_dict(manifest["params"]), bad, manifest)


# Smaller sizes from a prepared cache


def derived_dir(cache: Cache, image_size: int, root: Path) -> Path:
    """Return where a cache's copy at a smaller image size lives: under ROOT/derived, named after the original."""
    key = hashlib.sha256(str(cache.path.resolve()).encode()).hexdigest()[:8]
    return root / "derived" / f"{cache.path.name}-{key}-{image_size}px"


def shrink(images: np.ndarray, image_size: int) -> np.ndarray:
    """Return uint8 square images resized to image_size x image_size by area averaging."""
    out = np.empty((len(images), image_size, image_size), np.uint8)
    for i, image in enumerate(images):
        out[i] = cv2.resize(np.asarray(image), (image_size, image_size), interpolation=cv2.INTER_AREA)
    return out


def derive_cache(cache: Cache, image_size: int, root: str | os.PathLike) -> Cache:
    """Return the cache at a smaller image size, made once from its images (area-averaged) and reused after.

    Resizing a resized-and-padded image again keeps its proportions and padding, so the
    result matches a cache prepared at that size up to interpolation.
    """
    if image_size >= cache.params.image_size:
        raise AebonetError(f"{cache.path}: holds {cache.params.image_size}-pixel images; {image_size} px would only "
                           f"upsample them; prepare a cache with --size {image_size} from the dataset folder")
    target = derived_dir(cache, image_size, Path(root))
    manifest = cache.manifest | {"params": cache.params.to_dict() | {"image_size": image_size},
                                 "derived_from": str(cache.path.resolve())}
    if is_cache(target) and read_json(target / MANIFEST).get("table_sha256") == manifest.get("table_sha256"):
        return open_cache(target)
    target.mkdir(parents=True, exist_ok=True)
    with atomic_path(target / IMAGES) as tmp, open(tmp, "wb") as f:
        np.save(f, shrink(cache.X, image_size))
    with atomic_write(target / TABLE) as f:
        cache.table.to_csv(f, index=False)
    write_json(target / MANIFEST, manifest)
    return open_cache(target)
