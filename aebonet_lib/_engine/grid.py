"""The label-efficiency grid: does unsupervised pretraining reduce the labels a regressor needs? (chapter 7)

The design, fixed before any run was scored (`aebonet experiment label-grid`):

- **A held-out slice of the training split** (`HOLDOUT`, 5 %, seeded) steers pretraining;
  val and test steer nothing. Pretraining trains on the rest of the training images.
- **Pretraining budgets.** One run per objective (`autoencoder`, the paper's; `masked`,
  beyond the paper) of `max(budgets)` epochs in the paper's stage proportions, Adam at a
  constant rate. The encoder handed on for budget B is the epoch with the lowest held-out
  reconstruction MSE among epochs 1..B (with a constant rate, the first B epochs of a
  longer run are a B-epoch run). The run stops early when the held-out MSE has not
  improved for `patience` epochs; budgets beyond that point get the best epoch found.
- **Linear probes.** The frozen encoder's globally pooled features, standardized, and a
  ridge regression whose penalty is chosen by cross-validation inside the labelled subset;
  `probe_draws` label draws per fraction. Floors: the same ridge on 16 x 16 thumbnails
  (no network) and the labelled subset's median age (the best constant under MAE).
- **Fine-tuning at equal compute.** Every (method, fraction, seed) trains exactly `steps`
  optimizer steps, batch `reg_batch_size`, the preset's learning-rate schedule over
  `CHUNKS` chunks of steps, the last step kept: no early stopping, nothing chosen on val or
  test. Seed s draws the same labelled subset for every method (a paired design).

Each run writes result.json and predictions.csv when it ends, with the commit and whether
the tree was dirty; rerunning the command skips what is done (`grid_results` collects).
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from aebonet_lib import paper
from aebonet_lib._engine import checkpoints
from aebonet_lib._engine.devices import precision_policy, resolve_precision, set_seeds
from aebonet_lib._engine.files import atomic_write, read_json, write_json
from aebonet_lib._engine.records import git_state
from aebonet_lib._engine.runner import stage_epochs
from aebonet_lib.config import Config
from aebonet_lib.data import pipeline
from aebonet_lib.data.loading import BoneAgeData
from aebonet_lib.data.preprocess import to_float
from aebonet_lib.errors import AebonetError
from aebonet_lib.experiments.protocol import label_subset

HOLDOUT = 0.05  # fraction of the training split held out to choose the pretraining checkpoint
CHUNKS = 20  # fine-tuning runs as CHUNKS "epochs" of steps / CHUNKS steps (the schedule's unit)
THUMBNAIL = 16  # side of the thumbnails the no-network ridge reads
RIDGE_ALPHAS = np.logspace(-3, 5, 17)
OBJECTIVES = ("autoencoder", "masked")
SCRATCH = "scratch"


@dataclass(frozen=True)
class GridPlan:
    """Hold what the grid runs: budgets, fine-tuning fractions, seeds and steps, probe fractions and draws."""

    budgets: tuple[int, ...]  # pretraining epochs; the largest is the run's length
    fractions: tuple[float, ...]  # fine-tuning: fractions of the training labels
    num_seeds: int
    steps: int  # optimizer steps of every fine-tuning run
    methods: tuple[str, ...]  # "scratch" and objectives
    probe_fractions: tuple[float, ...]
    probe_draws: int
    patience: int = 10  # pretraining stops after this many epochs without a better held-out MSE


PLANS: dict[str, GridPlan] = {
    "rsna-class": GridPlan(budgets=(7, 30, 100), fractions=(0.01, 0.02, 0.05, 0.1, 0.25, 1.0), num_seeds=5,
                           steps=3000, methods=(SCRATCH, *OBJECTIVES),
                           probe_fractions=(0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0), probe_draws=10),
    "rsna-cpu": GridPlan(budgets=(7, 30), fractions=(0.01, 0.05, 0.25, 1.0), num_seeds=5, steps=3000,
                         methods=(SCRATCH, "autoencoder"), probe_fractions=(0.01, 0.05, 0.25, 1.0), probe_draws=10),
    # cpu: the phantom in a test or a chapter: a few seconds per run
    "cpu": GridPlan(budgets=(1, 2), fractions=(0.25, 1.0), num_seeds=2, steps=40, methods=(SCRATCH, *OBJECTIVES),
                    probe_fractions=(0.25, 1.0), probe_draws=3, patience=5),
}


def get_plan(preset: str, **overrides) -> GridPlan:
    """Return the preset's grid with any fields overridden (None values are ignored)."""
    if preset not in PLANS:
        raise AebonetError(f"no label-efficiency grid for preset {preset!r}: choose one of {', '.join(PLANS)}")
    plan = dataclasses.replace(PLANS[preset], **{k: v for k, v in overrides.items() if v is not None})
    unknown = [m for m in plan.methods if m not in (SCRATCH, *OBJECTIVES)]
    if unknown or not plan.methods:
        raise AebonetError(f"methods {list(plan.methods)}: choose among {SCRATCH}, {', '.join(OBJECTIVES)}")
    return plan


# Provenance


# The held-out slice and pretraining


def holdout_split(data: BoneAgeData, seed: int, fraction: float = HOLDOUT) -> BoneAgeData:
    """Return the data with a seeded slice (`fraction`) of its training split as "val" and the rest as "train"."""
    train = np.asarray(data.splits["train"])
    order = np.random.default_rng(seed).permutation(train)
    n_out = max(1, round(fraction * len(train)))
    return dataclasses.replace(data, splits={"train": np.sort(order[n_out:]), "val": np.sort(order[:n_out])})


class BudgetSnapshots(keras.callbacks.Callback):
    """At the end of epoch B, for each budget B, copy the best held-out checkpoint so far to snapshots/."""

    def __init__(self, run_dir: Path, budgets: tuple[int, ...]):
        """Keep the run folder and the budgets."""
        super().__init__()
        self.run_dir, self.budgets = run_dir, budgets

    def on_epoch_end(self, epoch, logs=None):
        """Snapshot the best epoch so far when this epoch ends a budget."""
        if epoch + 1 in self.budgets:
            snapshot(self.run_dir, epoch + 1)


class StopWhenFlat(keras.callbacks.Callback):
    """Stop training when the held-out loss has not improved for `patience` epochs (read from state.json)."""

    def __init__(self, run_dir: Path, patience: int):
        """Keep the run folder and the patience."""
        super().__init__()
        self.run_dir, self.patience = run_dir, patience

    def on_epoch_end(self, epoch, logs=None):
        """Ask Keras to stop once the best epoch is `patience` epochs behind."""
        if epoch + 1 - checkpoints.read_state(self.run_dir).get("best_epoch", epoch + 1) >= self.patience:
            self.model.stop_training = True


def snapshot(run_dir: Path, budget: int) -> None:
    """Copy the best held-out checkpoint so far to snapshots/within-B.keras with a JSON saying which epoch it is."""
    state = checkpoints.read_state(run_dir)
    folder = run_dir / "snapshots"
    folder.mkdir(exist_ok=True)
    shutil.copyfile(run_dir / "checkpoint" / state["best"], folder / f"within-{budget}.keras.tmp")
    (folder / f"within-{budget}.keras.tmp").replace(folder / f"within-{budget}.keras")
    write_json(folder / f"within-{budget}.json", {"budget": budget, "epoch": state["best_epoch"],
                                                   "holdout_mse": state["best_value"],
                                                   "epochs_run": state["epochs_done"]})


def pretrain_objective(data: BoneAgeData, config: Config, run_dir: Path, plan: GridPlan, progress: bool) -> Path:
    """Pretrain with config.objective for max(budgets) epochs (resuming), snapshotting the best epoch per budget."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if (run_dir / "done.json").is_file():
        return run_dir
    start = time.perf_counter()
    data = holdout_split(data, config.seed)
    stages = stage_epochs(config.ae_stages, max(plan.budgets))
    state = checkpoints.read_state(run_dir)
    set_seeds(config)
    with precision_policy(config.precision):
        model = (checkpoints.load_checkpoint(run_dir, state["latest"]) if state
                 else paper.compile_autoencoder(paper.build_autoencoder(config), config))
    done = state.get("epochs_done", 0)
    checkpoints.truncate_history(run_dir / "history.csv", done)
    epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
    train = pipeline.make_tf_dataset(data, "train", config.ae_batch_size, target="image", shuffle=True,
                                     seed=config.seed, epoch=epoch)
    held_out = pipeline.make_tf_dataset(data, "val", config.ae_batch_size, target="image", shuffle=False)
    callbacks = [checkpoints.EpochTimer(), checkpoints.StreamEpoch(epoch),
                 keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
                 checkpoints.EpochCheckpoint(run_dir, monitor="val_loss"), BudgetSnapshots(run_dir, plan.budgets),
                 StopWhenFlat(run_dir, plan.patience)]
    if not (done and done - checkpoints.read_state(run_dir).get("best_epoch", done) >= plan.patience):
        paper.pretrain_autoencoder(model, train, held_out, stages, done, callbacks=lambda stage: callbacks)
    finish_pretraining(run_dir, plan, config, len(data.splits["train"]), time.perf_counter() - start)
    return run_dir


def finish_pretraining(run_dir: Path, plan: GridPlan, config: Config, n_images: int, seconds: float) -> None:
    """Snapshot budgets the run stopped before, and record its compute in done.json."""
    state = checkpoints.read_state(run_dir)
    for budget in plan.budgets:
        if not (run_dir / "snapshots" / f"within-{budget}.json").is_file():
            snapshot(run_dir, budget)
    history = pd.read_csv(run_dir / "history.csv")
    write_json(run_dir / "done.json", {"objective": config.objective, "epochs_run": state["epochs_done"],
                                       "best_epoch": state["best_epoch"], "images_per_epoch": n_images,
                                       "batch_size": config.ae_batch_size, "seconds": float(history.seconds.sum()),
                                       "wall_seconds_last_session": round(seconds, 1), **git_state()})


def encoder_at(run_dir: Path, budget: int) -> keras.Model:
    """Load the encoder handed on for a budget: the snapshot's autoencoder without its decoder (and mask)."""
    autoencoder = keras.saving.load_model(run_dir / "snapshots" / f"within-{budget}.keras", safe_mode=True)
    return paper.encoder_of(autoencoder)


# Linear probes


def pooled_features(encoder: keras.Model, X: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Return the encoder's globally average-pooled features of uint8 images X, one row per image."""
    pool = keras.Sequential([encoder, keras.layers.GlobalAveragePooling2D()])
    rows = [pool.predict(to_float(X[i:i + batch_size])[..., None], verbose=0) for i in range(0, len(X), batch_size)]
    return np.concatenate(rows).astype(np.float64)


def thumbnails(X: np.ndarray, side: int = THUMBNAIL) -> np.ndarray:
    """Return images shrunk to side x side by averaging blocks, flattened: the no-network floor's features."""
    n, size = len(X), X.shape[1]
    block = size // side
    X = to_float(X[:, :block * side, :block * side])
    return X.reshape(n, side, block, side, block).mean(axis=(2, 4)).reshape(n, -1).astype(np.float64)


def fit_ridge(features: np.ndarray, y: np.ndarray):
    """Fit standardize + ridge with its penalty chosen by cross-validation inside these labels; return the model."""
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import KFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    folds = KFold(min(5, len(y)), shuffle=True, random_state=0)
    return make_pipeline(StandardScaler(), RidgeCV(alphas=RIDGE_ALPHAS, cv=folds)).fit(features, y)


def probe_rows(name: str, features: np.ndarray, data: BoneAgeData, plan: GridPlan) -> tuple[list, list]:
    """Fit a probe per (fraction, draw) on the training labels; return result rows and prediction rows."""
    rows, predictions = [], []
    for fraction in plan.probe_fractions:
        for draw in range(plan.probe_draws):
            subset = label_subset(data.splits["train"], fraction, draw)
            start = time.perf_counter()
            if features is None:
                predicted = {s: np.full(len(data.splits[s]), np.median(data.y[subset])) for s in ("val", "test")}
            else:
                model = fit_ridge(features[subset], data.y[subset])
                predicted = {s: model.predict(features[data.splits[s]]) for s in ("val", "test")}
            for split, y_hat in predicted.items():
                index = data.splits[split]
                rows.append({"method": name, "fraction": fraction, "seed": draw, "steps": 0, "n_labels": len(subset),
                             "split": split, "mae": float(np.mean(np.abs(y_hat - data.y[index]))),
                             "wall_s": round(time.perf_counter() - start, 3)})
                predictions.append(pd.DataFrame({"method": name, "fraction": fraction, "seed": draw, "split": split,
                                                 "id": data.ids[index], "true": data.y[index],
                                                 "predicted": np.round(y_hat, 2)}))
    return rows, predictions


def probe_encoders(pretrain_dirs: dict[str, Path], plan: GridPlan, config: Config, log=print) -> dict[str, keras.Model]:
    """Return the encoders to probe: the network left at random, and each finished objective at each budget."""
    set_seeds(config)
    encoders = {"probe-random": paper.build_encoder(config)}
    for objective, run_dir in pretrain_dirs.items():
        if not (run_dir / "done.json").is_file():
            log(f"{run_dir}: pretraining has not finished; its probes wait for a later run of --stage probes")
            continue
        for budget in plan.budgets:
            encoders[f"probe-{objective}-e{budget}"] = encoder_at(run_dir, budget)
    return encoders


def run_probes(data: BoneAgeData, config: Config, pretrain_dirs: dict[str, Path], plan: GridPlan, out: Path,
               log=print) -> None:
    """Probe every encoder and the two floors, writing probes/NAME.json and probes/NAME.csv.gz once each."""
    folder = out / "probes"
    folder.mkdir(parents=True, exist_ok=True)
    named = {"median": None, "probe-thumbnail": thumbnails(np.asarray(data.X))}
    for name, encoder in probe_encoders(pretrain_dirs, plan, config, log).items():
        if not (folder / f"{name}.json").is_file():
            named[name] = pooled_features(encoder, np.asarray(data.X))
    for name, features in named.items():
        if (folder / f"{name}.json").is_file():
            continue
        rows, predictions = probe_rows(name, features, data, plan)
        with atomic_write(folder / f"{name}.csv.gz", "wb") as f:
            pd.concat(predictions).to_csv(f, index=False, compression="gzip")
        write_json(folder / f"{name}.json", {"rows": rows, **git_state()})


# Fine-tuning at equal compute


def build_method(method: str, config: Config, pretrain_dirs: dict[str, Path], budget: int,
                 y_mean: float, y_std: float) -> keras.Model:
    """Return a compiled regressor: from scratch, or on the encoder an objective handed on at `budget` epochs."""
    with precision_policy(config.precision):
        if method == SCRATCH:
            model = paper.build_scratch_regressor(config, y_mean=y_mean, y_std=y_std)
        else:
            model = paper.build_regressor(encoder_at(pretrain_dirs[method], budget), config, y_mean=y_mean,
                                          y_std=y_std)
        return paper.compile_regressor(model, config)


def label_stream(data: BoneAgeData, subset: np.ndarray, batch_size: int, seed: int) -> tf.data.Dataset:
    """Return an endless stream of shuffled (image, age) batches from the labelled subset."""
    X, y = np.asarray(data.X[subset]), data.y[subset].astype(np.float32)
    ds = tf.data.Dataset.from_tensor_slices((X, y)).shuffle(len(subset), seed=seed, reshuffle_each_iteration=True)
    ds = ds.repeat().batch(batch_size).map(lambda x, t: (tf.cast(x, tf.float32)[..., None] / 255.0, t))
    return ds.prefetch(tf.data.AUTOTUNE)


def fine_tune(method: str, fraction: float, seed: int, data: BoneAgeData, config: Config,
              pretrain_dirs: dict[str, Path], plan: GridPlan, run_dir: Path) -> dict:
    """Fine-tune one method on seed's labelled subset for exactly plan.steps steps; write and return result.json."""
    if (run_dir / "result.json").is_file():
        return read_json(run_dir / "result.json")
    start = time.perf_counter()
    subset = label_subset(data.splits["train"], fraction, seed)
    run_config = config.replace(seed=config.seed + seed)
    set_seeds(run_config)
    y = data.y[subset]
    model = build_method(method, run_config, pretrain_dirs, max(plan.budgets), float(np.mean(y)),
                         float(np.std(y)) or 1.0)
    chunks = min(CHUNKS, plan.steps)
    schedule = paper.fine_tuning_controls(run_config, chunks)["schedule"]
    model.fit(label_stream(data, subset, config.reg_batch_size, run_config.seed), epochs=chunks,
              steps_per_epoch=plan.steps // chunks, verbose=0, shuffle=False,
              callbacks=[keras.callbacks.LearningRateScheduler(schedule)] if schedule else [])
    steps = chunks * (plan.steps // chunks)
    frames = [prediction_frame(model, data, split) for split in ("val", "test")]
    run_dir.mkdir(parents=True, exist_ok=True)
    with atomic_write(run_dir / "predictions.csv") as f:
        pd.concat(frames).to_csv(f, index=False)
    result = {"method": method, "fraction": fraction, "seed": seed, "steps": steps, "n_labels": len(subset),
              "budget": 0 if method == SCRATCH else max(plan.budgets), "precision": config.precision,
              "mae": {frame.split.iloc[0]: float(np.mean(np.abs(frame.predicted - frame.true))) for frame in frames},
              "wall_s": round(time.perf_counter() - start, 1), **git_state()}
    write_json(run_dir / "result.json", result)
    keras.backend.clear_session()
    return result


def prediction_frame(model: keras.Model, data: BoneAgeData, split: str) -> pd.DataFrame:
    """Return a split's predictions: id, true and predicted age in months."""
    index = data.splits[split]
    y_hat = model.predict(to_float(np.asarray(data.X[index]))[..., None], batch_size=256, verbose=0).ravel()
    return pd.DataFrame({"split": split, "id": data.ids[index], "true": data.y[index], "predicted": np.round(y_hat, 2)})


def fine_tune_jobs(plan: GridPlan, methods: tuple[str, ...]) -> list[tuple[str, float, int]]:
    """Return the runs in order of use: seed by seed, so that a grid cut short has every cell with fewer seeds."""
    return [(method, fraction, seed) for seed in range(plan.num_seeds) for fraction in plan.fractions
            for method in methods]


def run_folder(out: Path, method: str, fraction: float, seed: int) -> Path:
    """Return a fine-tuning run's folder: runs/METHOD/labels-FRACTION/seed-S."""
    return out / "runs" / method / f"labels-{fraction:g}" / f"seed-{seed}"


def label_grid(data: BoneAgeData, config: Config, plan: GridPlan, out: Path, stage: str = "all",
               methods: tuple[str, ...] | None = None, log=print) -> Path:
    """Run (or resume) the grid in `out`: pretraining, probes, fine-tuning; `stage` picks one of them."""
    git_state()  # the commit this process's code came from, before anything runs
    config = resolve_precision(config)
    methods = methods or plan.methods
    objectives = [m for m in plan.methods if m in OBJECTIVES]
    pretrain_dirs = {objective: out / "pretrain" / objective for objective in objectives}
    if stage in ("all", "pretrain"):
        for objective in objectives:
            log(f"pretraining {objective} for up to {max(plan.budgets)} epochs")
            pretrain_objective(data, config.replace(objective=objective), pretrain_dirs[objective], plan, False)
    if stage in ("all", "probes"):
        run_probes(data, config, pretrain_dirs, plan, out, log)
        log("probes done")
    if stage in ("all", "finetune"):
        for method, fraction, seed in fine_tune_jobs(plan, methods):
            if method != SCRATCH and not (pretrain_dirs[method] / "done.json").is_file():
                raise AebonetError(f"{pretrain_dirs[method]}: pretraining has not finished; "
                                   "run the grid with --stage pretrain first")
            result = fine_tune(method, fraction, seed, data, config, pretrain_dirs, plan,
                               run_folder(out, method, fraction, seed))
            log(f"{method} {fraction:g} seed {seed}: val MAE {result['mae']['val']:.2f}, "
                f"test {result['mae']['test']:.2f} ({result['wall_s']:.0f} s)")
    return out
