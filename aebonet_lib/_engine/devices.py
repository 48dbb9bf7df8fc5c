"""Where and how a run computes: precision policy, `tf.distribute` strategy and seeds (chapter 5)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import keras
import tensorflow as tf

from aebonet_lib._engine import hardware
from aebonet_lib.config import Config
from aebonet_lib.errors import AebonetError

POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}
STRATEGIES = ("none", "mirrored", "multiworker")


# Precision, distribution and seeds (chapter 5)


def precision_name(precision: str, width: float | None = None) -> str:
    """Return the precision as given, or for "auto" the one measured fastest here for a model of this width."""
    if precision != "auto":
        return precision

    return hardware.best_precision(width=width)


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


class MultiWorkerStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """MultiWorkerMirroredStrategy whose `reduce` takes what Keras 3.15's fit and evaluate give it on several workers.

    Keras "reduces" a whole (x, y) batch only to read its shapes when it builds the
    model's state (`_maybe_symbolic_build`): TensorFlow 2.21's collective strategy takes
    no nest, and workers' uneven validation batches would not all-reduce; this worker's
    share has the shapes. Keras also reduces scalar logs "along axis 0", which a scalar has not.
    """

    def reduce(self, reduce_op, value, axis):
        """Return a nest's local share; reduce one value across replicas (a scalar along no axis)."""
        if tf.nest.is_nested(value):
            return tf.nest.map_structure(lambda v: self.experimental_local_results(v)[0], value)
        scalar = self.experimental_local_results(value)[0].shape.rank == 0
        return super().reduce(reduce_op, value, None if scalar else axis)


def get_strategy(distribute: str = "none") -> tf.distribute.Strategy:
    """Return the tf.distribute strategy: none (one device), mirrored (all local GPUs), multiworker (from TF_CONFIG)."""
    if distribute == "none":
        return tf.distribute.get_strategy()
    if distribute == "mirrored":
        return tf.distribute.MirroredStrategy(local_devices())
    if distribute == "multiworker":
        worker_task()  # refuse a missing or broken TF_CONFIG in one line
        return MultiWorkerStrategy()
    raise AebonetError(f"distribute {distribute!r}: choose one of {', '.join(STRATEGIES)}")


def worker_task() -> tuple[str, int]:
    """Return this process's (task type, index) from TF_CONFIG, refusing a missing or malformed one."""
    if not os.environ.get("TF_CONFIG"):
        raise AebonetError("--distribute multiworker needs TF_CONFIG: set it on every worker to "
                           '{"cluster": {"worker": ["host0:port", ...]}, "task": {"type": "worker", "index": i}}')
    try:
        task = json.loads(os.environ["TF_CONFIG"])["task"]
        return str(task["type"]), int(task["index"])
    except (ValueError, KeyError, TypeError) as e:
        raise AebonetError(f"TF_CONFIG: not valid JSON with a task type and index ({e}); "
                           'see {"cluster": {...}, "task": {"type": "worker", "index": i}}') from None


def is_chief(distribute: str = "none") -> bool:
    """Return True unless this is a multi-worker run's non-chief: the chief is task "chief", else worker 0."""
    if distribute != "multiworker":
        return True
    task_type, index = worker_task()
    has_chief = "chief" in json.loads(os.environ["TF_CONFIG"]).get("cluster", {})
    return task_type == "chief" or (task_type == "worker" and index == 0 and not has_chief)


def synchronize_batch_norm(model: keras.Model, strategy: tf.distribute.Strategy) -> None:
    """Make BatchNormalization use the global batch's statistics when several replicas train (our choice, CHOICES).

    Each replica then normalizes by the same mean and variance, those one device with
    the whole batch would use, and updates the same moving averages, so every worker
    ends with the same weights, moving statistics included.
    """
    several = strategy.num_replicas_in_sync > 1
    for layer in all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = several  # our choice (several GPUs or machines)


def all_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Return every layer of a model, those of nested models (the encoder) included."""
    found = []
    for layer in model.layers:
        found.append(layer)
        if isinstance(layer, keras.Model):
            found.extend(all_layers(layer))
    return found


def copy_chief_run(run_dir: Path, folder: Path) -> None:
    """Give a non-chief worker the chief's run to resume from: copy run_dir (its checkpoint and state) to its folder."""
    if not (run_dir / "config.json").is_file():
        _, index = worker_task()
        raise AebonetError(f"--resume on worker {index}: {run_dir} holds no run on this machine; every worker must "
                           "see the chief's run folder at the same path (a shared file system, or a copy of it)")
    shutil.copytree(run_dir, folder)


@contextlib.contextmanager
def worker_run_dir(run_dir: Path, distribute: str = "none", resume: bool = False) -> Iterator[Path]:
    """Yield the folder this process writes its run to: run_dir on the chief, a temporary one removed after on others.

    Every multi-worker task saves what the chief saves (saving may read synchronized
    variables, which takes every worker), but only the chief's files are kept. To
    resume, the others start from a copy of the chief's run folder, so that every
    worker reloads the same checkpoint, epoch and counters.
    """
    if is_chief(distribute):
        yield run_dir
        return
    scratch = Path(tempfile.mkdtemp(prefix="aebonet-worker-"))
    try:
        if resume:
            copy_chief_run(run_dir, scratch / run_dir.name)
        yield scratch / run_dir.name
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


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
