"""Checks of the Keras exercises of chapters 2 to 4: the student's layers against a reference built here.

Each check compares weight counts and output shapes, copies the student's weights into the
reference and compares outputs on fresh random inputs, and checks that a step lowers the loss.
"""

from __future__ import annotations

from types import SimpleNamespace

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from aebonet_lib import paper
from aebonet_lib.data import pipeline
from aebonet_lib.exercises import forbidden


def random_images(rng, shape) -> np.ndarray:
    """Return random float32 images in [0, 1)."""
    return rng.random(shape).astype(np.float32)


def copy_weights(source: keras.Model, target: keras.Model) -> None:
    """Copy every weight of `source` into `target`, failing if their shapes differ."""
    got = [tuple(w.shape) for w in source.weights]
    expected = [tuple(w.shape) for w in target.weights]
    assert got == expected, f"the weights' shapes differ from the reference's: expected {expected}, got {got}"
    target.set_weights(source.get_weights())


def same_outputs(student: keras.Model, reference: keras.Model, x, what: str, atol: float = 1e-5) -> None:
    """Fail unless both models give the same outputs on x, in inference and in training mode."""
    for training in (False, True):
        got, expected = np.asarray(student(x, training=training)), np.asarray(reference(x, training=training))
        assert got.shape == expected.shape, f"{what}: expected an output of shape {expected.shape}, got {got.shape}"
        assert np.allclose(got, expected, atol=atol), (f"{what} (training={training}): outputs differ from the "
                                                       f"reference's by up to {np.abs(got - expected).max():.2g}")


def same_parameter_count(student: keras.Model, reference: keras.Model, what: str) -> None:
    """Fail unless both models hold the same number of weights."""
    got, expected = student.count_params(), reference.count_params()
    assert got == expected, f"{what}: expected {expected:,} weights, got {got:,}"


def mse_step_lowers_loss(model: keras.Model, x, y, learning_rates=(0.05, 0.01, 0.002, 0.0005)) -> None:
    """Fail unless one SGD step along the gradient of a fixed batch's MSE lowers it, for some small step size.

    A correct gradient points downhill, so a small enough step lowers the loss; a step of fixed
    size can overshoot on some random draws, so the check tries smaller steps before failing.
    """
    def loss():
        return tf.reduce_mean(tf.square(tf.cast(model(x, training=True), tf.float32) - y))

    with tf.GradientTape() as tape:
        before = loss()
    gradients = tape.gradient(before, model.trainable_variables)
    start = [w.numpy() for w in model.trainable_variables]
    for learning_rate in learning_rates:
        keras.optimizers.SGD(learning_rate).apply(gradients, model.trainable_variables)
        after = loss()
        if float(after) < float(before):
            return
        for w, value in zip(model.trainable_variables, start):
            w.assign(value)
    raise AssertionError(f"one training step should lower the loss, it went from {float(before):.5f} to {float(after):.5f}")


# ---------------------------------------------------------------------------
# 2.6 augmentation as Keras layers


def reference_augmentation(rotation: float, shift: float, zoom: float, seed: int) -> keras.Sequential:
    """Return the augmentation the exercise asks for: rotate, shift, zoom, filling with black."""
    return keras.Sequential([
        layers.RandomRotation(rotation / 360, fill_mode="constant", seed=seed),
        layers.RandomTranslation(shift, shift, fill_mode="constant", seed=seed),
        layers.RandomZoom(zoom, fill_mode="constant", seed=seed)])


def check_augmentation(augmentation, rng) -> None:
    """Compare the student's augmentation with the reference's on a random batch, same seed."""
    rotation, shift, zoom = float(rng.uniform(5, 30)), float(rng.uniform(0.02, 0.1)), float(rng.uniform(0.05, 0.2))
    seed, x = int(rng.integers(0, 10_000)), random_images(rng, (4, 32, 32, 1))
    with forbidden((pipeline, "augment_batch")):
        student = augmentation(rotation, shift, zoom, seed)
        unchanged = np.asarray(student(x, training=False))
        got = np.asarray(student(x, training=True))
    assert student.count_params() == 0, f"augmentation learns nothing: expected 0 weights, got {student.count_params()}"
    assert np.array_equal(unchanged, x), "with training=False the images must pass unchanged"
    assert not np.allclose(got, x), "with training=True the images must change"
    expected = np.asarray(reference_augmentation(rotation, shift, zoom, seed)(x, training=True))
    assert got.shape == expected.shape, f"expected shape {expected.shape}, got {got.shape}"
    assert np.allclose(got, expected, atol=1e-5), (
        "the augmented images differ from RandomRotation, RandomTranslation and RandomZoom in that order, "
        f"filling with black and seeded with `seed` (largest difference {np.abs(got - expected).max():.2g})")


# ---------------------------------------------------------------------------
# 3.6 the conv block and the decoder


def reference_block(x, filters: int, momentum: float):
    """Apply the paper's block: Conv2D 3x3 same, ReLU, BatchNormalization."""
    x = layers.Conv2D(filters, 3, padding="same")(x)
    return layers.BatchNormalization(momentum=momentum)(layers.ReLU()(x))


def tiny_config(rng) -> SimpleNamespace:
    """Return a small random preset: 32 px, a few filters per block, the upsample-then-convolve decoder."""
    filters = tuple(int(f) for f in rng.integers(2, 7, 4)) + (int(rng.integers(4, 9)),)
    return SimpleNamespace(image_size=32, bn_momentum=float(rng.uniform(0.5, 0.95)), decoder="upsample_conv",
                           scaled_filters=lambda: filters)


def check_conv_block(conv_block, rng) -> None:
    """Compare the student's block with the reference's: weights, outputs, and batch-norm statistics."""
    c_in, filters, momentum = int(rng.integers(1, 5)), int(rng.integers(2, 9)), float(rng.uniform(0.5, 0.95))
    image = keras.Input((8, 8, c_in))
    student = keras.Model(image, conv_block(image, filters, "check", momentum))
    reference = keras.Model(image, reference_block(image, filters, momentum))
    same_parameter_count(student, reference, "the block")
    copy_weights(student, reference)
    same_outputs(student, reference, random_images(rng, (4, 8, 8, c_in)), "the block")
    got = [w.numpy() for w in student.non_trainable_weights]
    expected = [w.numpy() for w in reference.non_trainable_weights]
    assert all(np.allclose(a, b, atol=1e-5) for a, b in zip(got, expected)), \
        "after a training batch the batch norm's moving statistics differ: use the given momentum"


def check_decoder(conv_block, build_decoder, rng) -> None:
    """Compare the student's block and decoder with the reference block and paper.build_decoder."""
    config = tiny_config(rng)
    reference = paper.build_decoder(config)
    with forbidden((paper, "conv_block"), (paper, "decoder_block"), (paper, "build_decoder")):
        check_conv_block(conv_block, rng)
        student = build_decoder(config)
        same_parameter_count(student, reference, "the decoder")
        copy_weights(student, reference)
        code = random_images(rng, (2, *reference.input_shape[1:]))
        same_outputs(student, reference, code, "the decoder")
        mse_step_lowers_loss(student, code, random_images(rng, (2, 32, 32, 1)))


# ---------------------------------------------------------------------------
# 4.7 the regression head and a training step


def reference_head(features, momentum: float):
    """Return age from a feature map: GAP, BatchNormalization, Dense(10, ReLU, L2 1e-4), Dense(1)."""
    x = layers.GlobalAveragePooling2D()(features)
    x = layers.BatchNormalization(momentum=momentum)(x)
    x = layers.Dense(10, activation="relu", kernel_regularizer=keras.regularizers.L2(1e-4))(x)
    return layers.Dense(1)(x)


def check_head(add_head, rng) -> None:
    """Compare the student's head with the reference's: weights, outputs and weight decay."""
    side, channels, momentum = int(rng.integers(2, 5)), int(rng.integers(4, 17)), float(rng.uniform(0.5, 0.95))
    features = keras.Input((side, side, channels))
    with forbidden((paper, "add_head")):
        student = keras.Model(features, add_head(features, momentum))
    reference = keras.Model(features, reference_head(features, momentum))
    same_parameter_count(student, reference, "the head")
    copy_weights(student, reference)
    same_outputs(student, reference, random_images(rng, (4, side, side, channels)), "the head", atol=1e-4)
    got, expected = float(sum(student.losses)), float(sum(reference.losses))
    assert abs(got - expected) <= 1e-6 + 1e-3 * expected, f"the L2 weight decay adds {expected:.3g} to the loss, yours {got:.3g}"


def tiny_regressor(seed: int) -> keras.Model:
    """Return a small regressor with batch norm and weight decay, its weights drawn from `seed`."""
    keras.utils.set_random_seed(seed)
    image = keras.Input((8, 8, 1))
    x = layers.BatchNormalization()(layers.Conv2D(3, 3, activation="relu")(image))
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(image, layers.Dense(1, kernel_regularizer=keras.regularizers.L2(0.1))(x))


def reference_step(model: keras.Model, optimizer, images, ages) -> float:
    """Take one training step: the MSE plus the weight decay, its gradient, the optimizer's update."""
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(model(images, training=True) - ages)) + sum(model.losses)
    optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
    return float(loss)


def check_train_step(train_step, rng) -> None:
    """Compare one student step with the reference step on the same model and batch; fit is no answer."""
    seed = int(rng.integers(0, 10_000))
    student, reference = tiny_regressor(seed), tiny_regressor(seed)
    images, ages = random_images(rng, (8, 8, 8, 1)), rng.normal(0, 1, (8, 1)).astype(np.float32)
    before = [w.numpy().copy() for w in student.weights]
    expected = reference_step(reference, keras.optimizers.SGD(0.01), images, ages)
    with forbidden(*((keras.Model, name) for name in ("fit", "train_on_batch", "train_step"))):
        got = train_step(student, keras.optimizers.SGD(0.01), images, ages)
    assert any(not np.allclose(a, w.numpy()) for a, w in zip(before, student.weights)), "the step changed no weight"
    assert abs(float(got) - expected) < 1e-4 * max(1.0, abs(expected)), \
        f"return the loss of the batch (the MSE plus model.losses): expected {expected:.5f}, got {float(got):.5f}"
    for w, r in zip(student.weights, reference.weights):
        assert np.allclose(w.numpy(), r.numpy(), atol=1e-5), f"after one step {w.path} differs from the reference step's"
    after = tf.reduce_mean(tf.square(student(images, training=True) - ages)) + sum(student.losses)
    assert float(after) < expected, f"the step should lower the loss: {expected:.5f} before, {float(after):.5f} after"


def check_head_and_step(add_head, train_step, rng) -> None:
    """Check the head, then the training step."""
    check_head(add_head, rng)
    check_train_step(train_step, rng)
