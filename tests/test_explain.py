"""Grad-CAM: the heatmap's shape and range, and that it points at what drives the prediction."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from aebonet_lib import config, paper
from aebonet_lib._engine import baselines
from aebonet_lib.errors import AebonetError
from aebonet_lib.evaluation import explain

SIZE = 32


class KeepQuadrant(keras.layers.Layer):
    """Zero every feature outside one quadrant, so only that quadrant can move the output."""

    def __init__(self, quadrant: str, **kwargs):
        super().__init__(**kwargs)
        self.quadrant = quadrant

    def call(self, x):
        half_h, half_w = x.shape[1] // 2, x.shape[2] // 2
        mask = np.zeros((1, x.shape[1], x.shape[2], 1), np.float32)
        rows, cols = (slice(None, half_h), slice(None, half_w)) if self.quadrant == "top-left" else (slice(half_h, None), slice(half_w, None))
        mask[:, rows, cols] = 1
        return x * mask


def quadrant_regressor(quadrant: str, output_sign: float = 1.0) -> keras.Model:
    """Return encoder -> GAP -> BN -> Dense(10, relu) -> Dense(1) whose age depends on one quadrant only."""
    positive = keras.initializers.Constant(0.1)
    image = keras.Input((SIZE, SIZE, 1), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", kernel_initializer=positive)(image)
    x = KeepQuadrant(quadrant)(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", kernel_initializer=positive, name="bottleneck")(x)
    encoder = keras.Model(image, x, name="encoder")
    inputs = keras.Input((SIZE, SIZE, 1), name="image")
    h = keras.layers.GlobalAveragePooling2D()(encoder(inputs))
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.Dense(10, activation="relu", kernel_initializer=positive)(h)
    age = keras.layers.Dense(1, kernel_initializer=keras.initializers.Constant(0.1 * output_sign))(h)
    return keras.Model(inputs, age)


def two_bright_squares() -> np.ndarray:
    """Return an image with the same bright square in the top-left and the bottom-right quadrants."""
    image = np.zeros((SIZE, SIZE), np.float32)
    image[4:12, 4:12] = 1.0
    image[20:28, 20:28] = 1.0
    return image


def quadrant_means(heatmap: np.ndarray) -> tuple[float, float]:
    """Return the heatmap's mean over the top-left and the bottom-right quadrants."""
    half = SIZE // 2
    return heatmap[:half, :half].mean(), heatmap[half:, half:].mean()


@pytest.mark.parametrize("quadrant", ["top-left", "bottom-right"])
def test_heatmap_points_at_the_quadrant_that_drives_the_age(quadrant):
    heatmap = explain.gradcam(quadrant_regressor(quadrant), two_bright_squares())
    assert heatmap.shape == (SIZE, SIZE) and heatmap.dtype == np.float32
    assert heatmap.min() >= 0 and heatmap.max() == pytest.approx(1.0)
    top_left, bottom_right = quadrant_means(heatmap)
    looked_at, ignored = (top_left, bottom_right) if quadrant == "top-left" else (bottom_right, top_left)
    assert looked_at > 10 * ignored
    peak_row, peak_col = np.unravel_index(heatmap.argmax(), heatmap.shape)
    assert (peak_row < SIZE // 2) == (quadrant == "top-left") and (peak_col < SIZE // 2) == (quadrant == "top-left")


def test_heatmap_is_empty_when_nothing_raises_the_age():
    heatmap = explain.gradcam(quadrant_regressor("top-left", output_sign=-1.0), two_bright_squares())
    assert heatmap.shape == (SIZE, SIZE) and not heatmap.any()


def test_inner_layer_of_the_encoder():
    model = quadrant_regressor("top-left")
    encoder = model.get_layer("encoder")
    assert explain.feature_maps(encoder)[-1] == "bottleneck"
    first_conv = explain.feature_maps(encoder)[0]
    heatmap = explain.gradcam(model, two_bright_squares()[..., None], layer_name=first_conv)
    assert heatmap.shape == (SIZE, SIZE)
    # Before the mask the first convolution sees both squares, and Grad-CAM weighs channels by
    # their mean gradient over the whole map, so both squares light up: a known limit of the method.
    for square in (heatmap[4:12, 4:12], heatmap[20:28, 20:28]):
        assert square.mean() > 0.5 > 5 * heatmap[14:18, :].mean()
    with pytest.raises(AebonetError, match="not a feature map"):
        explain.gradcam(model, two_bright_squares(), layer_name="no_such_layer")


def test_on_the_project_regressor_with_sex_input(tmp_path):
    cfg = config.get_config("cpu", image_size=SIZE, width=0.125)
    keras.utils.set_random_seed(0)
    model = paper.build_regressor(paper.build_encoder(cfg), cfg, sex_input=True, y_mean=100.0, y_std=40.0)
    image = np.random.default_rng(0).uniform(0, 1, (SIZE, SIZE)).astype(np.float32)
    for layer_name in (None, "enc2_conv"):
        heatmap = explain.gradcam(model, image, sex=1, layer_name=layer_name)
        assert heatmap.shape == (SIZE, SIZE) and 0 <= heatmap.min() and heatmap.max() <= 1
    model.save(tmp_path / "model.keras")  # gradcam must leave the model savable
    with pytest.raises(AebonetError, match="sex=1 for a boy"):
        explain.gradcam(model, image)


def test_bad_inputs():
    model = quadrant_regressor("top-left")
    with pytest.raises(AebonetError, match="no sex input"):
        explain.gradcam(model, two_bright_squares(), sex=0)
    with pytest.raises(AebonetError, match="model's image size"):
        explain.gradcam(model, np.zeros((64, 64), np.float32))
    with pytest.raises(AebonetError, match="no nested model named"):
        explain.gradcam(model, two_bright_squares(), encoder_name="backbone")


@pytest.mark.parametrize("sex_input", [False, True])
def test_on_an_imagenet_baseline_that_takes_three_channels(sex_input):
    cfg = config.get_config("cpu", image_size=SIZE, width=0.125)
    keras.utils.set_random_seed(0)
    model = baselines.build_baseline("mobilenet", cfg, weights=None, sex_input=sex_input, y_mean=100.0, y_std=40.0)
    image = np.random.default_rng(0).uniform(0, 1, (SIZE, SIZE)).astype(np.float32)
    sex = 1 if sex_input else None
    for layer_name in (None, "conv_pw_1"):
        heatmap = explain.gradcam(model, image, sex=sex, layer_name=layer_name)
        assert heatmap.shape == (SIZE, SIZE) and np.isfinite(heatmap).all()
        assert 0 <= heatmap.min() and heatmap.max() <= 1
