"""Tests of aebonet_lib._engine.predict: evaluation files and predictions for new image files."""

from __future__ import annotations

import dataclasses
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aebonet_lib import paper
from aebonet_lib._engine import demo, modelfiles, predict
from aebonet_lib._engine import runner as training
from aebonet_lib._engine.files import read_json
from aebonet_lib.config import get_config
from aebonet_lib.data.loading import load_data
from aebonet_lib.data.preprocess import PreprocessParams
from aebonet_lib.errors import AebonetError


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """Return a temporary cache root."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def config():
    """Return a tiny recipe: 32 px, width 0.125, one regressor epoch."""
    return get_config("cpu", image_size=32, width=0.125, reg_num_epochs=1, phantom_n=60)


@pytest.fixture(scope="module")
def data(cache, config):
    """Return 60 phantom radiographs at 32 px."""
    return load_data("phantom:60", 32, split=config.split, cache_root=cache, progress=False)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory, data, config) -> Path:
    """Return a tiny from-scratch regressor."""
    run_dir = training.train(data, config, tmp_path_factory.mktemp("runs") / "scratch", backbone="scratch", progress=False)
    return run_dir / "model.keras"


@pytest.fixture(scope="module")
def sex_model_path(tmp_path_factory, data, config) -> Path:
    """Return a tiny from-scratch regressor that takes the child's sex as a second input."""
    run_dir = training.train(data, config, tmp_path_factory.mktemp("runs") / "sex", backbone="scratch",
                             sex_input=True, progress=False)
    return run_dir / "model.keras"


def phantom_file(cache: Path, image_id: str) -> Path:
    """Return the PNG the phantom wrote for an image id."""
    return next(cache.rglob(f"{image_id}.png"))


def test_evaluate_writes_metrics_and_predictions(model_path, data):
    result = predict.evaluate(model_path, data, n_boot=200, progress=False)
    saved = read_json(model_path.parent / "metrics.json")
    table = pd.read_csv(model_path.parent / "predictions.csv", dtype={"id": str})
    assert saved["n"] == result["n"] == len(data.splits["test"]) == len(table)
    assert list(table.columns) == ["id", "true", "predicted", "sex", "predicted_raw", "out_of_range", "ood_score",
                                   "unlike_training", "flagged"]
    assert saved["flagged"] == table["flagged"].sum() and saved["flag_rate"] == pytest.approx(table["flagged"].mean())
    assert saved["out_of_range"] == table["out_of_range"].sum()
    assert saved["unlike_training"] == table["unlike_training"].sum()
    assert table["predicted"].between(0, 240).all() and table["ood_score"].notna().all()
    assert set(table["sex"]) <= {"M", "F"}
    assert saved["split"] == "test" and saved["model"] == str(model_path)
    assert saved["mae"] == pytest.approx(np.mean(np.abs(table["true"] - table["predicted"])), abs=0.01)
    assert saved["mae_ci95"][0] <= saved["mae"] <= saved["mae_ci95"][1]
    assert saved["mse_ci95"][0] <= saved["mse"] <= saved["mse_ci95"][1]


def test_evaluate_uses_the_split_saved_with_the_run(model_path, data, tmp_path):
    shuffled = dataclasses.replace(data, splits={"train": data.splits["test"], "val": data.splits["val"],
                                                 "test": data.splits["train"]})
    result = predict.evaluate(model_path, shuffled, out_dir=tmp_path, n_boot=10, progress=False)
    assert result["n"] == len(data.splits["test"])
    assert set(pd.read_csv(tmp_path / "predictions.csv", dtype={"id": str})["id"]) == set(data.ids[data.splits["test"]])


def test_load_data_for_model_defaults_to_the_training_data(model_path, data, cache):
    loaded = predict.load_data_for_model(model_path, cache_root=cache, progress=False)
    assert loaded.source == "phantom:60" and loaded.ids.tolist() == data.ids.tolist()
    assert np.array_equal(loaded.X, data.X) and loaded.split_kind == "paper"
    assert predict.recorded_data(model_path) == "phantom:60"


def test_evaluate_refuses_data_the_model_was_not_trained_on(model_path, config, tmp_path):
    fewer = load_data("phantom:40", 32, split=config.split, cache_root=tmp_path, progress=False)
    with pytest.raises(AebonetError, match=r"trained on other data than phantom:40: \d+ of the 60 images in its "
                                           r"run's splits/ are not in it.*pass --data .*\(phantom:60\)$"):
        predict.evaluate(model_path, fewer, out_dir=tmp_path, progress=False)
    other_draw = load_data("phantom:60", 32, seed=1, split=config.split, cache_root=tmp_path, progress=False)
    with pytest.raises(AebonetError, match="another phantom draw"):
        predict.evaluate(model_path, other_draw, out_dir=tmp_path, progress=False)
    assert not (tmp_path / "metrics.json").exists()


def test_a_model_without_saved_splits_is_evaluated_on_the_datas_own_split(model_path, config, tmp_path):
    alone = tmp_path / "alone"
    alone.mkdir()
    for path in model_path.parent.glob("model.*"):
        shutil.copyfile(path, alone / path.name)
    fewer = load_data("phantom:40", 32, split=config.split, cache_root=tmp_path, progress=False)
    result = predict.evaluate(alone / "model.keras", fewer, n_boot=10, progress=False)
    assert result["n"] == len(fewer.splits["test"])


def test_evaluate_refuses_other_preprocessing(model_path, data):
    other = dataclasses.replace(data, params=PreprocessParams(32, clahe=True))
    with pytest.raises(AebonetError, match="prepared as"):
        predict.evaluate(model_path, other, progress=False)


def test_evaluate_refuses_an_encoder(tmp_path, data, config):
    encoder = paper.build_encoder(config)
    meta = modelfiles.ModelMeta("encoder", data.params, config, source=data.source, seed=data.seed)
    path = modelfiles.save_model(encoder, tmp_path / "encoder.keras", meta)
    with pytest.raises(AebonetError, match="not a bone age regressor"):
        predict.evaluate(path, data, progress=False)


def test_predict_images_match_the_evaluation(model_path, data, cache, tmp_path):
    predict.evaluate(model_path, data, out_dir=tmp_path, n_boot=10, progress=False)
    evaluated = pd.read_csv(tmp_path / "predictions.csv", dtype={"id": str})
    files = [phantom_file(cache, i) for i in evaluated["id"][:4]]
    table = predict.predict_images(model_path, files, progress=False)
    assert list(table.columns) == ["file", "bone_age_months", "bone_age", "predicted_raw", "out_of_range", "ood_score",
                                   "unlike_training", "flagged"]
    np.testing.assert_allclose(table["ood_score"], evaluated["ood_score"][:4], rtol=0.05)
    np.testing.assert_allclose(table["bone_age_months"], evaluated["predicted"][:4], atol=0.06)


def test_predict_images_reads_folders(model_path, cache):
    folder = next(cache.rglob("boneage-training-dataset"))
    table = predict.predict_images(model_path, [folder], progress=False)
    assert len(table) == len(list(folder.glob("*.png")))
    assert table["bone_age"].str.fullmatch(r"\d+ y \d+ m").all()


def test_format_age_in_years_and_months():
    assert predict.format_age(124) == "10 y 4 m"
    assert predict.format_age(11.6) == "1 y 0 m"
    assert predict.format_age(5.2) == "0 y 5 m"


def test_a_sex_input_model_needs_the_sex(sex_model_path, cache):
    image = next(cache.rglob("*.png"))
    with pytest.raises(AebonetError, match="--sex M or --sex F"):
        predict.predict_images(sex_model_path, [image], progress=False)
    with pytest.raises(AebonetError, match="give M"):
        predict.predict_images(sex_model_path, [image], sex="X", progress=False)
    boy = predict.predict_images(sex_model_path, [image], sex="M", progress=False)
    girl = predict.predict_images(sex_model_path, [image], sex="F", progress=False)
    assert boy["bone_age_months"][0] != girl["bone_age_months"][0]


def test_missing_and_empty_inputs_are_refused(model_path, tmp_path):
    with pytest.raises(AebonetError, match="no such file"):
        predict.predict_images(model_path, [tmp_path / "nothing.png"], progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(AebonetError, match="no image files"):
        predict.predict_images(model_path, [tmp_path / "empty"], progress=False)


def test_demo_table_puts_models_beside_the_mean_baseline(model_path, data):
    baseline = demo.mean_baseline(data, n_boot=100)
    y_test = data.y[data.splits["test"]]
    mean_train = np.mean(data.y[data.splits["train"]])
    assert baseline["mae"] == pytest.approx(np.mean(np.abs(y_test - mean_train)), rel=1e-5)
    table = demo.demo_table({"mean": baseline,
                                   "scratch": predict.evaluate(model_path, data, n_boot=100, progress=False)})
    assert list(table.index) == ["mean", "scratch"]
    assert (table["mae_low"] <= table["mae"]).all() and (table["mae"] <= table["mae_high"]).all()
    text = demo.format_comparison(table)
    assert f"{baseline['mae']:.1f} ({baseline['mae_ci95'][0]:.1f}-{baseline['mae_ci95'][1]:.1f})" in text


def test_shipped_models_load_without_the_keys_only_newer_keras_knows():
    """Colab's older Keras (3.10) rejects config keys Keras 3.15 writes; the copy without them predicts the same."""
    assert modelfiles._without_newer_keras_defaults({"a": {"renorm": False, "input_axes": None}, "b": [{"renorm": True}]}) \
        == {"a": {}, "b": [{"renorm": True}]}   # a key that changes the model is kept (and fails on old Keras)
    for name in predict.shipped_models():
        for path in sorted((predict.PRETRAINED_DIR / name).glob("*.keras")):
            model, _ = modelfiles.load_model(path)
            older = modelfiles._load_for_older_keras(path)
            rng = np.random.default_rng(0)   # every input the model has (the image, and the sex where it takes one)
            x = [rng.random((2, *tensor.shape[1:]), dtype="float32") for tensor in model.inputs]
            x = x[0] if len(x) == 1 else x
            np.testing.assert_allclose(older.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)


def test_a_model_from_another_keras_that_does_not_load_says_which_keras_saved_it(tmp_path):
    meta = read_json(predict.PRETRAINED_DIR / predict.shipped_models()[0] / "model.json")
    (tmp_path / "other.json").write_text(json.dumps({**meta, "keras_version": "99.0"}))
    with zipfile.ZipFile(tmp_path / "other.keras", "w") as archive:
        archive.writestr("hello.txt", "not a model")
    with pytest.raises(AebonetError, match="saved with Keras 99.0 and this is Keras .*: install Keras 99.0 or newer"):
        modelfiles.load_model(tmp_path / "other.keras")
