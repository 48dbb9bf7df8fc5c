"""Tests of `aebonet pretrain | train | evaluate | predict`: end to end, bad input, resume after SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from aebonet_lib._engine.cli import main
from aebonet_lib._engine.files import read_json

REPO = Path(__file__).resolve().parents[1]
TINY = ["--data", "phantom:60", "--size", "32", "--width", "0.125"]


pytestmark = pytest.mark.usefixtures("module_cache")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, module_cache) -> Path:
    """Return a folder with a pretraining run (ae) and an AE-BoNet run (reg) made through the CLI."""
    runs = tmp_path_factory.mktemp("runs")
    assert main(["pretrain", *TINY, "--epochs", "2", "--out", str(runs / "ae")]) == 0
    assert main(["train", *TINY, "--epochs", "1", "--encoder", str(runs / "ae" / "encoder.keras"),
                 "--out", str(runs / "reg")]) == 0
    return runs


def test_pretrain_and_train_write_their_files(runs):
    assert (runs / "ae" / "encoder.keras").is_file() and (runs / "ae" / "stages.csv").is_file()
    assert (runs / "reg" / "model.keras").is_file() and (runs / "reg" / "model.json").is_file()
    assert read_json(runs / "ae" / "config.json")["command"].startswith("aebonet")
    assert read_json(runs / "reg" / "config.json")["backbone"] == "aebonet"
    assert read_json(runs / "ae" / "config.json")["config"]["split_kind"] == "paper"  # the default, recorded


def test_evaluate_prints_mae_and_mse_with_intervals(runs, capsys):
    assert main(["evaluate", "--model", str(runs / "reg" / "model.keras")]) == 0  # --data: the training data
    captured = capsys.readouterr()
    out = captured.out
    assert "MAE" in out and "MSE" in out and "95% CI" not in out  # 9 test images: too few for an interval
    assert "below 20: a bootstrap interval over so few means nothing" in captured.err
    metrics = read_json(runs / "reg" / "metrics.json")
    assert {"mae", "mse", "mae_ci95", "n"} <= set(metrics) and len(metrics["mae_ci95"]) == 2
    assert f"{metrics['mae']:.2f}" in out
    assert metrics["data"] == "phantom:60"
    assert metrics["n"] == len((runs / "reg" / "splits" / "test.txt").read_text().split())


def test_evaluate_refuses_data_the_model_was_not_trained_on(runs, capsys):
    assert main(["evaluate", "--model", str(runs / "reg" / "model.keras"), "--data", "phantom:40"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bars of the new phantom
    assert err.startswith("aebonet evaluate: error:")
    assert "trained on other data than phantom:40" in err and "pass --data with the data it was trained on" in err


def test_train_with_a_stratified_split_records_it(tmp_path, capsys):
    from aebonet_lib.data.loading import load_data

    assert main(["train", *TINY, "--epochs", "1", "--split", "stratified", "--out", str(tmp_path / "strat")]) == 0
    assert read_json(tmp_path / "strat" / "config.json")["config"]["split_kind"] == "stratified"
    data = load_data("phantom:60", 32, split=(0.7, 0.15, 0.15), split_kind="stratified", progress=False)
    assert (tmp_path / "strat" / "splits" / "test.txt").read_text().split() == data.ids[data.splits["test"]].tolist()
    capsys.readouterr()
    assert main(["train", *TINY, "--split", "official", "--out", str(tmp_path / "official")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("aebonet train: error:") and len(err.splitlines()) == 1
    assert "belong to no official RSNA set" in err and "--split paper" in err
    assert not (tmp_path / "official" / "config.json").exists()


def test_predict_prints_csv_and_writes_it_with_out(runs, module_cache, capsys, tmp_path):
    images = sorted(next(module_cache.rglob("boneage-training-dataset")).glob("*.png"))[:3]
    model = str(runs / "reg" / "model.keras")
    assert main(["predict", "--model", model, *map(str, images)]) == 0
    lines = [line for line in capsys.readouterr().out.strip().splitlines() if not line.startswith("#")]
    assert lines[0] == ("file,bone_age_months,bone_age,predicted_raw,out_of_range,ood_score,unlike_training,flagged")
    assert len(lines) == 4
    assert main(["predict", "--model", model, *map(str, images), "--out", str(tmp_path / "ages.csv")]) == 0
    assert len(pd.read_csv(tmp_path / "ages.csv", comment="#")) == 3  # the CSV opens with the disclaimer


def test_existing_run_without_resume_is_an_error(runs, capsys):
    assert main(["pretrain", *TINY, "--epochs", "2", "--out", str(runs / "ae")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("aebonet pretrain: error:") and "--resume" in err and len(err.strip().splitlines()) == 1


def test_resume_on_a_finished_run_says_so(runs, capsys):
    assert main(["train", *TINY, "--resume", "--out", str(runs / "reg")]) == 0
    assert "already finished" in capsys.readouterr().out


def test_bad_files_give_one_line_errors(runs, tmp_path, capsys):
    corrupt = tmp_path / "model.keras"
    corrupt.write_text("garbage")
    assert main(["evaluate", "--model", str(corrupt), "--data", "phantom:60"]) == 2
    assert main(["train", *TINY, "--encoder", str(tmp_path / "none.keras"), "--out", str(tmp_path / "r")]) == 2
    assert main(["predict", "--model", str(runs / "reg" / "model.keras"), str(tmp_path / "none.png")]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and all(": error: " in line for line in errors)
    assert "not a Keras model file" in errors[0] and "none.keras: file not found" in errors[1]


def test_train_without_encoder_says_it_trains_the_from_scratch_control(tmp_path, capsys):
    assert main(["train", *TINY, "--epochs", "1", "--out", str(tmp_path / "scratch")]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("training the from-scratch control (no --encoder given")
    assert read_json(tmp_path / "scratch" / "config.json")["backbone"] == "scratch"


def test_train_refuses_an_encoder_pretrained_on_another_split(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # relative paths, recorded as absolute ones
    assert main(["phantom", "--out", "hands", "--n", "60", "--size", "32"]) == 0
    tiny = ["--data", "hands", "--size", "32", "--width", "0.125", "--epochs", "1"]
    assert main(["pretrain", *tiny, "--seed", "0", "--out", "ae"]) == 0
    capsys.readouterr()
    assert main(["train", *tiny, "--seed", "1", "--encoder", "ae/encoder.keras", "--out", "leaky"]) == 2
    err = capsys.readouterr().err.strip()
    assert "of this run's validation/test images" in err and "--seed 0" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "leaky" / "config.json").exists()
    assert main(["train", *tiny, "--seed", "0", "--encoder", "ae/encoder.keras", "--out", "reg"]) == 0
    assert capsys.readouterr().out.startswith("training AE-BoNet on the pretrained encoder ae/encoder.keras")
    record = read_json(tmp_path / "reg" / "config.json")
    assert record["encoder"] == str(tmp_path.resolve() / "ae" / "encoder.keras")
    assert record["data"] == str(tmp_path.resolve() / "hands")


def test_bad_arguments_exit_nonzero(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--out", "x", "--epochs", "0"])
    assert exit_info.value.code == 2
    assert "must be greater than 0" in capsys.readouterr().err


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 240) -> None:
    """Wait until `path` exists, failing if the process ends first or time runs out."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


def test_resume_after_sigkill_finishes_without_starting_over(tmp_path, module_cache):
    run_dir = tmp_path / "killed"
    command = [sys.executable, "-m", "aebonet_lib.cli", "pretrain", *TINY, "--epochs", "12", "--out", str(run_dir)]
    env = {**os.environ, "AEBONET_CACHE": str(module_cache), "TF_CPP_MIN_LOG_LEVEL": "2"}
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(run_dir / "checkpoint" / "state.json", process)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    done = read_json(run_dir / "checkpoint" / "state.json")["epochs_done"]
    assert 1 <= done < 12 and not (run_dir / "encoder.keras").exists()
    kept = pd.read_csv(run_dir / "history.csv").head(done)
    resumed = subprocess.run([*command, "--resume"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    history = pd.read_csv(run_dir / "history.csv")
    assert list(history["epoch"]) == list(range(12))
    pd.testing.assert_frame_equal(history.head(done), kept)
    assert (run_dir / "encoder.keras").is_file() and (run_dir / "autoencoder.keras").is_file()
    assert len(pd.read_csv(run_dir / "stages.csv")) == 5
