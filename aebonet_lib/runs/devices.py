"""Where and how a run computes: precision policy, `tf.distribute` strategy and seeds (chapter 5)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import keras
import tensorflow as tf

from aebonet_lib.config import Config
from aebonet_lib.errors import AebonetError

POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}
STRATEGIES = ("none", "mirrored", "multiworker")


# Precision, distribution and seeds (chapter 5)


def precision_name(precision: str, width: float | None = None) -> str:
    """Return the precision as given, or for "auto" the one measured fastest here for a model of this width."""
    if precision != "auto":
        return precision
    from aebonet_lib.runs.hardware import best_precision

    return best_precision(width=width)


def resolve_precision(config: Config) -> Config:
    """Return the config with precision "auto" replaced by the one measured fastest here for its model's width."""
    return config if config.precision != "auto" else config.replace(precision=precision_name("auto", config.width))


@contextlib.contextmanager
def precision_policy(precision: str) -> Iterator[None]:
    """Build models under the dtype policy for `precision` (auto, fp32, bf16, fp16), then restore the previous one."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(POLICIES[precision_name(precision)])
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def local_devices() -> list[str]:
    """Return the local devices to mirror a model over: every GPU, or else every (logical) CPU."""
    gpus = tf.config.list_logical_devices("GPU")
    return [device.name for device in gpus or tf.config.list_logical_devices("CPU")]


def get_strategy(distribute: str = "none") -> tf.distribute.Strategy:
    """Return the tf.distribute strategy: none (one device), mirrored (all local GPUs), multiworker (from TF_CONFIG)."""
    if distribute == "none":
        return tf.distribute.get_strategy()
    if distribute == "mirrored":
        return tf.distribute.MirroredStrategy(local_devices())
    if distribute == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise AebonetError(f"distribute {distribute!r}: choose one of {', '.join(STRATEGIES)}")


@contextlib.contextmanager
def build_scope(config: Config, strategy: tf.distribute.Strategy) -> Iterator[None]:
    """Create variables on the strategy's devices, under the config's precision policy."""
    with strategy.scope(), precision_policy(config.precision):
        yield


def set_seeds(config: Config) -> None:
    """Seed Python, NumPy and TensorFlow, and make TensorFlow ops deterministic when the config asks."""
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
