"""Count a network's forward FLOPs per image, layer by layer (chapter 5's speed arithmetic)."""

from __future__ import annotations

import math

import keras
from keras import layers

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
