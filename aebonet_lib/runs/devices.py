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


def check_resume(resume: bool, distribute: str) -> None:
    """Refuse to resume a multi-worker run: only the chief has its checkpoint, and workers must start alike."""
    if resume and distribute == "multiworker":
        raise AebonetError("--resume with --distribute multiworker is not supported yet (only the chief keeps "
                           "checkpoints); resume on one machine without --distribute multiworker, or start anew")


@contextlib.contextmanager
def worker_run_dir(run_dir: Path, distribute: str = "none") -> Iterator[Path]:
    """Yield the folder this process writes its run to: run_dir on the chief, a temporary one removed after on others.

    Every multi-worker task saves what the chief saves (saving may read synchronized
    variables, which takes every worker), but only the chief's files are kept.
    """
    if is_chief(distribute):
        yield run_dir
        return
    scratch = Path(tempfile.mkdtemp(prefix="aebonet-worker-"))
    try:
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
