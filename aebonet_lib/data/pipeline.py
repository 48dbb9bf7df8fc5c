"""From cached arrays to batches for Keras: shuffle, augment, batch, prefetch (chapters 2 and 5).

`make_tf_dataset` never decodes an image: it gathers batches of rows from the cache's
uint8 memory map, turns them into float32 in [0, 1], and (for training only) applies
small random changes a radiograph could really have: a slight rotation, shift and
zoom of the hand, and a different exposure (brightness and contrast). Every random
draw comes from the seed, so the same seed gives the same batches.

A training run passes `epoch`, a variable it sets as each epoch begins: then epoch e's
order and augmentation depend only on (seed, e), so a run resumed at epoch e draws
exactly the batches the uninterrupted run would have drawn (chapter 5).
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from aebonet_lib.data.loading import BoneAgeData
from aebonet_lib.errors import AebonetError

ROTATION_DEGREES = 10.0  # at most this much rotation either way
SHIFT_FRACTION = 0.05  # at most this fraction of the image side, in x and in y
ZOOM_FRACTION = 0.10  # scale between 0.9 and 1.1
BRIGHTNESS_DELTA = 0.10  # added grey level between -0.1 and 0.1
CONTRAST_RANGE = (0.8, 1.2)  # factor on the distance from the image mean
TARGETS = ("age", "image")
# Added times the run's seed to each batch's augmentation seed (epoch + 1, batch + 1): a prime larger than any
# epoch or batch count, so that two runs with different seeds never draw the same augmentations.
RUN_SEED_STRIDE = 1_000_003


def usable_indices(data: BoneAgeData, split: str, target: str, sex_input: bool) -> np.ndarray:
    """Return a split's indices, checking that every image has what the model will be given."""
    if target not in TARGETS:
        raise AebonetError(f"target {target!r}: choose 'age' (regressor) or 'image' (autoencoder)")
    indices = data.indices(split)
    if len(indices) == 0:
        raise AebonetError(f"split {split!r} of {data.source} is empty; use a larger dataset or other split fractions")
    if target == "age" and np.isnan(data.y[indices]).any():
        raise AebonetError(f"split {split!r} of {data.source} has images without a bone age; "
                           "use target='image' or a labeled dataset")
    if sex_input and np.isnan(data.male[indices]).any():
        raise AebonetError(f"split {split!r} of {data.source} has images without a sex; train without --sex-input")
    return indices


def gather_images(X: np.ndarray):
    """Return a TF function that reads the uint8 images of a batch of indices from the memmap `X`."""
    size = X.shape[1:]

    def gather(indices: tf.Tensor) -> tf.Tensor:
        """Return X[indices] as a uint8 (B, S, S) tensor."""
        images = tf.numpy_function(lambda i: np.asarray(X[i]), [indices], tf.uint8, stateful=False)
        return tf.ensure_shape(images, (None, *size))

    return gather


def batch_of(data: BoneAgeData, gather):
    """Return a TF function mapping a batch of indices to (uint8 images, ages, sexes)."""
    y, male = tf.constant(data.y, tf.float32), tf.constant(data.male, tf.float32)
    return lambda indices: (gather(indices), tf.gather(y, indices), tf.gather(male, indices))


def to_unit(images: tf.Tensor) -> tf.Tensor:
    """Turn uint8 (B, S, S) images into float32 (B, S, S, 1) in [0, 1]."""
    return tf.cast(images, tf.float32)[..., None] / 255.0


def transform_matrices(seeds: tf.Tensor, batch: tf.Tensor, size: int) -> tf.Tensor:
    """Draw one random rotation, shift and zoom per image, as the 8 numbers ImageProjectiveTransform expects.

    Each row maps an output pixel p to the input pixel A p + b that it shows, with
    A = R(-angle) / zoom around the image centre c, then shifted: b = c - A (c + shift).
    """
    angle = tf.random.stateless_uniform([batch], seeds[0], -1, 1) * ROTATION_DEGREES * math.pi / 180
    zoom = 1 + tf.random.stateless_uniform([batch], seeds[1], -1, 1) * ZOOM_FRACTION
    shift = tf.random.stateless_uniform([batch, 2], seeds[2], -1, 1) * SHIFT_FRACTION * size
    cos, sin, c = tf.cos(angle) / zoom, tf.sin(angle) / zoom, (size - 1) / 2
    b0 = c - (cos * (c + shift[:, 0]) + sin * (c + shift[:, 1]))
    b1 = c - (-sin * (c + shift[:, 0]) + cos * (c + shift[:, 1]))
    zeros = tf.zeros([batch])
    return tf.stack([cos, sin, b0, -sin, cos, b1, zeros, zeros], axis=1)


def augment_batch(x: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Apply a random small rotation, shift, zoom, brightness and contrast change to each image of a batch."""
    seeds = tf.random.experimental.stateless_split(seed, num=5)
    batch, size = tf.shape(x)[0], x.shape[1]
    x = tf.raw_ops.ImageProjectiveTransformV3(
        images=x, transforms=transform_matrices(seeds, batch, size), output_shape=tf.shape(x)[1:3],
        fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT")
    brightness = tf.random.stateless_uniform([batch, 1, 1, 1], seeds[3], -BRIGHTNESS_DELTA, BRIGHTNESS_DELTA)
    contrast = tf.random.stateless_uniform([batch, 1, 1, 1], seeds[4], *CONTRAST_RANGE)
    mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
    return tf.clip_by_value((x - mean) * contrast + mean + brightness, 0.0, 1.0)


def model_inputs(target: str, sex_input: bool):
    """Return a TF function mapping (x, ages, sexes) to the (features, target) pair Keras trains on."""
    def pair(x, y, male):
        """Return (features, target) for one batch."""
        features = {"image": x, "sex": male[:, None]} if sex_input else x
        return features, (x if target == "image" else y)

    return pair


def epoch_batches(indices: np.ndarray, batch_size: int, drop_remainder: bool, seed: int, epoch: tf.Variable):
    """Return batches of (indices, augmentation seed) whose order is a function of (seed, the epoch variable) only.

    The epoch's order is drawn once, when the epoch's stream starts, then cut into batches;
    batch b of epoch e gets the augmentation seed (e + 1, b + 1).
    """
    table = tf.constant(indices.astype(np.int64))

    def epoch_order(_):
        """Return this epoch's order of the image indices."""
        return tf.random.experimental.stateless_shuffle(table, seed=tf.stack([tf.constant(seed, tf.int64),
                                                                             epoch.read_value()]))

    batches = tf.data.Dataset.range(1).map(epoch_order).unbatch().batch(batch_size, drop_remainder=drop_remainder)
    return batches.enumerate().map(
        lambda batch_number, batch: (batch, tf.stack([epoch.read_value() + 1, batch_number + 1])))


def make_tf_dataset(data: BoneAgeData, split: str, batch_size: int, target: str = "age", sex_input: bool = False,
                    shuffle: bool | None = None, augment: bool = False, seed: int = 0,
                    drop_remainder: bool = False, epoch: tf.Variable | None = None) -> tf.data.Dataset:
    """Return a tf.data pipeline of (x, y) float32 batches from a split of the cache (chapter 2).

    x is (B, S, S, 1) in [0, 1]; y is the bone age in months (B,), or x itself with
    target='image'. With `sex_input` the features are {"image": x, "sex": (B, 1)}.
    Shuffling is on by default for 'train' only; augmentation is for 'train' only.
    The same seed gives the same batches, epoch after epoch. With `epoch` (an int64
    tf.Variable holding the epoch about to run) the training stream is keyed by it.
    """
    if augment and split in ("val", "test"):
        raise AebonetError(f"augment=True on split {split!r}: augmentation is for the training split only")
    if batch_size < 1:
        raise AebonetError(f"batch_size {batch_size}: must be at least 1")
    indices = usable_indices(data, split, target, sex_input)
    if shuffle is None:
        shuffle = split == "train"
    if epoch is not None and shuffle:
        return keyed_stream(data, indices, batch_size, target, sex_input, augment, seed, drop_remainder, epoch)
    ds = tf.data.Dataset.from_tensor_slices(indices.astype(np.int64))
    if shuffle:
        ds = ds.shuffle(len(indices), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.map(batch_of(data, gather_images(data.X)), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.map(lambda images, y, male: (to_unit(images), y, male))
    if augment:
        random = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip((ds, random)).map(
            lambda batch, r: (augment_batch(batch[0], r), *batch[1:]), num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True)
    return ds.map(model_inputs(target, sex_input)).prefetch(tf.data.AUTOTUNE)


def keyed_stream(data: BoneAgeData, indices: np.ndarray, batch_size: int, target: str, sex_input: bool, augment: bool,
                 seed: int, drop_remainder: bool, epoch: tf.Variable) -> tf.data.Dataset:
    """Return the training batches of the epoch the `epoch` variable names: shuffled and augmented by (seed, epoch)."""
    load = batch_of(data, gather_images(data.X))

    def batch(index, batch_seed):
        """Return one batch's float images (augmented when asked), ages and sexes."""
        images, y, male = load(index)
        x = to_unit(images)
        return (augment_batch(x, batch_seed + seed * RUN_SEED_STRIDE) if augment else x), y, male

    ds = epoch_batches(indices, batch_size, drop_remainder, seed, epoch)
    ds = ds.map(batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.map(model_inputs(target, sex_input)).prefetch(tf.data.AUTOTUNE)
