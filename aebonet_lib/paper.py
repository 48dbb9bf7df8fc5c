"""AE-BoNet, the recipe: read it beside the paper (../shared/PAPER.md, Sirati-Amsheh et al. 2025).

Everything the paper states is data at the top, each line citing its table; every
point where the paper is silent and we had to choose carries an "our choice" comment,
naming its topic, where the choice is made, and is collected in `CHOICES` (chapter 3
prints it). That includes how every preset trains: the rate schedule, plateau and early
stopping, frozen phases, which epochs are validated and which is kept (the end of this
module). The engine (aebonet_lib._engine: run folders, resume, precision, distribution,
caching, benchmarks) carries the recipe out, chooses nothing, and is never needed to
understand it.

Layers follow the global dtype policy (mixed precision); the output layers are
float32, so reconstructions and ages always come out as float32. Every regressor
holds its feature extractor as a nested model named "encoder".
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

import keras
import numpy as np
from keras import layers, ops

from aebonet_lib.errors import AebonetError


class Settings(Protocol):
    """What the recipe reads from a preset (a config.Config, whose numbers come from this module)."""

    image_size: int
    bn_momentum: float
    decoder: str
    dense_units: int
    l2: float
    scale_output: bool
    ae_lr: float
    reg_lr: float
    jit: bool
    objective: str
    reg_num_epochs: int
    lr_schedule: str
    reduce_lr_factor: float
    reduce_lr_patience: int
    early_stopping_patience: int
    keep: str

    def scaled_filters(self) -> tuple[int, ...]:
        """Return the filter counts of the four blocks and the bottleneck after the width multiplier."""

# ---------------------------------------------------------------------------
# What the paper states

IMAGE_SIZE = 256  # Table 1: input 256x256
ENCODER_FILTERS = (64, 128, 256, 512)  # text: four convolutional blocks, filters increasing
BOTTLENECK = 1024  # text: the fifth filter count; read by us as the bottleneck (see CHOICES)
DENSE_UNITS = 10  # Table 3: Dense(10, ReLU) after global average pooling and batch norm
L2 = 1e-4  # Table 3: L2 weight decay on the Dense(10) layer
AE_STAGES = (300, 200, 100, 150, 150)  # Table 2: 900 epochs in five stages
AE_BATCH_SIZE = 8  # Table 1
AE_LR = 1e-3  # Table 1: Adam, learning rate 0.001, MSE loss
REG_BATCH_SIZE = 16  # Table 3
REG_LR = 1e-3  # Table 3: Adam, learning rate 0.001, MSE loss, MAE metric
SPLIT_SIZES = (10088, 2323, 200)  # Data: random split of the 12,611 RSNA training images

# Table 2 (end-of-stage training values), Table 5 and the headline result, for comparison with our runs;
# results, _engine.rsna_results and the tests read them from here.
TABLE2 = ((1, 300, 0.000206, 0.4866), (2, 200, 0.000172, 0.6169), (3, 100, 0.000166, 0.6819),
          (4, 150, 0.000156, 0.6830), (5, 150, 0.000148, 0.6839))  # stage, epochs, MSE, "Accuracy"
TABLE5 = {  # input size -> backbone -> (MAE in months, MSE in months squared), ImageNet backbones with the same head
    450: {"Xception": (14.7, 352.8), "VGG16": (15.8, 427.6), "InceptionV3": (13.6, 295.5), "MobileNet": (12.5, 268.8),
          "AE-BoNet": (9.9, 161.1)},
    256: {"Xception": (16.1, 413.6), "VGG16": (19.1, 661.2), "InceptionV3": (16.1, 416.3), "MobileNet": (12.9, 296.8),
          "AE-BoNet": (9.3, 144.6)},
}
TEST_MAE = TABLE5[IMAGE_SIZE]["AE-BoNet"][0]  # months, on the 200 test images (abstract and Table 5)

# ---------------------------------------------------------------------------
# Where the paper is silent: what we chose, and why

REG_NUM_EPOCHS = 100  # our choice (regressor epochs): the paper gives no count; its Figure 3 curves settle after about ten
MASK_GRID = 8  # beyond the paper (masked-image objective): the image cut into 8 x 8 square patches
MASK_RATIO = 0.5  # beyond the paper (masked-image objective): half of the patches hidden in each training image

CHOICES = [
    # (topic, what the paper says, what we chose, why)
    ("kernel size", "not given", "3x3, 'same' padding", "the usual choice in U-Net-style autoencoders; keeps sizes exact"),
    ("pooling", "'pooling layer', type and size not given", "2x2 max pooling", "halves the size per block, as four blocks to a 16x16 code imply"),
    ("ReLU and batch norm", "both named, order not given", "convolution, ReLU, then batch norm", "one common reading; the paper lists ReLU with the convolutions"),
    ("1024 filters", "five filter counts for four blocks", "a 1024-filter bottleneck convolution after the fourth block", "the only reading with four pooling blocks"),
    ("decoder upsampling", "'down- and upsampling' only", "2x upsampling, then convolution", "mirrors the encoder; chapter 7 compares transposed convolutions"),
    ("regressor epochs", "not given (Figure 3 settles after about ten)", f"{REG_NUM_EPOCHS} in the paper preset", "long enough for the curves to settle"),
    ("kept regressor", "not given", "the epoch with the best validation MAE (presets may keep the last)", "standard model selection; the rsna-cpu preset keeps the last so val stays a test set"),
    ("stages", "five stages; whether anything was reset between them is not said", "one optimizer carried through all five stages", "nothing in the paper suggests a reset"),
    ("preprocessing", "'resizing and normalization'", "resize to fit, pad to square, pixels in [0, 1]", "keeps the hand's proportions; chapter 2 shows the alternatives"),
    ("450 px", "used for Table 5; 450 is not divisible by 16", "pad with zeros at the bottom and right to the next multiple of 16 (464) in the encoder; the decoder crops back", "four 2x poolings need sizes divisible by 16; zeros are the background"),
    ("batch-norm momentum", "not given", "0.99 (Keras's default) in the paper preset, 0.9 in short CPU presets", "moving statistics must settle within a short run"),
    ("output scale", "Dense(1, linear) on months", "off in the paper preset; CPU presets learn age in SD units", "makes short runs converge"),
    ("masked-image objective", "none: the autoencoder redraws its whole, unmasked input",
     f"beyond the paper, `--objective masked`: {MASK_RATIO:.0%} of {MASK_GRID} x {MASK_GRID} square patches set to 0 "
     "in each training image, the whole image the target; same encoder, decoder, loss, optimizer and epochs",
     "a second pretraining objective at equal compute for the label-efficiency experiment (chapter 7)"),
    ("several GPUs or machines", "one GPU (an RTX 2060)", "batch-norm statistics over the whole global batch (synchronized)", "normalizes as one device with the same batch would; every replica ends with the same weights"),
    ("reconstruction accuracy", "metric 'Accuracy' (Table 2), not defined", "Keras's binary accuracy per pixel (the prediction thresholded at 0.5), logged as \"accuracy\", with PSNR and SSIM beside it", "what Keras's `metrics=['accuracy']` computes for this output; it mostly counts black background (chapter 3)"),
    ("learning-rate schedule", "Adam at 0.001, no schedule named", "constant in the paper preset; half a cosine to near 0 in the rsna presets", "short runs settle with small last steps"),
    ("plateau and early stopping", "none named", "off in the paper preset; presets may halve the rate on a plateau or stop after a patience", "a preset that keeps the best epoch may stop once val stops improving"),
    ("frozen backbone", "all layers fine-tuned", "no frozen epochs by default; `--freeze-epochs N` trains the head alone first", "the paper's reading; freezing first is the usual transfer-learning alternative"),
    ("validation epochs", "Figure 3 shows validation MAE every epoch", "every epoch when val picks the kept epoch; about 20 times a run when the last epoch is kept", "val costs time and steers nothing when the last epoch is kept"),
]

# ---------------------------------------------------------------------------
# The autoencoder's metrics: the paper's "accuracy" (what it measures), PSNR and SSIM


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
        keras.metrics.MeanMetricWrapper(pixel_accuracy, name="accuracy"),  # our choice (reconstruction accuracy)
        keras.metrics.MeanMetricWrapper(psnr, name="psnr"),
        keras.metrics.MeanMetricWrapper(ssim, name="ssim"),
    ]

# ---------------------------------------------------------------------------
# The autoencoder (Table 1)


def conv_block(x, filters: int, name: str, momentum: float):
    """Apply Conv2D(filters) -> ReLU -> BatchNormalization."""
    x = layers.Conv2D(filters, 3, padding="same", name=f"{name}_conv")(x)  # our choice (kernel size): 3x3, same padding
    x = layers.ReLU(name=f"{name}_relu")(x)  # our choice (ReLU and batch norm): ReLU first
    return layers.BatchNormalization(momentum=momentum, name=f"{name}_bn")(x)


def padding(image_size: int, blocks: int = len(ENCODER_FILTERS)) -> int:
    """Return the pixels to add so that the size halves evenly in every block (450 px: 14, to 464)."""
    return -image_size % 2 ** blocks


def build_encoder(config: Settings) -> keras.Model:
    """Return the encoder: four conv-ReLU-BN-pool blocks (64-512 filters), then a 1024-filter bottleneck (chapter 3)."""
    *block_filters, bottleneck = config.scaled_filters()
    image = keras.Input((config.image_size, config.image_size, 1), name="image")
    x = image
    if pad := padding(config.image_size, len(block_filters)):  # our choice (450 px): zero-pad to a multiple of 16
        x = layers.ZeroPadding2D(((0, pad), (0, pad)), name="pad")(x)
    for i, filters in enumerate(block_filters, start=1):
        x = conv_block(x, filters, f"enc{i}", config.bn_momentum)
        x = layers.MaxPooling2D(2, name=f"enc{i}_pool")(x)  # our choice (pooling): 2x2 max pooling
    code = conv_block(x, bottleneck, "bottleneck", config.bn_momentum)  # our choice (1024 filters): the bottleneck
    return keras.Model(image, code, name="encoder")


def decoder_block(x, filters: int, name: str, config: Settings):
    """Double the resolution and convolve, in the order config.decoder names (config.DECODERS)."""
    if config.decoder == "upsample_conv":  # our choice (decoder upsampling): 48.5 GFLOP at 256 px
        x = layers.UpSampling2D(2, name=f"{name}_up")(x)
        return conv_block(x, filters, name, config.bn_momentum)
    if config.decoder == "conv_upsample":  # the same layers, convolving at the low resolution: 4x cheaper
        x = conv_block(x, filters, name, config.bn_momentum)
        return layers.UpSampling2D(2, name=f"{name}_up")(x)
    x = layers.Conv2DTranspose(filters, 3, strides=2, padding="same", name=f"{name}_conv")(x)
    x = layers.ReLU(name=f"{name}_relu")(x)
    return layers.BatchNormalization(momentum=config.bn_momentum, name=f"{name}_bn")(x)


def build_decoder(config: Settings) -> keras.Model:
    """Return the symmetric decoder: four 2x-upsampling blocks (512-64 filters), then a sigmoid Conv2D(1) (chapter 3)."""
    *block_filters, bottleneck = config.scaled_filters()
    pad = padding(config.image_size, len(block_filters))
    side = (config.image_size + pad) // 2 ** len(block_filters)
    code = keras.Input((side, side, bottleneck), name="code")
    x = code
    for i, filters in enumerate(reversed(block_filters), start=1):
        x = decoder_block(x, filters, f"dec{i}", config)
    if pad:
        x = layers.Cropping2D(((0, pad), (0, pad)), name="crop")(x)
    reconstruction = layers.Conv2D(1, 3, padding="same", activation="sigmoid", dtype="float32",
                                   name="reconstruction")(x)  # Table 1: sigmoid output
    return keras.Model(code, reconstruction, name="decoder")


@keras.saving.register_keras_serializable(package="aebonet")
class PatchMask(layers.Layer):
    """Set a random `ratio` of an image's square patches to 0 while training; pass images through otherwise."""

    def __init__(self, patch: int, ratio: float = MASK_RATIO, seed: int | None = None, **kwargs):
        """Keep the patch side in pixels, the fraction of patches hidden, and the mask's seed."""
        super().__init__(**kwargs)
        self.patch, self.ratio, self.seed = int(patch), float(ratio), seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=False):
        """Return the images with about `ratio` of their patches zeroed (training), or unchanged."""
        if not training:
            return images
        size = images.shape[1]
        side = -(-size // self.patch)  # patches per row, the last one cut by the border
        draws = keras.random.uniform((keras.ops.shape(images)[0], side, side, 1), seed=self.seed_generator)
        keep = keras.ops.cast(draws >= self.ratio, images.dtype)
        mask = keras.ops.repeat(keras.ops.repeat(keep, self.patch, axis=1), self.patch, axis=2)
        return images * mask[:, :size, :size, :]

    def get_config(self) -> dict:
        """Return the layer's arguments, so that a saved autoencoder loads."""
        return {**super().get_config(), "patch": self.patch, "ratio": self.ratio, "seed": self.seed}


def build_autoencoder(config: Settings) -> keras.Model:
    """Return the autoencoder (not compiled): image -> nested "encoder" -> nested "decoder" -> image (chapter 3).

    With `config.objective == "masked"` (beyond the paper) a PatchMask layer hides half
    of the image's patches before the encoder while training; the target stays the whole image.
    """
    image = keras.Input((config.image_size, config.image_size, 1), name="image")
    x = image
    if getattr(config, "objective", "autoencoder") == "masked":
        x = PatchMask(max(1, config.image_size // MASK_GRID), MASK_RATIO, name="patch_mask")(x)
    reconstruction = build_decoder(config)(build_encoder(config)(x))
    return keras.Model(image, reconstruction, name="autoencoder")


def encoder_of(autoencoder: keras.Model) -> keras.Model:
    """Return the autoencoder's encoder: the part AE-BoNet keeps, the decoder discarded (Table 3)."""
    return autoencoder.get_layer("encoder")


def compile_autoencoder(model: keras.Model, config: Settings) -> keras.Model:
    """Compile the autoencoder as Table 1 does: MSE loss, Adam(config.ae_lr), "accuracy" (plus PSNR, SSIM)."""
    model.compile(optimizer=keras.optimizers.Adam(config.ae_lr), loss="mse",
                  metrics=reconstruction_metrics(), jit_compile=config.jit)
    return model


def stage_bounds(plan: list[int] | tuple[int, ...]) -> list[tuple[int, int]]:
    """Return each stage's (first epoch, end epoch), epochs counted from 0 over the whole run."""
    ends = [sum(plan[:i + 1]) for i in range(len(plan))]
    return [(end - n, end) for n, end in zip(plan, ends)]


def pretrain_autoencoder(autoencoder: keras.Model, train_data, val_data, plan=AE_STAGES, done: int = 0,
                         callbacks: Callable[[int], list] = lambda stage: []) -> keras.Model:
    """Train the autoencoder to redraw its input in the stages of Table 2: one `fit` call per stage.

    `plan` holds each stage's epochs (the paper's 300, 200, 100, 150, 150); the epoch
    count runs on across stages, and so does the optimizer (our choice). `done` skips
    epochs already trained (a resumed run); `callbacks(stage)` gives each stage's callbacks.
    """
    for stage, (start, end) in enumerate(stage_bounds(plan), start=1):
        if end > done:
            # our choice (stages): the same compiled model and optimizer through every stage
            autoencoder.fit(train_data, validation_data=val_data, initial_epoch=max(start, done), epochs=end,
                            callbacks=callbacks(stage), verbose=0, shuffle=False)  # tf.data shuffles
            if autoencoder.stop_training:  # a callback ended the run (held-out loss no longer improving)
                break
    return autoencoder


# ---------------------------------------------------------------------------
# The regressor (Table 3)


def check_output_scale(config: Settings, y_mean: float, y_std: float) -> tuple[float, float]:
    """Return y_mean and y_std as plain floats, refusing a scale that cannot map outputs to months."""
    y_mean, y_std = float(y_mean), float(y_std)
    if config.scale_output and not (math.isfinite(y_mean) and math.isfinite(y_std) and y_std > 0):
        raise AebonetError(f"output scale mean={y_mean} sd={y_std}: "
                           "need a finite mean and a positive sd of the training ages")
    return y_mean, y_std


def regressor_inputs(config: Settings, sex_input: bool) -> tuple:
    """Return the image input and, when asked, the sex input (0 girl, 1 boy; the paper has none)."""
    image = keras.Input((config.image_size, config.image_size, 1), name="image")
    sex = keras.Input((1,), name="sex") if sex_input else None
    return image, sex


def add_head(features, config: Settings, sex=None, y_mean: float = 0.0, y_std: float = 1.0):
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
    x = layers.Dense(1, dtype="float32", name="age_sd")(x)  # our choice (output scale): age in SD units (CPU presets)
    return layers.Rescaling(scale=y_std, offset=y_mean, dtype="float32", name="age")(x)


def regressor_model(image, sex, age, name: str) -> keras.Model:
    """Return the model from its inputs to age: one image tensor, or {"image", "sex"} with a sex input."""
    inputs = image if sex is None else {"image": image, "sex": sex}
    return keras.Model(inputs, age, name=name)


def build_regressor(encoder: keras.Model, config: Settings, sex_input: bool = False,
                    y_mean: float = 0.0, y_std: float = 1.0, name: str = "aebonet") -> keras.Model:
    """Return AE-BoNet (not compiled): the pretrained encoder, then the bone age head (chapter 4).

    The encoder is used as it is (not copied), so training the regressor fine-tunes it.
    With `sex_input` the model takes {"image": X, "sex": male}, joined after pooling.
    With `config.scale_output`, Dense(1) learns the age in standard deviations and a
    Rescaling layer maps it to months (`y_std * output + y_mean`, from the training labels).
    """
    expected, found = (config.image_size, config.image_size, 1), tuple(encoder.input_shape[1:])
    if found != expected:
        raise AebonetError(f"encoder takes {found} images but config.image_size is {config.image_size}: "
                           f"train with the size used in pretraining (--size {found[0]})")
    y_mean, y_std = check_output_scale(config, y_mean, y_std)
    image, sex = regressor_inputs(config, sex_input)
    return regressor_model(image, sex, add_head(encoder(image), config, sex, y_mean, y_std), name)


def build_scratch_regressor(config: Settings, sex_input: bool = False,
                            y_mean: float = 0.0, y_std: float = 1.0) -> keras.Model:
    """Return the from-scratch control: AE-BoNet with a freshly initialized encoder, the test of the paper's claim."""
    return build_regressor(build_encoder(config), config, sex_input, y_mean, y_std, name="scratch")


def compile_regressor(model: keras.Model, config: Settings) -> keras.Model:
    """Compile a regressor as Table 3 does: MSE loss, Adam(config.reg_lr), MAE in months as "mae"; return it."""
    model.compile(optimizer=keras.optimizers.Adam(config.reg_lr), loss="mse",
                  metrics=[keras.metrics.MeanAbsoluteError(name="mae")], jit_compile=config.jit)
    return model


def fit_regressor(regressor: keras.Model, train_data, val_data, num_epochs: int, done: int = 0,
                  callbacks: list | None = None, validation_freq=1) -> keras.Model:
    """Fine-tune every layer of the regressor (Table 3): one `fit` call from epoch `done` to `num_epochs`."""
    regressor.fit(train_data, validation_data=val_data, initial_epoch=done, epochs=num_epochs,
                  callbacks=callbacks or [], validation_freq=validation_freq, verbose=0, shuffle=False)
    return regressor


# ---------------------------------------------------------------------------
# Fine-tuning controls. The paper gives a constant Adam rate and no schedule, callbacks,
# phases or kept epoch; each preset picks one of these (config.py), the engine carries it out.


def cosine_rate(config: Settings, num_epochs: int) -> Callable:
    """Return epoch -> learning rate, decaying config.reg_lr to near 0 along half a cosine over num_epochs."""
    # our choice (learning-rate schedule): half a cosine, so that the last epochs settle with small steps
    return lambda epoch, lr=None: float(config.reg_lr * 0.5 * (1 + np.cos(np.pi * epoch / max(1, num_epochs))))


def fine_tuning_controls(config: Settings, num_epochs: int | None = None) -> dict:
    """Return what steers fine-tuning: the rate schedule (None: constant), and plateau and early-stop settings (None: off)."""
    schedule = cosine_rate(config, num_epochs or config.reg_num_epochs) if config.lr_schedule == "cosine" else None
    reduce_lr = ({"factor": config.reduce_lr_factor, "patience": config.reduce_lr_patience}
                 if config.reduce_lr_patience else None)  # our choice (plateau and early stopping): off in the paper preset
    early_stop = {"patience": config.early_stopping_patience} if config.early_stopping_patience else None
    return {"schedule": schedule, "reduce_lr": reduce_lr, "early_stop": early_stop}


def phase_bounds(freeze_epochs: int, num_epochs: int) -> list[tuple[bool, int, int]]:
    """Return the training phases as (backbone trainable, first epoch, end epoch): frozen first, then fine-tuned."""
    freeze_epochs = min(freeze_epochs, num_epochs)
    phases = [(False, 0, freeze_epochs), (True, freeze_epochs, num_epochs)]  # our choice (frozen backbone): 0 epochs by default
    return [phase for phase in phases if phase[2] > phase[1]]


def validation_epochs(config: Settings, num_epochs: int, most: int = 20) -> list[int]:
    """Return the (1-based) epochs to validate: all when val picks the kept epoch, else about `most`, first and last included."""
    every = 1 if config.keep == "best" else max(1, -(-num_epochs // most))  # our choice (validation epochs)
    return [e for e in range(1, num_epochs + 1) if e % every == 0 or e in (1, num_epochs)]


def kept_checkpoint(config: Settings, state: dict) -> str:
    """Return the checkpoint whose weights the regressor keeps: the best validation MAE's, or the last epoch's."""
    return state.get("best", state["latest"]) if config.keep == "best" else state["latest"]  # our choice (kept regressor)
