"""The measurements behind `aebonet bench`: peaks, phantoms, cache, pipeline, training, latency, demo (chapter 5)."""

from __future__ import annotations

import dataclasses
import datetime
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

from aebonet_lib import paper, phantom
from aebonet_lib._engine import devices
from aebonet_lib._engine import flops as measures
from aebonet_lib._engine import hardware
from aebonet_lib._engine.bench.estimates import (
    add_peak_fractions,
    check_targets,
    cpu_seconds,
    estimate_schedule,
    fastest_settings,
    paper_flops,
)
from aebonet_lib._engine.bench.markdown import format_markdown
from aebonet_lib._engine.bench.plans import (
    TRAIN_STEP_FACTOR,
    Contender,
    LatencyCase,
    Plan,
    TrainCase,
    device_name,
    error_text,
    fresh_keras,
    groups,
    make_plan,
    race,
    rate,
    repeat_timed,
    synchronize,
    timed,
)
from aebonet_lib._engine.files import atomic_write, read_json, write_json
from aebonet_lib.config import Config, get_config
from aebonet_lib.data import pipeline
from aebonet_lib.data.loading import BoneAgeData, load_data
from aebonet_lib.errors import AebonetError

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
        if self.loaded is None:  # the cache built last is reused; one process builds it if none was
            cached = load_data(self.raw, plan.image_size, cache_dir=self.root / "cache", workers=1, progress=False)
            self.loaded = repeated_data(cached, plan.read_n, self.root / "read.npy")
        return self.loaded


def repeated_data(cached, n: int, path: Path):
    """Return BoneAgeData of `n` images, the cached ones repeated, read from a memory map at `path` like a real cache."""
    np.save(path, np.asarray(cached.X)[np.resize(np.arange(len(cached)), n)])
    return BoneAgeData(X=np.load(path, mmap_mode="r"), y=np.resize(cached.y, n), male=np.resize(cached.male, n),
                       ids=np.array([str(i) for i in range(n)]), splits={"train": np.arange(n)}, params=cached.params,
                       source="bench")


def write_pngs(work: Workspace, plan: Plan) -> dict:
    """Write the full-size phantom PNGs the cache is built from; return the rate (render and PNG encoding)."""
    seconds = [timed(lambda: phantom.write_dataset(work.raw, plan.cache_n, size=plan.full_size, progress=False))]
    workers = phantom.choose_workers(None, plan.cache_n, plan.full_size)
    return {"stage": "write PNGs", "size": f"{plan.full_size[1]}x{plan.full_size[0]}", "images": plan.cache_n,
            "workers": workers, "seconds": seconds, "images_per_s": rate(plan.cache_n, seconds)}


def timed_cache_build(raw: str, cache_dir: str, image_size: int, workers: int) -> float:
    """Build a cache with `workers` processes and return the seconds it took (run in a fresh process)."""
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
    with devices.precision_policy(config.precision):
        if task == "autoencoder":
            return paper.compile_autoencoder(paper.build_autoencoder(config), config)
        return paper.compile_regressor(paper.build_scratch_regressor(config), config)


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
    model = build_compiled(case.task, case.config())
    flops = measures.count_flops(model)
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
            "hardware": hardware.describe_machine(), "plan": dataclasses.asdict(plan),
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
