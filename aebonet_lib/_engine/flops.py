"""Measures of a network: forward FLOPs per image, and the reconstruction metrics (accuracy, PSNR, SSIM)."""

from __future__ import annotations

import math

import keras
from keras import layers, ops

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
