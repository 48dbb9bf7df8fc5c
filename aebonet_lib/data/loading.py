"""Real radiographs in: reading datasets, checking every input, splitting them (chapter 2).

`load_data` is the one call a chapter makes. It reads a dataset in whichever layout
users download (Kaggle RSNA, the official RSNA challenge release, any CSV, a folder
of images, or the synthetic phantom), checks every row and every image, builds the
preprocessing cache once, and returns a `BoneAgeData` with the arrays and the splits.

Bad input never reaches training: by default `load_data` stops with one error that
lists every problem found; with `skip_bad=True` it leaves those rows out and writes
the full list to `bad_inputs_report.csv` in the cache folder.

About the RSNA test labels: RSNA published two versions of the test ground truth
(they differ by about 2.8 months on average). The loader reads whichever file it is
given; keep only the version you mean to compare against in the dataset folder.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from aebonet_lib import phantom
from aebonet_lib._engine import cache as cache_lib
from aebonet_lib._engine.cache import cache_root  # where caches and the chapters' runs live (chapter 6)
from aebonet_lib._engine.files import atomic_write
from aebonet_lib._engine.imagefiles import read_image  # one image file, decoded (chapters 1 and 2)
from aebonet_lib._engine.readers import (
    KAGGLE_TRAIN,
    REPORT_NAME,
    Problem,
    RawDataset,
    problems_message,
    read_dataset,
    read_report,
    relative,
    write_report,
)
from aebonet_lib.config import PAPER_SPLIT, SPLIT_KINDS
from aebonet_lib.data.preprocess import PreprocessParams, to_float
from aebonet_lib.errors import AebonetError
from aebonet_lib.options import MAX_PIXELS

# ---------------------------------------------------------------- the data a chapter trains on


# ---------------------------------------------------------------------------
# Splits: train / validation / test, random, age-stratified or official, saved as id lists
#
# Train / validation / test splits: random, age-stratified or official; saved as id lists (chapter 2).
#
# A split is a dict from a name ("train", "val", "test") to sorted indices into the
# dataset's arrays. The paper split the 12,611 RSNA training images at random into
# 10,088 / 2,323 / 200; `paper_split` gives exactly those counts, and the same
# proportions for smaller sets. Which kind of split a dataset gets is always asked
# for by name (`make_split`): "paper" (the default), "stratified" or "official".
# Whatever made a split, `check_disjoint` makes sure that no image is in two of them.

SPLIT_NAMES = ("train", "val", "test")


def split_counts(n: int, fractions: Sequence[float]) -> list[int]:
    """Return how many of `n` images each split gets: validation and test rounded, training the rest.

    When there are at least as many images as splits, every split with a positive
    fraction gets at least one image, so that a tiny set still has a test image.
    """
    fractions = check_fractions(fractions)
    rest = [round(n * f) for f in fractions[1:]]
    if n >= len(fractions):
        rest = [max(c, 1) if f > 0 else c for c, f in zip(rest, fractions[1:])]
    return [n - sum(rest), *rest]


def check_fractions(fractions: Sequence[float]) -> tuple[float, ...]:
    """Return the fractions as a tuple, refusing anything but three non-negative numbers that sum to 1."""
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise AebonetError(f"split {fractions}: give three non-negative fractions (train, val, test) that sum to 1")
    return fractions


def random_split(n: int, fractions: Sequence[float] = PAPER_SPLIT, seed: int = 0) -> dict[str, np.ndarray]:
    """Split `n` images at random into train / val / test with the given fractions."""
    order = np.random.default_rng(seed).permutation(n)
    bounds = np.cumsum(split_counts(n, fractions))[:-1]
    return {name: np.sort(part) for name, part in zip(SPLIT_NAMES, np.split(order, bounds))}


def stratified_split(ages: np.ndarray, fractions: Sequence[float] = PAPER_SPLIT, seed: int = 0) -> dict[str, np.ndarray]:
    """Split images so that every split covers the whole age range in the same proportions.

    Images are sorted by age, and each split's images are spread over that order
    evenly: split k with c_k images takes one random position in each of c_k equal
    slices of the order (jittered sampling), so a 200-image test set holds
    children of every age, not by chance mostly teenagers.
    """
    ages = np.asarray(ages, dtype=float)
    rng = np.random.default_rng(seed)
    by_age = np.lexsort((rng.random(len(ages)), ages))  # sorted by age, ties in random order
    counts = split_counts(len(ages), fractions)
    slots = np.concatenate([(np.arange(c) + rng.random(c)) / max(c, 1) for c in counts])
    split_of_slot = np.repeat(np.arange(3), counts)[np.argsort(slots, kind="stable")]
    return {name: np.sort(by_age[split_of_slot == k]) for k, name in enumerate(SPLIT_NAMES)}


def split_indices(n: int, fractions: Sequence[float], seed: int = 0, ages: np.ndarray | None = None,
                  stratify: bool = False) -> dict[str, np.ndarray]:
    """Split `n` images into train / val / test, at random or stratified by age."""
    if not stratify:
        return random_split(n, fractions, seed)
    if ages is None or len(ages) != n or np.isnan(np.asarray(ages, dtype=float)).any():
        raise AebonetError("stratified split: needs a known bone age for every image; use a random split for unlabeled data")
    return stratified_split(ages, fractions, seed)


def paper_split(n: int = 12611, seed: int = 0) -> dict[str, np.ndarray]:
    """Return the paper's random split: 10,088 / 2,323 / 200 of 12,611 images, the same proportions for other `n`."""
    return random_split(n, PAPER_SPLIT, seed)


def official_split(split_names: Sequence[str], where: str = "official split") -> dict[str, np.ndarray]:
    """Return the split the RSNA challenge released, from each image's set name ("train", "val" or "test")."""
    split_names = np.asarray(split_names, dtype=str)
    missing = int(np.sum(split_names == ""))
    if missing:
        raise AebonetError(f"{where}: {missing} of {len(split_names)} images belong to no official RSNA set, so there "
                           "is no official split; give the RSNA release with its validation CSV and test ground truth, "
                           "or use split_kind='paper' (--split paper, the default) or 'stratified'")
    unknown = sorted(set(split_names) - set(SPLIT_NAMES))
    if unknown:
        raise AebonetError(f"{where}: unknown set name(s) {unknown}; expected {', '.join(SPLIT_NAMES)}")
    return {name: np.flatnonzero(split_names == name) for name in SPLIT_NAMES}


def check_split_kind(split_kind: str) -> str:
    """Return the split kind, refusing anything but one of SPLIT_KINDS (paper, stratified, official)."""
    if split_kind not in SPLIT_KINDS:
        raise AebonetError(f"split kind {split_kind!r}: choose one of {', '.join(SPLIT_KINDS)}")
    return split_kind


def make_split(split_kind: str, n: int, fractions: Sequence[float] = PAPER_SPLIT, seed: int = 0,
               ages: np.ndarray | None = None, split_names: Sequence[str] | None = None,
               where: str = "official split") -> dict[str, np.ndarray]:
    """Split `n` images as asked: the paper's seeded random split, the same stratified by age, or the official one."""
    if check_split_kind(split_kind) == "official":
        return official_split([""] * n if split_names is None else split_names, where)
    return split_indices(n, fractions, seed, ages=ages, stratify=split_kind == "stratified")


def check_disjoint(splits: dict[str, np.ndarray], ids: Sequence[str]) -> None:
    """Raise AebonetError when an image (by index or by id) is in two splits."""
    ids = np.asarray(ids, dtype=str)
    names = list(splits)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            shared = sorted(set(ids[splits[a]]) & set(ids[splits[b]]))
            if shared:
                raise AebonetError(f"splits {a!r} and {b!r} share {len(shared)} image(s), for example id {shared[0]}: "
                                   "the split files overlap; make new splits or fix the lists")


def save_splits(run_dir: str | os.PathLike, splits: dict[str, np.ndarray], ids: Sequence[str]) -> Path:
    """Write each split as run_dir/splits/<name>.txt, one image id per line; return the folder."""
    check_disjoint(splits, ids)
    ids = np.asarray(ids, dtype=str)
    folder = Path(run_dir) / "splits"
    for name, indices in splits.items():
        with atomic_write(folder / f"{name}.txt") as f:
            f.writelines(f"{i}\n" for i in ids[indices])
    return folder


def load_splits(run_dir: str | os.PathLike, ids: Sequence[str]) -> dict[str, np.ndarray]:
    """Read the id lists saved by `save_splits` and turn them back into indices into `ids`."""
    folder = Path(run_dir) / "splits"
    files = sorted(folder.glob("*.txt"))
    if not files:
        raise AebonetError(f"{folder}: no split files (train.txt, val.txt, test.txt); was the run made by this library?")
    position = {str(i): k for k, i in enumerate(ids)}
    splits = {f.stem: indices_of(f, position) for f in files}
    check_disjoint(splits, ids)
    return splits


def indices_of(split_file: Path, position: dict[str, int]) -> np.ndarray:
    """Return the sorted indices of the ids listed in one split file."""
    listed = [line.strip() for line in split_file.read_text().splitlines() if line.strip()]
    missing = [i for i in listed if i not in position]
    if missing:
        raise AebonetError(f"{split_file}: {len(missing)} id(s) not in this dataset, for example {missing[0]}; "
                           "the run used other data: pass the same --data as when it was made")
    return np.sort(np.array([position[i] for i in listed], dtype=np.int64))


# ---------------------------------------------------------------------------
# Loading a dataset

@dataclass
class BoneAgeData:
    """Hold a prepared dataset: images, labels, ids and the train / val / test split."""

    X: np.ndarray  # uint8 (N, S, S) memmap from the cache
    y: np.ndarray  # float32 (N,) bone age in months; NaN where unknown
    male: np.ndarray  # float32 (N,) 1.0 boy, 0.0 girl, NaN unknown
    ids: np.ndarray  # str (N,)
    splits: dict[str, np.ndarray]  # "train" / "val" / "test" -> indices into the arrays
    params: PreprocessParams
    source: str
    cache_dir: Path | None = None
    problems: list[Problem] = field(default_factory=list)  # inputs left out (skip_bad)
    seed: int = 0  # the seed that drew the split (and, for the phantom, the images)
    split_kind: str = "paper"  # how the split was made: "paper", "stratified" or "official"

    def __len__(self) -> int:
        """Return the number of images."""
        return len(self.ids)

    @property
    def image_size(self) -> int:
        """Return the side of the square images, in pixels."""
        return self.params.image_size

    def images(self, split: str = "all") -> np.ndarray:
        """Return a split's images as float32 (n, S, S, 1) in [0, 1] (loaded into memory)."""
        index = self.indices(split)
        return to_float(self.X[index])[..., None]

    def indices(self, split: str) -> np.ndarray:
        """Return the indices of a split ('train', 'val', 'test' or 'all')."""
        if split == "all":
            return np.arange(len(self))
        if split not in self.splits:
            raise AebonetError(f"split {split!r}: choose one of {', '.join([*self.splits, 'all'])}")
        return self.splits[split]


def age_histogram(y: np.ndarray, band_years: int = 2, width: int = 40) -> list[str]:
    """Return text bars counting bone ages in bands of `band_years` years."""
    known = y[~np.isnan(y)] / 12
    if not len(known):
        return ["bone age: unknown (unlabeled images)"]
    edges = np.arange(0, 20 + band_years, band_years)
    counts = np.histogram(np.clip(known, 0, 19.99), edges)[0]
    return ["bone age (years):"] + [f"  {a:>2}-{a + band_years:<2} {c:>6} {'#' * round(width * c / counts.max())}"
                                    for a, c in zip(edges[:-1], counts)]


def sex_line(male: np.ndarray) -> str:
    """Return the numbers of boys and girls, and of children of unknown sex."""
    boys, girls = int(np.sum(male == 1)), int(np.sum(male == 0))
    unknown = len(male) - boys - girls
    share = f" ({100 * boys / (boys + girls):.0f}% boys)" if boys + girls else ""
    return f"sex: {boys} boys, {girls} girls{share}" + (f", {unknown} unknown" if unknown else "")


def describe(data: BoneAgeData) -> str:
    """Return a short summary of a prepared dataset: sizes, splits, sexes, ages and problems."""
    report = f", listed in {data.cache_dir / REPORT_NAME}" if data.cache_dir else ""
    return "\n".join([
        f"{len(data)} images of {data.image_size}x{data.image_size} pixels from {data.source}"
        + (f" (cache: {data.cache_dir})" if data.cache_dir else ""),
        f"splits ({data.split_kind}): " + ", ".join(f"{name} {len(index)}" for name, index in data.splits.items()),
        sex_line(data.male),
        *age_histogram(data.y),
        f"problems: {len(data.problems)} input(s) left out{report}" if data.problems else "problems: none",
    ])


def is_phantom(source) -> bool:
    """Tell whether a data source names the phantom ('phantom' or 'phantom:N')."""
    return isinstance(source, str) and (source == "phantom" or source.startswith("phantom:"))


def phantom_count(source: str, default: int) -> int:
    """Return N from 'phantom:N' (or the default for 'phantom')."""
    text = source.partition(":")[2] or str(default)
    if not text.isdigit() or int(text) < 1:
        raise AebonetError(f"data source {source!r}: write phantom or phantom:N with N a whole number above 0")
    return int(text)


def phantom_version() -> str:
    """Return a short hash of the phantom's code, so a changed phantom never reuses old images."""
    return phantom.source_digest()


def phantom_dataset(n: int, image_size: int, seed: int, root: Path, progress: bool = True) -> Path:
    """Write N phantom radiographs once in the Kaggle layout under the cache root; return the folder."""
    folder = root / "datasets" / f"phantom-n{n}-s{image_size}-seed{seed}-v{phantom_version()}"
    if (folder / KAGGLE_TRAIN.image_dirs[0]).is_dir() and (folder / "boneage-training-dataset.csv").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        phantom.write_dataset(tmp, n, size=image_size, seed=seed, progress=progress)
        os.replace(tmp, folder)  # whole dataset or nothing: a killed run leaves only a hidden temporary folder
    except OSError:
        if not folder.is_dir():  # another process finishing the same dataset first is fine
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def default_cache_dir(raw: RawDataset, params: PreprocessParams, root: Path) -> Path:
    """Return the cache folder for a dataset and preprocessing: named after both, under the cache root."""
    key = hashlib.sha256(f"{raw.root.resolve()}|{raw.layout}".encode()).hexdigest()[:8]
    return root / "prepared" / f"{raw.root.name}-{key}-{params.tag()}"


def chosen_split_kind(split_kind: str, stratify: bool) -> str:
    """Return the split kind asked for, `stratify=True` being the older way to ask for 'stratified'."""
    check_split_kind(split_kind)
    if stratify and split_kind == "official":
        raise AebonetError("stratify=True and split_kind='official' contradict each other; give split_kind alone")
    return "stratified" if stratify else split_kind


def make_splits(table: pd.DataFrame, ages: np.ndarray, fractions, seed: int, split_kind: str,
                source: str) -> dict[str, np.ndarray]:
    """Return the split asked for: the paper's seeded random one, stratified by age, or the official RSNA sets."""
    return make_split(split_kind, len(table), fractions, seed, ages=ages, split_names=table["split"],
                                 where=source)


def check_official_sets(rows: pd.DataFrame, split_kind: str, source: str) -> None:
    """Refuse an official split of rows that carry no official RSNA set, before any image is decoded."""
    if split_kind == "official":
        official_split(rows["split"], where=source)


def data_from_cache(cache, source: str, fractions, seed: int, split_kind: str, problems) -> BoneAgeData:
    """Return the BoneAgeData of an opened cache, with its splits checked to be disjoint."""
    y = cache.table["boneage"].to_numpy(np.float32)
    ids = cache.table["id"].to_numpy(str)
    splits = make_splits(cache.table, y, fractions, seed, split_kind, source)
    check_disjoint(splits, ids)
    return BoneAgeData(X=cache.X, y=y, male=cache.table["male"].to_numpy(np.float32), ids=ids, splits=splits,
                       params=cache.params, source=source, cache_dir=cache.path, problems=list(problems), seed=seed,
                       split_kind=split_kind)


def image_problems(raw: RawDataset, bad: pd.DataFrame) -> list[Problem]:
    """Return a problem, with its label file row, for each image the cache could not use."""
    row_of = dict(zip(raw.good_rows["path"], raw.good_rows["row"]))
    return [Problem(relative(Path(p), raw.root), int(row_of[p]) or None, reason) for p, reason in zip(bad["path"], bad["problem"])]


def no_image_message(problems: list[Problem], where: str, report: Path | None, shown: int = 2) -> str:
    """Return one line saying why a dataset has no usable image: its first problems, their count, and the report."""
    if not problems:
        return (f"{where}: no usable image: no image found and no problem to report (no report written); "
                "check the folder, --layout and the label file's image column")
    first = " | ".join(p.line() for p in problems[:shown])
    more = f" | ... and {len(problems) - shown} more" if len(problems) > shown else ""
    listed = f"full list in {report}" if report else "no report written"
    return f"{where}: no usable image; {len(problems)} problem(s): {first}{more} ({listed}); fix them and prepare again"


def stop_on_problems(problems: list[Problem], where: str, report: Path | None, skip_bad: bool, n_good: int) -> None:
    """Raise one AebonetError listing the problems, unless skip_bad; and always when nothing usable is left."""
    if problems and not skip_bad:
        raise AebonetError(problems_message(problems, where, report))
    if n_good == 0:
        raise AebonetError(no_image_message(problems, where, report))


def load_raw(raw: RawDataset, params: PreprocessParams, cache_dir: Path, skip_bad: bool, workers: int | None,
             progress: bool, force: bool = False, max_pixels: int = MAX_PIXELS):
    """Build (or reuse) the cache of a checked dataset and stop on problems unless skip_bad; return cache, problems."""
    cache = cache_lib.build_cache(raw.good_rows, params, cache_dir, source=str(raw.root), workers=workers,
                                  progress=progress, force=force, max_pixels=max_pixels)
    problems = raw.problems + image_problems(raw, cache.bad)
    report = write_report(cache_dir, problems)
    stop_on_problems(problems, str(raw.root), report, skip_bad, len(cache.table))
    return cache, problems


def open_prepared(source: Path, image_size: int | None, skip_bad: bool, root: Path):
    """Open a cache folder made by `aebonet prepare` (at a smaller size, derived once under `root`), checking its problems."""
    cache = cache_lib.open_cache(source)
    if image_size is not None and cache.params.image_size != image_size:
        cache = cache_lib.derive_cache(cache, image_size, root)
    problems = read_report(source)
    stop_on_problems(problems, str(source), source / REPORT_NAME, skip_bad, len(cache.table))
    return cache, problems


def load_data(source: str | os.PathLike, image_size: int | None = 256, seed: int = 0,
              split: Sequence[float] = (0.7, 0.15, 0.15), split_kind: str = "paper", skip_bad: bool = False,
              cache_root: str | os.PathLike | None = None, clahe: bool = False, normalize: bool = False,
              layout: str = "auto", phantom_n: int = 1500, progress: bool = True, stratify: bool = False,
              csv: str | os.PathLike | None = None, image_col: str = "image", age_col: str = "boneage",
              sex_col: str | None = None, cache_dir: str | os.PathLike | None = None,
              workers: int | None = None, force: bool = False, max_pixels: int = MAX_PIXELS) -> BoneAgeData:
    """Read, check and cache a dataset, then return its arrays and splits (chapter 2).

    `source` is 'phantom' or 'phantom:N', a dataset folder (Kaggle, official RSNA, a CSV
    with `layout='csv'`, or a folder of unlabeled images), or a cache folder made by
    `aebonet prepare` (which brings its own preprocessing; `image_size=None` accepts
    any size). The cache goes to `cache_dir`, or under `cache_root` (default
    `$AEBONET_CACHE` or ~/.cache/aebonet); a second call with the same arguments only
    checks that nothing changed and opens it.

    `split_kind` says how to split: "paper" (the default, whatever the layout: a random
    split seeded by `seed` with the fractions `split`), "stratified" (the same sizes,
    stratified by age; `stratify=True` says the same) or "official" (the RSNA
    challenge's own sets, for a dataset in the official RSNA layout only). Images of
    more than `max_pixels` pixels are bad inputs, refused before they are decoded.
    A `cache_dir` holding the cache of another dataset is replaced only with `force=True`.
    """

    root = cache_lib.cache_root(cache_root)
    split_kind = chosen_split_kind(split_kind, stratify)
    check_fractions(split)
    if not is_phantom(source) and cache_lib.is_cache(source):
        cache, problems = open_prepared(Path(source), image_size, skip_bad, root)
        return data_from_cache(cache, str(source), split, seed, split_kind, problems)
    params = PreprocessParams(256 if image_size is None else image_size, clahe, normalize)
    params.check()
    folder = source
    if is_phantom(source):
        folder = phantom_dataset(phantom_count(source, phantom_n), params.image_size, seed, root, progress)
    raw = read_dataset(folder, layout, csv, image_col, age_col, sex_col)
    check_official_sets(raw.good_rows, split_kind, str(source))
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir(raw, params, root)
    cache, problems = load_raw(raw, params, cache_dir, skip_bad, workers, progress, force, max_pixels)
    return data_from_cache(cache, str(source), split, seed, split_kind, problems)
