"""Tests of the models themselves (paper, _engine.baselines, _engine.flops): Table 1 layer by layer, counts,
variants, baselines, metrics, the backbone check, a Keras round trip. Run folders are test_training's.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from aebonet_lib import paper
from aebonet_lib._engine import baselines
from aebonet_lib._engine import flops as measures
from aebonet_lib.config import get_config
from aebonet_lib.errors import AebonetError

PAPER = get_config("paper")
TINY = get_config("cpu", image_size=32, width=0.125)


@pytest.fixture(scope="module")
def paper_autoencoder():
    """Return the width-1, 256 px autoencoder with the paper's decoder (built once, never trained)."""
    return paper.build_autoencoder(PAPER)


def images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Return n random float32 images in [0, 1], shape (n, size, size, 1)."""
    return np.random.default_rng(seed).random((n, size, size, 1), dtype=np.float32)


# --- The autoencoder against the paper's Table 1 ----------------------------------------

ENCODER_TABLE = [  # name, layer class, filters, output shape at 256 px
    ("enc1_conv", keras.layers.Conv2D, 64, (256, 256, 64)),
    ("enc1_relu", keras.layers.ReLU, None, (256, 256, 64)),
    ("enc1_bn", keras.layers.BatchNormalization, None, (256, 256, 64)),
    ("enc1_pool", keras.layers.MaxPooling2D, None, (128, 128, 64)),
    ("enc2_conv", keras.layers.Conv2D, 128, (128, 128, 128)),
    ("enc2_relu", keras.layers.ReLU, None, (128, 128, 128)),
    ("enc2_bn", keras.layers.BatchNormalization, None, (128, 128, 128)),
    ("enc2_pool", keras.layers.MaxPooling2D, None, (64, 64, 128)),
    ("enc3_conv", keras.layers.Conv2D, 256, (64, 64, 256)),
    ("enc3_relu", keras.layers.ReLU, None, (64, 64, 256)),
    ("enc3_bn", keras.layers.BatchNormalization, None, (64, 64, 256)),
    ("enc3_pool", keras.layers.MaxPooling2D, None, (32, 32, 256)),
    ("enc4_conv", keras.layers.Conv2D, 512, (32, 32, 512)),
    ("enc4_relu", keras.layers.ReLU, None, (32, 32, 512)),
    ("enc4_bn", keras.layers.BatchNormalization, None, (32, 32, 512)),
    ("enc4_pool", keras.layers.MaxPooling2D, None, (16, 16, 512)),
    ("bottleneck_conv", keras.layers.Conv2D, 1024, (16, 16, 1024)),
    ("bottleneck_relu", keras.layers.ReLU, None, (16, 16, 1024)),
    ("bottleneck_bn", keras.layers.BatchNormalization, None, (16, 16, 1024)),
]

DECODER_TABLE = [  # upsample then conv, the paper's description
    ("dec1_up", keras.layers.UpSampling2D, None, (32, 32, 1024)),
    ("dec1_conv", keras.layers.Conv2D, 512, (32, 32, 512)),
    ("dec1_relu", keras.layers.ReLU, None, (32, 32, 512)),
    ("dec1_bn", keras.layers.BatchNormalization, None, (32, 32, 512)),
    ("dec2_up", keras.layers.UpSampling2D, None, (64, 64, 512)),
    ("dec2_conv", keras.layers.Conv2D, 256, (64, 64, 256)),
    ("dec2_relu", keras.layers.ReLU, None, (64, 64, 256)),
    ("dec2_bn", keras.layers.BatchNormalization, None, (64, 64, 256)),
    ("dec3_up", keras.layers.UpSampling2D, None, (128, 128, 256)),
    ("dec3_conv", keras.layers.Conv2D, 128, (128, 128, 128)),
    ("dec3_relu", keras.layers.ReLU, None, (128, 128, 128)),
    ("dec3_bn", keras.layers.BatchNormalization, None, (128, 128, 128)),
    ("dec4_up", keras.layers.UpSampling2D, None, (256, 256, 128)),
    ("dec4_conv", keras.layers.Conv2D, 64, (256, 256, 64)),
    ("dec4_relu", keras.layers.ReLU, None, (256, 256, 64)),
    ("dec4_bn", keras.layers.BatchNormalization, None, (256, 256, 64)),
    ("reconstruction", keras.layers.Conv2D, 1, (256, 256, 1)),
]


def check_table(model: keras.Model, table: list) -> None:
    """Assert that the model's layers (after its input) are exactly the table's rows, in order."""
    rows = model.layers[1:]
    assert [layer.name for layer in rows] == [name for name, *_ in table]
    for layer, (name, cls, filters, shape) in zip(rows, table):
        assert type(layer) is cls, name
        assert tuple(layer.output.shape[1:]) == shape, name
        if filters is not None:
            assert layer.filters == filters and layer.kernel_size == (3, 3) and layer.padding == "same", name


def test_encoder_is_table_1(paper_autoencoder):
    encoder = paper_autoencoder.get_layer("encoder")
    assert encoder.input.shape[1:] == (256, 256, 1) and encoder.layers[0].name == "image"
    check_table(encoder, ENCODER_TABLE)
    convs = [layer for layer in encoder.layers if isinstance(layer, keras.layers.Conv2D)]
    assert all(layer.activation is keras.activations.linear for layer in convs)  # ReLU is its own layer
    assert all(encoder.get_layer(n).pool_size == (2, 2) for n in ("enc1_pool", "enc4_pool"))


def test_decoder_is_table_1_with_sigmoid_output(paper_autoencoder):
    decoder = paper_autoencoder.get_layer("decoder")
    assert decoder.input.shape[1:] == (16, 16, 1024)
    check_table(decoder, DECODER_TABLE)
    output = decoder.get_layer("reconstruction")
    assert output.activation is keras.activations.sigmoid and output.dtype_policy.compute_dtype == "float32"


def test_autoencoder_nests_encoder_and_decoder(paper_autoencoder):
    assert [layer.name for layer in paper_autoencoder.layers] == ["image", "encoder", "decoder"]
    assert isinstance(paper_autoencoder.get_layer("encoder"), keras.Model)
    assert paper_autoencoder.output.shape[1:] == (256, 256, 1)


def test_parameter_counts_at_width_1(paper_autoencoder):
    assert paper_autoencoder.get_layer("encoder").count_params() == 6_277_376
    assert paper.build_encoder(PAPER).count_params() == 6_277_376
    assert paper_autoencoder.count_params() == 12_549_633


@pytest.mark.parametrize("decoder", ["conv_upsample", "transpose"])
def test_decoder_variants_same_parameters_other_order(decoder):
    config = PAPER.replace(decoder=decoder)
    model = paper.build_decoder(config)
    assert model.count_params() == 12_549_633 - 6_277_376
    first = model.get_layer("dec1_conv")
    if decoder == "conv_upsample":
        assert tuple(first.output.shape[1:]) == (16, 16, 512)  # convolves before upsampling
        assert tuple(model.get_layer("dec1_up").output.shape[1:]) == (32, 32, 512)
    else:
        assert type(first) is keras.layers.Conv2DTranspose and first.strides == (2, 2)
        assert tuple(first.output.shape[1:]) == (32, 32, 512)
    assert model.output.shape[1:] == (256, 256, 1)


def test_width_multiplier_scales_every_filter_count():
    config = PAPER.replace(image_size=64, width=0.125)
    autoencoder = paper.build_autoencoder(config)
    encoder, decoder = autoencoder.get_layer("encoder"), autoencoder.get_layer("decoder")
    assert [encoder.get_layer(f"enc{i}_conv").filters for i in range(1, 5)] == [8, 16, 32, 64]
    assert encoder.get_layer("bottleneck_conv").filters == 128
    assert [decoder.get_layer(f"dec{i}_conv").filters for i in range(1, 5)] == [64, 32, 16, 8]
    assert encoder.output.shape[1:] == (4, 4, 128)


# --- FLOPs ----------------------------------------------------------------------------

@pytest.mark.parametrize("decoder, gflop", [("upsample_conv", 48.5), ("conv_upsample", 19.5), ("transpose", 19.5)])
def test_flops_of_the_three_decoders(decoder, gflop):
    flops = measures.count_flops(paper.build_autoencoder(PAPER.replace(decoder=decoder)))
    assert abs(flops / 1e9 - gflop) / gflop < 0.01


def test_flops_count_dense_layers_and_nested_models():
    encoder = paper.build_encoder(TINY)
    regressor = paper.build_regressor(encoder, TINY)
    channels = TINY.scaled_filters()[-1]
    head = 2 * (channels * 10 + 10 * 1)  # Dense(10) and Dense(1): multiply-adds count 2
    assert measures.count_flops(regressor) - measures.count_flops(encoder) == head
    first_conv = 2 * 32 * 32 * 3 * 3 * 1 * TINY.scaled_filters()[0]
    assert measures.count_flops(encoder) > first_conv > 0


# --- The regressor --------------------------------------------------------------------

def test_regressor_head_is_the_papers():
    encoder = paper.build_encoder(PAPER)
    model = paper.build_regressor(encoder, PAPER)
    assert model.get_layer("encoder") is encoder  # reused, so training fine-tunes the pretrained weights
    names = [layer.name for layer in model.layers]
    assert names == ["image", "encoder", "head_gap", "head_flatten", "head_bn", "head_dense", "age"]
    assert type(model.get_layer("head_gap")) is keras.layers.GlobalAveragePooling2D
    assert type(model.get_layer("head_bn")) is keras.layers.BatchNormalization
    dense = model.get_layer("head_dense")
    assert dense.units == 10 and dense.activation is keras.activations.relu
    assert dense.kernel_regularizer.l2 == pytest.approx(1e-4)
    age = model.get_layer("age")
    assert age.units == 1 and age.activation is keras.activations.linear
    assert model.output.shape[1:] == (1,) and model.name == "aebonet"


def test_regressor_refuses_encoder_of_another_size():
    encoder = paper.build_encoder(TINY.replace(image_size=64))
    with pytest.raises(AebonetError, match="--size 64"):
        paper.build_regressor(encoder, TINY)


def test_scratch_regressor_has_fresh_encoder():
    encoder = paper.build_encoder(TINY)
    scratch = paper.build_scratch_regressor(TINY)
    assert scratch.name == "scratch" and scratch.get_layer("encoder") is not encoder
    assert scratch.count_params() == paper.build_regressor(encoder, TINY).count_params()


def test_sex_input_changes_signature_and_output():
    model = paper.build_scratch_regressor(TINY, sex_input=True)
    assert sorted(model.input) == ["image", "sex"] and model.input["sex"].shape[1:] == (1,)
    joined = model.get_layer("head_sex")  # pooled features and sex, joined before the head's BN
    features, sex = joined.input
    assert features is model.get_layer("head_flatten").output and sex is model.input["sex"]
    assert model.get_layer("head_bn").input is joined.output
    X = images(4, 32)
    girls = model.predict({"image": X, "sex": np.zeros((4, 1), "float32")}, verbose=0)
    boys = model.predict({"image": X, "sex": np.ones((4, 1), "float32")}, verbose=0)
    assert not np.allclose(girls, boys)


def test_scale_output_maps_to_months():
    config = TINY.replace(scale_output=True)
    model = paper.build_scratch_regressor(config, y_mean=120.0, y_std=40.0)
    sd_units = keras.Model(model.input, model.get_layer("age_sd").output)
    X = images(3, 32)
    expected = sd_units.predict(X, verbose=0) * 40.0 + 120.0
    np.testing.assert_allclose(model.predict(X, verbose=0), expected, rtol=1e-5)
    unscaled = paper.build_scratch_regressor(TINY.replace(scale_output=False), y_mean=120.0, y_std=40.0)
    assert "age_sd" not in [layer.name for layer in unscaled.layers]


def test_scale_output_refuses_bad_sd():
    with pytest.raises(AebonetError, match="positive sd"):
        paper.build_scratch_regressor(TINY.replace(scale_output=True), y_std=0.0)


# --- Compiling with the paper's recipe and training a tiny model ------------------------

def test_compile_autoencoder_logs_the_papers_metrics():
    model = paper.compile_autoencoder(paper.build_autoencoder(TINY), TINY)
    assert model.optimizer.learning_rate.numpy() == pytest.approx(TINY.ae_lr)
    X = images(8, 32)
    history = model.fit(X, X, batch_size=4, epochs=1, verbose=0)
    assert {"loss", "accuracy", "psnr", "ssim"} <= set(history.history)
    logs = model.evaluate(X, X, verbose=0, return_dict=True)
    mse = np.mean((model.predict(X, verbose=0) - X) ** 2)
    assert logs["loss"] == pytest.approx(mse, rel=1e-3)
    assert 0 < logs["ssim"] <= 1 and logs["psnr"] > 0


def test_compile_regressor_reports_mae_in_months():
    model = paper.compile_regressor(paper.build_scratch_regressor(TINY), TINY)
    X, y = images(8, 32), np.linspace(10, 200, 8).astype("float32")
    model.fit(X, y, batch_size=4, epochs=1, verbose=0)
    logs = model.evaluate(X, y, verbose=0, return_dict=True)
    y_hat = model.predict(X, verbose=0)[:, 0]
    assert logs["mae"] == pytest.approx(np.mean(np.abs(y_hat - y)), rel=1e-4)
    assert model.optimizer.learning_rate.numpy() == pytest.approx(TINY.reg_lr)


# --- Reconstruction metrics -------------------------------------------------------------

def test_pixel_accuracy_thresholds_prediction_not_target():
    y_true = np.array([0.0, 1.0, 0.5, 0.0], "float32").reshape(1, 2, 2, 1)
    y_pred = np.array([0.2, 0.7, 0.5, 0.9], "float32").reshape(1, 2, 2, 1)
    # right: 0 vs 0.2, 1 vs 0.7; wrong: the gray pixel (never equals 0 or 1), 0 vs 0.9
    np.testing.assert_allclose(paper.pixel_accuracy(y_true, y_pred).numpy(), [0.5])


def test_pixel_accuracy_rewards_black_background():
    y_true = np.zeros((1, 32, 32, 1), "float32")
    y_true[:, 8:24, 8:24] = 0.6  # a gray "hand" on a quarter of the image
    y_pred = np.full_like(y_true, 0.1)  # the hand is lost entirely
    assert paper.pixel_accuracy(y_true, y_pred).numpy()[0] == pytest.approx(0.75)


def test_pixel_accuracy_reproduces_keras_accuracy_for_a_sigmoid_autoencoder():
    model = paper.build_autoencoder(TINY)
    ours = keras.metrics.MeanMetricWrapper(paper.pixel_accuracy, name="ours")
    model.compile(optimizer="adam", loss="mse", metrics=["accuracy", ours])
    X = images(6, 32, seed=1)
    X[:, :, :10] = 0.0  # black background, as in a radiograph
    X[:, :3, 10:] = 1.0  # saturated pixels
    logs = model.evaluate(X, X, verbose=0, return_dict=True)
    assert logs["accuracy"] == pytest.approx(logs["ours"], abs=1e-6)
    assert 0 < logs["ours"] < 1


def test_psnr_and_ssim_known_values():
    y_true = images(2, 32) * 0.8
    assert paper.psnr(y_true, y_true + 0.1).numpy() == pytest.approx([20.0, 20.0], abs=1e-3)  # MSE 0.01
    np.testing.assert_allclose(paper.ssim(y_true, y_true).numpy(), [1.0, 1.0], atol=1e-6)
    assert np.all(paper.ssim(y_true, images(2, 32, seed=5)).numpy() < 0.5)
    assert [m.name for m in paper.reconstruction_metrics()] == ["accuracy", "psnr", "ssim"]


# --- The baselines (paper Table 5) --------------------------------------------------------

SIZE96 = get_config("cpu", image_size=96, width=0.125)
PREPROCESS = {
    "xception": keras.applications.xception.preprocess_input,
    "vgg16": keras.applications.vgg16.preprocess_input,
    "inceptionv3": keras.applications.inception_v3.preprocess_input,
    "mobilenet": keras.applications.mobilenet.preprocess_input,
    "resnet50": keras.applications.resnet50.preprocess_input,
}


@pytest.fixture(scope="module")
def baseline_models():
    """Return the five baselines at 96 px with random weights (InceptionV3 needs at least 75 px)."""
    return {name: baselines.build_baseline(name, SIZE96, weights=None) for name in baselines.BASELINES}


@pytest.mark.parametrize("name", baselines.BASELINES)
def test_baseline_builds_with_same_head(baseline_models, name):
    model = baseline_models[name]
    assert model.name == name and isinstance(model.get_layer("encoder"), keras.Model)
    head = ["encoder", "head_gap", "head_flatten", "head_bn", "head_dense", "age_sd", "age"]
    assert [layer.name for layer in model.layers][-7:] == head
    assert model.get_layer("head_dense").units == 10
    y_hat = model(images(2, 96), training=False)
    assert y_hat.shape == (2, 1) and np.all(np.isfinite(y_hat))


@pytest.mark.parametrize("name", baselines.BASELINES)
def test_baseline_preprocessing_matches_keras_applications(baseline_models, name):
    model = baseline_models[name]
    encoder_input = model.get_layer("encoder").input
    last = next(layer for layer in model.layers if layer.name.startswith("preprocess_"))
    preprocessing = keras.Model(model.input, last.output)
    X = images(2, 96, seed=3)
    expected = PREPROCESS[name](255.0 * np.repeat(X, 3, axis=-1))
    assert encoder_input.shape[1:] == (96, 96, 3)
    np.testing.assert_allclose(preprocessing.predict(X, verbose=0), expected, atol=1e-4)


def test_baseline_refuses_too_small_images():
    with pytest.raises(AebonetError, match="at least 75"):
        baselines.build_baseline("inceptionv3", SIZE96.replace(image_size=64))


def test_weights_path_loads_a_local_file(tmp_path):
    source = keras.applications.MobileNet(include_top=False, weights=None, input_shape=(96, 96, 3))
    path = tmp_path / "mobilenet.weights.h5"
    source.save_weights(path)
    model = baselines.build_baseline("mobilenet", SIZE96, weights=str(path))
    for ours, theirs in zip(model.get_layer("encoder").weights, source.weights):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


def test_weights_path_missing_or_broken(tmp_path):
    with pytest.raises(AebonetError, match="file not found"):
        baselines.build_baseline("mobilenet", SIZE96, weights=str(tmp_path / "nothing.h5"))
    broken = tmp_path / "broken.h5"
    broken.write_bytes(b"not a weights file")
    with pytest.raises(AebonetError, match="could not load it into mobilenet"):
        baselines.build_baseline("mobilenet", SIZE96, weights=str(broken))


def check_offline_message(message: str, name: str) -> None:
    """Assert the offline ImageNet message is one line that names the model and both ways out."""
    assert "\n" not in message and name in message
    assert "--weights none" in message and "--weights PATH" in message and "models" in message


@pytest.mark.filterwarnings("ignore:.*input_shape. is undefined")  # MobileNet at 96 px would load its 224 weights
def test_imagenet_offline_gives_clear_message(monkeypatch):
    def no_network(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/x.h5: None -- [Errno -2] no network")

    monkeypatch.setattr("keras.src.utils.file_utils.get_file", no_network)
    with pytest.raises(AebonetError) as caught:
        baselines.build_baseline("mobilenet", SIZE96, weights="imagenet")
    check_offline_message(str(caught.value), "mobilenet")


def network_reachable() -> bool:
    """Return True when the host Keras downloads weights from answers (then the real test would download)."""
    import socket

    try:
        socket.create_connection(("storage.googleapis.com", 443), timeout=3).close()
        return True
    except OSError:
        return False


def test_imagenet_offline_for_real_with_empty_keras_cache(monkeypatch, tmp_path):
    if network_reachable():
        pytest.skip("network reachable: this test would download ImageNet weights")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr("keras.src.backend.config._KERAS_DIR", str(tmp_path))
    with pytest.raises(AebonetError) as caught:
        baselines.build_baseline("vgg16", TINY, weights="imagenet")
    check_offline_message(str(caught.value), "vgg16")
    assert str(tmp_path) in str(caught.value)


# --- One entry point ------------------------------------------------------------------

def test_build_model_dispatches_each_backbone():
    encoder = paper.build_encoder(TINY)
    assert baselines.build_model("aebonet", TINY, encoder=encoder).get_layer("encoder") is encoder
    assert baselines.build_model("scratch", TINY, weights="none").name == "scratch"
    assert baselines.build_model("vgg16", TINY).name == "vgg16"
    with pytest.raises(AebonetError, match="unknown baseline"):
        baselines.build_baseline("alexnet", TINY)


# --- Saving, loading, mixed precision ---------------------------------------------------

def saved_and_loaded(model: keras.Model, path) -> keras.Model:
    """Return the model after a round trip through a .keras file, loaded in safe mode."""
    model.save(path)
    return keras.models.load_model(path, safe_mode=True)


def test_autoencoder_round_trip_keeps_predictions_and_metrics(tmp_path):
    model = paper.compile_autoencoder(paper.build_autoencoder(TINY), TINY)
    X = images(4, 32)
    model.fit(X, X, epochs=1, verbose=0)
    loaded = saved_and_loaded(model, tmp_path / "autoencoder.keras")
    np.testing.assert_array_equal(loaded.predict(X, verbose=0), model.predict(X, verbose=0))
    assert loaded.get_layer("encoder").count_params() == model.get_layer("encoder").count_params()
    assert {"accuracy", "psnr", "ssim"} <= set(loaded.evaluate(X, X, verbose=0, return_dict=True))


def test_regressor_with_sex_and_scale_round_trip(tmp_path):
    model = paper.compile_regressor(paper.build_scratch_regressor(TINY, True, y_mean=120.0, y_std=40.0), TINY)
    x = {"image": images(4, 32), "sex": np.array([[0], [1], [0], [1]], "float32")}
    model.fit(x, np.array([90, 100, 130, 150], "float32"), epochs=1, verbose=0)
    loaded = saved_and_loaded(model, tmp_path / "model.keras")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert loaded.get_layer("age").offset == 120.0 and loaded.get_layer("age").scale == 40.0


@pytest.mark.parametrize("name", ["vgg16", "mobilenet"])  # 'caffe' and 'tf' preprocessing
def test_baseline_round_trip(baseline_models, tmp_path, name):
    X = images(2, 96)
    loaded = saved_and_loaded(baseline_models[name], tmp_path / f"{name}.keras")
    np.testing.assert_allclose(loaded.predict(X, verbose=0), baseline_models[name].predict(X, verbose=0), rtol=1e-6)


@pytest.fixture
def bfloat16_policy():
    """Switch on mixed_bfloat16 for one test and restore the previous global policy afterwards."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    yield
    keras.mixed_precision.set_global_policy(previous)


def test_mixed_bfloat16_computes_in_bf16_and_outputs_float32(bfloat16_policy):
    autoencoder = paper.compile_autoencoder(paper.build_autoencoder(TINY), TINY)
    regressor = paper.build_scratch_regressor(TINY, sex_input=True, y_mean=100.0, y_std=30.0)
    assert autoencoder.get_layer("encoder").get_layer("enc1_conv").compute_dtype == "bfloat16"
    X = images(4, 32)
    assert autoencoder(X).dtype == "float32"
    assert regressor({"image": X, "sex": np.ones((4, 1), "float32")}).dtype == "float32"
    history = autoencoder.fit(X, X, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0]) and np.isfinite(history.history["ssim"][0])


def test_450_pixels_as_in_table_5_pads_to_464_in_the_encoder_and_crops_back():
    config = get_config("cpu", image_size=450, width=0.0625)
    autoencoder = paper.build_autoencoder(config)
    assert paper.padding(450) == 14 and paper.padding(256) == 0
    assert autoencoder.input_shape == (None, 450, 450, 1) and autoencoder.output_shape == (None, 450, 450, 1)
    assert autoencoder.get_layer("encoder").output_shape[1:3] == (29, 29)  # 464 / 16
    regressor = paper.build_regressor(paper.encoder_of(autoencoder), config)
    age = regressor(np.zeros((1, 450, 450, 1), np.float32))
    assert age.shape == (1, 1)
    assert "pad" not in [layer.name for layer in paper.build_encoder(TINY).layers]  # 32 px: nothing added
    baseline = baselines.build_baseline("mobilenet", config, weights=None)
    assert baseline.input_shape == (None, 450, 450, 1)


@pytest.mark.parametrize("backbone, has_encoder, weights, says", [
    ("resnet", False, None, "unknown backbone"),
    ("scratch", False, "imagenet", "only for the baselines"),
    ("aebonet", False, None, "needs a pretrained encoder"),
    ("mobilenet", True, None, "--encoder is for the aebonet backbone"),
])
def test_one_check_refuses_a_backbone_encoder_and_weights_that_do_not_go_together(backbone, has_encoder, weights, says):
    with pytest.raises(AebonetError, match=says):
        baselines.check_backbone(backbone, has_encoder, weights)
    baselines.check_backbone("aebonet", True, None)
    baselines.check_backbone("mobilenet", False, "imagenet")  # refused only later, offline, with its own message


def test_build_model_asks_the_same_check():
    for backbone, weights, says in (("aebonet", None, "needs a pretrained encoder"),
                                    ("scratch", "imagenet", "only for the baselines"), ("alexnet", None, "unknown backbone")):
        with pytest.raises(AebonetError, match=says):
            baselines.build_model(backbone, TINY, weights=weights)
