"""Train / validation / test splits: random, age-stratified or official; saved as id lists (chapter 2).

A split is a dict from a name ("train", "val", "test") to sorted indices into the
dataset's arrays. The paper split the 12,611 RSNA training images at random into
10,088 / 2,323 / 200; `paper_split` gives exactly those counts, and the same
proportions for smaller sets. Which kind of split a dataset gets is always asked
for by name (`make_split`): "paper" (the default), "stratified" or "official".
Whatever made a split, `check_disjoint` makes sure that no image is in two of them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from aebonet_lib.config import PAPER_SPLIT, SPLIT_KINDS
from aebonet_lib.errors import AebonetError
from aebonet_lib.runs.files import atomic_write

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
