"""Datasets of phantoms: ages drawn like RSNA's, label noise, rendering in worker processes, the Kaggle layout on disk."""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import signal
import warnings
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from aebonet_lib._engine import files, hardware
from aebonet_lib.errors import AebonetError
from aebonet_lib.phantom.children import READER_SD_MONTHS, label_floor
from aebonet_lib.phantom.radiograph import check_seed, check_size, is_count, render, render_with_regions
from aebonet_lib.phantom.styles import DEFAULT_STYLE, check_style
from aebonet_lib.phantom.timeline import MAX_AGE

# ---------------------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------------------

# The RSNA training set (Halabi et al., Radiology 2019): bone age mean 127.3 months, SD 41.2,
# 54 % boys, whole months from 1 to 228. Boys' labels run older than girls'; these rounded
# per-sex normal curves, cut to the age range, reproduce those totals.
AGE_CURVES = {True: (135.0, 42.0), False: (118.0, 38.0)}  # male -> (mean, SD) in months
BOY_FRACTION = 0.54
AGE_RANGE = (1, 228)
LABELS_CSV, IMAGE_DIR, TRUE_AGES_CSV = "boneage-training-dataset.csv", "boneage-training-dataset", "true_boneage.csv"
RECORD_JSON = "phantom_record.json"  # what drew each image: true age, label, sex, seed and the regions' boxes
PARALLEL_MIN_PIXELS = 200 * 256 * 256  # smaller jobs render in this process: starting workers costs about a second
PROGRESS_MIN = 100  # fewer images than this get no progress bar


def age_grid(age_range: tuple[float, float]) -> np.ndarray:
    """Return the whole months inside `age_range`, or raise AebonetError when the range is empty or outside 0-240."""
    low, high = age_range
    if not 0 <= low <= high <= MAX_AGE:
        raise AebonetError(f"age_range {tuple(age_range)}: need 0 <= low <= high <= {MAX_AGE} months")
    months = np.arange(math.ceil(low), math.floor(high) + 1, dtype=float)
    if len(months) == 0:
        raise AebonetError(f"age_range {tuple(age_range)}: contains no whole month; widen it")
    return months


def sample_ages(n: int, rng: np.random.Generator, age_range: tuple[float, float] = AGE_RANGE) -> tuple[np.ndarray, np.ndarray]:
    """Return `n` bone ages (whole months, float32) and sexes (bool, True = boy) distributed like RSNA's."""
    months = age_grid(age_range)
    males = rng.random(n) < BOY_FRACTION
    ages = np.empty(n, np.float32)
    for male in (True, False):
        mean, sd = AGE_CURVES[male]
        weights = np.exp(-0.5 * ((months - mean) / sd) ** 2)
        ages[males == male] = rng.choice(months, size=int(np.sum(males == male)), p=weights / weights.sum())
    return ages, males


def add_label_noise(ages: np.ndarray, sd: float, rng: np.random.Generator) -> np.ndarray:
    """Return the labels a reader with error SD `sd` months would give, to 0.1 month, within 0-240."""
    if sd == 0:
        return ages.astype(np.float32)
    noisy = np.round(ages + rng.normal(0.0, sd, len(ages)), 1)
    return np.clip(noisy, 0, MAX_AGE).astype(np.float32)


def image_seed(seed: int, index: int) -> int:
    """Return the nuisance seed of image `index` of a dataset made with `seed`; the same for any number of workers."""
    return int(np.random.SeedSequence(seed, spawn_key=(2, index)).generate_state(1)[0])


def stream(seed: int, key: int) -> np.random.Generator:
    """Return the random generator a dataset made with `seed` uses for one purpose (0: ages, 1: label noise)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(key,)))


def check_dataset_args(n: int, size, seed: int, label_noise_sd: float, workers: int | None,
                       style: str = DEFAULT_STYLE) -> tuple[int, int]:
    """Raise AebonetError for a bad image count, size, seed, label noise, worker count or style; return (height, width)."""
    check_style(style)
    if not is_count(n):
        raise AebonetError(f"n {n!r}: the number of images must be a whole number greater than 0")
    if workers is not None and not is_count(workers):
        raise AebonetError(f"workers {workers!r}: give a whole number of processes >= 1, or None for all cores")
    if not (isinstance(label_noise_sd, (int, float)) and 0 <= label_noise_sd <= 120):
        raise AebonetError(f"label noise {label_noise_sd!r}: give a standard deviation in months between 0 and 120")
    check_seed(seed)
    return check_size(size)


def dataset_plan(n: int, seed: int, age_range: tuple[float, float], label_noise_sd: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the true ages, sexes and labels of a dataset of `n` images made with `seed`."""
    ages, males = sample_ages(n, stream(seed, 0), age_range)
    return ages, males, add_label_noise(ages, label_noise_sd, stream(seed, 1))


def start_worker() -> None:
    """Set up a worker process: one OpenCV thread (the workers already use every core), Ctrl-C left to the parent."""
    cv2.setNumThreads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def choose_workers(workers: int | None, n: int, shape: tuple[int, int]) -> int:
    """Return how many processes to render with: `workers` (None: all cores), or 1 for a small job."""
    if n * shape[0] * shape[1] < PARALLEL_MIN_PIXELS:
        return 1
    return hardware.available_cpus() if workers is None else int(workers)


def run_jobs(function, jobs: list, workers: int, progress: bool) -> Iterator:
    """Yield function(job) for each job in order, in `workers` processes if more than one; results never depend on it."""
    done = 0
    with tqdm(total=len(jobs), desc="phantom", unit="img", disable=not progress or len(jobs) < PROGRESS_MIN) as bar:
        if workers > 1:
            try:
                for result in run_in_processes(function, jobs, workers):
                    yield result
                    done += 1
                    bar.update()
            except BrokenProcessPool:
                warnings.warn("phantom: worker processes failed to start; rendering the rest in this process", stacklevel=2)
        for job in jobs[done:]:
            yield function(job)
            bar.update()


def run_in_processes(function, jobs: list, workers: int) -> Iterator:
    """Yield function(job) for each job in order, computed by `workers` fresh ("spawn") processes."""
    chunk = max(1, min(64, len(jobs) // (8 * workers)))
    context = multiprocessing.get_context("spawn")  # safe after threads (TensorFlow, OpenCV) and on every OS
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=start_worker)
    try:
        yield from pool.map(function, jobs, chunksize=chunk)
    finally:  # also on Ctrl-C: drop the queued work instead of finishing it
        pool.shutdown(wait=True, cancel_futures=True)


def render_job(job: tuple) -> np.ndarray:
    """Render one image from a (bone age, male, size, seed, style, variation) job; run in a worker process."""
    return render(*job)


def floor_message(label_noise_sd: float) -> str:
    """Return the line that says how close to the labels a perfect model can get."""
    if label_noise_sd == 0:
        return "phantom: labels are the true bone ages (no reader error): the MAE floor is 0"
    return (f"phantom: labels carry one reader's error (SD {label_noise_sd:.1f} months): "
            f"no model can beat MAE {label_floor(label_noise_sd):.1f} months against them")


def make_dataset(
    n: int, size: int | tuple[int, int] = 256, seed: int = 0, age_range: tuple[float, float] = AGE_RANGE,
    label_noise_sd: float | None = READER_SD_MONTHS, workers: int | None = None, progress: bool = True,
    style: str = DEFAULT_STYLE, variation: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return `n` phantom radiographs (float32, (n, H, W)), their bone-age labels (float32) and sexes (bool) (chapter 0).

    By default each image is a different child (`variation`), labelled by one reader with error
    SD `label_noise_sd` (None: children.READER_SD_MONTHS); with `progress` it prints the MAE floor that sets.
    """
    label_noise_sd = READER_SD_MONTHS if label_noise_sd is None else label_noise_sd
    height, width = check_dataset_args(n, size, seed, label_noise_sd, workers, style)
    ages, males, labels = dataset_plan(n, seed, age_range, label_noise_sd)
    if progress:
        print(floor_message(label_noise_sd), flush=True)
    jobs = [(float(a), bool(m), (height, width), image_seed(seed, i), style, variation)
            for i, (a, m) in enumerate(zip(ages, males))]
    images = np.empty((n, height, width), np.float32)
    for i, image in enumerate(run_jobs(render_job, jobs, choose_workers(workers, n, (height, width)), progress)):
        images[i] = image
    return images, labels, males


def write_png_job(job: tuple) -> dict[str, tuple[int, int, int, int]]:
    """Render one image, write it as an 8-bit PNG that appears only when complete, and return its regions' boxes."""
    *render_args, path = job
    image, boxes = render_with_regions(*render_args)
    pixels = (image * 255 + 0.5).astype(np.uint8)
    with files.atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), pixels):
            raise OSError(f"{path}: OpenCV could not write the PNG")
    return boxes


def label_values(ages: np.ndarray, whole_months: bool) -> np.ndarray:
    """Return labels as the label file writes them: whole months, or months to 0.1."""
    return ages.astype(np.int64) if whole_months else ages.astype(np.float64).round(1)


def write_record(path: Path, jobs: list[tuple], labels: np.ndarray, boxes: list[dict], ids: np.ndarray) -> None:
    """Write what drew each image (true age, label, sex, seed, regions' boxes), keyed by id, as JSON, atomically."""
    _, _, (height, width), _, style, variation, _ = jobs[0]
    images = {str(image_id): {"age": job[0], "label": float(label), "male": job[1], "seed": job[3],
                              "boxes": {name: list(box) for name, box in box_set.items()}}
              for image_id, job, label, box_set in zip(ids, jobs, labels, boxes)}
    record = {"about": "phantom.write_dataset: for each image id, the bone age that drew it, its label, sex, "
                       "seed, and the boxes (x0, y0, x1, y1) in pixels of the regions a reader looks at",
              "size": [height, width], "style": style, "variation": variation, "images": images}
    with files.atomic_write(path) as f:
        json.dump(record, f, indent=1)


def read_record(folder: str | os.PathLike) -> dict:
    """Return the record `write_dataset` kept beside a phantom dataset's images: size, style, and each image by id."""
    path = Path(folder) / RECORD_JSON
    if not path.is_file():
        raise AebonetError(f"{path}: no phantom record; datasets written by phantom.write_dataset have one")
    record = json.loads(path.read_text())
    for image in record["images"].values():
        image["boxes"] = {name: tuple(box) for name, box in image["boxes"].items()}
    return record


def write_labels(path: Path, ids: np.ndarray, ages: np.ndarray, males: np.ndarray, whole_months: bool) -> None:
    """Write a label file with header `id,boneage,male` (male as True/False), atomically."""
    table = pd.DataFrame({"id": ids, "boneage": label_values(ages, whole_months), "male": males.astype(bool)})
    with files.atomic_write(path) as f:
        table.to_csv(f, index=False, lineterminator="\n")


def write_dataset(
    out_dir: str | os.PathLike, n: int, size: int | tuple[int, int] = 256, seed: int = 0,
    label_noise_sd: float | None = READER_SD_MONTHS, progress: bool = True, workers: int | None = None,
    style: str = DEFAULT_STYLE, variation: bool = True,
) -> Path:
    """Write `n` phantom radiographs in the Kaggle RSNA layout under `out_dir` and return it (chapter 0).

    The label file is written last, so a folder without it is an interrupted run. With label
    noise, `true_boneage.csv` beside it holds the noise-free ages, to show the reachable MAE.
    `phantom_record.json` records what drew each image and its regions' boxes (`read_record`).
    `style`, `variation` and `label_noise_sd` (None: one reader's) are as in `make_dataset`.
    """
    label_noise_sd = READER_SD_MONTHS if label_noise_sd is None else label_noise_sd
    shape = check_dataset_args(n, size, seed, label_noise_sd, workers, style)
    out_dir = files.require_empty_dir(out_dir)
    ages, males, labels = dataset_plan(n, seed, AGE_RANGE, label_noise_sd)
    if progress:
        print(floor_message(label_noise_sd), flush=True)
    ids = np.arange(1, n + 1)
    image_dir = out_dir / IMAGE_DIR
    image_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(float(ages[i]), bool(males[i]), shape, image_seed(seed, i), style, variation, image_dir / f"{ids[i]}.png")
            for i in range(n)]
    boxes = list(run_jobs(write_png_job, jobs, choose_workers(workers, n, shape), progress))
    write_record(out_dir / RECORD_JSON, jobs, label_values(labels, label_noise_sd == 0), boxes, ids)
    if label_noise_sd > 0:
        write_labels(out_dir / TRUE_AGES_CSV, ids, ages, males, whole_months=True)
    write_labels(out_dir / LABELS_CSV, ids, labels, males, whole_months=label_noise_sd == 0)
    return out_dir
