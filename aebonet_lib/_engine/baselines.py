"""The baselines of the paper's Table 5: ImageNet backbones with the AE-BoNet head, and `build_model` for any backbone."""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path
from typing import Iterator

import keras
from keras import layers

from aebonet_lib.config import Config
from aebonet_lib.errors import AebonetError
from aebonet_lib.paper import (
    add_head,
    build_regressor,
    build_scratch_regressor,
    check_output_scale,
    regressor_inputs,
    regressor_model,
)

# ---------------------------------------------------------------------------
# The baselines (paper Table 5): ImageNet backbones with the same head

BASELINES = ("xception", "vgg16", "inceptionv3", "mobilenet", "resnet50")

# name: (keras.applications constructor, preprocess_input mode, smallest input side)
BACKBONES = {
    "xception": (keras.applications.Xception, "tf", 71),
    "vgg16": (keras.applications.VGG16, "caffe", 32),
    "inceptionv3": (keras.applications.InceptionV3, "tf", 75),
    "mobilenet": (keras.applications.MobileNet, "tf", 32),
    "resnet50": (keras.applications.ResNet50, "caffe", 32),
}

CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)  # ImageNet channel means subtracted in 'caffe' mode
DOWNLOAD_TIMEOUT_S = 30  # a stalled connection fails after this long instead of hanging


def imagenet_preprocessing(image, mode: str):
    """Return the grayscale image in [0, 1] as the 3-channel input a backbone's preprocess_input makes.

    'tf' mode is x / 127.5 - 1 on pixels in [0, 255]; 'caffe' mode flips RGB to BGR (a no-op
    for a gray image) and subtracts the ImageNet channel means. Plain layers, no Lambda, so the
    model saves and loads in safe mode; float32, so mixed precision does not round the means.
    """
    rgb = layers.Concatenate(dtype="float32", name="gray_to_rgb")([image, image, image])
    pixels = layers.Rescaling(255.0, dtype="float32", name="to_255")(rgb)
    if mode == "tf":
        return layers.Rescaling(1 / 127.5, offset=-1.0, dtype="float32", name="preprocess_tf")(pixels)
    return layers.Normalization(mean=CAFFE_MEAN_BGR, variance=(1.0, 1.0, 1.0), dtype="float32",
                                name="preprocess_caffe")(pixels)


def keras_cache_dir() -> str:
    """Return the folder where Keras keeps downloaded weights ($KERAS_HOME/models or ~/.keras/models)."""
    return os.path.join(os.environ.get("KERAS_HOME", os.path.expanduser("~/.keras")), "models")


def wants_weights(weights: str | None) -> bool:
    """Return True when `weights` asks for trained weights rather than random initialization."""
    return weights is not None and str(weights).lower() != "none"


def resolve_weights(name: str, weights: str | None) -> str | None:
    """Return what keras.applications expects for `weights`: None, "imagenet" or an existing file path."""
    if not wants_weights(weights):
        return None
    if str(weights).lower() == "imagenet":
        return "imagenet"
    if not Path(weights).is_file():
        raise AebonetError(f"--weights {weights}: file not found; give a local weights file (.h5) for {name}, "
                           f"or --weights none, or --weights imagenet")
    return str(weights)


def weights_error(name: str, weights: str, error: Exception) -> str:
    """Return the one-line message for weights that could not be downloaded or loaded."""
    reason = " ".join(str(error).split())[:200]
    if weights == "imagenet":
        return (f"--weights imagenet: could not get the ImageNet weights of {name} ({reason}); offline, use "
                f"--weights none (random initialization) or --weights PATH (a local .h5 file; Keras looks in "
                f"{keras_cache_dir()})")
    return f"--weights {weights}: could not load it into {name} ({reason}); give its no-top .h5 file or --weights none"


@contextlib.contextmanager
def socket_timeout(seconds: float) -> Iterator[None]:
    """Make network reads inside the block fail after `seconds` of silence instead of hanging.

    The default socket timeout is process-wide; it is restored when the block ends.
    """
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def load_backbone(name: str, config: Config, weights: str | None) -> keras.Model:
    """Return the keras.applications backbone without its top, named "encoder", with the weights asked for."""
    constructor, _, min_size = BACKBONES[name]
    if config.image_size < min_size:
        raise AebonetError(f"{name} needs images of at least {min_size} px, got {config.image_size}; raise --size")
    weights = resolve_weights(name, weights)
    shape = (config.image_size, config.image_size, 3)
    try:
        with socket_timeout(DOWNLOAD_TIMEOUT_S):
            backbone = constructor(include_top=False, weights=weights, input_shape=shape)
    except Exception as e:
        if weights is None:
            raise  # random initialization cannot fail on good input: a bug, not a user error
        raise AebonetError(weights_error(name, weights, e)) from e
    return keras.Model(backbone.input, backbone.output, name="encoder")


def build_baseline(name: str, config: Config, weights: str | None = None, sex_input: bool = False,
                   y_mean: float = 0.0, y_std: float = 1.0) -> keras.Model:
    """Return a Table 5 baseline (not compiled): gray -> RGB, its own preprocessing, backbone, the AE-BoNet head.

    `weights`: "imagenet" (downloaded by Keras unless cached; offline this raises
    AebonetError), None or "none" (random initialization, works everywhere), or a path
    to a local weights file.
    """
    if name not in BACKBONES:
        raise AebonetError(f"unknown baseline {name!r}: choose one of {', '.join(BASELINES)}")
    y_mean, y_std = check_output_scale(config, y_mean, y_std)
    encoder = load_backbone(name, config, weights)
    image, sex = regressor_inputs(config, sex_input)
    features = encoder(imagenet_preprocessing(image, BACKBONES[name][1]))
    age = add_head(features, config, sex, y_mean, y_std)
    return regressor_model(image, sex, age, name)


def build_model(backbone: str, config: Config, encoder: keras.Model | None = None, weights: str | None = None,
                sex_input: bool = False, y_mean: float = 0.0, y_std: float = 1.0) -> keras.Model:
    """Return the regressor `backbone` names: "aebonet" (needs `encoder`), "scratch", or a baseline."""
    check_backbone(backbone, encoder is not None, weights)
    if backbone in BASELINES:
        return build_baseline(backbone, config, weights, sex_input, y_mean, y_std)
    if backbone == "scratch":
        return build_scratch_regressor(config, sex_input, y_mean, y_std)
    return build_regressor(encoder, config, sex_input, y_mean, y_std)


def check_backbone(backbone: str, has_encoder: bool, weights: str | None = None) -> None:
    """Refuse a backbone, an encoder and weights that do not go together (every command and `build_model` ask here)."""
    if backbone not in ("aebonet", "scratch", *BASELINES):
        raise AebonetError(f"unknown backbone {backbone!r}: choose aebonet, scratch, {', '.join(BASELINES)}")
    if wants_weights(weights) and backbone not in BASELINES:
        raise AebonetError(f"--weights {weights}: only for the baselines ({', '.join(BASELINES)}), not {backbone}")
    if backbone == "aebonet" and not has_encoder:
        raise AebonetError("backbone aebonet needs a pretrained encoder: give --encoder RUN/encoder.keras, "
                           "or use --backbone scratch")
    if has_encoder and backbone != "aebonet":
        raise AebonetError(f"--encoder is for the aebonet backbone, not {backbone}; leave it out")
