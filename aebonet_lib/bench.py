"""Speed measurements behind `aebonet bench`: every stage of the pipeline against this machine's own limit (chapter 5).

A benchmark is only worth reading beside the ceiling it is measured against, taken in
the same run on the same machine. So `run` first measures what the hardware can do
(a large matrix product and a large convolution, in each precision), then the stages:
rendering phantoms, building the preprocessing cache from full-size PNGs, reading it
through `pipeline.make_tf_dataset`, training the autoencoder and the regressor on
synthetic batches held in memory (so that the input pipeline is not what is timed),
predicting, and, when asked, the whole `aebonet demo`. Every rate is a median over
repeats; every FLOP is counted from the layer shapes by `models.count_flops`, a training
step counting three forward passes. From those counts and the published peak of an
accelerator, it estimates how long the paper's full schedule takes on one H100.

Three plans: `quick` (under 2 minutes on a quiet 2-core CPU), `full` (the whole grid),
and `gpu` (`--gpu-check`: the 256-pixel autoencoder in every precision, with and without
XLA, plus the peaks and the input pipeline, in a few minutes on one H100). Results go
to a JSON file, rewritten after every measurement, and a Markdown table beside it.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import math
import multiprocessing
import os
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm.auto import tqdm

from . import hardware
from .config import DECODERS, PAPER_SPLIT_SIZES, PRECISIONS, Config, get_config
from .errors import AebonetError
from .files import atomic_write, read_json, write_json

MEASURED_PRECISIONS = tuple(p for p in PRECISIONS if p != "auto")  # what "auto" chooses between

TRAIN_STEP_FACTOR = 3  # a training step: the forward pass, the gradients of the activations and of the weights
FULL_SIZE = (2080, 1600)  # height, width of a typical RSNA radiograph
PAPER_SIZE = 256
TARGET_PEAK_FRACTION = 0.5  # autoencoder training at 256 px: at least half the same-precision convolution peak
TARGET_PIPELINE_RATE = 2000.0  # images/s from the cache at 256 px: enough to feed one H100
TARGET_DEMO_SECONDS = 600.0  # `aebonet demo` in at most 10 minutes
CONV_SHAPES = ((128, 128, 128), (64, 64, 256), (32, 32, 512))  # height, width, channels in = out: the model's own layers
ASSUMED_UTILISATION = (0.25, 0.5)  # fractions of a published peak, used only when no GPU run was measured

# Dense (no sparsity) bf16 tensor-core peaks, TFLOP/s, from NVIDIA's datasheets (which print twice these
# numbers "with sparsity"). Matched in this order against a GPU's name.
PUBLISHED_BF16_TFLOPS = (
    ("H200", "H200 SXM", 989.4),  # NVIDIA H200 datasheet: 1,979 with sparsity
    ("H100 PCIe", "H100 PCIe", 756.5),  # NVIDIA H100 datasheet: 1,513 with sparsity
    ("H100", "H100 SXM", 989.4),  # NVIDIA H100 datasheet: 1,979 with sparsity
    ("A100", "A100", 312.0),  # NVIDIA A100 datasheet: 312 dense, 624 with sparsity
)
ESTIMATE_GPUS = ("H100 SXM", "A100")


# ---------------------------------------------------------------------------
# What to measure


@dataclass(frozen=True)
class TrainCase:
    """Hold one training-throughput measurement: model, size, precision, XLA, batch, and how long to look."""

    task: str  # "autoencoder" or "regressor"
    image_size: int
    width: float
    decoder: str
    precision: str
    jit: bool
    batch_size: int
    steps: int  # training steps per timed repeat
    warmup: int = 2  # steps run first (tracing, XLA compilation, kernel choice), not timed
    repeats: int = 3

    def config(self) -> Config:
        """Return the paper's recipe at this case's size, width, decoder, precision and XLA setting."""
        return get_config("paper", image_size=self.image_size, width=self.width, decoder=self.decoder,
                          precision=self.precision, jit=self.jit)


@dataclass(frozen=True)
class LatencyCase:
    """Hold one inference-latency measurement of the regressor."""

    image_size: int
    width: float
    precision: str
    jit: bool
    batch_size: int
    repeats: int = 5


@dataclass(frozen=True)
class Plan:
    """Hold everything one bench run measures, with the sizes and repeats of each measurement."""

    mode: str
    repeats: int  # repeats of each peak, phantom and pipeline measurement (the median is reported)
    peak_precisions: tuple[str, ...]
    matmul_n: int  # an n x n by n x n matrix product
    conv_batch: int  # images per call of each 3x3 convolution in CONV_SHAPES
    min_seconds: float  # each timed repeat of a peak lasts at least this long
    phantom_sizes: tuple[tuple[tuple[int, int], int], ...]  # ((height, width), images)
    full_size: tuple[int, int]  # PNGs the cache is built from
    cache_n: int
    cache_workers: tuple[int | None, ...]  # None: every core
    image_size: int  # of the cache and the pipeline
    pipeline_batches: tuple[int, ...]
    read_n: int  # images per epoch read through the pipeline (the cached ones repeated)
    training: tuple[TrainCase, ...]
    latency: tuple[LatencyCase, ...]
    demo: tuple[str | None, ...] = ()  # demo runs, by precision (None: the preset's)
    conv_shapes: tuple[tuple[int, int, int], ...] = CONV_SHAPES
    xla_apart: bool = False  # time XLA and non-XLA settings in separate turns (each group's rows are saved sooner)


def cases(task: str, sizes, widths, decoders, precisions, jits, batch_of: dict, steps_of: dict,
          warmup: int = 2, repeats: int = 3) -> list[TrainCase]:
    """Return the training cases of a grid; batch size and steps depend on the image size."""
    return [TrainCase(task, s, w, d, p, j, batch_of[s], steps_of[s], warmup, repeats)
            for s in sizes for w in widths for d in decoders for p in precisions for j in jits]


def cpu_preset_cases(precisions, jits, steps: int) -> list[TrainCase]:
    """Return the autoencoder and regressor of the cpu preset (what `aebonet demo` trains) in each setting."""
    cpu = get_config("cpu")
    grid = dict(sizes=[cpu.image_size], widths=[cpu.width], decoders=[cpu.decoder], precisions=precisions, jits=jits,
                steps_of={cpu.image_size: steps})
    return (cases("autoencoder", batch_of={cpu.image_size: cpu.ae_batch_size}, **grid)
            + cases("regressor", batch_of={cpu.image_size: cpu.reg_batch_size}, **grid))


def quick_plan() -> Plan:
    """Return the quick plan: the cpu preset in fp32 and bf16 (and fp32 + XLA), a few width-1 points, small repeats."""
    training = [
        *cpu_preset_cases(("fp32", "bf16"), (False,), steps=5),
        *(c for c in cpu_preset_cases(("fp32",), (True,), steps=5) if c.task == "autoencoder"),  # XLA compiles slowly
        *cases("autoencoder", [64], [1.0], ["upsample_conv"], ["fp32", "bf16"], [False], {64: 4}, {64: 3}),
        *cases("autoencoder", [128], [1.0], ["upsample_conv"], ["fp32"], [False], {128: 2}, {128: 2}, repeats=2),
        *cases("autoencoder", [256], [1.0], ["upsample_conv"], ["fp32"], [False], {256: 1}, {256: 1}, 1, 2),
    ]
    latency = [LatencyCase(64, 0.25, "fp32", False, b) for b in (1, 16)] + [LatencyCase(256, 1.0, "fp32", False, 1, 3)]
    return Plan("quick", 3, ("fp32", "bf16"), 2048, 4, 0.2, (((256, 256), 30), (FULL_SIZE, 3)),
                FULL_SIZE, 8, (None,), PAPER_SIZE, (8, 16), 512, tuple(training), tuple(latency))


def full_plan() -> Plan:
    """Return the full plan: 64, 128 and 256 px, fp32 and bf16, with and without XLA, every decoder (tens of minutes)."""
    precisions, jits = ("fp32", "bf16"), (False, True)
    sizes = (64, 128, 256)
    training = [
        *cpu_preset_cases(precisions, jits, steps=10),
        *cases("autoencoder", sizes, [1.0], DECODERS, precisions, jits, {64: 8, 128: 4, 256: 2}, {64: 5, 128: 3, 256: 2},
               1, 2),
        *cases("regressor", sizes, [1.0], ["upsample_conv"], precisions, jits, {64: 16, 128: 8, 256: 4},
               {64: 5, 128: 3, 256: 2}, 1, 2),
    ]
    latency = [LatencyCase(s, w, p, False, b) for s, w in ((64, 0.25), (256, 1.0)) for p in precisions for b in (1, 16)]
    return Plan("full", 5, precisions, 4096, 8, 1.0, (((256, 256), 100), (FULL_SIZE, 10)),
                FULL_SIZE, 48, (1, None), PAPER_SIZE, (8, 16), 4096, tuple(training), tuple(latency))


def gpu_plan() -> Plan:
    """Return the GPU check: the paper's 256-px autoencoder in fp32, bf16 and fp16, with and without XLA (minutes)."""
    paper = get_config("paper")
    size, ae_batch, reg_batch = paper.image_size, paper.ae_batch_size, paper.reg_batch_size
    training = [
        *cases("autoencoder", [size], [1.0], ["upsample_conv"], MEASURED_PRECISIONS, [False, True], {size: ae_batch},
               {size: 10}, 3, 3),
        *cases("autoencoder", [size], [1.0], ["upsample_conv"], ["bf16"], [False], {size: 64}, {size: 5}, 2, 3),
        *cases("regressor", [size], [1.0], ["upsample_conv"], ["bf16"], [False], {size: reg_batch}, {size: 10}, 3, 3),
    ]
    latency = [LatencyCase(size, 1.0, "bf16", False, b, 10) for b in (1, 16)]
    return Plan("gpu", 3, MEASURED_PRECISIONS, 8192, 64, 0.3, (((256, 256), 50), (FULL_SIZE, 5)),
                FULL_SIZE, 64, (None,), PAPER_SIZE, (8, 16), 4096, tuple(training), tuple(latency), xla_apart=True)


PLANS = {"quick": quick_plan, "full": full_plan, "gpu": gpu_plan}


def make_plan(mode: str, demo: list[str | None] | None = None) -> Plan:
    """Return the plan of a mode ('quick', 'full' or 'gpu'), with the demo runs asked for."""
    if mode not in PLANS:
        raise AebonetError(f"bench mode {mode!r}: choose one of {', '.join(PLANS)}")
    return dataclasses.replace(PLANS[mode](), demo=tuple(demo or ()))


# ---------------------------------------------------------------------------
# Timing


def timed(function: Callable[[], object]) -> float:
    """Return the seconds one call of `function` takes."""
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def repeat_timed(function: Callable[[], object], repeats: int) -> list[float]:
    """Return the seconds each of `repeats` calls of `function` takes."""
    return [timed(function) for _ in range(repeats)]


def rate(items: float, seconds: list[float]) -> float:
    """Return items per second at the median of the timed repeats."""
    return items / statistics.median(seconds)


def error_text(error: Exception) -> str:
    """Return an exception as one short line for a result row."""
    return f"{type(error).__name__}: {' '.join(str(error).split())[:300]}"


@dataclass
class Contender:
    """Hold one setting of a comparison, ready to time: one timed repeat, and the row made from all repeats."""

    label: str
    run: Callable[[], object]  # one timed repeat (after warm-up)
    finish: Callable[[list[float]], dict]  # the result row, from the seconds of every repeat
    seconds: list[float] = dataclasses.field(default_factory=list)


def race(setups: list[tuple[str, Callable[[], Contender]]], repeats: int) -> list[dict]:
    """Prepare each setting (a failure becomes a row that says why), then time their repeats in turn.

    Taking turns (A B C, A B C, ...) rather than all of A then all of B makes a change in the
    machine's load hit every setting alike, so their ratios hold even on a busy machine.
    """
    contenders, failed = [], []
    for label, setup in setups:
        try:
            contenders.append(setup())
        except Exception as e:  # e.g. an op without a kernel in this precision on this device
            failed.append({"label": label, "error": error_text(e)})
    for _ in range(repeats):
        for contender in contenders:
            contender.seconds.append(timed(contender.run))
    return [{"label": c.label, **c.finish(c.seconds)} for c in contenders] + failed


def synchronize(tensor) -> None:
    """Wait until a tensor (and the work queued before it on its device) is computed, reading back one number."""
    import tensorflow as tf

    tf.reshape(tensor, [-1])[0].numpy()


def fresh_keras() -> None:
    """Free the models of the previous measurement, so that each starts from the same state."""
    import gc

    import keras

    keras.backend.clear_session()
    gc.collect()


RESULTS = Path(__file__).resolve().parent / "results"  # measurements shipped with the library (chapter 5 reads them)


def measured_results(name: str = "h200-keras-jax") -> dict:
    """Return a measurement shipped with the library, such as the H200 run of benchmarks/gpu_check.py."""
    return read_json(RESULTS / f"{name}.json")


@functools.lru_cache(maxsize=1)
def device_name() -> str:
    """Return where TensorFlow computes: the first GPU's name, or 'CPU'."""
    gpus = hardware.gpu_info()
    return f"GPU: {gpus[0]['name']}" if gpus else "CPU"


# ---------------------------------------------------------------------------
# The machine's own limit


def tf_dtype(precision: str):
    """Return the TensorFlow dtype a precision computes in."""
    import tensorflow as tf

    return {"fp32": tf.float32, "bf16": tf.bfloat16, "fp16": tf.float16}[precision]


def op_calls(run: Callable[[], object], calls: int) -> None:
    """Call a TensorFlow op `calls` times and wait for the last result."""
    for _ in range(calls):
        out = run()
    synchronize(out)


def calibrated_calls(run: Callable[[], object], min_seconds: float) -> int:
    """Return how many calls of `run` last at least `min_seconds` (after one untimed warm-up call)."""
    op_calls(run, 1)
    once = timed(lambda: op_calls(run, 1))
    return max(1, math.ceil(min_seconds / max(once, 1e-6)))


def op_contender(op: str, shape: str, flops: int, run: Callable[[], object], precision: str, plan: Plan) -> Contender:
    """Return one op, calibrated, whose row gives its achieved GFLOP/s (median over repeats)."""
    calls = calibrated_calls(run, plan.min_seconds)
    row = {"op": op, "shape": shape, "precision": precision, "gflop_per_call": flops / 1e9, "calls": calls,
           "device": device_name()}
    return Contender(f"{op} {precision} {shape}", lambda: op_calls(run, calls),
                     lambda seconds: {**row, "seconds": seconds, "gflops": rate(flops * calls, seconds) / 1e9})


def matmul_peak(precision: str, plan: Plan) -> Contender:
    """Return the GFLOP/s of an n x n matrix product in `precision` (2 n^3 FLOPs)."""
    import tensorflow as tf

    n = plan.matmul_n
    a = tf.cast(tf.random.uniform((n, n), seed=0), tf_dtype(precision))
    b = tf.cast(tf.random.uniform((n, n), seed=1), tf_dtype(precision))
    return op_contender("matmul", f"{n}x{n} @ {n}x{n}", 2 * n**3, lambda: tf.matmul(a, b), precision, plan)


def conv_peak(precision: str, plan: Plan, shape: tuple[int, int, int]) -> Contender:
    """Return the GFLOP/s of a 3x3 'same' convolution in `precision` (2 x outputs x 9 x channels in FLOPs)."""
    import tensorflow as tf

    batch, (height, width, channels) = plan.conv_batch, shape
    x = tf.cast(tf.random.uniform((batch, height, width, channels), seed=0), tf_dtype(precision))
    kernel = tf.cast(tf.random.normal((3, 3, channels, channels), stddev=0.05, seed=1), tf_dtype(precision))
    flops = 2 * batch * height * width * 9 * channels * channels
    shape = f"3x3, {channels}->{channels} channels, {batch}x{height}x{width}"
    return op_contender("conv", shape, flops, lambda: tf.nn.conv2d(x, kernel, 1, "SAME"), precision, plan)


def measure_peaks(plan: Plan) -> list[dict]:
    """Return the GFLOP/s of the matrix product and of each convolution shape, in each precision, timed in turns."""
    setups = [(f"matmul {p}", lambda p=p: matmul_peak(p, plan)) for p in plan.peak_precisions]
    setups += [(f"conv {p} {shape}", lambda p=p, s=shape: conv_peak(p, plan, s))
               for p in plan.peak_precisions for shape in plan.conv_shapes]
    return race(setups, plan.repeats)


# ---------------------------------------------------------------------------
# Phantoms, the preprocessing cache and the input pipeline


def phantom_rate(size: tuple[int, int], n: int, plan: Plan) -> dict:
    """Return the images/s of `phantom.make_dataset` rendering `n` images of `size` on one core."""
    from . import phantom

    seconds = repeat_timed(lambda: phantom.make_dataset(n, size=size, seed=0, workers=1, progress=False), plan.repeats)
    return {"stage": "render", "size": f"{size[1]}x{size[0]}", "images": n, "workers": 1,
            "seconds": seconds, "images_per_s": rate(n, seconds)}


class Workspace:
    """Hold the temporary folder of one bench run: the full-size PNGs, their caches, the demo's runs."""

    def __init__(self, root: Path):
        """Use `root` (an empty temporary folder) for everything this run writes."""
        self.root = root
        self.raw = root / "raw"
        self.loaded = None

    def data(self, plan: Plan):
        """Return `plan.read_n` cached images (the full-size PNGs' cache, repeated) as BoneAgeData (made on first use)."""
        from .data import load_data

        if self.loaded is None:  # the cache built last is reused; one process builds it if none was
            cached = load_data(self.raw, plan.image_size, cache_dir=self.root / "cache", workers=1, progress=False)
            self.loaded = repeated_data(cached, plan.read_n, self.root / "read.npy")
        return self.loaded


def repeated_data(cached, n: int, path: Path):
    """Return BoneAgeData of `n` images, the cached ones repeated, read from a memory map at `path` like a real cache."""
    from .data import BoneAgeData

    np.save(path, np.asarray(cached.X)[np.resize(np.arange(len(cached)), n)])
    return BoneAgeData(X=np.load(path, mmap_mode="r"), y=np.resize(cached.y, n), male=np.resize(cached.male, n),
                       ids=np.array([str(i) for i in range(n)]), splits={"train": np.arange(n)}, params=cached.params,
                       source="bench")


def write_pngs(work: Workspace, plan: Plan) -> dict:
    """Write the full-size phantom PNGs the cache is built from; return the rate (render and PNG encoding)."""
    from . import phantom

    seconds = [timed(lambda: phantom.write_dataset(work.raw, plan.cache_n, size=plan.full_size, progress=False))]
    workers = phantom.choose_workers(None, plan.cache_n, plan.full_size)
    return {"stage": "write PNGs", "size": f"{plan.full_size[1]}x{plan.full_size[0]}", "images": plan.cache_n,
            "workers": workers, "seconds": seconds, "images_per_s": rate(plan.cache_n, seconds)}


def timed_cache_build(raw: str, cache_dir: str, image_size: int, workers: int) -> float:
    """Build a cache with `workers` processes and return the seconds it took (run in a fresh process)."""
    from .data import load_data

    return timed(lambda: load_data(raw, image_size, cache_dir=cache_dir, workers=workers, progress=False))


def build_cache_once(work: Workspace, plan: Plan, workers: int) -> float:
    """Build a fresh cache of the PNGs with `workers` processes; return the seconds it took; keep it as work's cache.

    The build runs in a freshly started process: the cache forks its workers, and forking
    this process, with TensorFlow's and OpenCV's threads running, can deadlock them.
    """
    shutil.rmtree(work.root / "cache", ignore_errors=True)
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(timed_cache_build, str(work.raw), str(work.root / "cache"), plan.image_size, workers).result()


def cache_rate(work: Workspace, plan: Plan, workers: int | None) -> dict:
    """Return the images/s of building the preprocessing cache from the full-size PNGs (workers started included)."""
    workers = workers or hardware.available_cpus()
    seconds = [build_cache_once(work, plan, workers) for _ in range(max(1, plan.repeats // 2))]
    return {"stage": "build cache", "size": f"{plan.full_size[1]}x{plan.full_size[0]} -> {plan.image_size}",
            "images": plan.cache_n, "workers": workers, "seconds": seconds, "images_per_s": rate(plan.cache_n, seconds)}


def read_epoch(dataset) -> int:
    """Read one epoch of (x, y) batches; return the number of images read."""
    return sum(int(x.shape[0]) for x, _ in dataset)


def pipeline_rate(work: Workspace, plan: Plan, batch_size: int, augment: bool) -> dict:
    """Return the images/s `pipeline.make_tf_dataset` delivers from the cache: whole shuffled epochs, after one warm-up."""
    from . import pipeline

    data = work.data(plan)
    dataset = pipeline.make_tf_dataset(data, "train", batch_size, target="image", shuffle=True, augment=augment)
    read_epoch(dataset)
    seconds = repeat_timed(lambda: read_epoch(dataset), plan.repeats)
    return {"stage": "read cache", "size": plan.image_size, "batch_size": batch_size, "augment": augment,
            "images": len(data), "seconds": seconds, "images_per_s": rate(len(data), seconds)}


# ---------------------------------------------------------------------------
# Training throughput and inference latency


def build_compiled(task: str, config: Config):
    """Build and compile the autoencoder or the from-scratch regressor under the config's precision policy."""
    from . import models, training

    with training.precision_policy(config.precision):
        if task == "autoencoder":
            return models.compile_autoencoder(models.build_autoencoder(config), config)
        return models.compile_regressor(models.build_scratch_regressor(config), config)


def synthetic_batches(task: str, image_size: int, batch_size: int, seed: int = 0):
    """Return one batch of random images (and ages, or the images as targets) held in memory, repeated forever."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    x = rng.random((batch_size, image_size, image_size, 1), dtype=np.float32)
    y = x if task == "autoencoder" else rng.uniform(1, 228, batch_size).astype(np.float32)
    return tf.data.Dataset.from_tensors((x, y)).repeat()


def fit_steps(model, batches, steps: int) -> None:
    """Train for `steps` steps with Keras `fit` and wait for the last one to finish."""
    history = model.fit(batches, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False)
    float(np.asarray(history.history["loss"][-1]))


def case_label(case: TrainCase) -> str:
    """Return a short description of a training case."""
    return (f"{case.task} {case.image_size}px w{case.width:g} {case.decoder} {case.precision}"
            f"{' XLA' if case.jit else ''} b{case.batch_size}")


def training_row(case: TrainCase, xla: bool, flops: int, seconds: list[float]) -> dict:
    """Return a training case's row: what was run, images/s, forward GFLOP per image, achieved GFLOP/s (3x forward)."""
    images_per_s = rate(case.steps * case.batch_size, seconds)
    return {**dataclasses.asdict(case), "device": device_name(), "xla": xla, "seconds": seconds,
            "images_per_s": images_per_s, "forward_gflop_per_image": flops / 1e9,
            "train_gflops": TRAIN_STEP_FACTOR * flops * images_per_s / 1e9}


def training_contender(case: TrainCase) -> Contender:
    """Build, compile and warm up one training case on its synthetic batch."""
    from . import models

    model = build_compiled(case.task, case.config())
    flops = models.count_flops(model)
    batches = synthetic_batches(case.task, case.image_size, case.batch_size)
    fit_steps(model, batches, case.warmup)
    return Contender(case_label(case), lambda: fit_steps(model, batches, case.steps),
                     lambda seconds: training_row(case, bool(model.jit_compile), flops, seconds))


def measure_training(group: list[TrainCase]) -> list[dict]:
    """Return the training throughput of cases that differ only in precision and XLA, timed in turns."""
    fresh_keras()
    return race([(case_label(c), lambda c=c: training_contender(c)) for c in group], max(c.repeats for c in group))


def group_label(case: TrainCase) -> str:
    """Return a short description of what a group of training cases trains (all but precision and XLA)."""
    return f"{case.task} {case.image_size}px w{case.width:g} {case.decoder} b{case.batch_size}"


def latency_label(case: LatencyCase) -> str:
    """Return a short description of a latency case."""
    return f"latency {case.image_size}px w{case.width:g} {case.precision}{' XLA' if case.jit else ''} b{case.batch_size}"


def latency_contender(case: LatencyCase) -> Contender:
    """Build the regressor of a latency case and warm it up with two predictions."""
    config = get_config("paper", image_size=case.image_size, width=case.width, precision=case.precision, jit=case.jit)
    model = build_compiled("regressor", config)
    x = np.random.default_rng(0).random((case.batch_size, case.image_size, case.image_size, 1), dtype=np.float32)
    for _ in range(2):
        model.predict_on_batch(x)
    return Contender(latency_label(case), lambda: model.predict_on_batch(x), lambda seconds: {
        **dataclasses.asdict(case), "device": device_name(), "seconds": seconds,
        "ms_per_batch": 1000 * statistics.median(seconds), "ms_per_image": 1000 * statistics.median(seconds) / case.batch_size})


def measure_latency(group: list[LatencyCase]) -> list[dict]:
    """Return the regressor's inference time per batch and per image for cases of one size, timed in turns."""
    fresh_keras()
    return race([(latency_label(c), lambda c=c: latency_contender(c)) for c in group], max(c.repeats for c in group))


# ---------------------------------------------------------------------------
# End to end: `aebonet demo` in a child process


def run_measured(command: list[str], env: dict, log_path: Path) -> tuple[float, int, resource.struct_rusage]:
    """Run a command; return its wall seconds, exit status and resource usage (its children's included)."""
    start = time.perf_counter()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - start, process.returncode, usage


def demo_maes(comparison_csv: Path) -> dict:
    """Return each model's test MAE (months) from the demo's comparison.csv."""
    import pandas as pd

    table = pd.read_csv(comparison_csv, index_col="model")
    return {model: float(mae) for model, mae in table["mae"].items()}


def log_tail(log_path: Path, lines: int = 5) -> str:
    """Return the last lines of a log, to say why a child process failed."""
    return " | ".join(log_path.read_text(errors="replace").strip().splitlines()[-lines:])


def measure_demo(work: Workspace, precision: str | None) -> dict:
    """Return the wall time, peak memory and test MAEs of `aebonet demo`, from a fresh cache, in a child process."""
    name = f"demo-{precision or 'default'}"
    extra = ["--precision", precision] if precision else []
    command = [sys.executable, "-m", "aebonet_lib.cli", "demo", "--out", str(work.root / name), *extra]
    env = {**os.environ, "AEBONET_CACHE": str(work.root / f"{name}-cache"), "TF_CPP_MIN_LOG_LEVEL": "2"}
    wall, status, usage = run_measured(command, env, work.root / f"{name}.log")
    row = {"command": shlex.join(["aebonet", "demo", *extra]), "precision": precision or get_config("cpu").precision,
           "wall_s": wall, "peak_rss_mib": usage.ru_maxrss / 1024, "cpu_s": usage.ru_utime + usage.ru_stime,
           "returncode": status}
    if status != 0:
        return {**row, "error": f"exit status {status}: {log_tail(work.root / f'{name}.log')}"}
    return {**row, "test_mae": demo_maes(work.root / name / "comparison.csv")}


# ---------------------------------------------------------------------------
# Running a plan


@dataclass(frozen=True)
class Job:
    """Hold one measurement: the result section its rows go to, a label, and the function that measures."""

    section: str
    label: str
    measure: Callable[[], list[dict]]


def data_jobs(plan: Plan, work: Workspace) -> list[Job]:
    """Return the phantom, cache and pipeline measurements (run first: they start worker processes)."""
    jobs = [Job("phantom", f"phantom {h}x{w}", lambda s=(h, w), n=n: [phantom_rate(s, n, plan)])
            for (h, w), n in plan.phantom_sizes]
    jobs.append(Job("cache", "write full-size PNGs", lambda: [write_pngs(work, plan)]))
    jobs += [Job("cache", f"build cache, {k or 'all'} workers", lambda k=k: [cache_rate(work, plan, k)])
             for k in plan.cache_workers]
    return jobs + [Job("pipeline", f"pipeline batch {b}{' augmented' if a else ''}",
                       lambda b=b, a=a: [pipeline_rate(work, plan, b, a)])
                   for b in plan.pipeline_batches for a in (False, True)]


def groups(items, key: Callable) -> list[list]:
    """Return the items grouped by key, groups and items in their first order."""
    grouped: dict = {}
    for item in items:
        grouped.setdefault(key(item), []).append(item)
    return list(grouped.values())


def model_jobs(plan: Plan, work: Workspace) -> list[Job]:
    """Return the peak, training, latency and demo measurements; settings of one model are timed in turns."""
    jobs = [Job("peaks", "matmul and conv peaks", lambda: measure_peaks(plan))]
    jobs += [Job("training", group_label(g[0]) + (" XLA" if plan.xla_apart and g[0].jit else ""),
                 lambda g=g: measure_training(g))
             for g in groups(plan.training, lambda c: (c.task, c.image_size, c.width, c.decoder, c.batch_size,
                                                      c.jit and plan.xla_apart))]
    jobs += [Job("inference", f"latency {g[0].image_size}px", lambda g=g: measure_latency(g))
             for g in groups(plan.latency, lambda c: (c.image_size, c.width))]
    return jobs + [Job("demo", f"aebonet demo {p or ''}", lambda p=p: [measure_demo(work, p)]) for p in plan.demo]


def run_job(job: Job) -> list[dict]:
    """Run one measurement; a failure becomes a row that says why, so that one broken setting does not end the run."""
    start = time.perf_counter()
    try:
        rows = job.measure()
    except Exception as e:  # e.g. running out of memory in some setting on some device
        rows = [{"error": error_text(e)}]
    return [{"label": job.label, **row, "job_wall_s": time.perf_counter() - start} for row in rows]


MODE_FLAGS = {"quick": ["--quick"], "full": [], "gpu": ["--gpu-check"]}


def command_text(plan: Plan, out: Path, gpu_json) -> str:
    """Return the `aebonet bench` command line that runs this plan."""
    words = ["aebonet", "bench", *MODE_FLAGS.get(plan.mode, [f"(plan {plan.mode})"]), "--out", str(out)]
    words += ["--demo", *(p for p in plan.demo if p)] if plan.demo else []
    return shlex.join(words + (["--gpu-json", str(gpu_json)] if gpu_json else []))


def new_result(plan: Plan, command: str) -> dict:
    """Return the empty result of a run: what was planned, the machine, one list per section."""
    return {"format": 1, "mode": plan.mode, "started": datetime.datetime.now().isoformat(timespec="seconds"),
            "command": command, "load_average_start": hardware.load_average(),
            "hardware": hardware.describe(), "plan": dataclasses.asdict(plan),
            **{section: [] for section in SECTIONS}}


SECTIONS = ("peaks", "phantom", "cache", "pipeline", "training", "inference", "demo")


def run(mode: str = "quick", out: str | os.PathLike = "bench.json", demo: list[str | None] | None = None,
        gpu_json: str | os.PathLike | None = None, plan: Plan | None = None, progress: bool = True) -> dict:
    """Measure this machine as the plan says; write `out` (JSON) and the Markdown table beside it; return the result.

    Both files are rewritten after every measurement, so a run stopped early keeps what it
    measured. `gpu_json`: a bench JSON made on a GPU, whose training rows then give the
    utilisation for the paper-schedule estimate.
    """
    out = check_out(out)
    if plan is None and mode == "gpu" and not hardware.gpu_info():
        raise AebonetError("--gpu-check: TensorFlow sees no GPU here; run it on a GPU machine, or use --quick")
    plan = plan or make_plan(mode, demo)
    gpu_rows = gpu_training_rows(gpu_json)
    result = new_result(plan, command_text(plan, out, gpu_json))
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="aebonet-bench-") as tmp:
        work = Workspace(Path(tmp))
        jobs = data_jobs(plan, work) + model_jobs(plan, work)
        for job in tqdm(jobs, desc="bench", unit="measurement", disable=not progress):
            result[job.section] += run_job(job)
            finish(result, out, gpu_rows, time.perf_counter() - start)
    return result


def check_out(out: str | os.PathLike) -> Path:
    """Return the JSON path, refusing one that does not end in .json (the table goes beside it as .md)."""
    out = Path(out)
    if out.suffix != ".json":
        raise AebonetError(f"--out {out}: give a file name ending in .json (the Markdown table goes beside it as .md)")
    if out.is_dir():
        raise AebonetError(f"--out {out}: is a folder; give a file name ending in .json")
    return out


def gpu_training_rows(gpu_json: str | os.PathLike | None) -> list[dict]:
    """Return the GPU training rows of an earlier bench JSON (none without one)."""
    if gpu_json is None:
        return []
    rows = [r for r in read_json(gpu_json).get("training", []) if str(r.get("device", "")).startswith("GPU")]
    if not rows:
        raise AebonetError(f"--gpu-json {gpu_json}: holds no training measured on a GPU; run `aebonet bench --gpu-check` there")
    return rows


def finish(result: dict, out: Path, gpu_rows: list[dict], seconds: float) -> None:
    """Add the derived numbers (peak fractions, fastest settings, estimate, targets) and write both files."""
    add_peak_fractions(result["training"], result["peaks"])
    result["fastest"] = fastest_settings(result["training"])
    if result["peaks"]:  # the model measurements have begun: building the paper's models now delays no worker process
        result["estimate"] = estimate_schedule(result["training"] + gpu_rows, paper_flops())
    result["targets"] = check_targets(result)
    result["seconds_total"] = seconds
    result["cpu_seconds_total"] = cpu_seconds()
    result["load_average_end"] = hardware.load_average()
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    write_json(out, result)
    with atomic_write(out.with_suffix(".md")) as f:
        f.write(format_markdown(result))


# ---------------------------------------------------------------------------
# Derived numbers: fractions of the peak, fastest settings, the paper's schedule, targets


def cpu_seconds() -> float:
    """Return the CPU seconds this process and its finished children have used (over the cores: a quiet run's floor)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def ok_rows(rows: list[dict]) -> list[dict]:
    """Return the rows that were measured (not failed)."""
    return [r for r in rows if "error" not in r]


def conv_peaks(peaks: list[dict]) -> dict[str, float]:
    """Return the measured convolution GFLOP/s by precision: the fastest of the shapes measured."""
    best: dict[str, float] = {}
    for row in (r for r in ok_rows(peaks) if r["op"] == "conv"):
        best[row["precision"]] = max(best.get(row["precision"], 0.0), row["gflops"])
    return best


def add_peak_fractions(training: list[dict], peaks: list[dict]) -> None:
    """Set each training row's achieved GFLOP/s as a fraction of the same-precision convolution peak."""
    conv = conv_peaks(peaks)
    for row in ok_rows(training):
        row["fraction_of_conv_peak"] = row["train_gflops"] / conv[row["precision"]] if row["precision"] in conv else None


def setting_group(row: dict) -> tuple:
    """Return what a row trains (model, size, width, decoder, batch), leaving out precision and XLA."""
    return row["task"], row["image_size"], row["width"], row["decoder"], row["batch_size"], row["device"]


def fastest_settings(training: list[dict]) -> list[dict]:
    """Return, for each model and size measured in several settings, the fastest and its speed-up over fp32 without XLA."""
    return [fastest_in(rows) for rows in groups(ok_rows(training), setting_group) if len(rows) > 1]


def fastest_in(rows: list[dict]) -> dict:
    """Return the fastest row of a group, with its ratio to the group's fp32-without-XLA row (same run)."""
    best = max(rows, key=lambda r: r["images_per_s"])
    base = next((r for r in rows if r["precision"] == "fp32" and not r["jit"]), None)
    return {key: best[key] for key in ("task", "image_size", "width", "decoder", "batch_size", "device", "precision",
                                       "jit", "images_per_s")} | {
        "speedup_over_fp32": best["images_per_s"] / base["images_per_s"] if base else None,
        "settings": {f"{r['precision']}{'+XLA' if r['jit'] else ''}": r["images_per_s"] for r in rows}}


@functools.lru_cache(maxsize=1)
def paper_flops() -> dict[str, int]:
    """Return the forward FLOPs per image of the paper's autoencoder and regressor (256 px, width 1), built once."""
    from . import models, training

    config = get_config("paper")
    with training.precision_policy("fp32"):
        flops = {"autoencoder": models.count_flops(models.build_autoencoder(config)),
                 "regressor": models.count_flops(models.build_scratch_regressor(config))}
    fresh_keras()
    return flops


def schedule_flops(flops: dict[str, int], config: Config) -> dict[str, float]:
    """Return the FLOPs of each phase of the paper's schedule: training steps (3x forward) and validation (1x)."""
    n_train, n_val, _ = PAPER_SPLIT_SIZES
    per_epoch = {task: n_train * TRAIN_STEP_FACTOR * f + n_val * f for task, f in flops.items()}
    return {"autoencoder": config.ae_num_epochs * per_epoch["autoencoder"],
            "regressor": config.reg_num_epochs * per_epoch["regressor"]}


def published_peak(gpu_name: str) -> tuple[str, float] | None:
    """Return (label, dense bf16 TFLOP/s) of a GPU named `gpu_name` from the datasheets, or None if unknown."""
    return next(((label, tflops) for key, label, tflops in PUBLISHED_BF16_TFLOPS if key.lower() in gpu_name.lower()), None)


def paper_rows(training: list[dict], task: str, device_prefix: str, precision: str | None = None) -> list[dict]:
    """Return the measured rows of the paper's model (256 px, width 1, paper decoder) on a kind of device."""
    return [r for r in ok_rows(training) if r["task"] == task and r["image_size"] == PAPER_SIZE and r["width"] == 1
            and r["decoder"] == "upsample_conv" and r["device"].startswith(device_prefix)
            and precision in (None, r["precision"])]


def best_rate_row(rows: list[dict], batch_size: int) -> dict | None:
    """Return the fastest row (GFLOP/s) at `batch_size`, else the fastest at any batch size; None if no rows."""
    at_batch = [r for r in rows if r["batch_size"] == batch_size] or rows
    return max(at_batch, key=lambda r: r["train_gflops"], default=None)


def phase_hours(phase_flops: dict[str, float], flops_per_s: dict[str, float]) -> dict[str, float]:
    """Return the hours of each phase and their total, at the given FLOP/s per phase."""
    hours = {task: phase_flops[task] / flops_per_s[task] / 3600 for task in phase_flops}
    return {**hours, "total": sum(hours.values())}


def measured_basis(training: list[dict], device_prefix: str, precision: str | None) -> dict[str, dict] | None:
    """Return the fastest measured rows of the paper's autoencoder and regressor (the autoencoder's for both if no regressor)."""
    config = get_config("paper")
    ae = best_rate_row(paper_rows(training, "autoencoder", device_prefix, precision), config.ae_batch_size)
    if ae is None:
        return None
    reg = best_rate_row(paper_rows(training, "regressor", device_prefix, precision), config.reg_batch_size)
    return {"autoencoder": ae, "regressor": reg or ae}


def basis_text(row: dict) -> str:
    """Return a one-line description of the training row an estimate rests on."""
    return (f"{row['task']} {row['precision']}{' XLA' if row['jit'] else ''} batch {row['batch_size']}: "
            f"{row['train_gflops']:.4g} GFLOP/s on {row['device']}")


def measured_estimate(basis: dict[str, dict], phase_flops: dict[str, float], what: str) -> dict:
    """Return the schedule's hours at the rates measured on a device (one row per phase)."""
    rates = {task: row["train_gflops"] * 1e9 for task, row in basis.items()}
    reg = basis["regressor"]
    lines = [basis_text(basis["autoencoder"]),
             basis_text(reg) if reg["task"] == "regressor" else "regressor not measured: at the autoencoder's rate"]
    return {"what": what, "kind": "measured rate", "basis": lines, **phase_hours(phase_flops, rates)}


def utilisations(basis: dict[str, dict] | None) -> tuple[list[dict[str, float]], str]:
    """Return the fractions of the published peak to estimate with: measured on a known GPU, else the assumed ones."""
    peak = published_peak(basis["autoencoder"]["device"]) if basis else None
    if peak is None:
        return [{task: u for task in ("autoencoder", "regressor")} for u in ASSUMED_UTILISATION], "assumed"
    return [{task: row["train_gflops"] / 1e3 / peak[1] for task, row in basis.items()}], f"measured on {peak[0]}"


def peak_estimates(basis: dict[str, dict] | None, phase_flops: dict[str, float]) -> list[dict]:
    """Return the schedule's hours on each published accelerator at the measured (else assumed) utilisation."""
    fractions, source = utilisations(basis)
    rows = []
    for label, tflops in ((label, tflops) for _, label, tflops in PUBLISHED_BF16_TFLOPS if label in ESTIMATE_GPUS):
        for fraction in fractions:
            rates = {task: tflops * 1e12 * fraction[task] for task in phase_flops}
            rows.append({"what": f"one {label}", "kind": f"published peak {tflops} TFLOP/s x utilisation ({source})",
                         "utilisation": fraction, **phase_hours(phase_flops, rates)})
    return rows


def estimate_schedule(training: list[dict], flops: dict[str, int]) -> dict:
    """Return how long the paper's full schedule takes: at measured rates, and on published accelerator peaks."""
    config = get_config("paper")
    phase_flops = schedule_flops(flops, config)
    gpu = measured_basis(training, "GPU", "bf16")
    rows = peak_estimates(gpu, phase_flops)
    if gpu:
        rows.insert(0, measured_estimate(gpu, phase_flops, f"the measured GPU ({gpu['autoencoder']['device'][5:]})"))
    cpu = measured_basis(training, "CPU", None)
    if cpu:
        rows.append(measured_estimate(cpu, phase_flops, "this CPU"))
    return {"train_images": PAPER_SPLIT_SIZES[0], "val_images": PAPER_SPLIT_SIZES[1],
            "ae_epochs": config.ae_num_epochs, "ae_batch_size": config.ae_batch_size,
            "reg_epochs": config.reg_num_epochs, "reg_batch_size": config.reg_batch_size,
            "forward_gflop_per_image": {task: f / 1e9 for task, f in flops.items()},
            "total_pflop": {task: f / 1e15 for task, f in phase_flops.items()}, "rows": rows}


def target(name: str, measured: float | None, threshold: float, at_least: bool, unit: str, where: str) -> dict:
    """Return a target's verdict: pass or miss, with the margin as a fraction of the threshold (positive: passed)."""
    if measured is None:
        return {"target": name, "threshold": threshold, "unit": unit, "measured": None, "status": "not measured",
                "margin": None, "where": where}
    margin = measured / threshold - 1 if at_least else 1 - measured / threshold
    return {"target": name, "threshold": threshold, "unit": unit, "measured": measured,
            "status": "pass" if margin >= 0 else "miss", "margin": margin, "where": where}


def peak_target(training: list[dict]) -> dict:
    """Check that autoencoder training at 256 px reaches half the same-precision convolution peak (best setting)."""
    rows = [r for r in ok_rows(training) if r["task"] == "autoencoder" and r["image_size"] == PAPER_SIZE
            and r.get("fraction_of_conv_peak") is not None]
    best = max(rows, key=lambda r: r["fraction_of_conv_peak"], default=None)
    where = best["label"] if best else ""
    return target("autoencoder training at 256 px, fraction of the same-precision conv peak",
                  best and best["fraction_of_conv_peak"], TARGET_PEAK_FRACTION, True, "fraction", where)


def pipeline_target(pipeline: list[dict]) -> dict:
    """Check that the cached pipeline at 256 px (no augmentation, the paper's) gives 2,000 images/s at the slowest batch size."""
    rows = [r for r in ok_rows(pipeline) if not r["augment"] and r["size"] == PAPER_SIZE]
    slowest = min(rows, key=lambda r: r["images_per_s"], default=None)
    where = f"batch {slowest['batch_size']}, no augmentation" if slowest else ""
    return target("cached input pipeline at 256 px", slowest and slowest["images_per_s"], TARGET_PIPELINE_RATE, True,
                  "images/s", where)


def demo_target(demo: list[dict]) -> dict:
    """Check that `aebonet demo` takes at most 10 minutes (its first run)."""
    rows = ok_rows(demo)
    return target("aebonet demo wall time", rows[0]["wall_s"] if rows else None, TARGET_DEMO_SECONDS, False, "s",
                  rows[0]["command"] if rows else "run with --demo")


def check_targets(result: dict) -> list[dict]:
    """Return the verdicts on the issue's three speed targets."""
    return [peak_target(result["training"]), pipeline_target(result["pipeline"]), demo_target(result["demo"])]


# ---------------------------------------------------------------------------
# The Markdown table


def fmt(value, digits: int = 3) -> str:
    """Return a number with `digits` significant digits (thousands in full), or a dash for None."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)) and abs(value) >= 10 ** digits:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}" if isinstance(value, (int, float)) else str(value)


def md_table(headers: list[str], rows: list[list]) -> list[str]:
    """Return the lines of a Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return lines + ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]


def failed_lines(rows: list[dict]) -> list[str]:
    """Return one line per failed measurement of a section."""
    return [f"- failed: {r['label']}: {r['error']}" for r in rows if "error" in r]


def machine_lines(result: dict) -> list[str]:
    """Return the machine section."""
    hw = result["hardware"]
    flags = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in hw["cpu_flags"].items())
    gpus = "; ".join(f"{g['name']} (compute capability {'.'.join(map(str, g['compute_capability'] or []))})"
                     for g in hw["gpus"]) or "none"
    return ["## Machine", "", f"- CPU: {hw['cpu_model']}, {hw['available_cpus']} of {hw['logical_cpus']} cores usable, "
            f"{fmt(hw['memory_gib'])} GiB memory", f"- CPU flags: {flags}", f"- GPUs: {gpus}",
            f"- `hardware.best_precision()`: {hw['best_precision']}",
            f"- TensorFlow {hw['versions']['tensorflow']}, Keras {hw['versions']['keras']}"
            f"{'; fp32 runs as TF32 on tensor cores (TensorFlow default)' if hw['gpus'] and hw['versions']['tf32'] else ''}",
            f"- load average at start {result['load_average_start']}, at end {result.get('load_average_end')}"
            " (above the core count, timings are noisy)", ""]


def peak_lines(result: dict) -> list[str]:
    """Return the section on the machine's own limit."""
    rows = [[r["op"], r["shape"], r["precision"], r["gflops"], r["device"]] for r in ok_rows(result["peaks"])]
    return ["## The machine's own limit", "", *md_table(["op", "shape", "precision", "GFLOP/s", "device"], rows),
            *failed_lines(result["peaks"]), ""]


def data_lines(result: dict) -> list[str]:
    """Return the section on phantoms, the cache and the input pipeline."""
    rows = [[r["stage"], r["size"], r["images"], r["workers"], "-", r["images_per_s"]]
            for r in ok_rows(result["phantom"] + result["cache"])]
    rows += [[r["stage"], r["size"], r["images"], "tf.data", f"batch {r['batch_size']}"
              f"{', augmented' if r['augment'] else ''}", r["images_per_s"]] for r in ok_rows(result["pipeline"])]
    failed = failed_lines(result["phantom"] + result["cache"] + result["pipeline"])
    return ["## Phantoms, preprocessing cache, input pipeline", "",
            *md_table(["stage", "size", "images", "workers", "setting", "images/s"], rows), *failed, ""]


def training_lines(result: dict) -> list[str]:
    """Return the training-throughput section."""
    rows = [[r["task"], r["image_size"], r["width"], r["decoder"], r["precision"], r["xla"], r["batch_size"],
             f"{r['steps']}x{r['repeats']}", r["images_per_s"], r["forward_gflop_per_image"], r["train_gflops"],
             r.get("fraction_of_conv_peak") and 100 * r["fraction_of_conv_peak"]] for r in ok_rows(result["training"])]
    headers = ["model", "px", "width", "decoder", "precision", "XLA", "batch", "steps x repeats", "images/s",
               "forward GFLOP/image", "achieved GFLOP/s", "% of conv peak"]
    note = ("FLOPs are counted from the layer shapes (`models.count_flops`); a training step counts as 3x the forward "
            "FLOPs. % of conv peak: achieved GFLOP/s over the same-precision convolution measured above, in this run. "
            "Synthetic batches held in memory: the input pipeline is not timed here.")
    return ["## Training throughput", "", note, "", *md_table(headers, rows), *failed_lines(result["training"]), ""]


def fastest_lines(result: dict) -> list[str]:
    """Return the fastest setting of each model and size, with its same-run speed-up over fp32 without XLA."""
    rows = [[r["task"], r["image_size"], r["width"], r["decoder"], r["batch_size"],
             f"{r['precision']}{' + XLA' if r['jit'] else ''}", r["images_per_s"], r["speedup_over_fp32"],
             ", ".join(f"{k} {fmt(v)}" for k, v in r["settings"].items())] for r in result["fastest"]]
    headers = ["model", "px", "width", "decoder", "batch", "fastest", "images/s", "x fp32 without XLA", "all (images/s)"]
    return ["## Fastest setting", "", *md_table(headers, rows), ""]


def latency_lines(result: dict) -> list[str]:
    """Return the inference-latency section."""
    rows = [[r["image_size"], r["width"], r["precision"], r["jit"], r["batch_size"], r["ms_per_batch"], r["ms_per_image"]]
            for r in ok_rows(result["inference"])]
    return ["## Inference latency (regressor, `predict_on_batch`, median)", "",
            *md_table(["px", "width", "precision", "XLA", "batch", "ms per batch", "ms per image"], rows),
            *failed_lines(result["inference"]), ""]


def demo_lines(result: dict) -> list[str]:
    """Return the end-to-end section (the demo), or a line saying it was not run."""
    if not result["demo"]:
        return ["## End to end: `aebonet demo`", "", "Not run (pass `--demo` to run it).", ""]
    rows = [[r["command"], r["wall_s"] / 60, r["peak_rss_mib"], r["cpu_s"] / 60,
             ", ".join(f"{k} {v:.2f}" for k, v in r["test_mae"].items())] for r in ok_rows(result["demo"])]
    headers = ["command", "wall minutes", "peak memory MiB", "CPU minutes", "test MAE, months"]
    return ["## End to end: `aebonet demo`", "", *md_table(headers, rows), *failed_lines(result["demo"]), ""]


def estimate_lines(result: dict) -> list[str]:
    """Return the paper-schedule estimate section."""
    if "estimate" not in result:
        return ["## The paper's full schedule (estimate)", "", "Not yet computed (it follows the peaks).", ""]
    e = result["estimate"]
    intro = (f"{e['train_images']:,} training and {e['val_images']:,} validation images; autoencoder "
             f"{e['ae_epochs']} epochs at batch {e['ae_batch_size']} ({fmt(e['forward_gflop_per_image']['autoencoder'])} "
             f"GFLOP forward per image), regressor {e['reg_epochs']} epochs at batch {e['reg_batch_size']} "
             f"({fmt(e['forward_gflop_per_image']['regressor'])} GFLOP); training 3x forward, validation 1x: "
             f"{fmt(e['total_pflop']['autoencoder'])} + {fmt(e['total_pflop']['regressor'])} PFLOP. "
             "Published peaks are NVIDIA's dense bf16 datasheet figures; estimates, not measurements.")
    rows = [[r["what"], r["kind"], ", ".join(f"{k} {fmt(v)}" for k, v in r.get("utilisation", {}).items()) or "-",
             r["autoencoder"], r["regressor"], r["total"]] for r in e["rows"]]
    basis = [f"- {r['what']}: {'; '.join(r['basis'])}" for r in e["rows"] if "basis" in r]
    headers = ["where", "how", "utilisation", "autoencoder hours", "regressor hours", "total hours"]
    return ["## The paper's full schedule (estimate)", "", intro, "", *md_table(headers, rows), *basis, ""]


def target_lines(result: dict) -> list[str]:
    """Return the targets section: pass or miss, with the margin."""
    rows = [[t["target"], t["threshold"], t["unit"], t["measured"], t["status"],
             "-" if t["margin"] is None else f"{100 * t['margin']:+.0f} %", t["where"]] for t in result["targets"]]
    return ["## Targets", "", *md_table(["target", "threshold", "unit", "measured", "status", "margin", "setting"], rows),
            ""]


def format_markdown(result: dict) -> str:
    """Return the whole report as Markdown: machine, limits, data, training, latency, demo, estimate, targets."""
    title = (f"# `aebonet bench` ({result['mode']}), {result['started']}, {fmt(result['seconds_total'])} s "
             f"({fmt(result['cpu_seconds_total'])} CPU s)", "",
             f"Command: `{result['command']}`. Medians over repeats; ratios measured in the same run.", "")
    sections = (machine_lines, peak_lines, data_lines, training_lines, fastest_lines, latency_lines, demo_lines,
                estimate_lines, target_lines)
    return "\n".join([*title, *(line for section in sections for line in section(result))])


def format_summary(result: dict) -> str:
    """Return the part of the report the command prints: fastest settings, the estimate and the targets."""
    return "\n".join([*fastest_lines(result), *estimate_lines(result), *target_lines(result)])
