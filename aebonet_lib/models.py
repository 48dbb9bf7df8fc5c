"""The paper's networks: an autoencoder, its encoder reused in a bone age regressor, and the baselines.

Hold Table 1 of Sirati-Amsheh et al. (2025) beside `build_encoder` and `build_decoder`
and tick off every line; `encoder.summary()` prints the same layers under readable names
(`enc1_conv`, `enc1_relu`, `enc1_bn`, `enc1_pool`, ..., `bottleneck_conv`, `dec1_up`, ...),
and `autoencoder.summary(expand_nested=True)` shows the encoder and decoder nested in it.
Chapter 3 builds and pretrains the autoencoder, chapter 4 reuses its encoder in the
regressor and compares it with the from-scratch control and the ImageNet baselines of the
paper's Table 5. Layers follow the global dtype policy (mixed precision); the output layers
are float32, so reconstructions and ages always come out as float32.

Every regressor, whatever its backbone, holds its feature extractor as a nested model named
"encoder" (`model.get_layer("encoder")`), so freezing it or reading its weights works the same way.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
from pathlib import Path
from typing import Iterator

import keras
from keras import layers, ops

from .config import Config
from .errors import AebonetError

# ---------------------------------------------------------------------------
# The autoencoder (paper Table 1)


def relu_bn(x, name: str, momentum: float):
    """Apply ReLU then BatchNormalization, the order the paper gives."""
    x = layers.ReLU(name=f"{name}_relu")(x)
    return layers.BatchNormalization(momentum=momentum, name=f"{name}_bn")(x)


def conv_block(x, filters: int, name: str, momentum: float):
    """Apply Conv2D(filters, 3x3, same) -> ReLU -> BatchNormalization."""
    x = layers.Conv2D(filters, 3, padding="same", name=f"{name}_conv")(x)
    return relu_bn(x, name, momentum)


def build_encoder(config: Config) -> keras.Model:
    """Return the encoder: four conv-ReLU-BN-pool blocks (64-512 filters), then a 1024-filter bottleneck (chapter 3)."""
    *block_filters, bottleneck = config.scaled_filters()
    image = keras.Input((config.image_size, config.image_size, 1), name="image")
    x = image
    for i, filters in enumerate(block_filters, start=1):
        x = conv_block(x, filters, f"enc{i}", config.bn_momentum)
        x = layers.MaxPooling2D(2, name=f"enc{i}_pool")(x)
    code = conv_block(x, bottleneck, "bottleneck", config.bn_momentum)
    return keras.Model(image, code, name="encoder")


def decoder_block(x, filters: int, name: str, config: Config):
    """Double the resolution and convolve, in the order config.decoder names (config.DECODERS)."""
    if config.decoder == "upsample_conv":  # the paper's description: 48.5 GFLOP at 256 px
        x = layers.UpSampling2D(2, name=f"{name}_up")(x)
        return conv_block(x, filters, name, config.bn_momentum)
    if config.decoder == "conv_upsample":  # the same layers, convolving at the low resolution: 4x cheaper
        x = conv_block(x, filters, name, config.bn_momentum)
        return layers.UpSampling2D(2, name=f"{name}_up")(x)
    x = layers.Conv2DTranspose(filters, 3, strides=2, padding="same", name=f"{name}_conv")(x)
    return relu_bn(x, name, config.bn_momentum)


def build_decoder(config: Config) -> keras.Model:
    """Return the decoder: four 2x-upsampling blocks (512-64 filters), then a sigmoid Conv2D(1) (chapter 3)."""
    *block_filters, bottleneck = config.scaled_filters()
    side = config.image_size // 2 ** len(block_filters)
    code = keras.Input((side, side, bottleneck), name="code")
    x = code
    for i, filters in enumerate(reversed(block_filters), start=1):
        x = decoder_block(x, filters, f"dec{i}", config)
    reconstruction = layers.Conv2D(1, 3, padding="same", activation="sigmoid", dtype="float32",
                                   name="reconstruction")(x)
    return keras.Model(code, reconstruction, name="decoder")


def build_autoencoder(config: Config) -> keras.Model:
    """Return the autoencoder (not compiled): image -> nested "encoder" -> nested "decoder" -> image (chapter 3)."""
    image = keras.Input((config.image_size, config.image_size, 1), name="image")
    reconstruction = build_decoder(config)(build_encoder(config)(image))
    return keras.Model(image, reconstruction, name="autoencoder")


# ---------------------------------------------------------------------------
# The regressor (paper Table 3)


def regressor_inputs(config: Config, sex_input: bool) -> tuple:
    """Return the image input and, when asked, the sex input (0 girl, 1 boy)."""
    image = keras.Input((config.image_size, config.image_size, 1), name="image")
    sex = keras.Input((1,), name="sex") if sex_input else None
    return image, sex


def add_head(features, config: Config, sex=None, y_mean: float = 0.0, y_std: float = 1.0):
    """Return bone age in months from a feature map: GAP, Flatten, [sex], BN, Dense(10, ReLU, L2), Dense(1)."""
    x = layers.GlobalAveragePooling2D(name="head_gap")(features)
    x = layers.Flatten(name="head_flatten")(x)
    if sex is not None:
        x = layers.Concatenate(name="head_sex")([x, sex])
    x = layers.BatchNormalization(momentum=config.bn_momentum, name="head_bn")(x)
    l2 = keras.regularizers.L2(config.l2)
    x = layers.Dense(config.dense_units, activation="relu", kernel_regularizer=l2, name="head_dense")(x)
    if not config.scale_output:
        return layers.Dense(1, dtype="float32", name="age")(x)
    x = layers.Dense(1, dtype="float32", name="age_sd")(x)
    return layers.Rescaling(scale=y_std, offset=y_mean, dtype="float32", name="age")(x)


def check_output_scale(config: Config, y_mean: float, y_std: float) -> tuple[float, float]:
    """Return y_mean and y_std as plain floats, refusing a scale that cannot map outputs to months."""
    y_mean, y_std = float(y_mean), float(y_std)
    if config.scale_output and not (math.isfinite(y_mean) and math.isfinite(y_std) and y_std > 0):
        raise AebonetError(f"output scale mean={y_mean} sd={y_std}: "
                           "need a finite mean and a positive sd of the training ages")
    return y_mean, y_std


def check_encoder(encoder: keras.Model, config: Config) -> None:
    """Refuse an encoder pretrained on another image size than config.image_size."""
    expected = (config.image_size, config.image_size, 1)
    found = tuple(encoder.input_shape[1:])
    if found != expected:
        raise AebonetError(
            f"encoder takes {found} images but config.image_size is {config.image_size}: "
            f"train with the size used in pretraining (--size {found[0]})"
        )


def assemble_regressor(encoder: keras.Model, config: Config, sex_input: bool, y_mean: float, y_std: float,
                       name: str) -> keras.Model:
    """Return image [+ sex] -> encoder -> head -> age, as a model called `name`."""
    y_mean, y_std = check_output_scale(config, y_mean, y_std)
    image, sex = regressor_inputs(config, sex_input)
    age = add_head(encoder(image), config, sex, y_mean, y_std)
    return regressor_model(image, sex, age, name)


def regressor_model(image, sex, age, name: str) -> keras.Model:
    """Return the model from its inputs to age: one image tensor, or {"image", "sex"} with a sex input."""
    inputs = image if sex is None else {"image": image, "sex": sex}
    return keras.Model(inputs, age, name=name)


def build_regressor(encoder: keras.Model, config: Config, sex_input: bool = False,
                    y_mean: float = 0.0, y_std: float = 1.0) -> keras.Model:
    """Return AE-BoNet (not compiled): the pretrained encoder, then the bone age head (chapter 4).

    The encoder is used as it is (not copied), so training the regressor fine-tunes it.
    With `sex_input` the model takes {"image": X, "sex": male}, joined after pooling
    (the paper has no sex input). When `config.scale_output` is True, Dense(1) learns the
    age in standard deviations and a Rescaling layer maps it to months
    (`y_std * output + y_mean`, from the training labels): a deviation from the paper that
    makes short CPU runs converge; the `paper` preset switches it off, and then y_mean and
    y_std are ignored.
    """
    check_encoder(encoder, config)
    return assemble_regressor(encoder, config, sex_input, y_mean, y_std, name="aebonet")


def build_scratch_regressor(config: Config, sex_input: bool = False,
                            y_mean: float = 0.0, y_std: float = 1.0) -> keras.Model:
    """Return the from-scratch control: AE-BoNet with a freshly initialized encoder, the test of the paper's claim."""
    return assemble_regressor(build_encoder(config), config, sex_input, y_mean, y_std, name="scratch")


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
    if backbone in BASELINES:
        return build_baseline(backbone, config, weights, sex_input, y_mean, y_std)
    if backbone not in ("aebonet", "scratch"):
        raise AebonetError(f"unknown backbone {backbone!r}: choose aebonet, scratch, {', '.join(BASELINES)}")
    if wants_weights(weights):
        raise AebonetError(f"--weights {weights}: only for the baselines ({', '.join(BASELINES)}), not {backbone}")
    if backbone == "scratch":
        return build_scratch_regressor(config, sex_input, y_mean, y_std)
    if encoder is None:
        raise AebonetError("backbone aebonet needs the pretrained encoder: pass --encoder RUN/encoder.keras")
    return build_regressor(encoder, config, sex_input, y_mean, y_std)


# ---------------------------------------------------------------------------
# Counting FLOPs (forward pass, one image; a multiply-add counts 2)


def conv_flops(layer) -> int:
    """Return the FLOPs of a Conv2D or DepthwiseConv2D: each output pixel applies the whole kernel once."""
    _, height, width, _ = layer.output.shape
    return 2 * height * width * math.prod(layer.kernel.shape)


def separable_conv_flops(layer) -> int:
    """Return the FLOPs of a SeparableConv2D: a depthwise then a pointwise kernel at every output pixel."""
    _, height, width, _ = layer.output.shape
    kernels = math.prod(layer.depthwise_kernel.shape) + math.prod(layer.pointwise_kernel.shape)
    return 2 * height * width * kernels


def conv_transpose_flops(layer) -> int:
    """Return the FLOPs of a Conv2DTranspose: each input pixel spreads the whole kernel once."""
    _, height, width, _ = layer.input.shape
    return 2 * height * width * math.prod(layer.kernel.shape)


def dense_flops(layer) -> int:
    """Return the FLOPs of a Dense layer: one kernel product per input vector."""
    vectors = math.prod(layer.input.shape[1:-1])
    return 2 * vectors * math.prod(layer.kernel.shape)


def layer_flops(layer) -> int:
    """Return the forward FLOPs of one layer (nested models summed); 0 for layers without a kernel."""
    if isinstance(layer, keras.Model):
        return count_flops(layer)
    if isinstance(layer, layers.Conv2DTranspose):
        return conv_transpose_flops(layer)
    if isinstance(layer, layers.SeparableConv2D):
        return separable_conv_flops(layer)
    if isinstance(layer, (layers.Conv2D, layers.DepthwiseConv2D)):
        return conv_flops(layer)
    if isinstance(layer, layers.Dense):
        return dense_flops(layer)
    return 0


def count_flops(model: keras.Model) -> int:
    """Return the forward FLOPs per image of a model's convolutions and Dense layers (chapter 3)."""
    return sum(layer_flops(layer) for layer in model.layers)


# ---------------------------------------------------------------------------
# Reconstruction metrics and the paper's training recipe


@keras.saving.register_keras_serializable(package="aebonet")
def psnr(y_true, y_pred):
    """Return the peak signal-to-noise ratio (dB) of each image in the batch, for pixels in [0, 1]."""
    import tensorflow as tf  # here, not at the top: the architecture itself needs only Keras

    return tf.image.psnr(tf.cast(y_true, "float32"), tf.cast(y_pred, "float32"), max_val=1.0)


@keras.saving.register_keras_serializable(package="aebonet")
def ssim(y_true, y_pred):
    """Return the structural similarity of each image in the batch (tf.image.ssim, max_val=1)."""
    import tensorflow as tf

    return tf.image.ssim(tf.cast(y_true, "float32"), tf.cast(y_pred, "float32"), max_val=1.0)


@keras.saving.register_keras_serializable(package="aebonet")
def pixel_accuracy(y_true, y_pred):
    """Return, per image, the share of pixels where y_true equals (y_pred > 0.5): the paper's "accuracy".

    For a model with a one-channel sigmoid output, Keras turns `metrics=["accuracy"]` into
    binary accuracy, which thresholds the prediction at 0.5 but compares it with the target
    as it is. A pixel counts as correct only when its target is exactly 0 (or exactly 1) and
    the prediction falls on that side of 0.5; every gray pixel counts as wrong, however well
    it is reconstructed. So the score mostly measures how much black background an image has
    (a black background alone scores high) and says little about the bones: report PSNR and
    SSIM beside it (chapter 3).
    """
    y_true = ops.cast(y_true, "float32")
    y_pred = ops.cast(ops.cast(y_pred, "float32") > 0.5, "float32")
    correct = ops.cast(ops.equal(y_true, y_pred), "float32")
    return ops.mean(correct, axis=[1, 2, 3])


def reconstruction_metrics() -> list:
    """Return the autoencoder's metrics: the paper's pixel accuracy (logged as "accuracy"), PSNR and SSIM."""
    return [
        keras.metrics.MeanMetricWrapper(pixel_accuracy, name="accuracy"),
        keras.metrics.MeanMetricWrapper(psnr, name="psnr"),
        keras.metrics.MeanMetricWrapper(ssim, name="ssim"),
    ]


def compile_autoencoder(model: keras.Model, config: Config) -> keras.Model:
    """Compile the autoencoder as the paper does: MSE loss, Adam(config.ae_lr); return it."""
    model.compile(optimizer=keras.optimizers.Adam(config.ae_lr), loss="mse",
                  metrics=reconstruction_metrics(), jit_compile=config.jit)
    return model


def compile_regressor(model: keras.Model, config: Config) -> keras.Model:
    """Compile a regressor as the paper does: MSE loss, Adam(config.reg_lr), MAE in months as "mae"; return it."""
    model.compile(optimizer=keras.optimizers.Adam(config.reg_lr), loss="mse",
                  metrics=[keras.metrics.MeanAbsoluteError(name="mae")], jit_compile=config.jit)
    return model
