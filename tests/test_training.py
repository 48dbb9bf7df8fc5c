"""Tests of the run folders (_engine.runner, checkpoints, modelfiles): staged pretraining, fine-tuning, resume,
sidecars, precision, distribution. The models themselves are test_models's.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from conftest import killed_after_epoch

from aebonet_lib._engine import checkpoints, devices, hardware, modelfiles, records
from aebonet_lib._engine import runner as training
from aebonet_lib._engine.files import read_json, write_json
from aebonet_lib._engine.predict import predict_arrays
from aebonet_lib.config import Config, get_config
from aebonet_lib.data import loading
from aebonet_lib.data.loading import load_data
from aebonet_lib.errors import AebonetError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def config():
    """Return a tiny recipe: 32 px, width 0.125, two one-epoch stages, two regressor epochs, fp32 on any machine."""
    return get_config("cpu", image_size=32, width=0.125, ae_stages=(1, 1), reg_num_epochs=2, phantom_n=60,
                      precision="fp32")


@pytest.fixture(scope="module")
def data(tmp_path_factory, config):
    """Return 60 phantom radiographs at 32 px, cached in a temporary folder."""
    cache = tmp_path_factory.mktemp("cache")
    return load_data("phantom:60", 32, split=config.split, cache_root=cache, progress=False)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, data, config) -> Path:
    """Return a finished tiny pretraining run folder."""
    return training.pretrain(data, config, tmp_path_factory.mktemp("runs") / "ae", progress=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data, config, pretrained) -> Path:
    """Return a finished tiny AE-BoNet training run folder."""
    run_dir = tmp_path_factory.mktemp("runs") / "reg"
    return training.train(data, config, run_dir, encoder=pretrained / "encoder.keras", progress=False)


def test_stage_epochs_scale_in_proportion():
    assert training.stage_epochs((300, 200, 100, 150, 150)) == [300, 200, 100, 150, 150]
    assert training.stage_epochs((2, 2, 1, 1, 1), 14) == [4, 4, 2, 2, 2]
    assert training.stage_epochs((2, 2, 1, 1, 1), 2) == [1, 1]
    assert sum(training.stage_epochs((300, 200, 100, 150, 150), 7)) == 7


def test_pretrain_writes_the_run_folder(pretrained):
    for name in ("config.json", "history.csv", "stages.csv", "autoencoder.keras", "encoder.keras", "encoder.json",
                 "splits/train.txt", "splits/val.txt", "splits/test.txt"):
        assert (pretrained / name).is_file(), name
    assert any((pretrained / "logs").rglob("events.out.tfevents.*"))
    assert checkpoints.run_finished(pretrained)
    assert read_json(pretrained / "config.json")["plan"] == [1, 1]


def test_stages_csv_has_one_row_per_stage(pretrained):
    stages = pd.read_csv(pretrained / "stages.csv")
    history = pd.read_csv(pretrained / "history.csv")
    assert list(stages["stage"]) == [1, 2]
    assert list(stages["end_epoch"]) == [1, 2]
    for column in ("loss", "val_loss", "accuracy", "val_accuracy", "psnr", "val_psnr", "ssim", "val_ssim", "seconds"):
        assert column in stages.columns, column
    assert list(history["epoch"]) == [0, 1]
    np.testing.assert_allclose(stages["loss"], history["loss"])
    assert (stages["seconds"] > 0).all()


def test_pretrained_encoder_reconstructs_better_than_untrained(pretrained, data):
    autoencoder, meta = modelfiles.load_model(pretrained / "autoencoder.keras")
    x = data.images("val")
    untrained = training.new_autoencoder(meta.config)
    error = np.mean((np.asarray(autoencoder(x)) - x) ** 2)
    assert error < np.mean((np.asarray(untrained(x)) - x) ** 2)


def test_existing_run_needs_resume(pretrained, data, config):
    with pytest.raises(AebonetError, match="--resume"):
        training.pretrain(data, config, pretrained, progress=False)


def test_resume_on_a_finished_run_changes_nothing(pretrained, data, config):
    before = (pretrained / "history.csv").read_text()
    assert training.pretrain(data, config, pretrained, resume=True, progress=False) == pretrained
    assert (pretrained / "history.csv").read_text() == before


def test_a_run_of_another_kind_is_refused(pretrained, data, config):
    with pytest.raises(AebonetError, match="pretrain run, not a train run"):
        training.train(data, config, pretrained, backbone="scratch", resume=True, progress=False)


def test_train_keeps_the_epoch_with_the_best_validation_mae(trained, data):
    history = pd.read_csv(trained / "history.csv")
    meta = modelfiles.read_model_meta(trained / "model.keras")
    assert list(history["epoch"]) == [0, 1]
    assert meta.best_epoch == int(history["val_mae"].idxmin()) + 1
    model, _ = modelfiles.load_model(trained / "model.keras")
    val = data.splits["val"]
    mae = np.mean(np.abs(predict_arrays(model, data.X[val]) - data.y[val]))
    assert mae == pytest.approx(history["val_mae"].min(), rel=1e-3)


def test_model_json_says_how_to_use_the_model(trained, data):
    raw = read_json(trained / "model.json")
    assert raw["kind"] == "regressor" and raw["image_size"] == 32 and raw["data"]["seed"] == data.seed
    meta = modelfiles.read_model_meta(trained / "model.keras")
    assert meta.kind == "regressor" and meta.backbone == "aebonet" and meta.sex_input is False
    assert meta.image_size == 32 and meta.params.image_size == 32 and meta.config.image_size == 32
    assert meta.y_mean == pytest.approx(float(np.mean(data.y[data.splits["train"]])), rel=1e-5)
    assert meta.source == data.source and meta.seed == data.seed and meta.notes == {}


def test_model_meta_is_typed_and_round_trips_unknown_keys(trained, tmp_path):
    meta = modelfiles.read_model_meta(trained / "model.keras")
    again = modelfiles.ModelMeta.from_dict(meta.to_dict() | {"attribution": "cite us"})
    assert dataclasses.replace(again, notes={}) == meta and again.notes == {"attribution": "cite us"}
    assert isinstance(meta.config, Config) and isinstance(meta.best_epoch, int)
    bad = tmp_path / "bad.keras"
    shutil.copyfile(trained / "model.keras", bad)
    bad.with_suffix(".json").write_text(json.dumps(meta.to_dict() | {"kind": "painting"}))
    with pytest.raises(AebonetError, match="bad.json: model sidecar of kind 'painting'"):
        modelfiles.read_model_meta(bad)


def test_save_and_load_give_identical_predictions(trained, data, tmp_path):
    model, meta = modelfiles.load_model(trained / "model.keras")
    path = modelfiles.save_model(model, tmp_path / "copy.keras", meta)
    again, meta_again = modelfiles.load_model(path)
    x = data.images("test")
    np.testing.assert_array_equal(np.asarray(model(x)), np.asarray(again(x)))
    assert meta_again == meta and meta_again.backbone == "aebonet"


def test_missing_encoder_file_is_refused_before_anything_is_written(data, config, tmp_path):
    with pytest.raises(AebonetError, match="nope.keras: file not found"):
        training.train(data, config, tmp_path / "run", encoder=tmp_path / "nope.keras", progress=False)
    assert not (tmp_path / "run").exists()


def test_a_run_that_fails_to_start_leaves_no_run_behind(data, config, tmp_path):
    with pytest.raises(AebonetError, match="none.h5"):
        training.train(data, config, tmp_path / "run", backbone="mobilenet", weights=str(tmp_path / "none.h5"),
                       progress=False)
    assert not records.has_record(tmp_path / "run")


def test_aebonet_without_encoder_is_refused(data, config, tmp_path):
    with pytest.raises(AebonetError, match="--encoder"):
        training.train(data, config, tmp_path / "run", progress=False)


def test_a_regressor_is_not_an_encoder(trained, data, config, tmp_path):
    with pytest.raises(AebonetError, match="not an encoder"):
        training.train(data, config, tmp_path / "run", encoder=trained / "model.keras", progress=False)


def test_encoder_of_another_size_is_refused(pretrained, data, tmp_path):
    config_64 = get_config("cpu", image_size=64, width=0.125)
    with pytest.raises(AebonetError, match="--size 32"):
        training.train(data, config_64, tmp_path / "run", encoder=pretrained / "encoder.keras", progress=False)


def test_bad_model_files_give_clear_errors(tmp_path, trained):
    with pytest.raises(AebonetError, match="not found"):
        modelfiles.load_model(tmp_path / "missing.keras")
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"this is not a zip archive")
    with pytest.raises(AebonetError, match="not a Keras model file"):
        modelfiles.load_model(corrupt)
    foreign = tmp_path / "foreign.keras"
    with zipfile.ZipFile(foreign, "w") as z:
        z.writestr("hello.txt", "not a model")
    (tmp_path / "foreign.json").write_text((trained / "model.json").read_text())
    with pytest.raises(AebonetError, match="could not load the model"):
        modelfiles.load_model(foreign)
    no_sidecar = tmp_path / "alone.keras"
    no_sidecar.write_bytes((trained / "model.keras").read_bytes())
    with pytest.raises(AebonetError, match="no alone.json beside it"):
        modelfiles.load_model(no_sidecar)


def test_frozen_encoder_stays_as_pretrained_then_fine_tunes(pretrained, data, config, tmp_path):
    encoder, _ = modelfiles.load_model(pretrained / "encoder.keras")
    frozen = training.train(data, config, tmp_path / "frozen", encoder=pretrained / "encoder.keras",
                            freeze_epochs=2, progress=False)
    tuned = training.train(data, config, tmp_path / "tuned", encoder=pretrained / "encoder.keras",
                           freeze_epochs=1, progress=False)
    kernel = encoder.get_layer("enc1_conv").get_weights()[0]
    for run_dir, unchanged in ((frozen, True), (tuned, False)):
        # the last epoch's checkpoint: model.keras keeps the best epoch, which may be a frozen one
        model = keras.saving.load_model(run_dir / "checkpoint" / checkpoints.read_state(run_dir)["latest"], compile=False)
        trained_kernel = model.get_layer("encoder").get_layer("enc1_conv").get_weights()[0]
        assert np.array_equal(kernel, trained_kernel) == unchanged


def test_bf16_trains_and_restores_the_global_policy(data, config, tmp_path):
    before = keras.config.dtype_policy().name
    run_dir = training.pretrain(data, config.replace(precision="bf16"), tmp_path / "bf16", num_epochs=1, progress=False)
    assert keras.config.dtype_policy().name == before == "float32"
    autoencoder, _ = modelfiles.load_model(run_dir / "autoencoder.keras")
    assert autoencoder.get_layer("encoder").get_layer("enc1_conv").dtype_policy.name == "mixed_bfloat16"
    assert np.isfinite(pd.read_csv(run_dir / "history.csv")["loss"]).all()


def test_precision_policy_is_restored_after_an_error():
    with pytest.raises(RuntimeError):
        with devices.precision_policy("fp16"):
            assert keras.config.dtype_policy().name == "mixed_float16"
            raise RuntimeError("boom")
    assert keras.config.dtype_policy().name == "float32"


def test_auto_precision_sets_the_best_policy_and_restores_the_previous_one(monkeypatch):
    monkeypatch.setattr(hardware, "best_precision", lambda width=None: "fp16")
    with devices.precision_policy("auto"):
        assert keras.config.dtype_policy().name == "mixed_float16"
    assert keras.config.dtype_policy().name == "float32"


def resplit(data, seed: int):
    """Return the same images split again with another seed."""
    return dataclasses.replace(data, splits=loading.random_split(len(data), (0.7, 0.15, 0.15), seed=seed))


def test_an_encoder_pretrained_on_the_test_images_is_refused(pretrained, data, config, tmp_path):
    with pytest.raises(AebonetError, match=r"pretrained on \d+ of this run's validation/test images .*--seed 0"):
        training.train(resplit(data, 1), config, tmp_path / "run", encoder=pretrained / "encoder.keras", progress=False)
    assert not records.has_record(tmp_path / "run")
    training.check_encoder_split(pretrained / "encoder.keras", data)  # the pretraining split itself is fine


def test_an_encoder_without_its_split_files_is_accepted(pretrained, data, config, tmp_path):
    for name in ("encoder.keras", "encoder.json"):
        shutil.copy(pretrained / name, tmp_path / name)
    record = training.train_record(resplit(data, 1), config, "aebonet", tmp_path / "encoder.keras", None, False, 1,
                                   None, None)
    assert record.encoder == str((tmp_path / "encoder.keras").resolve())


def test_a_phantom_of_another_seed_shares_ids_but_not_images(pretrained, config, tmp_path):
    other = load_data("phantom:60", 32, seed=1, split=config.split, cache_root=tmp_path, progress=False)
    training.check_encoder_split(pretrained / "encoder.keras", other)


def test_recorded_sources_are_absolute_except_the_phantom(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert training.recorded_source("phantom:60") == "phantom:60" and training.recorded_source("phantom") == "phantom"
    assert training.recorded_source("rsna") == str(tmp_path.resolve() / "rsna")


def killed(*args, **kwargs):
    """Stand in for fit_phases in a run killed during its first epoch."""
    raise RuntimeError("killed")


def test_a_run_started_with_relative_paths_resumes_from_another_folder(pretrained, data, config, tmp_path, monkeypatch):
    monkeypatch.chdir(pretrained.parent)
    with monkeypatch.context() as patch:  # killed in its first epoch: config.json written, no checkpoint yet
        patch.setattr(training, "fit_phases", killed)
        with pytest.raises(RuntimeError, match="killed"):
            training.train(data, config, tmp_path / "run", encoder=Path(pretrained.name) / "encoder.keras",
                           num_epochs=1, progress=False)
    record = read_json(tmp_path / "run" / "config.json")
    assert record["encoder"] == str((pretrained / "encoder.keras").resolve()) and record["backbone"] == "aebonet"
    assert not checkpoints.read_state(tmp_path / "run")
    monkeypatch.chdir(tmp_path)
    training.train(data, config, tmp_path / "run", resume=True, progress=False)
    assert checkpoints.run_finished(tmp_path / "run")
    assert read_json(tmp_path / "run" / "model.trust.json")["method"] == "reconstruction+features"


MIRRORED_SCRIPT = """
import sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from aebonet_lib._engine import hardware
from aebonet_lib._engine import checkpoints
from aebonet_lib._engine import devices
from aebonet_lib._engine import modelfiles
from aebonet_lib._engine import runner as training
from aebonet_lib.config import get_config
from aebonet_lib.data.loading import load_data
config = get_config("cpu", image_size=32, width=0.125, ae_batch_size=8)
data = load_data("phantom:60", 32, split=config.split, cache_root=sys.argv[1], progress=False)
print("replicas", devices.get_strategy("mirrored").num_replicas_in_sync)
run_dir = training.pretrain(data, config, sys.argv[2], num_epochs=1, distribute="mirrored", progress=False)
print("finished", checkpoints.run_finished(run_dir))
"""


def test_mirrored_strategy_trains_on_two_logical_cpus(tmp_path):
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(MIRRORED_SCRIPT), str(tmp_path / "cache"),
                             str(tmp_path / "run")], capture_output=True, text=True, cwd=REPO, timeout=300,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "replicas 2" in result.stdout and "finished True" in result.stdout
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert len(history) == 1 and np.isfinite(history["loss"]).all()


def test_a_killed_and_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(data, tmp_path, monkeypatch):
    config = get_config("cpu", image_size=32, width=0.125, reg_num_epochs=4, augment=True, reduce_lr_patience=1,
                        early_stopping_patience=3, deterministic=True, precision="fp32", phantom_n=60)
    whole = training.train(data, config, tmp_path / "whole", backbone="scratch", progress=False)
    with killed_after_epoch(monkeypatch, 1):
        training.train(data, config, tmp_path / "resumed", backbone="scratch", progress=False)
    state = checkpoints.read_state(tmp_path / "resumed")
    assert state["epochs_done"] == 2 and set(state["counters"]) == {"ResumableReduceLR", "ResumableEarlyStopping"}
    resumed = training.train(data, config, tmp_path / "resumed", backbone="scratch", resume=True, progress=False)
    history = [pd.read_csv(run / "history.csv") for run in (whole, resumed)]
    np.testing.assert_allclose(history[0]["loss"], history[1]["loss"], rtol=1e-5)
    np.testing.assert_allclose(history[0]["learning_rate"], history[1]["learning_rate"], rtol=1e-6)
    weights = [modelfiles.load_model(run / "model.keras")[0].get_weights() for run in (whole, resumed)]
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_an_encoder_pretrained_on_another_dataset_is_not_checked_against_its_ids(pretrained, data, config, tmp_path):
    for name in ("encoder.keras", "encoder.json"):
        shutil.copy(pretrained / name, tmp_path / name)
    shutil.copytree(pretrained / "splits", tmp_path / "splits")
    meta = read_json(tmp_path / "encoder.json")
    write_json(tmp_path / "encoder.json", meta | {"data": {"source": str(tmp_path / "elsewhere"), "seed": 0}})
    assert not training.same_source(modelfiles.read_model_meta(tmp_path / "encoder.keras"), data)
    training.check_encoder_split(tmp_path / "encoder.keras", resplit(data, 1))  # other images: no leak to refuse


def test_every_run_records_the_commit_of_its_code(pretrained, trained):
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    for run_dir in (pretrained, trained):
        record = records.read_record(run_dir)
        assert record.commit == (head or None) and isinstance(record.dirty, bool) == bool(head)
