"""The preprocessing cache: built once, reused when nothing changed, rebuilt (only what changed) otherwise."""

import os

import cv2
import numpy as np
import pandas as pd
import pytest
from conftest import blob_image

from aebonet_lib._engine import cache
from aebonet_lib.data.preprocess import PreprocessParams
from aebonet_lib.errors import AebonetError

PARAMS = PreprocessParams(image_size=32)


def rows_for(folder, n=6, size=(40, 30)):
    """Write n blob PNGs to `folder` and return the cache's input table for them."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        cv2.imwrite(str(folder / f"{i}.png"), blob_image(*size, seed=i))
        paths.append(str(folder / f"{i}.png"))
    return pd.DataFrame({"id": [str(i) for i in range(n)], "boneage": np.linspace(10, 200, n), "male": [1.0, 0.0] * (n // 2),
                         "split": "", "path": paths})


def test_build_in_two_processes_then_open(tmp_path):
    table = rows_for(tmp_path / "src", n=2 * cache.MIN_IMAGES_PER_WORKER)
    built = cache.build_cache(table, PARAMS, tmp_path / "c", workers=2, progress=False)
    assert isinstance(built.X, np.memmap) and built.X.shape == (16, 32, 32) and built.X.dtype == np.uint8
    assert built.table["id"].tolist() == [str(i) for i in range(16)]
    assert built.table["boneage"].dtype == np.float32 and built.bad.empty
    in_process = cache.build_cache(table, PARAMS, tmp_path / "one", workers=1, progress=False)
    assert np.array_equal(built.X, in_process.X)
    manifest = built.manifest
    assert manifest["params"]["image_size"] == 32 and len(manifest["files"]) == 16
    assert manifest["files"][0]["sha256"] == cache.file_sha256(table["path"][0])
    reopened = cache.open_cache(tmp_path / "c")
    assert np.array_equal(reopened.X, built.X)


def test_reused_when_nothing_changed(tmp_path):
    table = rows_for(tmp_path / "src")
    cache.build_cache(table, PARAMS, tmp_path / "c", workers=1, progress=False)
    stamp = os.stat(tmp_path / "c" / "images.npy").st_mtime_ns
    assert cache.is_current(tmp_path / "c", table, PARAMS)
    os.utime(table["path"][0])  # touched, contents the same: still current (the SHA-256 decides)
    cache.build_cache(table, PARAMS, tmp_path / "c", workers=1, progress=False)
    assert os.stat(tmp_path / "c" / "images.npy").st_mtime_ns == stamp


def test_changed_file_is_decoded_again(tmp_path, monkeypatch):
    table = rows_for(tmp_path / "src")
    before = np.array(cache.build_cache(table, PARAMS, tmp_path / "c", workers=1, progress=False).X)
    cv2.imwrite(table["path"][2], 255 - blob_image(40, 30, seed=2))
    decoded = []
    real = cache.prepare_file
    monkeypatch.setattr(cache, "prepare_file", lambda path, *args: decoded.append(path) or real(path, *args))
    after = cache.build_cache(table, PARAMS, tmp_path / "c", workers=1, progress=False).X
    assert decoded == [table["path"][2]]  # only the changed file
    assert not np.array_equal(after[2], before[2])
    assert np.array_equal(np.delete(after, 2, 0), np.delete(before, 2, 0))


def test_changed_parameters_rebuild_everything(tmp_path):
    table = rows_for(tmp_path / "src")
    cache.build_cache(table, PARAMS, tmp_path / "c", workers=1, progress=False)
    clahe = PreprocessParams(image_size=32, clahe=True)
    assert not cache.is_current(tmp_path / "c", table, clahe)
    rebuilt = cache.build_cache(table, clahe, tmp_path / "c", workers=1, progress=False)
    assert rebuilt.params == clahe and rebuilt.manifest["params"]["clahe"] is True


def test_changed_label_rewrites_the_table(tmp_path):
    table = rows_for(tmp_path / "src")
    cache.build_cache(table, PARAMS, tmp_path / "c", workers=1, progress=False)
    table.loc[1, "boneage"] = 99.5
    assert not cache.is_current(tmp_path / "c", table, PARAMS)
    assert cache.build_cache(table, PARAMS, tmp_path / "c", workers=1, progress=False).table["boneage"][1] == 99.5


def test_bad_images_are_left_out_and_listed(tmp_path):
    table = rows_for(tmp_path / "src")
    data = open(table["path"][1], "rb").read()
    open(table["path"][1], "wb").write(data[: len(data) // 2])  # truncated
    cv2.imwrite(table["path"][4], np.full((40, 30), 128, np.uint8))  # constant
    built = cache.build_cache(table, PARAMS, tmp_path / "c", workers=2, progress=False)
    assert built.table["id"].tolist() == ["0", "2", "3", "5"] and len(built.X) == 4
    reasons = dict(zip(built.bad["id"], built.bad["problem"]))
    assert "truncated PNG" in reasons["1"] and "constant image" in reasons["4"]
    fresh = np.array(cache.build_cache(table.drop(index=[1, 4]), PARAMS, tmp_path / "d", workers=1, progress=False).X)
    assert np.array_equal(built.X, fresh)  # the good rows are exactly what a clean build gives


def test_missing_source_is_a_bad_input_not_a_crash(tmp_path):
    table = rows_for(tmp_path / "src")
    os.remove(table["path"][0])
    built = cache.build_cache(table, PARAMS, tmp_path / "c", workers=1, progress=False)
    assert built.bad["problem"][0].startswith("cannot read the file")


def test_refuses_a_user_folder(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(AebonetError, match="not a cache"):
        cache.build_cache(rows_for(tmp_path / "src"), PARAMS, tmp_path / "mine", workers=1, progress=False)
    with pytest.raises(AebonetError, match="not a cache folder"):
        cache.open_cache(tmp_path / "mine")


def test_cache_root_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("AEBONET_CACHE", str(tmp_path))
    assert cache.cache_root() == tmp_path
    assert cache.cache_root(tmp_path / "x") == tmp_path / "x"
    monkeypatch.delenv("AEBONET_CACHE")
    assert cache.cache_root().parts[-2:] == (".cache", "aebonet")


def test_a_build_killed_midway_does_not_block_the_next(tmp_path):
    folder = tmp_path / "cache"
    folder.mkdir()
    (folder / cache.ALL_IMAGES).write_bytes(b"half")  # what a SIGKILL during decoding leaves
    cache.require_cache_folder(folder)  # no error: the folder holds only a cache's own files
    (folder / "notes.txt").write_text("mine")
    (folder / cache.ALL_IMAGES).unlink()
    with pytest.raises(AebonetError, match="not a cache"):
        cache.require_cache_folder(folder)


def test_a_prepared_cache_serves_a_smaller_size_derived_once(tmp_path):
    from aebonet_lib.data.loading import load_data

    table = rows_for(tmp_path / "src", n=12)
    big = cache.build_cache(table, PreprocessParams(image_size=64), tmp_path / "c64", workers=1, progress=False)
    data = load_data(tmp_path / "c64", 32, cache_root=tmp_path / "root", progress=False)
    assert data.X.shape == (12, 32, 32) and data.params.image_size == 32
    direct = cache.build_cache(table, PARAMS, tmp_path / "c32", workers=1, progress=False)
    assert np.abs(data.X.astype(int) - direct.X.astype(int)).mean() < 8  # the same images up to interpolation
    derived = cache.derived_dir(big, 32, tmp_path / "root")
    stamp = (derived / cache.IMAGES).stat().st_mtime_ns
    again = load_data(tmp_path / "c64", 32, cache_root=tmp_path / "root", progress=False)
    assert np.array_equal(again.X, data.X) and (derived / cache.IMAGES).stat().st_mtime_ns == stamp
    with pytest.raises(AebonetError, match="only upsample"):
        load_data(tmp_path / "c64", 128, cache_root=tmp_path / "root", progress=False)
