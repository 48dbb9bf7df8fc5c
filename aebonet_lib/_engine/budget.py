"""Time budgets: how long a preset takes on a GPU (estimates), and `--budget` (measure, plan, follow, warn) (chapter 5).

**Estimates.** The course measured the paper's models on one NVIDIA H100
(`results/h100-keras-jax.json`, made by `benchmarks/gpu_check.py`: Keras 3 on JAX, XLA, the
paper's batch sizes). Another GPU's rate is that rate divided by how much smaller the GPU is,
from the datasheets in `GPUS`: its dense 16-bit tensor-core peak and its memory bandwidth. A
training step is held back by arithmetic or by memory traffic; we did not profile which, so
`slowdown` gives both ratios: with the step's time a maximum (or a sum) of an arithmetic time
and a memory time, each scaling with its own ratio, the time on the other GPU lies between the
smaller and the larger ratio times the H100's, if both GPUs reach the same fraction of their
peaks (a T4 that slows its clock when hot does not). The `colab` preset is sized on the larger
ratio, the slow end. Every minute this module returns is an estimate until measured.

**Budgets.** `aebonet pretrain/train --budget MINUTES` times a few real training steps on a
throwaway copy of the run's model (`measure_rate`), plans how many of the recipe's epochs fit
(`plan_budget`, recorded in config.json), trains exactly that plan, and warns once when the
epochs run long enough to end more than `OVERSHOOT` over the budget (`BudgetWatch`).
A resumed run follows its recorded plan and measures nothing.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from aebonet_lib._engine.bench.plans import RESULTS
from aebonet_lib._engine.checkpoints import read_state
from aebonet_lib._engine.files import read_json
from aebonet_lib._engine.records import RunRecord
from aebonet_lib.config import PAPER_SPLIT_SIZES, Config
from aebonet_lib.errors import AebonetError

clock = time.perf_counter  # every time this module reads (tests replace it)

OVERSHOOT = 0.10  # warn when a run heads more than 10 % over its budget
VAL_SPEEDUP = 3  # a validation image costs one forward pass, a training image three (bench.plans.TRAIN_STEP_FACTOR)
COMPILE_STEPS = 3  # untimed steps first: tracing, XLA compilation, kernel choice
TIMED_STEPS = 20  # then timed steps, on the run's own batches
# Estimates only (no budget uses them): what a whole run adds to its epochs, not measured on these GPUs.
ASSUMED_START_SECONDS = 120.0  # per phase: Python and TensorFlow starting, the cache opening, the model compiling
# (the H100 measured 27 s for its first autoencoder epoch with XLA's compilation; a 2-core Colab host compiles slower)
ASSUMED_EPOCH_SECONDS = 5.0  # per epoch: the checkpoint (12.5 M parameters x 12 bytes, about 150 MB), logs
REFERENCE = "h100-keras-jax"  # the measurement every estimate is scaled from
REFERENCE_GPU = "H100"  # the GPU that measured it (an H100 80GB HBM3, the SXM board)


@dataclass(frozen=True)
class Gpu:
    """Hold what a GPU's datasheet says about speed: dense 16-bit tensor peak, memory bandwidth, and the source."""

    name: str
    tflops: float  # dense fp16/bf16 tensor-core peak (datasheets print twice this "with sparsity")
    bandwidth: float  # GB/s
    precision: str  # what precision "auto" trains in there (runs.hardware.gpu_precision)
    source: str


GPUS = {
    "T4": Gpu("NVIDIA T4 (Colab's free GPU)", 65.0, 320.0, "fp16",
              "NVIDIA T4 Tensor Core GPU datasheet: mixed precision (FP16/FP32) 65 TFLOPS; GDDR6, 320+ GB/s"),
    "L4": Gpu("NVIDIA L4", 121.0, 300.0, "bf16",
              "NVIDIA L4 Tensor Core GPU datasheet: FP16/BF16 tensor core 242 TFLOPS with sparsity (121 dense); 300 GB/s"),
    "A100": Gpu("NVIDIA A100 40GB (Colab's A100)", 312.0, 1555.0, "bf16",
                "NVIDIA A100 Tensor Core GPU datasheet: BF16 tensor core 312 TFLOPS (624 with sparsity); "
                "A100 40GB: 1,555 GB/s"),
    "H100": Gpu("NVIDIA H100 SXM", 989.4, 3350.0, "bf16",
                "NVIDIA H100 Tensor Core GPU datasheet: BF16 tensor core 1,979 TFLOPS with sparsity (989.4 dense); "
                "H100 SXM: 3.35 TB/s"),
    "H200": Gpu("NVIDIA H200", 989.4, 4800.0, "bf16",
                "NVIDIA H200 Tensor Core GPU datasheet: BF16 tensor core 1,979 TFLOPS with sparsity; 4.8 TB/s"),
}
TABLE_GPUS = ("T4", "L4", "A100", "H100")


def say(message: str) -> None:
    """Print one line about the run's budget on stderr, above any progress bar."""
    from tqdm.auto import tqdm

    tqdm.write(f"aebonet: budget: {message}", file=sys.stderr)


# ---------------------------------------------------------------------------
# Estimates from the datasheets and the H100's measurement


def slowdown(gpu: str, reference: str = REFERENCE_GPU) -> tuple[float, float]:
    """Return (fewest, most) times as long a step takes on `gpu` as on `reference`: the smaller and larger datasheet ratio."""
    if gpu not in GPUS:
        raise AebonetError(f"GPU {gpu!r}: no datasheet numbers; choose one of {', '.join(GPUS)}")
    ratios = (GPUS[reference].tflops / GPUS[gpu].tflops, GPUS[reference].bandwidth / GPUS[gpu].bandwidth)
    return min(ratios), max(ratios)


def check_measured_shape(config: Config) -> None:
    """Refuse a config whose model the reference measurement did not time (256 px, width 1, the paper's batches)."""
    measured = (256, 1.0, "upsample_conv", 8, 16)
    found = (config.image_size, config.width, config.decoder, config.ae_batch_size, config.reg_batch_size)
    if found != measured:
        raise AebonetError(f"preset {config.name!r} (size, width, decoder, batches {found}): the GPU measurement "
                           f"times only {measured}; estimate another model by measuring it (benchmarks/gpu_check.py)")


def reference_rate(task: str, precision: str, results: dict | None = None) -> float:
    """Return the measured training images/s of the paper's model at its batch size, in `precision` (else bf16)."""
    results = results or measured(REFERENCE)
    batch = 8 if task == "autoencoder" else 16
    rows = [r for r in results["training"] if r.get("task") == task and r.get("decoder") == "upsample_conv"
            and r.get("batch_size") == batch and r.get("images_per_s")]
    by_precision = {r["precision"]: r["images_per_s"] for r in rows}
    return by_precision.get(precision) or by_precision["bf16"]


def measured(name: str) -> dict:
    """Return a GPU measurement shipped with the library (aebonet_lib/results/NAME.json)."""
    return read_json(RESULTS / f"{name}.json")


def epoch_seconds(rate: float, n_train: int, n_val: int, overhead: float = 0.0) -> float:
    """Return one epoch's seconds: the training images at `rate`, validation at VAL_SPEEDUP x, plus `overhead`."""
    return n_train / rate + n_val / (VAL_SPEEDUP * rate) + overhead


def phase_minutes(epochs: int, rate: float, n_train: int, n_val: int) -> float:
    """Return the estimated minutes of one phase: the assumed start, then `epochs` epochs with their assumed overhead."""
    return (ASSUMED_START_SECONDS + epochs * epoch_seconds(rate, n_train, n_val, ASSUMED_EPOCH_SECONDS)) / 60


def estimate(config: Config, gpu: str, split_sizes=PAPER_SPLIT_SIZES, results: dict | None = None) -> dict:
    """Return the estimated rates and minutes of a preset's pretraining and fine-tuning on one GPU (fast and slow end)."""
    check_measured_shape(config)
    n_train, n_val = split_sizes[0], split_sizes[1]
    row = {"gpu": gpu, "name": GPUS[gpu].name, "precision": GPUS[gpu].precision, "source": GPUS[gpu].source}
    for phase, task, epochs in (("pretrain", "autoencoder", config.ae_num_epochs),
                                ("train", "regressor", config.reg_num_epochs)):
        rate = reference_rate(task, GPUS[gpu].precision, results)
        for end, ratio in zip(("fast", "slow"), slowdown(gpu)):
            row[f"{phase}_images_per_s_{end}"] = rate / ratio
            row[f"{phase}_minutes_{end}"] = phase_minutes(epochs, rate / ratio, n_train, n_val)
    for end in ("fast", "slow"):
        row[f"total_minutes_{end}"] = row[f"pretrain_minutes_{end}"] + row[f"train_minutes_{end}"]
    return row


def estimate_table(config: Config, gpus=TABLE_GPUS, results: dict | None = None) -> list[dict]:
    """Return `estimate` for each GPU (chapter 5 and the teachers' page show it)."""
    return [estimate(config, gpu, results=results) for gpu in gpus]


def method_check(results_h100: dict | None = None, results_h200: dict | None = None) -> dict:
    """Return the H200's measured autoencoder rate beside the range the method predicts for it from the H100's."""
    h100 = reference_rate("autoencoder", "bf16", results_h100 or measured(REFERENCE))
    h200 = reference_rate("autoencoder", "bf16", results_h200 or measured("h200-keras-jax"))
    fewest, most = slowdown("H200")
    return {"h100": h100, "h200_measured": h200, "h200_low": h100 / most, "h200_high": h100 / fewest}


# ---------------------------------------------------------------------------
# --budget: measure, plan, follow, warn


@dataclass
class Budget:
    """Hold a budgeted run's plan, as config.json records it: what was measured and the epochs it allows."""

    minutes: float  # the budget, from the run's start (after the data are loaded)
    images_per_s: float  # measured training throughput
    batch_size: int
    compile_seconds: float  # measured: the first steps' time beyond their share at the measured rate
    checkpoint_seconds: float  # measured: one save of the model with its optimizer
    setup_seconds: float  # spent before the first epoch: building, measuring
    epoch_seconds: float  # planned: training images, validation images, checkpoint
    epochs: int  # planned epochs
    recipe_epochs: int  # the epochs the recipe asked for (the most a budget allows)
    train_images: int
    val_images: int
    timed_steps: int = TIMED_STEPS

    def to_dict(self) -> dict:
        """Return the plan as a JSON-friendly dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Budget":
        """Rebuild a plan from `to_dict`'s dict."""
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})

    def planned_minutes(self) -> float:
        """Return the plan's minutes: setup, compilation and the planned epochs."""
        return (self.setup_seconds + self.compile_seconds + self.epochs * self.epoch_seconds) / 60


def measure_rate(fit_steps: Callable[[int], object], batch_size: int, compile_steps: int = COMPILE_STEPS,
                 timed_steps: int = TIMED_STEPS) -> tuple[float, float]:
    """Return (training images/s, compile seconds): `fit_steps(n)` trains n steps, first untimed ones, then timed ones."""
    start = clock()
    fit_steps(compile_steps)
    first = clock() - start
    start = clock()
    fit_steps(timed_steps)
    rate = timed_steps * batch_size / max(clock() - start, 1e-9)
    return rate, max(0.0, first - compile_steps * batch_size / rate)


def measure_seconds(action: Callable[[], object]) -> float:
    """Return the seconds `action()` takes (such as saving a checkpoint)."""
    start = clock()
    action()
    return clock() - start


def fitting_epochs(available_seconds: float, epoch_s: float, most: int) -> int:
    """Return the epochs that fit in `available_seconds`: at least 1, at most `most`."""
    return max(1, min(most, math.floor(available_seconds / epoch_s)))


def plan_budget(minutes: float, started: float, rate: float, compile_s: float, checkpoint_s: float, batch_size: int,
                n_train: int, n_val: int, most: int) -> Budget:
    """Return the plan: as many of the recipe's `most` epochs as fit in what the budget has left after setup."""
    check_budget(minutes)
    setup_s = clock() - started
    epoch_s = epoch_seconds(rate, n_train, n_val, checkpoint_s)
    epochs = fitting_epochs(minutes * 60 - setup_s - compile_s, epoch_s, most)
    return Budget(minutes, rate, batch_size, compile_s, checkpoint_s, setup_s, epoch_s, epochs, most, n_train, n_val)


def proportional_stages(stages, num_epochs: int) -> list[int]:
    """Return `num_epochs` spread over the stages in proportion (largest remainders), at least 1 each when they suffice.

    With fewer epochs than stages, the stages whose share rounds to 0 are dropped: fewer
    stages. A stage only marks rows of stages.csv (the optimizer runs on, paper.CHOICES),
    so the training is the same `num_epochs` epochs either way.
    """
    exact = np.asarray(stages, dtype=float) * num_epochs / sum(stages)
    epochs = np.floor(exact).astype(int)
    epochs[np.argsort(epochs - exact, kind="stable")[: num_epochs - epochs.sum()]] += 1
    while num_epochs >= len(stages) and (epochs == 0).any():
        epochs[int(np.argmax(epochs))] -= 1
        epochs[int(np.argmax(epochs == 0))] += 1
    return [int(e) for e in epochs if e > 0]


def duration(seconds: float) -> str:
    """Return seconds in words: '42 s' under a minute and a half, else '2.1 min'."""
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def plan_line(budget: Budget, what: str, stages: list[int] | None = None) -> str:
    """Return the one line that says what a budget measured and planned."""
    fit = (f"the recipe's {budget.recipe_epochs} fit" if budget.epochs == budget.recipe_epochs
           else f"cut from the recipe's {budget.recipe_epochs} to fit")
    shown = f" (stages {', '.join(map(str, stages))})" if stages else ""
    return (f"{budget.minutes:.3g} min for {what}: measured {budget.images_per_s:,.1f} training images/s "
            f"({budget.timed_steps} steps of {budget.batch_size}); an epoch of {budget.train_images:,} + "
            f"{budget.val_images:,} validation images takes about {duration(budget.epoch_seconds)}; "
            f"{budget.epochs} epochs{shown}, {fit}, about {duration(60 * budget.planned_minutes())} in all")


def spent_before(setup_seconds: float, epoch_seconds_done) -> float:
    """Return the seconds a resumed run had spent: its setup and its finished epochs (history.csv's `seconds`)."""
    return float(setup_seconds) + float(np.nansum(np.asarray(epoch_seconds_done, dtype=float)))


class BudgetWatch(keras.callbacks.Callback):
    """Warn once, at an epoch end, when the run is heading more than OVERSHOOT over its budget.

    The projection is the time spent so far plus the remaining epochs at the last epoch's
    pace (the session's first epoch less the planned compilation). One object follows a
    whole run: give the same one to every `fit` of a staged pretraining.
    """

    def __init__(self, budget: Budget, total_epochs: int, started: float, spent: float = 0.0,
                 report: Callable[[str], None] = say):
        """Follow a plan from `started` (a `clock()` value), `spent` seconds having gone before this session."""
        super().__init__()
        self.budget, self.total, self.started, self.spent, self.report = budget, total_epochs, started, spent, report
        self.last: float | None = None
        self.first = True
        self.warned = False

    def on_train_begin(self, logs=None):
        """Start the clock at the first `fit` of the session."""
        if self.last is None:
            self.last = clock()

    def on_epoch_end(self, epoch, logs=None):
        """Project the run's end from this epoch's pace; warn once if it is more than OVERSHOOT over budget."""
        now = clock()
        took = now - self.last - (self.budget.compile_seconds if self.first else 0.0)
        self.last, self.first = now, False
        projected = self.spent + now - self.started + (self.total - epoch - 1) * max(took, 0.0)
        limit = self.budget.minutes * 60
        if not self.warned and projected > (1 + OVERSHOOT) * limit:
            self.warned = True
            self.report(over_line(epoch + 1, self.total, (self.spent + now - self.started) / 60, took / 60,
                                  self.budget, projected / 60))


def over_line(done: int, total: int, elapsed_min: float, epoch_min: float, budget: Budget, projected_min: float) -> str:
    """Return the one-line warning of a run heading over its budget."""
    over = projected_min / budget.minutes - 1
    return (f"warning: epoch {done} of {total} ended at {elapsed_min:.1f} min; at {epoch_min:.2f} min per epoch "
            f"(planned {budget.epoch_seconds / 60:.2f}) the run ends at about {projected_min:.1f} min, "
            f"{over:.0%} over its {budget.minutes:.3g}-min budget (it still trains the planned epochs)")


def check_budget(minutes: float | None, distribute: str = "none") -> None:
    """Refuse a budget that cannot be planned: not above 0, or on several workers (each would time itself)."""
    if minutes is not None and not minutes > 0:
        raise AebonetError(f"--budget {minutes}: give the minutes the run may take, a number above 0")
    if minutes is not None and distribute == "multiworker":
        raise AebonetError("--budget with --distribute multiworker: every worker would time its own steps and plan "
                           "other epochs; give --epochs instead")


def watch_for(record: RunRecord, run_dir, started: float, fresh: bool) -> list:
    """Return the callback that warns when a budgeted run heads over its budget ([] for a run without one)."""
    if not record.budget:
        return []
    plan = Budget.from_dict(record.budget)
    total = sum(record.plan) if record.kind == "pretrain" else record.num_epochs
    spent = 0.0 if fresh else spent_before(plan.setup_seconds, done_seconds(run_dir))
    return [BudgetWatch(plan, total, started, spent)]


def done_seconds(run_dir) -> list[float]:
    """Return the seconds of each finished epoch of a run (history.csv up to its checkpoint)."""
    path, done = Path(run_dir) / "history.csv", read_state(run_dir).get("epochs_done", 0)
    if not path.is_file() or path.stat().st_size == 0:
        return []
    history = pd.read_csv(path)
    return history.loc[history["epoch"] < done, "seconds"].tolist() if "seconds" in history else []
