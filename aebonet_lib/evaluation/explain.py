"""Grad-CAM: which parts of the radiograph push the predicted bone age up? (chapter 6)

Grad-CAM (Selvaraju et al., ICCV 2017) weighs each channel of a convolutional feature
map by the average gradient of the output with respect to it, sums the weighted channels
and keeps the positive part. For a classifier the output is a class score; for our
regressor it is the predicted age in months, so the map shows where the features that
raise the estimate sit. A student can then check whether the network looks at the
carpals, epiphyses and physes that Greulich-Pyle and Tanner-Whitehouse read.

Every regressor in `models` nests its feature extractor as a sub-model named "encoder".
Grad-CAM needs the feature map and the prediction from one forward pass, so the model is
run in three parts: the layers before the encoder (none for AE-BoNet; for the ImageNet
baselines, gray to three channels and the backbone's own preprocessing), the encoder,
giving the chosen feature map and its own output, then the head layers one after another
(the sex joining at the Concatenate layer) up to the age. Calling the layers on real
tensors leaves the model untouched, so it still saves.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from aebonet_lib.errors import AebonetError


def find_encoder(model: keras.Model, encoder_name: str = "encoder") -> keras.Model:
    """Return the regressor's nested feature extractor."""
    names = [layer.name for layer in model.layers]
    if encoder_name not in names:
        raise AebonetError(f"model {model.name!r} has no nested model named {encoder_name!r} (layers: {names}); "
                           "pass encoder_name= the sub-model holding the convolutions")
    return model.get_layer(encoder_name)


def feature_maps(encoder: keras.Model) -> list[str]:
    """Return the names of the encoder's layers whose output is a feature map (batch, H, W, channels)."""
    return [layer.name for layer in encoder.layers[1:] if len(layer.output.shape) == 4]


def split_encoder(encoder: keras.Model, layer_name: str | None = None) -> keras.Model:
    """Return a model from the image to [the chosen feature map, the encoder's output] (default: its output)."""
    # inputs[0] and outputs[0]: a loaded model may give input and output as one-item lists (Keras 3.10 always;
    # Keras 3.15 for a model saved by 3.10)
    if layer_name is None:
        return keras.Model(encoder.inputs[0], [encoder.outputs[0], encoder.outputs[0]])
    if layer_name not in feature_maps(encoder):
        raise AebonetError(f"layer {layer_name!r}: not a feature map of the encoder; choose one of {feature_maps(encoder)}")
    return keras.Model(encoder.inputs[0], [encoder.get_layer(layer_name).output, encoder.outputs[0]])


def image_input(model: keras.Model):
    """Return the regressor's image input (batch, H, W, 1), leaving out the sex input."""
    return next(tensor for tensor in model.inputs if len(tensor.shape) == 4)


def layer_before(model: keras.Model, encoder: keras.Model):
    """Return the layer that feeds the encoder: in aebonet_lib's regressors, the one listed just before it."""
    before = model.layers[model.layers.index(encoder) - 1]
    if tuple(before.output.shape[1:]) != tuple(encoder.inputs[0].shape[1:]):
        raise AebonetError(f"model {model.name!r}: cannot find the layer that feeds its encoder; "
                           "gradcam supports regressors built by aebonet_lib.paper or its baselines")
    return before


def preprocessing(model: keras.Model, encoder: keras.Model) -> keras.Model | None:
    """Return a model from the image to the encoder's input (a baseline's gray to RGB), or None for no such layers."""
    before = layer_before(model, encoder)
    return None if isinstance(before, keras.layers.InputLayer) else keras.Model(image_input(model), before.output)


def head_layers(model: keras.Model, encoder: keras.Model) -> list:
    """Return the regressor's layers after the encoder, in order, leaving out input layers."""
    after = model.layers[model.layers.index(encoder) + 1:]
    return [layer for layer in after if not isinstance(layer, keras.layers.InputLayer)]


def apply_head(layers: list, features, sex_input: list):
    """Return the predicted age from the encoder's output, passing it through each head layer in turn.

    The sex, when the model takes it, joins at the Concatenate layer, after the features.
    """
    x = features
    for layer in layers:
        x = layer([x, *sex_input] if isinstance(layer, keras.layers.Concatenate) else x, training=False)
    return x


def check_head(model: keras.Model, batch: tf.Tensor, sex_input: list, age) -> None:
    """Raise AebonetError when the layer-by-layer head does not reproduce the model's own prediction."""
    inputs = {"image": batch, "sex": sex_input[0]} if sex_input else batch
    expected = model(inputs, training=False)
    if not np.allclose(age, expected, rtol=1e-2, atol=1e-2):
        raise AebonetError(f"model {model.name!r}: its layers after the encoder are not a simple chain; "
                           "gradcam supports regressors built by aebonet_lib.paper or its baselines")


def image_batch(image, model: keras.Model) -> tf.Tensor:
    """Return one image, (H, W) or (H, W, 1) in [0, 1], as a (1, H, W, 1) float32 batch the model takes."""
    image = np.asarray(image, dtype=np.float32)
    image = image[..., None] if image.ndim == 2 else image
    expected = tuple(image_input(model).shape[1:])
    if image.shape != expected:
        raise AebonetError(f"image shape {image.shape}: the model takes {expected}; preprocess it to the model's image size")
    return tf.constant(image[None])


def sex_inputs(model: keras.Model, sex) -> list[tf.Tensor]:
    """Return the model's extra input: the child's sex as a (1, 1) tensor when the model takes it."""
    takes_sex = len(model.inputs) > 1
    if takes_sex and sex is None:
        raise AebonetError("this model takes the child's sex as a second input: pass sex=1 for a boy or sex=0 for a girl")
    if not takes_sex and sex is not None:
        raise AebonetError("this model has no sex input: leave sex=None")
    return [tf.constant([[float(sex)]], dtype=tf.float32)] if takes_sex else []


def heatmap(feature_map, gradients, size: tuple[int, int]) -> np.ndarray:
    """Return the Grad-CAM map: channels weighted by their mean gradient, summed, ReLU, upsampled, scaled to [0, 1]."""
    feature_map, gradients = tf.cast(feature_map, tf.float32), tf.cast(gradients, tf.float32)
    weights = tf.reduce_mean(gradients, axis=(1, 2))  # (1, channels): how much each channel raises the age
    cam = tf.nn.relu(tf.reduce_sum(feature_map * weights[:, None, None, :], axis=-1))
    cam = tf.image.resize(cam[..., None], size, method="bilinear")[0, ..., 0].numpy()
    peak = cam.max()
    return cam / peak if peak > 0 else np.zeros_like(cam)


def gradcam(model: keras.Model, image, sex=None, layer_name: str | None = None, encoder_name: str = "encoder") -> np.ndarray:
    """Return a Grad-CAM heatmap (H, W) in [0, 1] of where the regressor's features raise its predicted age.

    `layer_name` picks a feature map inside the encoder (default: the encoder's output, the
    bottleneck). A map of zeros means no region pushes the prediction up.
    """
    encoder = find_encoder(model, encoder_name)
    bottom, head = split_encoder(encoder, layer_name), head_layers(model, encoder)
    batch, sex_input = image_batch(image, model), sex_inputs(model, sex)
    prepare = preprocessing(model, encoder)
    encoder_batch = batch if prepare is None else prepare(batch, training=False)
    with tf.GradientTape() as tape:
        feature_map, features = bottom(encoder_batch, training=False)
        age = apply_head(head, features, sex_input)
    check_head(model, batch, sex_input, age)
    return heatmap(feature_map, tape.gradient(age, feature_map), batch.shape[1:3])
