"""Data and files a user can trust: paths inside the dataset, no file replaced unasked, caches that survive
a full disk and two builds at once, runs that resume past a damaged checkpoint, and plain errors for plain mistakes."""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import threading
import time
from collections import namedtuple

import cv2
import numpy as np
import pandas as pd
import pytest
from conftest import blob_image, write_kaggle

from aebonet_lib._engine import cache, readers
from aebonet_lib._engine.cli import main
from aebonet_lib._engine.files import refuse_overwrite
from aebonet_lib.data import loading
from aebonet_lib.data.preprocess import PreprocessParams
from aebonet_lib.errors import AebonetError

PARAMS = PreprocessParams(image_size=32)


def load(source, **kwargs):
    """Call load_data at 32 pixels, one process, no progress bar."""
    return loading.load_data(source, 32, progress=False, workers=1, **kwargs)


def blob_rows(folder, n=6):
    """Write n blob PNGs to `folder` and return the cache's input table for them."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        cv2.imwrite(str(folder / f"{i}.png"), blob_image(40, 30, seed=i))
        paths.append(str(folder / f"{i}.png"))
    return pd.DataFrame({"id": [str(i) for i in range(n)], "boneage": np.linspace(10, 200, n), "male": 1.0,
                         "split": "", "path": paths})


def run_cli(argv, capsys) -> tuple[int, str]:
    """Run `aebonet` with argv; return the exit status and stderr."""
    status = main([str(a) for a in argv])
    return status, capsys.readouterr().err


# ---------------------------------------------------------------- a label CSV names images outside its folder

def test_csv_image_paths_outside_the_csv_folder_are_refused(tmp_path):
    outside = tmp_path / "secret.png"
    cv2.imwrite(str(outside), blob_image(40, 30))
    folder = tmp_path / "ds"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), blob_image(40, 30, seed=1))
    (folder / "link.png").symlink_to(outside)
    pd.DataFrame({"image": ["a.png", "../secret.png", str(outside), "link.png"],
                  "boneage": [10, 20, 30, 40]}).to_csv(folder / "labels.csv", index=False)
    with pytest.raises(AebonetError, match=r"3 image path\(s\) lead outside the CSV's folder") as error:
        readers.read_dataset(folder, layout="csv")
    message = str(error.value)
    assert "row 3: ../secret.png" in message and f"row 4: {outside}" in message and "row 5: link.png" in message
    assert "row 2" not in message and "\n" not in message


# ---------------------------------------------------------------- no user file replaced without --force

def test_refuse_overwrite_names_the_files_and_force(tmp_path):
    keep = tmp_path / "keep.csv"
    keep.write_text("mine")
    refuse_overwrite([tmp_path / "new.csv", None], force=False)
    refuse_overwrite([keep], force=True)
    with pytest.raises(AebonetError, match=r"--out .*keep.csv: already exists; pass --force to replace it"):
        refuse_overwrite([keep, tmp_path / "new.csv"], force=False)
    with pytest.raises(AebonetError, match="is a folder; give a file path"):
        refuse_overwrite([tmp_path], force=True)


def test_commands_refuse_to_replace_an_existing_output_file(tmp_path, capsys):
    keep = tmp_path / "keep.csv"
    keep.write_text("mine")
    status, err = run_cli(["predict", "--model", tmp_path / "none.keras", tmp_path / "x.png", "--out", keep], capsys)
    assert status == 2 and err == f"aebonet predict: error: --out {keep}: already exists; pass --force to replace it, " \
                                  "or choose another path\n"
    assert keep.read_text() == "mine"
    status, err = run_cli(["predict", "--model", tmp_path / "none.keras", tmp_path / "x.png", "--out", keep, "--force"],
                          capsys)
    assert status == 2 and "already exists" not in err  # on to the next check: the model is missing
    (tmp_path / "bench.md").write_text("mine")
    assert run_cli(["bench", "--quick", "--out", tmp_path / "bench.json"], capsys) == (
        2, f"aebonet bench: error: --out {tmp_path / 'bench.md'}: already exists; pass --force to replace it, "
           "or choose another path\n")
    status, err = run_cli(["phantom", "--report", "--report-out", keep], capsys)
    assert status == 2 and "already exists" in err
    (tmp_path / "metrics.json").write_text("{}")
    status, err = run_cli(["evaluate", "--model", tmp_path / "none.keras", "--out", tmp_path], capsys)
    assert status == 2 and "metrics.json: already exists" in err
    assert keep.read_text() == "mine" and (tmp_path / "bench.md").read_text() == "mine"


# ---------------------------------------------------------------- a cache of another dataset

def test_a_cache_of_another_dataset_is_replaced_only_with_force(tmp_path, capsys):
    write_kaggle(tmp_path / "a", n=8)
    write_kaggle(tmp_path / "b", n=8, seed=1)
    first = load(tmp_path / "a", cache_dir=tmp_path / "c")
    with pytest.raises(AebonetError, match=r"c: holds the cache of .*a, not of .*b; choose another --out folder, "
                                           r"or pass --force"):
        load(tmp_path / "b", cache_dir=tmp_path / "c")
    assert np.array_equal(load(tmp_path / "a", cache_dir=tmp_path / "c").X, first.X)  # untouched
    status, err = run_cli(["prepare", "--data", tmp_path / "b", "--size", 32, "--workers", 1, "--out", tmp_path / "c"],
                          capsys)
    assert status == 2 and "holds the cache of" in err
    assert run_cli(["prepare", "--data", tmp_path / "b", "--size", 32, "--workers", 1, "--out", tmp_path / "c",
                    "--force"], capsys)[0] == 0
    assert cache.open_cache(tmp_path / "c").manifest["source"] == str(tmp_path / "b")


# ---------------------------------------------------------------- a full disk

def test_a_cache_that_does_not_fit_on_the_disk_is_refused_before_writing(tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(cache.shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 1000, 1000))
    with pytest.raises(AebonetError, match=r"c: the cache needs 6.1 kB of free disk space, 1.0 kB available; "
                                           "free some space"):
        cache.build_cache(blob_rows(tmp_path / "src"), PARAMS, tmp_path / "c", workers=1, progress=False)
    assert not [p for p in (tmp_path / "c").iterdir() if p.name != cache.LOCK]


def test_a_disk_that_fills_up_during_the_build_is_an_error_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache, "fill_images", disk_full)
    with pytest.raises(AebonetError, match=r"c: the disk filled up while writing the cache \(6.1 kB of images\)"):
        cache.build_cache(blob_rows(tmp_path / "src"), PARAMS, tmp_path / "c", workers=1, progress=False)
    assert [p.name for p in (tmp_path / "c").iterdir()] == [cache.LOCK]


def test_the_image_file_takes_its_disk_space_before_any_image_is_written(tmp_path):
    X = cache.allocate_images(tmp_path / "x.npy", (4, 64, 64))
    assert os.stat(tmp_path / "x.npy").st_blocks * 512 >= 4 * 64 * 64  # not a sparse file: no SIGBUS on a full disk
    X[2] = 7
    X.flush()
    del X
    assert np.load(tmp_path / "x.npy")[2].min() == 7 and np.load(tmp_path / "x.npy")[1].max() == 0


def test_a_killed_build_leaves_nothing_behind_after_the_next(tmp_path):
    folder = tmp_path / "c"
    folder.mkdir()
    (folder / cache.ALL_IMAGES).write_bytes(b"half")  # what a build killed before this version left
    (folder / ".all-images.abc123.tmp.npy").write_bytes(b"half")
    cache.build_cache(blob_rows(tmp_path / "src"), PARAMS, folder, workers=1, progress=False)
    assert sorted(p.name for p in folder.iterdir()) == sorted([cache.LOCK, cache.IMAGES, cache.MANIFEST, cache.TABLE])


# ---------------------------------------------------------------- two builds in one folder

def test_a_second_build_waits_for_the_one_holding_the_lock(tmp_path, capsys):
    table = blob_rows(tmp_path / "src")
    folder = tmp_path / "c"
    folder.mkdir()
    with open(folder / cache.LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another build under way
        worker = threading.Thread(target=cache.build_cache, args=(table, PARAMS, folder),
                                  kwargs={"workers": 1, "progress": False})
        worker.start()
        time.sleep(1.0)
        assert worker.is_alive() and not (folder / cache.MANIFEST).exists()
    worker.join(60)
    assert not worker.is_alive() and cache.is_cache(folder)
    assert f"{folder}: another process is building this cache; waiting for it to finish" in capsys.readouterr().err


def test_two_builds_at_once_both_end_with_a_whole_cache(tmp_path, monkeypatch):
    table = blob_rows(tmp_path / "src", n=16)
    errors = []
    fill_images = cache.fill_images

    def slow_fill(*args, **kwargs):
        time.sleep(0.5)  # so that without the lock both builds would write at once
        return fill_images(*args, **kwargs)

    monkeypatch.setattr(cache, "fill_images", slow_fill)

    def build():
        try:
            cache.build_cache(table, PARAMS, tmp_path / "c", workers=1, progress=False)
        except Exception as e:  # noqa: BLE001 - the test reports any failure
            errors.append(e)

    threads = [threading.Thread(target=build) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(cache.open_cache(tmp_path / "c").X) == 16
    assert not [p for p in (tmp_path / "c").iterdir() if p.name.startswith(".all-images")]


# ---------------------------------------------------------------- user mistakes are not bugs

@pytest.mark.parametrize("error, said", [
    (PermissionError(errno.EACCES, "Permission denied", "/data/out"),
     "/data/out: permission denied; choose a path you may write (and read), or change its permissions"),
    (IsADirectoryError(errno.EISDIR, "Is a directory", "/data/out"),
     "/data/out: is a folder where a file is expected; give a file path"),
    (FileExistsError(errno.EEXIST, "File exists", "/data/out"), "/data/out: already exists; remove it or choose another path"),
    (OSError(errno.ENOSPC, "No space left on device"), "a file: no space left on the disk; free some space"),
    (PermissionError("read-only"), "a file: permission denied"),
])
def test_file_system_errors_are_one_line_user_errors(monkeypatch, capsys, tmp_path, error, said):
    from aebonet_lib import phantom

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(phantom, "write_dataset", fail)
    status, err = run_cli(["phantom", "--out", tmp_path / "p", "--n", 2], capsys)
    assert status == 2 and err.startswith(f"aebonet phantom: error: {said}") and err.count("\n") == 1
    assert "internal error" not in err


def test_a_folder_path_under_a_file_is_a_user_error(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    status, err = run_cli(["phantom", "--out", tmp_path / "file" / "p", "--n", 2, "--size", 32], capsys)
    assert status == 2 and f"{tmp_path / 'file'}" in err and "part of this path is a file, not a folder" in err


def test_other_errors_are_still_reported_as_bugs(monkeypatch, capsys, tmp_path):
    from aebonet_lib import phantom

    monkeypatch.setattr(phantom, "write_dataset", lambda *a, **k: [][1])
    status, err = run_cli(["phantom", "--out", tmp_path / "p", "--n", 2], capsys)
    assert status == 1 and "internal error: IndexError" in err and "please report it" in err


# ---------------------------------------------------------------- a dataset with no usable image

def test_no_usable_image_says_what_was_wrong_and_where_the_report_is(tmp_path):
    write_kaggle(tmp_path / "k", n=5)
    for path in (tmp_path / "k" / "boneage-training-dataset").iterdir():
        path.write_bytes(b"not a png")
    with pytest.raises(AebonetError) as error:
        load(tmp_path / "k", skip_bad=True, cache_dir=tmp_path / "c")
    message = str(error.value)
    assert "no usable image; 5 problem(s): boneage-training-dataset/1000.png row 2: cannot decode" in message
    assert " | ... and 3 more" in message and f"full list in {tmp_path / 'c' / readers.REPORT_NAME}" in message
    assert "None" not in message and "\n" not in message


def test_no_image_at_all_says_that_no_report_was_written(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "labels.csv").write_text("image,boneage\n")
    with pytest.raises(AebonetError, match="empty: no usable image: no image found and no problem to report "
                                           r"\(no report written\)"):
        load(tmp_path / "empty", layout="csv", cache_dir=tmp_path / "c")


# ---------------------------------------------------------------- a damaged checkpoint on resume

def killed_run(data, config, run_dir, monkeypatch, after_epochs: int):
    """Train in run_dir until `after_epochs` epochs have ended, then stop as a killed run would."""
    from aebonet_lib._engine import checkpoints
    from aebonet_lib._engine import runner as training

    original = checkpoints.EpochCheckpoint.on_epoch_end

    def killed(self, epoch, logs=None):
        original(self, epoch, logs)
        if epoch + 1 == after_epochs:
            raise RuntimeError("killed")

    with monkeypatch.context() as patch:
        patch.setattr(checkpoints.EpochCheckpoint, "on_epoch_end", killed)
        with pytest.raises(RuntimeError, match="killed"):
            training.train(data, config, run_dir, backbone="scratch", progress=False)


def test_a_damaged_checkpoint_resumes_from_the_one_before(tmp_path, monkeypatch):
    from aebonet_lib._engine import checkpoints
    from aebonet_lib._engine import runner as training
    from aebonet_lib.config import get_config

    config = get_config("cpu", image_size=32, width=0.125, reg_num_epochs=3, precision="fp32", phantom_n=40)
    data = loading.load_data("phantom:40", 32, split=config.split, cache_root=tmp_path / "cache", progress=False)
    run_dir = tmp_path / "run"
    killed_run(data, config, run_dir, monkeypatch, after_epochs=2)
    state = checkpoints.read_state(run_dir)
    assert state["epochs_done"] == 2 and state["previous"]["epochs_done"] == 1
    assert {"epoch_0001.keras", "epoch_0002.keras"} <= {p.name for p in (run_dir / "checkpoint").iterdir()}
    shutil.copytree(run_dir, tmp_path / "both")
    latest = run_dir / "checkpoint" / "epoch_0002.keras"
    latest.write_bytes(latest.read_bytes()[:1000])  # a disk error, or a copy cut short
    with pytest.warns(UserWarning) as warned:
        training.train(data, config, run_dir, backbone="scratch", resume=True, progress=False)
    said = [str(w.message) for w in warned if "checkpoint" in str(w.message)]
    assert said[0].startswith(f"{latest}: damaged checkpoint, cannot be loaded (") and len(said) == 2
    assert said[1] == f"resuming from {run_dir / 'checkpoint' / 'epoch_0001.keras'}, epoch 1, the checkpoint before"
    state = checkpoints.read_state(run_dir)
    assert state["finished"] and state["epochs_done"] == 3
    assert pd.read_csv(run_dir / "history.csv")["epoch"].tolist() == [0, 1, 2]
    for name in ("epoch_0001.keras", "epoch_0002.keras"):
        (tmp_path / "both" / "checkpoint" / name).write_bytes(b"garbage")
    with pytest.warns(UserWarning), pytest.raises(AebonetError, match="both: cannot be resumed: no checkpoint loads .* "
                                                                       "start the run again in a new folder"):
        training.train(data, config, tmp_path / "both", backbone="scratch", resume=True, progress=False)
