"""The Markdown report of a bench run (the numbers come from `estimates`)."""

from __future__ import annotations

from aebonet_lib._engine.bench.estimates import ok_rows

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
