"""Splits: the paper's exact counts, proportional scaling, stratification, disjointness, save and load."""

import numpy as np
import pytest

from aebonet_lib.config import PAPER_SPLIT, PAPER_SPLIT_SIZES, get_config
from aebonet_lib.data import loading
from aebonet_lib.errors import AebonetError


def sizes(parts: dict) -> tuple[int, ...]:
    """Return the number of indices in train, val and test."""
    return tuple(len(parts[name]) for name in ("train", "val", "test"))


def as_lists(parts: dict) -> dict:
    """Return a split with plain lists of indices, to compare two splits with ==."""
    return {name: index.tolist() for name, index in parts.items()}


def test_paper_split_gives_the_papers_counts():
    assert sizes(loading.paper_split(12611)) == PAPER_SPLIT_SIZES == (10088, 2323, 200)
    assert sizes(loading.split_indices(12611, get_config("paper").split, seed=3)) == (10088, 2323, 200)


def test_smaller_sets_keep_the_proportions():
    assert sizes(loading.paper_split(1261)) == (1009, 232, 20)
    assert sizes(loading.split_indices(100, (0.7, 0.15, 0.15))) == (70, 15, 15)


def test_tiny_set_still_has_one_image_per_split():
    assert sizes(loading.paper_split(8)) == (6, 1, 1)


@pytest.mark.parametrize("stratify", [False, True])
def test_splits_cover_every_image_once(stratify):
    ages = np.random.default_rng(0).uniform(0, 228, 500)
    parts = loading.split_indices(500, PAPER_SPLIT, seed=1, ages=ages, stratify=stratify)
    together = np.concatenate(list(parts.values()))
    assert sorted(together) == list(range(500))
    loading.check_disjoint(parts, [str(i) for i in range(500)])


def test_same_seed_same_split_other_seed_other_split():
    a, b, c = loading.paper_split(1000, seed=0), loading.paper_split(1000, seed=0), loading.paper_split(1000, seed=1)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["test"], c["test"])


def test_stratified_test_set_spans_every_age():
    ages = np.sort(np.random.default_rng(0).uniform(0, 228, 1000))
    test_ages = ages[loading.split_indices(1000, (0.8, 0.1, 0.1), seed=0, ages=ages, stratify=True)["test"]]
    deciles = np.quantile(ages, np.linspace(0, 1, 11))
    counts = np.histogram(test_ages, deciles)[0]
    assert counts.tolist() == [10] * 10  # exactly one tenth of the test set in each age decile


def test_stratified_needs_known_ages():
    with pytest.raises(AebonetError, match="needs a known bone age"):
        loading.split_indices(3, PAPER_SPLIT, ages=np.array([1.0, np.nan, 3.0]), stratify=True)


def test_bad_fractions_are_refused():
    with pytest.raises(AebonetError, match="sum to 1"):
        loading.split_indices(10, (0.5, 0.3, 0.3), seed=0)


def test_overlap_is_caught():
    with pytest.raises(AebonetError, match=r"'train' and 'test' share 1 image\(s\), for example id b"):
        loading.check_disjoint({"train": np.array([0, 1]), "val": np.array([2]), "test": np.array([1])}, ["a", "b", "c"])


def test_official_split_from_set_names():
    parts = loading.official_split(["train", "val", "train", "test"])
    assert {k: v.tolist() for k, v in parts.items()} == {"train": [0, 2], "val": [1], "test": [3]}
    with pytest.raises(AebonetError, match="unknown set name"):
        loading.official_split(["train", "validation"])


def test_make_split_does_what_its_kind_says():
    ages = np.linspace(0, 240, 40)
    names = ["train"] * 30 + ["val"] * 6 + ["test"] * 4
    for kind, expected in [("paper", loading.paper_split(40, seed=2)),
                           ("stratified", loading.stratified_split(ages, PAPER_SPLIT, seed=2)),
                           ("official", loading.official_split(names))]:
        made = loading.make_split(kind, 40, PAPER_SPLIT, seed=2, ages=ages, split_names=names)
        assert as_lists(made) == as_lists(expected)
    with pytest.raises(AebonetError, match="split kind 'random': choose one of paper, stratified, official"):
        loading.make_split("random", 40)


def test_official_split_needs_a_set_for_every_image():
    with pytest.raises(AebonetError, match=r"^rsna: 2 of 3 images belong to no official RSNA set.*'stratified'$"):
        loading.official_split(["train", "", ""], where="rsna")
    with pytest.raises(AebonetError, match="4 of 4 images belong to no official RSNA set"):
        loading.make_split("official", 4)


def test_save_and_load_round_trip(tmp_path):
    ids = np.array([f"id{i}" for i in range(20)])
    parts = loading.paper_split(20, seed=5)
    folder = loading.save_splits(tmp_path, parts, ids)
    assert (folder / "test.txt").read_text().split() == list(ids[parts["test"]])
    shuffled = ids[::-1]  # the same data in another order: indices follow the ids
    loaded = loading.load_splits(tmp_path, shuffled)
    assert all(sorted(shuffled[loaded[k]]) == sorted(ids[parts[k]]) for k in parts)


def test_load_refuses_unknown_ids_and_overlap(tmp_path):
    ids = [f"id{i}" for i in range(10)]
    loading.save_splits(tmp_path, loading.paper_split(10), ids)
    with pytest.raises(AebonetError, match="not in this dataset"):
        loading.load_splits(tmp_path, ids[:5])
    (tmp_path / "splits" / "val.txt").write_text((tmp_path / "splits" / "test.txt").read_text())
    with pytest.raises(AebonetError, match="share"):
        loading.load_splits(tmp_path, ids)
    with pytest.raises(AebonetError, match="no split files"):
        loading.load_splits(tmp_path / "elsewhere", ids)
