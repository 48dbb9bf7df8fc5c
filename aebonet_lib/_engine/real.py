"""The paper's experiment and its central claim on real radiographs (`aebonet experiment real`, chapters 4, 6, 7).

One command trains, in order of importance (so that whatever is cut short still answers
the first questions): the autoencoder, pretrained once on every training image without
labels; AE-BoNet and the from-scratch control on all the labels of the paper's split
(10,088 / 2,323 / 200); both arms again at 5, 10 and 25 % of the labels, for each seed;
a second seed at 100 %; and AE-BoNet with the sex input and augmentation. Each run is
tested on the paper's 200 test images and on the 2,323 validation images, which the
`rsna-cpu` preset never lets steer training (cosine decay, last epoch kept), so that
they are a second test set large enough to tell methods apart.

Every run resumes: rerun the same command after an interruption and it continues
where it stopped. `collect` (in `real_results`) turns the run folders into the data
files the library ships.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from aebonet_lib import phantom
from aebonet_lib._engine import checkpoints, predict, rsna_results
from aebonet_lib._engine import runner as training
from aebonet_lib._engine import trust
from aebonet_lib._engine.files import atomic_write, read_json, write_json
from aebonet_lib._engine.hardware import describe_machine
from aebonet_lib._engine.records import git_state
from aebonet_lib.config import Config, get_config
from aebonet_lib.data.loading import BoneAgeData, load_data
from aebonet_lib.errors import AebonetError
from aebonet_lib.evaluation import metrics
from aebonet_lib.experiments import protocol

PRESET = "rsna-cpu"
EVAL_SPLITS = ("test", "val")  # the paper's 200 test images, and the 2,323 validation images as a second test


@dataclass(frozen=True)
class Job:
    """One fine-tuning run of the real-data experiment."""

    fraction: float  # fraction of the training labels
    seed: int  # added to the config's seed
    arm: str  # protocol.PRETRAINED or protocol.SCRATCH
    sex_input: bool = False
    augment: bool = False

    @property
    def name(self) -> str:
        """Return the run's folder below runs/, such as labels-0.05/seed-1/scratch."""
        group = "sex-augment" if self.sex_input or self.augment else f"labels-{self.fraction:g}"
        return f"{group}/seed-{self.seed}/{self.arm}"


def plan(fractions: tuple[float, ...], num_seeds: int, extras: bool = True) -> list[Job]:
    """Return the runs in order of importance: all labels (seed 0), fewer labels by seed, more seeds at 100 %, extras."""
    arms = (protocol.PRETRAINED, protocol.SCRATCH)
    full = max(fractions)
    jobs = [Job(full, 0, arm) for arm in arms]
    for seed in range(num_seeds):
        jobs += [Job(f, seed, arm) for f in sorted(fractions) if f != full for arm in arms]
    jobs += [Job(full, seed, arm) for seed in range(1, num_seeds) for arm in arms]
    if extras:
        jobs.append(Job(full, 0, protocol.PRETRAINED, sex_input=True, augment=True))
    return jobs


def dataset_digest(folder: str | Path) -> dict:
    """Return a SHA-256 over a dataset folder's files (names and bytes, sorted), with their count and size."""
    folder = Path(folder)
    digest, count, size = hashlib.sha256(), 0, 0
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        digest.update(str(path.relative_to(folder)).encode() + b"\0" + data)
        count, size = count + 1, size + len(data)
    return {"sha256": digest.hexdigest(), "files": count, "bytes": size}


def provenance(source: str, config: Config, budget: protocol.Budget, command: str | None) -> dict:
    """Return what produced the results: command, commit, preset, budget, data checksum and machine."""
    return {"command": command or " ".join(sys.argv), "commit": git_state()["commit"], "preset": config.name,
            "config": config.to_dict(), "budget": dataclasses.asdict(budget), "data": str(Path(source).resolve()),
            "data_checksum": dataset_digest(source) if Path(source).is_dir() else None, "machine": describe_machine(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def evaluate_run(run_dir: Path, data: BoneAgeData) -> None:
    """Test a finished run on each of EVAL_SPLITS (into run_dir/<split>/), unless done."""
    for split in EVAL_SPLITS:
        out = run_dir / split
        if not (out / "metrics.json").is_file():
            out.mkdir(exist_ok=True)
            predict.evaluate(run_dir / "model.keras", data, split=split, out_dir=out, progress=False)


def run_job(job: Job, data: BoneAgeData, config: Config, budget: protocol.Budget, encoder: Path,
            runs_dir: Path) -> Path:
    """Fine-tune one job's arm on its seeded label subset (resuming), then test it; return its run folder."""
    subset = protocol.label_subset(data.splits["train"], job.fraction, config.seed + job.seed)
    steps = protocol.run_steps(budget, config, len(data.splits["train"]))
    num_epochs = protocol.epochs_for_steps(len(subset), config.reg_batch_size, steps, budget.min_epochs)
    run_dir = runs_dir / job.name
    job_config = config.replace(seed=config.seed + job.seed, augment=job.augment)
    backbone = "aebonet" if job.arm == protocol.PRETRAINED else "scratch"
    start = time.perf_counter()
    training.train(protocol.with_labels(data, subset), job_config, run_dir, backbone=backbone,
                   encoder=encoder if backbone == "aebonet" else None, sex_input=job.sex_input,
                   num_epochs=num_epochs, resume=True, progress=False)
    evaluate_run(run_dir, data)
    record_wall_time(run_dir, time.perf_counter() - start)
    return run_dir


def record_wall_time(run_dir: Path, seconds: float) -> None:
    """Add this session's wall time to run_dir/wall_time.json (a resumed run adds up its sessions)."""
    path = run_dir / "wall_time.json"
    previous = read_json(path)["seconds"] if path.is_file() else 0.0
    write_json(path, {"seconds": round(previous + seconds, 1)})


def log(message: str) -> None:
    """Print a time-stamped line (the experiment runs for an hour or more, often in the background)."""
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def real_experiment(source: str | os.PathLike, out_dir: str | os.PathLike, preset: str = PRESET,
                    num_seeds: int | None = None, fractions: tuple[float, ...] | None = None, extras: bool = True,
                    command: str | None = None, cache_root: str | os.PathLike | None = None,
                    config: Config | None = None, budget: protocol.Budget | None = None,
                    part: tuple[int, int] | None = None, collect_only: bool = False) -> Path:
    """Pretrain, fine-tune both arms at each label fraction and seed, test every run on test and val; return out_dir.

    `source` is the RSNA folder (Kaggle layout) or a cache of it. Rerun to resume. The
    results files (module `rsna_results`) go to out_dir/results. `config` and `budget`
    replace the preset's (tests use tiny ones). `part=(k, n)` trains only every n-th run,
    starting at the k-th (0-based), so that n processes can share the plan; a last call
    without `part` then collects the results. `collect_only` trains nothing more: it
    collects the runs that have finished (and trains the phantom model if it is missing).
    """
    out_dir = Path(out_dir)
    config = config or get_config(preset)
    budget = budget or protocol.get_budget(preset, num_seeds=num_seeds, fractions=fractions)
    if max(budget.fractions) != 1.0:
        raise AebonetError(f"fractions {budget.fractions}: the real-data experiment needs 1 (all labels) among them")
    out_dir.mkdir(parents=True, exist_ok=True)
    if not (out_dir / "provenance.json").is_file():
        write_json(out_dir / "provenance.json", provenance(str(source), config, budget, command))
    data = load_data(source, config.image_size, seed=config.seed, split=config.split, cache_root=cache_root)
    log(f"data: {len(data.splits['train'])} / {len(data.splits['val'])} / {len(data.splits['test'])} images")
    pretrain_dir = out_dir / "runs" / "pretrain"
    start = time.perf_counter()
    training.pretrain(data, config, pretrain_dir, resume=True, progress=False)
    if not (pretrain_dir / "wall_time.json").is_file():
        record_wall_time(pretrain_dir, time.perf_counter() - start)
    data = training.use_run_splits(data, pretrain_dir)
    log(f"pretrained: {pretrain_dir / 'encoder.keras'}")
    jobs = plan(budget.fractions, budget.num_seeds, extras)
    for job in jobs if part is None else jobs[part[0]::part[1]]:
        if collect_only and not checkpoints.run_finished(out_dir / "runs" / job.name):
            log(f"{job.name}: not finished; left out (collect only)")
            continue
        run_dir = run_job(job, data, config, budget, pretrain_dir / "encoder.keras", out_dir / "runs")
        mae = {split: read_json(run_dir / split / "metrics.json")["mae"] for split in EVAL_SPLITS}
        log(f"{job.name}: test MAE {mae['test']:.2f}, val MAE {mae['val']:.2f} months")
    if part is not None:
        return out_dir
    phantom_model = phantom_run(config, out_dir / "runs" / "phantom", cache_root)
    log(f"phantom-trained AE-BoNet: {phantom_model}")
    collected_with = {"command": command or " ".join(sys.argv), "commit": git_state()["commit"],
                      "phantom_version": phantom.source_digest()}  # the trust report and the phantom model
    rsna_results.collect(out_dir / "runs", out_dir / "results",
                         read_json(out_dir / "provenance.json") | {"collected_with": collected_with})
    real_model = out_dir / "runs" / rsna_results.main_run(protocol.PRETRAINED) / "model.keras"
    ensure_calibrated(real_model, data, pretrain_dir / "encoder.keras")
    trust_report(real_model, phantom_model, data, config, cache_root, out_dir / "results" / "trust.csv")
    log(f"results in {out_dir / 'results'}")
    return out_dir


# A model trained on the phantom, and what each model makes of images unlike its training set


def phantom_run(config: Config, runs_dir: Path, cache_root=None) -> Path:
    """Pretrain and fine-tune AE-BoNet on the phantom (config.phantom_n images) with the real runs' recipe; return its model."""
    data = load_data("phantom", config.image_size, seed=config.seed, split=config.split, phantom_n=config.phantom_n,
                     cache_root=cache_root, progress=False)
    training.pretrain(data, config, runs_dir / "pretrain", resume=True, progress=False)
    data = training.use_run_splits(data, runs_dir / "pretrain")
    training.train(data, config, runs_dir / "aebonet", backbone="aebonet", encoder=runs_dir / "pretrain" / "encoder.keras",
                   resume=True, progress=False)
    ensure_calibrated(runs_dir / "aebonet" / "model.keras", data, runs_dir / "pretrain" / "encoder.keras")
    return runs_dir / "aebonet" / "model.keras"


def ensure_calibrated(model_path: Path, data: BoneAgeData, encoder: Path | None) -> None:
    """Calibrate a model's out-of-distribution thresholds on its training split unless it has a current calibration."""
    if not trust.is_current(trust.read_calibration(model_path)):
        trust.calibrate_run(model_path, training.use_run_splits(data, model_path.parent), encoder)


def odd_images(X: np.ndarray) -> dict[str, np.ndarray]:
    """Return what a deployed model may be given instead of a hand radiograph, made from real images X (uint8)."""
    shape = X.shape
    return {"blank, black": np.zeros(shape, np.uint8), "blank, grey": np.full(shape, 128, np.uint8),
            "blank, white": np.full(shape, 255, np.uint8), "inverted": 255 - X,
            "rotated 90 degrees": np.ascontiguousarray(np.rot90(X, axes=(1, 2)))}


def flag_row(model_path: Path, model_name: str, images: str, X: np.ndarray, y: np.ndarray | None = None,
             y_constant: float | None = None) -> dict:
    """Return how often a model flags a set of images, its prediction range and, with ages, its MAE beside a constant."""
    model, meta = predict.load_regressor(model_path)
    y_hat = predict.predict_arrays(model, X, progress=False)
    flags = trust.flag(model_path, X, y_hat, model=model)
    row = {"model": model_name, "images": images, "n": len(X), "unlike_training": flags.unlike_training.mean(),
           "out_of_range": flags.out_of_range.mean(), "flagged": flags.flagged.mean(),
           "predicted_min": float(y_hat.min()), "predicted_max": float(y_hat.max()),
           "method": trust.read_calibration(model_path)["method"]}
    if y is not None:
        row |= {"mae": metrics.mae(y, flags.predicted), "constant_mae": metrics.mae(y, np.full(len(y), y_constant))}
    return row


def trust_report(real_model: Path, phantom_model: Path, data: BoneAgeData, config: Config, cache_root,
                 out_csv: Path, n_odd: int = 500) -> pd.DataFrame:
    """Measure the flag rates (and MAEs) of the real and the phantom-trained model on real, phantom and odd images."""
    phantom = load_data("phantom", config.image_size, seed=config.seed, split=config.split,
                        phantom_n=config.phantom_n, cache_root=cache_root, progress=False)
    phantom_test = training.use_run_splits(phantom, phantom_model.parent).splits["test"]
    real_mean = float(np.mean(data.y[data.splits["train"]]))
    rows = []
    for split in EVAL_SPLITS:
        index = data.splits[split]
        rows.append(flag_row(real_model, "AE-BoNet trained on RSNA", f"RSNA {split} split", data.X[index],
                             data.y[index], real_mean))
        rows.append(flag_row(phantom_model, "AE-BoNet trained on the phantom", f"RSNA {split} split", data.X[index],
                             data.y[index], real_mean))
    rows.append(flag_row(real_model, "AE-BoNet trained on RSNA", "phantom test split", phantom.X[phantom_test],
                         phantom.y[phantom_test], real_mean))
    rows.append(flag_row(phantom_model, "AE-BoNet trained on the phantom", "phantom test split",
                         phantom.X[phantom_test], phantom.y[phantom_test], real_mean))
    for name, X in odd_images(np.asarray(data.X[data.splits["val"][:n_odd]])).items():
        rows.append(flag_row(real_model, "AE-BoNet trained on RSNA", name, X))
    table = pd.DataFrame(rows)
    with atomic_write(out_csv) as f:
        table.to_csv(f, index=False)
    return table


if __name__ == "__main__":  # python -m aebonet_lib._engine.real DATA OUT: the background form of `aebonet experiment real`
    print(json.dumps({"out": str(real_experiment(sys.argv[1], sys.argv[2], command=" ".join(sys.argv)))}))
