"""Numbers derived from a bench run: fractions of the peak, fastest settings, the paper-schedule estimate, targets."""

from __future__ import annotations

import functools
import resource

from aebonet_lib import paper
from aebonet_lib._engine import devices
from aebonet_lib._engine import flops as measures
from aebonet_lib._engine.bench.plans import (
    ASSUMED_UTILISATION,
    ESTIMATE_GPUS,
    PAPER_SIZE,
    PUBLISHED_BF16_TFLOPS,
    TARGET_DEMO_SECONDS,
    TARGET_PEAK_FRACTION,
    TARGET_PIPELINE_RATE,
    TRAIN_STEP_FACTOR,
    fresh_keras,
    groups,
)
from aebonet_lib.config import PAPER_SPLIT_SIZES, Config, get_config

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

    config = get_config("paper")
    with devices.precision_policy("fp32"):
        flops = {"autoencoder": measures.count_flops(paper.build_autoencoder(config)),
                 "regressor": measures.count_flops(paper.build_scratch_regressor(config))}
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
