"""Tests of aebonet_lib._engine.trust: clamped ages, out-of-distribution flags, calibration, and where they show up."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from aebonet_lib._engine import predict
from aebonet_lib._engine import runner as training
from aebonet_lib._engine import trust
from aebonet_lib._engine.cli import main
from aebonet_lib._engine.files import read_json
from aebonet_lib._engine.modelfiles import load_model
from aebonet_lib.config import get_config
from aebonet_lib.data.loading import load_data
from aebonet_lib.errors import AebonetError

FLAGS = ["predicted", "predicted_raw", "out_of_range", "ood_score", "unlike_training", "flagged"]


@pytest.fixture(scope="module")
def config():
    """Return a tiny recipe: 32 px, width 0.125, four autoencoder epochs, one regressor epoch."""
    return get_config("cpu", image_size=32, width=0.125, ae_stages=(2, 2), reg_num_epochs=1, phantom_n=60)


@pytest.fixture(scope="module")
def data(tmp_path_factory, config):
    """Return 60 phantom radiographs at 32 px."""
    return load_data("phantom:60", 32, split=config.split, cache_root=tmp_path_factory.mktemp("cache"), progress=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """Return a folder for the module's runs."""
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def aebonet_model(runs, data, config) -> Path:
    """Return an AE-BoNet regressor whose training calibrated the reconstruction method."""
    pretrained = training.pretrain(data, config, runs / "ae", progress=False)
    run_dir = training.train(data, config, runs / "reg", encoder=pretrained / "encoder.keras", progress=False)
    return run_dir / "model.keras"


@pytest.fixture(scope="module")
def scratch_model(runs, data, config) -> Path:
    """Return a from-scratch regressor, calibrated with the features method (it has no autoencoder)."""
    return training.train(data, config, runs / "scratch", backbone="scratch", progress=False) / "model.keras"


def images(data, split: str) -> np.ndarray:
    """Return a split's images as float32 (N, S, S) in [0, 1]."""
    return data.X[data.splits[split]].astype(np.float32) / 255


def copy_model(model_path: Path, folder: Path, with_trust: bool = False) -> Path:
    """Copy a model file with its model.json (and, when asked, its calibration) into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    names = ["model.keras", "model.json"] + (["model.trust.json", "model.trust.npz"] if with_trust else [])
    for name in names:
        shutil.copy(model_path.parent / name, folder / name)
    return folder / "model.keras"


def test_out_of_range_predictions_are_clamped_and_flagged(scratch_model, data):
    table = trust.flag(scratch_model, images(data, "test")[:3], np.array([-53.0, 120.0, 300.5]))
    assert list(table.columns) == FLAGS
    np.testing.assert_allclose(table["predicted"], [0.0, 120.0, 240.0])
    np.testing.assert_allclose(table["predicted_raw"], [-53.0, 120.0, 300.5])
    assert list(table["out_of_range"]) == [True, False, True]
    assert (table["flagged"] == table["out_of_range"] | table["unlike_training"]).all()
    assert predict.format_age(table["predicted"][0]) == "0 y 0 m"


def test_without_calibration_only_the_range_is_flagged(scratch_model, data, tmp_path):
    bare = copy_model(scratch_model, tmp_path)
    assert trust.score(bare, images(data, "test")) is None
    table = trust.flag(bare, 1 - images(data, "test")[:2], np.array([100.0, 250.0]))
    assert table["ood_score"].isna().all() and not table["unlike_training"].any()
    assert list(table["flagged"]) == [False, True]


def test_calibration_threshold_is_the_99th_percentile_of_the_training_scores(scratch_model, data):
    record = read_json(trust.trust_path(scratch_model))
    assert trust.trust_path(scratch_model).name == "model.trust.json"
    assert record["method"] == "features" and record["n"] == len(data.splits["train"])
    assert trust.is_current(record) and record["format"] == trust.CALIBRATION_FORMAT
    scores = trust.score(scratch_model, data.X[data.splits["train"]])  # the larger of two ratios to a threshold
    assert np.mean(trust.outside(scores)) <= 0.05
    arrays = trust.load_feature_arrays(scratch_model)
    features = trust.pooled_features(load_model(scratch_model)[0], data.X[data.splits["train"]])
    distances = trust.feature_distances(features, arrays)
    assert np.percentile(distances, 99) == pytest.approx(record["features"]["threshold"], rel=1e-3)
    dims, kept = record["features"]["dimensions"], record["features"]["directions"]
    assert arrays["location"].shape == (dims,) and arrays["components"].shape == (kept, dims)
    assert arrays["precision"].shape == (kept, kept) and kept == max(2, record["n"] // 10) < dims
    assert record["features"]["residual_threshold"] > 0


def test_feature_distance_is_the_mahalanobis_distance():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(500, 3)) * [1.0, 5.0, 0.2]
    fitted = trust.fit_feature_distance(features)
    distances = trust.feature_distances(np.array([[0.0, 5.0, 0.0], [0.0, 0.0, 1.0]]), fitted)
    assert distances[0] == pytest.approx(1.0, rel=0.2)  # one SD along the widest direction
    assert distances[1] > 10 * distances[0]  # five SDs along the narrowest (shrinkage pulls it below 25)
    few = trust.fit_feature_distance(rng.normal(size=(40, 30)))
    assert few["components"].shape == (4, 30) and few["precision"].shape == (4, 4)  # n / 10 directions


def test_calibration_scores_a_fixed_sample_of_a_big_training_set(scratch_model, data, tmp_path, monkeypatch):
    monkeypatch.setattr(trust, "MAX_CALIBRATION_IMAGES", 10)
    model = copy_model(scratch_model, tmp_path)
    first = trust.calibrate(model, data.X[data.splits["train"]], percentile=90)
    second = trust.calibrate(model, data.X[data.splits["train"]], percentile=90)
    assert first["n"] == 10 and first["n_train"] == len(data.splits["train"]) and first["percentile"] == 90
    assert first["features"]["threshold"] == second["features"]["threshold"]
    assert first["features"]["threshold"] == read_json(tmp_path / "model.trust.json")["features"]["threshold"]


def test_reconstruction_flags_inverted_and_blank_images(aebonet_model, data):
    record = trust.read_calibration(aebonet_model)
    assert record["method"] == "reconstruction+features"
    assert (aebonet_model.parent / "model.autoencoder.keras").is_file()  # the run folder is self-contained
    X = images(data, "test")
    scores = trust.score(aebonet_model, X)
    np.testing.assert_allclose(scores, trust.score(aebonet_model, data.X[data.splits["test"]][..., None]), rtol=1e-5)
    assert np.sum(trust.outside(scores)) <= 2
    odd = np.concatenate([1 - X, np.ones((2, 32, 32), np.float32)])  # inverted radiographs, blank (white) images
    table = trust.flag(aebonet_model, odd, np.full(len(odd), 120.0))
    assert table["unlike_training"].all() and table["flagged"].all() and not table["out_of_range"].any()
    assert (table["ood_score"] > 1).all()


def test_features_method_flags_inverted_and_blank_images(scratch_model, data):
    X = images(data, "test")
    assert np.sum(trust.outside(trust.score(scratch_model, X))) <= 1
    odd = np.concatenate([1 - X, np.zeros((1, 32, 32), np.float32), np.ones((1, 32, 32), np.float32)])
    assert trust.outside(trust.score(scratch_model, odd)).all()


def test_a_sex_input_model_is_calibrated_on_its_pooled_image_features(runs, data, config):
    run_dir = training.train(data, config, runs / "sex", backbone="scratch", sex_input=True, progress=False)
    model = run_dir / "model.keras"
    assert trust.read_calibration(model)["method"] == "features"
    X, male = images(data, "test"), data.male[data.splits["test"]]
    table = trust.flag(model, np.concatenate([X, 1 - X]), np.full(2 * len(X), 100.0), np.concatenate([male, male]))
    assert table["unlike_training"][len(X):].all() and table["unlike_training"][:len(X)].sum() <= 1


def test_evaluate_writes_the_flag_columns_and_counts(aebonet_model, data, tmp_path):
    inverted = dataclasses.replace(data, X=255 - np.asarray(data.X))
    result = predict.evaluate(aebonet_model, inverted, out_dir=tmp_path, n_boot=20, progress=False)
    table = pd.read_csv(tmp_path / "predictions.csv", dtype={"id": str})
    saved = read_json(tmp_path / "metrics.json")
    assert list(table.columns) == ["id", "true", "predicted", "sex", *FLAGS[1:]]
    assert saved["flagged"] == saved["unlike_training"] == table["flagged"].sum() == len(table) == result["n"]
    assert saved["out_of_range"] == table["out_of_range"].sum() and saved["flag_rate"] == 1.0
    assert table["predicted"].between(*trust.AGE_RANGE).all()
    assert saved["mae"] == pytest.approx(np.mean(np.abs(table["true"] - table["predicted"])), abs=0.01)
    assert trust.counts_summary(result).startswith(f"warning: {len(table)} of {len(table)} images flagged:")


def test_flag_summary_says_how_many_images_and_why(aebonet_model, data):
    X = images(data, "test")
    X = X[np.argsort(trust.score(aebonet_model, X))[:3]]  # the three most usual test images
    X[2] = 1 - X[2]
    table = trust.flag(aebonet_model, X, np.array([-20.0, 100.0, 100.0]))
    assert trust.flag_summary(table) == (
        "warning: 2 of 3 images flagged: 1 prediction outside 0-240 months (clamped), 1 unlike the training images "
        "(reconstruction error outside the 1st to 99th percentile, or feature distance above the 99th percentile, "
        "of the training set); see the flag columns")
    assert trust.flag_summary(table.iloc[1:2]) is None
    assert trust.ordinal(95) == "95th" and trust.ordinal(91) == "91st" and trust.ordinal(99.5) == "99.5th"


def write_png(path: Path, image: np.ndarray) -> Path:
    """Write a float image in [0, 1] as an 8-bit PNG."""
    cv2.imwrite(str(path), np.round(image * 255).astype(np.uint8))
    return path


def test_cli_predict_warns_in_one_line_on_stderr(aebonet_model, data, tmp_path, capsys):
    X = images(data, "test")
    usual = X[np.argmin(trust.score(aebonet_model, X))]
    files = [write_png(tmp_path / "usual.png", usual), write_png(tmp_path / "inverted.png", 1 - usual)]
    assert main(["predict", "--model", str(aebonet_model), *map(str, files)]) == 0
    captured = capsys.readouterr()
    lines = [line for line in captured.out.strip().splitlines() if not line.startswith("#")]  # after the disclaimer
    assert lines[0] == "file,bone_age_months,bone_age,predicted_raw,out_of_range,ood_score,unlike_training,flagged"
    assert len(lines) == 3 and lines[1].endswith(",False,False") and lines[2].endswith(",True,True")
    warning = captured.err.strip().splitlines()
    assert len(warning) == 1 and warning[0].startswith("warning: 1 of 2 images flagged: 1 unlike the training images")
    assert main(["predict", "--model", str(aebonet_model), str(files[0])]) == 0
    assert capsys.readouterr().err == ""


def test_a_shipped_model_is_named_by_its_folder(scratch_model, data, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(predict, "PRETRAINED_DIR", tmp_path / "pretrained")
    assert predict.shipped_models() == []
    with pytest.raises(AebonetError, match=r"rsna-cpu: file not found, and not .* shipped model \(no shipped models\)"):
        predict.resolve_model("rsna-cpu")
    shipped = copy_model(scratch_model, tmp_path / "pretrained" / "rsna-cpu", with_trust=True)
    (tmp_path / "pretrained" / "empty").mkdir()
    assert predict.shipped_models() == ["rsna-cpu"] and predict.resolve_model("rsna-cpu") == shipped
    image = write_png(tmp_path / "hand.png", images(data, "test")[0])
    table = predict.predict_images("rsna-cpu", [image], progress=False)
    assert len(table) == 1 and not np.isnan(table["ood_score"][0])
    with pytest.raises(AebonetError, match="give an output folder"):
        predict.evaluate("rsna-cpu", data, progress=False)
    with pytest.raises(AebonetError, match=r"rsna-gpu: file not found, and not .* shipped model \(rsna-cpu\)"):
        predict.resolve_model("rsna-gpu")
    assert main(["predict", "--model", "rsna-gpu", str(image)]) == 2
    assert "shipped model (rsna-cpu)" in capsys.readouterr().err
