"""What `aebonet bench` measures (the plans and their cases) and how it times them (chapter 5)."""

from __future__ import annotations

import dataclasses
import functools
import gc
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from aebonet_lib._engine import hardware
from aebonet_lib._engine.files import read_json
from aebonet_lib.config import DECODERS, PRECISIONS, Config, get_config
from aebonet_lib.errors import AebonetError

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
    import keras

    keras.backend.clear_session()
    gc.collect()


RESULTS = Path(__file__).resolve().parents[2] / "results"  # measurements shipped with the library (chapter 5 reads them)


def measured_results(name: str = "h200-keras-jax") -> dict:
    """Return a measurement shipped with the library, such as the H200 run of benchmarks/gpu_check.py."""
    return read_json(RESULTS / f"{name}.json")


@functools.lru_cache(maxsize=1)
def device_name() -> str:
    """Return where TensorFlow computes: the first GPU's name, or 'CPU'."""
    gpus = hardware.gpu_info()
    return f"GPU: {gpus[0]['name']}" if gpus else "CPU"


def groups(items, key: Callable) -> list[list]:
    """Return the items grouped by key, groups and items in their first order."""
    grouped: dict = {}
    for item in items:
        grouped.setdefault(key(item), []).append(item)
    return list(grouped.values())

