"""Numbers derived from a bench run (peak fractions, the paper-schedule estimate, targets) and its Markdown table."""

from __future__ import annotations

import functools
import resource

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
    from aebonet_lib import paper
    from aebonet_lib._engine import flops as measures
    from aebonet_lib._engine import devices

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
    note = ("FLOPs are counted from the layer shapes (`measures.count_flops`); a training step counts as 3x the forward "
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
