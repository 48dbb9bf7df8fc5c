"""Checks of the Keras exercises of chapters 5 to 7: loss scaling, Grad-CAM, the masked-image objective."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from aebonet_lib import paper
from aebonet_lib.evaluation import explain
from aebonet_lib.exercises import forbidden
from aebonet_lib.exercises.networks import random_images

FIT = ("fit", "train_on_batch", "train_step")


# ---------------------------------------------------------------------------
# 5.6 a mixed-precision step with loss scaling

TINY_LOSS = 1e-8   # the loss is this small, so its float16 gradients underflow unless scaled
STEP_LR = 1e6      # and the learning rate this large, so that the step still moves the weights


def mixed_model(seed: int, dtype: str) -> keras.Model:
    """Return two Dense layers computing in `dtype` ("mixed_float16" or "float32"), weights from `seed`."""
    keras.utils.set_random_seed(seed)
    x = keras.Input((3,))
    hidden = layers.Dense(4, activation="tanh", dtype=dtype)(x)
    return keras.Model(x, layers.Dense(1, dtype=dtype)(hidden))


def tiny_loss(y, prediction):
    """Return a mean squared error so small that its float16 gradients underflow."""
    return TINY_LOSS * tf.reduce_mean(tf.square(tf.cast(prediction, tf.float32) - y))


def check_scaled_step(scaled_step, rng) -> None:
    """Compare a mixed-precision step with an exact float32 step: without loss scaling the gradients vanish."""
    seed = int(rng.integers(0, 10_000))
    student, exact = mixed_model(seed, "mixed_float16"), mixed_model(seed, "float32")
    x, y = rng.normal(0, 1, (8, 3)).astype(np.float32), rng.normal(0, 1, (8, 1)).astype(np.float32)
    start = [w.numpy().copy() for w in exact.weights]
    with tf.GradientTape() as tape:
        loss = tiny_loss(y, exact(x, training=True))
    keras.optimizers.SGD(STEP_LR).apply(tape.gradient(loss, exact.trainable_variables), exact.trainable_variables)
    optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(STEP_LR))
    with forbidden(*((keras.Model, name) for name in FIT)):
        got = scaled_step(student, optimizer, tiny_loss, x, y)
    assert abs(float(got) - float(loss)) < 0.02 * float(loss), \
        f"return the loss before scaling: expected {float(loss):.3g}, got {float(got):.3g}"
    for w, e, s in zip(student.weights, exact.weights, start):
        moved, wanted = w.numpy() - s, e.numpy() - s
        assert np.abs(moved - wanted).max() <= 0.05 * np.abs(wanted).max() + 1e-6, (
            f"{w.path} moved by up to {np.abs(moved).max():.3g}, the exact step by {np.abs(wanted).max():.3g}: "
            "scale the loss before the gradient (optimizer.scale_loss) and let the optimizer unscale it")
    after = tiny_loss(y, student(x, training=True))
    assert float(after) < float(loss), "the step should lower the loss"


# ---------------------------------------------------------------------------
# 6.6 Grad-CAM


def tiny_cnn(seed: int) -> keras.Model:
    """Return a small regressor with two named feature maps, weights from `seed`."""
    keras.utils.set_random_seed(seed)
    image = keras.Input((16, 16, 1))
    x = layers.Conv2D(4, 3, activation="relu", name="early")(image)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(6, 3, activation="relu", name="late")(x)
    dense = layers.Dense(1)
    model = keras.Model(image, dense(layers.GlobalAveragePooling2D()(x)))
    kernel = np.abs(dense.kernel.numpy())
    kernel[0] *= -1   # mostly positive, so that some regions raise the output; one channel lowers it
    dense.kernel.assign(kernel)
    return model


def reference_grad_cam(model: keras.Model, image, layer_name: str) -> np.ndarray:
    """Return Grad-CAM: channels weighted by their mean gradient, summed, ReLU, resized, scaled to [0, 1]."""
    probe = keras.Model(model.inputs, [model.get_layer(layer_name).output, model.outputs[0]])
    batch = tf.constant(np.asarray(image, np.float32)[None])
    with tf.GradientTape() as tape:
        features, age = probe(batch, training=False)
    weights = tf.reduce_mean(tape.gradient(age, features), axis=(1, 2))
    cam = tf.nn.relu(tf.reduce_sum(features * weights[:, None, None, :], axis=-1))
    cam = tf.image.resize(cam[..., None], batch.shape[1:3], method="bilinear")[0, ..., 0].numpy()
    return cam / cam.max() if cam.max() > 0 else np.zeros_like(cam)


def check_grad_cam(grad_cam, rng) -> None:
    """Compare grad_cam with the reference on a random network and random images; explain.gradcam is no answer."""
    tried = 0
    for _ in range(5):   # a random network may have dead channels everywhere: draw another
        model = tiny_cnn(int(rng.integers(0, 10_000)))
        for layer in ("early", "late"):
            image = random_images(rng, (16, 16, 1))
            expected = reference_grad_cam(model, image, layer)
            if expected.max() == 0:
                continue   # no region raises this network's output: nothing to compare
            tried += 1
            with forbidden((explain, "gradcam"), (explain, "heatmap")):
                got = np.asarray(grad_cam(model, image.copy(), layer))
            assert got.shape == expected.shape, f"one value per pixel: expected shape {expected.shape}, got {got.shape}"
            assert np.allclose(got, expected, atol=1e-4), (f"layer {layer!r}: the map differs from Grad-CAM's by up "
                                                           f"to {np.abs(got - expected).max():.3f}")
        if tried >= 2:
            break
    assert tried, "no random image gave a non-zero map; run the check again"


# ---------------------------------------------------------------------------
# 7.7 the masked-image objective


def check_patch_mask(PatchMask, rng) -> None:  # noqa: N803  (the student's class)
    """Check the mask: no weights, identity unless training, whole patches zeroed, about `ratio` of them."""
    size, ratio = int(rng.choice([16, 32])), float(rng.choice([0.25, 0.5, 0.75]))
    patch, x = size // 8, 0.1 + 0.9 * random_images(rng, (16, size, size, 1))
    mask = PatchMask(patch, ratio)
    assert np.array_equal(np.asarray(mask(x, training=False)), x), "with training=False the images must pass unchanged"
    assert np.array_equal(np.asarray(mask(x)), x), "by default (inference) the images must pass unchanged"
    assert mask.count_params() == 0, f"a mask learns nothing: expected 0 weights, got {mask.count_params()}"
    first, second = np.asarray(mask(x, training=True)), np.asarray(mask(x, training=True))
    assert first.shape == x.shape, f"expected shape {x.shape}, got {first.shape}"
    assert np.all((first == x) | (first == 0)), "a pixel is either kept as it was or set to 0"
    hidden = (first == 0).reshape(16, 8, patch, 8, patch).transpose(0, 1, 3, 2, 4).reshape(16, 64, patch * patch)
    assert np.all(hidden.all(axis=2) | ~hidden.any(axis=2)), f"mask whole {patch} x {patch} patches of the grid, not single pixels"
    share = hidden.all(axis=2).mean()
    assert abs(share - ratio) < 0.08, f"ratio {ratio}: {share:.0%} of the patches were hidden"
    assert not np.array_equal(first, second), "every training call must draw a new mask"
    per_image = hidden.all(axis=2)
    assert any(not np.array_equal(per_image[0], row) for row in per_image[1:]), "each image needs its own mask"


class LeftHalfMask(layers.Layer):
    """A fixed mask for the check: hide the left half while training."""

    def call(self, images, training=False):
        """Return the images with their left half set to 0 when training."""
        if not training:
            return images
        keep = np.ones((1, 1, images.shape[2], 1), np.float32)
        keep[:, :, : images.shape[2] // 2] = 0
        return images * keep


def check_masked_loss(masked_loss, rng) -> None:
    """Check that the loss compares the reconstruction of the masked image with the whole image, and trains."""
    keras.utils.set_random_seed(int(rng.integers(0, 10_000)))
    image = keras.Input((16, 16, 1))
    model = keras.Model(image, layers.Conv2D(1, 3, padding="same", activation="sigmoid")(image))
    mask, x = LeftHalfMask(), random_images(rng, (4, 16, 16, 1))
    expected = float(tf.reduce_mean(tf.square(model(mask(x, training=True), training=True) - x)))
    got = float(masked_loss(model, mask, x))
    assert abs(got - expected) < 1e-5, (f"expected the MSE between the reconstruction of the masked images and the "
                                        f"whole images, {expected:.5f}; got {got:.5f}")
    optimizer = keras.optimizers.SGD(0.5)
    with tf.GradientTape() as tape:
        loss = masked_loss(model, mask, x)
    optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
    assert float(masked_loss(model, mask, x)) < float(loss), "one step on your loss should lower it: compute it with TensorFlow ops"


def check_masked_objective(PatchMask, masked_loss, rng) -> None:  # noqa: N803
    """Check the mask layer, then the loss; the library's PatchMask is no answer."""
    targets = [(paper, "PatchMask")] + ([(paper.PatchMask, "call")] if hasattr(paper, "PatchMask") else [])
    with forbidden(*targets):
        check_patch_mask(PatchMask, rng)
        check_masked_loss(masked_loss, rng)
