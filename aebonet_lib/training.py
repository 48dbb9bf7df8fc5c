"""Training: staged autoencoder pretraining, regressor fine-tuning, and runs that resume.

Chapter 3 pretrains the autoencoder (`pretrain`), chapter 4 fine-tunes the bone age
regressor (`train`), chapter 5 explains what makes a long run safe and fast:
checkpoints, precision, XLA and `tf.distribute`. Every run lives in one folder
(ARCHITECTURE.md, "Run folders"). A checkpoint is written at each epoch end, so a run
killed at any moment continues with `resume=True` (`--resume`), redoing only the
epoch it was in.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from tqdm.auto import tqdm

from . import models, pipeline, splits
from .config import Config
from .data import BoneAgeData
from .errors import AebonetError
from .files import atomic_path, atomic_write, read_json, require_empty_dir, write_json
from .modelfiles import load_model, read_model_meta, save_model

POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}
STRATEGIES = ("none", "mirrored", "multiworker")
SHOWN_IN_PROGRESS = ("loss", "val_loss", "mae", "val_mae", "psnr", "val_psnr")


# Precision, distribution and seeds (chapter 5)


def precision_name(precision: str) -> str:
    """Return the precision as given, or for "auto" the fastest one this hardware computes well."""
    if precision != "auto":
        return precision
    from .hardware import best_precision

    return best_precision()


def resolve_precision(config: Config) -> Config:
    """Return the config with precision "auto" replaced by the fastest precision this hardware computes well."""
    return config if config.precision != "auto" else config.replace(precision=precision_name(config.precision))


@contextlib.contextmanager
def precision_policy(precision: str) -> Iterator[None]:
    """Build models under the dtype policy for `precision` (auto, fp32, bf16, fp16), then restore the previous one."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(POLICIES[precision_name(precision)])
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def local_devices() -> list[str]:
    """Return the local devices to mirror a model over: every GPU, or else every (logical) CPU."""
    gpus = tf.config.list_logical_devices("GPU")
    return [device.name for device in gpus or tf.config.list_logical_devices("CPU")]


def get_strategy(distribute: str = "none") -> tf.distribute.Strategy:
    """Return the tf.distribute strategy: none (one device), mirrored (all local GPUs), multiworker (from TF_CONFIG)."""
    if distribute == "none":
        return tf.distribute.get_strategy()
    if distribute == "mirrored":
        return tf.distribute.MirroredStrategy(local_devices())
    if distribute == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise AebonetError(f"distribute {distribute!r}: choose one of {', '.join(STRATEGIES)}")


@contextlib.contextmanager
def build_scope(config: Config, strategy: tf.distribute.Strategy) -> Iterator[None]:
    """Create variables on the strategy's devices, under the config's precision policy."""
    with strategy.scope(), precision_policy(config.precision):
        yield


def set_seeds(config: Config) -> None:
    """Seed Python, NumPy and TensorFlow, and make TensorFlow ops deterministic when the config asks."""
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()


# Run folders


def read_state(run_dir: str | Path) -> dict:
    """Return the run's checkpoint/state.json, or {} before its first epoch has ended."""
    path = Path(run_dir) / "checkpoint" / "state.json"
    return read_json(path) if path.is_file() else {}


def run_finished(run_dir: str | Path) -> bool:
    """Return True when `run_dir` holds a run that has finished."""
    return bool(read_state(run_dir).get("finished"))


def has_run(run_dir: str | Path) -> bool:
    """Return True when `run_dir` holds a run (its config.json)."""
    return (Path(run_dir) / "config.json").is_file()


def read_record(run_dir: str | Path) -> dict | None:
    """Return what config.json records about the run in `run_dir`, or None when there is none yet."""
    return read_json(Path(run_dir) / "config.json") if has_run(run_dir) else None


def check_run_dir(run_dir: str | Path, resume: bool, kind: str) -> None:
    """Refuse a folder holding another run (or one of another kind) unless resuming it."""
    record = read_record(run_dir)
    if record is None:
        require_empty_dir(run_dir)
    elif not resume:
        raise AebonetError(f"{run_dir}: already holds a run; add --resume (resume=True) to continue it, "
                           "or choose a new folder")
    elif record.get("kind") != kind:
        raise AebonetError(f"{run_dir}: holds a {record.get('kind')} run, not a {kind} run; choose another folder")


def saved_config(run_dir: str | Path) -> Config | None:
    """Return the Config a run in `run_dir` was started with, or None when there is no run."""
    record = read_record(run_dir)
    return Config.from_dict(record["config"]) if record else None


def use_run_splits(data: BoneAgeData, run_dir: Path) -> BoneAgeData:
    """Save the data's split in a new run folder, or return the data with the split saved there."""
    if (run_dir / "splits").is_dir():
        return dataclasses.replace(data, splits=splits.load_splits(run_dir, data.ids))
    splits.save_splits(run_dir, data.splits, data.ids)
    return data


def check_image_size(data: BoneAgeData, config: Config) -> None:
    """Refuse data prepared at another image size than the run's."""
    size = data.X.shape[1]
    if size != config.image_size:
        raise AebonetError(f"data are {size} px but the run's config says {config.image_size} px; "
                           f"load the data with image_size={config.image_size} (--size {config.image_size})")


# Checkpoints and callbacks


class EpochTimer(keras.callbacks.Callback):
    """Add each epoch's wall time to the logs, so that history.csv records it as `seconds`."""

    def on_epoch_begin(self, epoch, logs=None):
        """Start the clock."""
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        """Record the seconds since the epoch began."""
        logs["seconds"] = time.perf_counter() - self.start


class TqdmProgress(keras.callbacks.Callback):
    """Advance a tqdm progress bar by one step per epoch, showing the latest losses."""

    def __init__(self, bar: tqdm):
        """Keep the bar to advance."""
        super().__init__()
        self.bar = bar

    def on_epoch_end(self, epoch, logs=None):
        """Show this epoch's losses and move the bar on."""
        shown = {k: f"{v:.4g}" for k, v in logs.items() if k in SHOWN_IN_PROGRESS}
        self.bar.set_postfix(shown, refresh=False)
        self.bar.update(1)


class EpochCheckpoint(keras.callbacks.Callback):
    """Save the model at every epoch end and record it in checkpoint/state.json, so that a killed run resumes.

    Each epoch's model goes to its own file, written atomically; state.json, written last,
    names the newest one (and, with `monitor`, the best so far). Whenever the run is
    killed, state.json therefore points to complete files only. Files it no longer
    names are deleted.
    """

    def __init__(self, run_dir: Path, stage: int = 1, monitor: str | None = None):
        """Continue the run's state.json; with `monitor` (such as "val_mae", lower is better) track the best epoch."""
        super().__init__()
        self.folder = Path(run_dir) / "checkpoint"
        self.stage = stage
        self.monitor = monitor
        self.state = read_state(run_dir)

    def on_epoch_end(self, epoch, logs=None):
        """Write this epoch's model, then the state that names it."""
        name = f"epoch_{epoch + 1:04d}.keras"
        with atomic_path(self.folder / name) as tmp:
            self.model.save(tmp)
        self.state.update(epochs_done=epoch + 1, latest=name, stage=self.stage)
        if self.monitor and is_better(logs.get(self.monitor), self.state.get("best_value")):
            self.state.update(best=name, best_value=float(logs[self.monitor]), best_epoch=epoch + 1)
        write_json(self.folder / "state.json", self.state)
        remove_stale_checkpoints(self.folder, keep={self.state["latest"], self.state.get("best")})


def is_better(value: float | None, best: float | None) -> bool:
    """Return True when `value` is a number below `best` (or there is no best yet)."""
    return value is not None and np.isfinite(value) and (best is None or value < best)


def remove_stale_checkpoints(folder: Path, keep: set) -> None:
    """Delete the epoch checkpoints that state.json no longer names."""
    for path in folder.glob("epoch_*.keras"):
        if path.name not in keep:
            path.unlink(missing_ok=True)


def load_checkpoint(run_dir: Path, name: str) -> keras.Model:
    """Load a compiled model, optimizer state included, from the run's checkpoint folder."""
    return keras.saving.load_model(run_dir / "checkpoint" / name, safe_mode=True)


def latest_or_new_model(run_dir: Path, config: Config, strategy, record: dict) -> keras.Model:
    """Load the run's last checkpoint, or build its model afresh: seeded, on the strategy's devices, at its precision.

    The regressor is compiled later, when its backbone is frozen or unfrozen.
    """
    set_seeds(config)
    state = read_state(run_dir)
    with build_scope(config, strategy):
        if state:
            return load_checkpoint(run_dir, state["latest"])
        return new_autoencoder(config) if record["kind"] == "pretrain" else new_regressor(record, config)


def truncate_history(path: Path, epochs_done: int) -> None:
    """Drop history.csv rows of epochs after the checkpoint (the epoch a killed run was in)."""
    if path.is_file() and path.stat().st_size == 0:
        path.unlink()
    if not path.is_file():
        return
    history = pd.read_csv(path)
    with atomic_write(path) as f:
        history[history["epoch"] < epochs_done].to_csv(f, index=False)


def cosine_rate(config: Config, num_epochs: int):
    """Return epoch -> learning rate, decaying config.reg_lr to near 0 along half a cosine over num_epochs."""
    return lambda epoch, lr=None: float(config.reg_lr * 0.5 * (1 + np.cos(np.pi * epoch / max(1, num_epochs))))


def validation_epochs(config: Config, num_epochs: int, most: int = 20) -> list[int]:
    """Return the (1-based) epochs to validate: all when val picks the kept epoch, else about `most`, first and last included."""
    every = 1 if config.keep == "best" else max(1, -(-num_epochs // most))
    return [e for e in range(1, num_epochs + 1) if e % every == 0 or e in (1, num_epochs)]


def make_callbacks(run_dir: Path, config: Config, bar: tqdm, stage: int = 1, monitor: str | None = None,
                   num_epochs: int | None = None) -> list:
    """Return a run's callbacks: timer, optional LR schedule and early stop, CSV log, checkpoint, TensorBoard, progress.

    The training batches come shuffled from tf.data, hence `fit(..., shuffle=False)`.
    """
    callbacks = [EpochTimer()]
    if monitor and config.lr_schedule == "cosine":
        callbacks.append(keras.callbacks.LearningRateScheduler(cosine_rate(config, num_epochs or config.reg_num_epochs)))
    if monitor and config.reduce_lr_patience:
        callbacks.append(keras.callbacks.ReduceLROnPlateau(monitor, config.reduce_lr_factor, config.reduce_lr_patience))
    callbacks += [
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
        EpochCheckpoint(run_dir, stage, monitor),
        keras.callbacks.TensorBoard(str(run_dir / "logs"), write_graph=False),
        TqdmProgress(bar),
    ]
    if monitor and config.early_stopping_patience:
        callbacks.append(keras.callbacks.EarlyStopping(monitor, patience=config.early_stopping_patience))
    return callbacks


def make_datasets(data: BoneAgeData, config: Config, target: str, strategy: tf.distribute.Strategy,
                  sex_input: bool = False) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """Return the shuffled training batches and the validation batches, for the autoencoder or the regressor.

    The batch size is global: each of several replicas gets its share. With several
    replicas a last partial batch is dropped, since a replica left with no image breaks
    BatchNormalization.
    """
    batch_size = config.ae_batch_size if target == "image" else config.reg_batch_size
    drop_remainder = strategy.num_replicas_in_sync > 1
    train_data = pipeline.make_tf_dataset(data, "train", batch_size, target=target, sex_input=sex_input, shuffle=True,
                                          augment=config.augment, seed=config.seed, drop_remainder=drop_remainder)
    val_data = pipeline.make_tf_dataset(data, "val", batch_size, target=target, sex_input=sex_input, shuffle=False,
                                        drop_remainder=drop_remainder)
    return train_data, val_data


def epoch_bar(total: int, done: int, desc: str, progress: bool) -> tqdm:
    """Return a progress bar over a run's epochs, starting at the epochs already done."""
    return tqdm(total=total, initial=done, unit="epoch", desc=desc, disable=not progress)


def recorded_source(source: str) -> str:
    """Return a data source as a run records it: phantom[:N] as given, a folder or file as an absolute path."""
    from .data import is_phantom

    return source if is_phantom(source) else str(Path(source).resolve())


def data_meta(data: BoneAgeData, config: Config) -> dict:
    """Return what a saved model needs to read new images: size, preprocessing and the Config."""
    return {"image_size": config.image_size, "params": data.params.to_dict(), "config": config.to_dict(),
            "data": {"source": data.source, "seed": data.seed}}


# Autoencoder pretraining (chapter 3)


def stage_epochs(stages: tuple[int, ...], num_epochs: int | None = None) -> list[int]:
    """Return the epochs of each stage, scaled in proportion to sum to `num_epochs` (stages left empty are dropped)."""
    if num_epochs is None:
        return list(stages)
    exact = np.asarray(stages) * num_epochs / sum(stages)
    epochs = np.floor(exact).astype(int)
    largest_remainders = np.argsort(epochs - exact, kind="stable")
    epochs[largest_remainders[: num_epochs - epochs.sum()]] += 1
    return [int(e) for e in epochs if e > 0]


def stage_bounds(plan: list[int]) -> list[tuple[int, int]]:
    """Return each stage's (first epoch, end epoch), epochs counted from 0 over the whole run."""
    ends = np.cumsum(plan)
    return [(int(end - n), int(end)) for n, end in zip(plan, ends)]


def new_autoencoder(config: Config) -> keras.Model:
    """Build and compile the paper's autoencoder (MSE, Adam, accuracy, PSNR and SSIM)."""
    model = models.build_autoencoder(config)
    models.compile_autoencoder(model, config)
    return model


def stage_table(history: pd.DataFrame, plan: list[int]) -> pd.DataFrame:
    """Return one row per finished stage, like the paper's Table 2: its epochs, last-epoch metrics and seconds."""
    others = [c for c in history.columns if c not in ("epoch", "loss", "seconds") and not c.startswith("val_")]
    metrics = ["loss", *others]
    rows = []
    for stage, (start, end) in enumerate(stage_bounds(plan), 1):
        epochs = history[(history["epoch"] >= start) & (history["epoch"] < end)]
        if len(epochs) < end - start:
            break
        last = epochs.iloc[-1]
        row = {"stage": stage, "epochs": end - start, "end_epoch": end}
        row |= {name: last[name] for m in metrics for name in (m, f"val_{m}") if name in last}
        rows.append(row | {"seconds": round(float(epochs["seconds"].sum()), 2)})
    return pd.DataFrame(rows)


def write_stages(run_dir: Path, plan: list[int]) -> None:
    """Write stages.csv from history.csv."""
    table = stage_table(pd.read_csv(run_dir / "history.csv"), plan)
    with atomic_write(run_dir / "stages.csv") as f:
        table.to_csv(f, index=False)


def open_run(run_dir: Path, data: BoneAgeData, record: dict, distribute: str) -> tuple:
    """Check the data against the run's config, reload or build its model, write config.json and pin its splits.

    Returns (config, model, strategy, data), the data restricted to the run's saved splits.
    """
    config = Config.from_dict(record["config"])
    check_image_size(data, config)
    strategy = get_strategy(distribute)
    model = latest_or_new_model(run_dir, config, strategy, record)
    write_json(run_dir / "config.json", record)
    return config, model, strategy, use_run_splits(data, run_dir)


def pretrain(data: BoneAgeData, config: Config, run_dir: str | Path, num_epochs: int | None = None,
             resume: bool = False, distribute: str = "none", progress: bool = True, command: str | None = None) -> Path:
    """Train the autoencoder to reconstruct the training images, in the stages of the paper's Table 2 (chapter 3).

    Trains on the train split and validates on val; labels are never used. `num_epochs`
    replaces the total of `config.ae_stages`, spread over the stages in proportion.
    Writes config.json, splits/, history.csv, stages.csv, logs/ (TensorBoard),
    checkpoint/ and finally autoencoder.keras and encoder.keras. With `resume=True`
    an interrupted run continues from its last finished epoch, with the config it was
    started with; on a finished run it does nothing. With multiworker, give every
    worker its own local `run_dir`: the chief's (task 0) is the result.
    """
    run_dir = Path(run_dir)
    check_run_dir(run_dir, resume, "pretrain")
    record = read_record(run_dir) or {"kind": "pretrain", "config": resolve_precision(config).to_dict(), "command": command,
                                      "plan": stage_epochs(config.ae_stages, num_epochs),
                                      "data": recorded_source(data.source)}
    if run_finished(run_dir):
        return run_dir
    config, model, strategy, data = open_run(run_dir, data, record, distribute)
    fit_stages(model, data, config, run_dir, record["plan"], strategy, progress)
    return finish_pretrain(model, data, config, run_dir)


def fit_stages(model: keras.Model, data: BoneAgeData, config: Config, run_dir: Path, plan: list[int], strategy,
               progress: bool) -> None:
    """Fit the autoencoder stage after stage from the last finished epoch, writing stages.csv after each."""
    done = read_state(run_dir).get("epochs_done", 0)
    truncate_history(run_dir / "history.csv", done)
    train_data, val_data = make_datasets(data, config, "image", strategy)
    with epoch_bar(sum(plan), done, "pretrain", progress) as bar:
        for stage, (start, end) in enumerate(stage_bounds(plan), 1):
            if end > done:
                model.fit(train_data, validation_data=val_data, initial_epoch=max(start, done), epochs=end,
                          verbose=0, shuffle=False, callbacks=make_callbacks(run_dir, config, bar, stage))
            write_stages(run_dir, plan)


def finish_pretrain(model: keras.Model, data: BoneAgeData, config: Config, run_dir: Path) -> Path:
    """Save autoencoder.keras and encoder.keras, then mark the run finished."""
    meta = data_meta(data, config)
    save_model(model, run_dir / "autoencoder.keras", {"kind": "autoencoder", **meta})
    save_model(model.get_layer("encoder"), run_dir / "encoder.keras", {"kind": "encoder", **meta})
    mark_finished(run_dir)
    return run_dir


def mark_finished(run_dir: Path) -> None:
    """Record in state.json that the run has finished."""
    write_json(run_dir / "checkpoint" / "state.json", read_state(run_dir) | {"finished": True})


# Regressor fine-tuning (chapter 4)


def label_scale(data: BoneAgeData) -> tuple[float, float]:
    """Return the mean and standard deviation of the training split's bone ages (months)."""
    y = data.y[data.splits["train"]]
    return float(np.nanmean(y)), float(np.nanstd(y))


def check_encoder(path: str | Path, config: Config) -> None:
    """Refuse a file that is not a pretrained encoder (RUN/encoder.keras) at the config's image size."""
    if not Path(path).is_file():
        raise AebonetError(f"--encoder {path}: file not found; give RUN/encoder.keras written by `aebonet pretrain`")
    meta = read_model_meta(path)
    if meta.get("kind") != "encoder":
        raise AebonetError(f"{path}: holds a model of kind {meta.get('kind')!r}, not an encoder; "
                           "give the encoder written by pretraining (RUN/encoder.keras)")
    if meta["image_size"] != config.image_size:
        raise AebonetError(f"{path}: encoder pretrained at {meta['image_size']} px but the config says "
                           f"{config.image_size} px; train with --size {meta['image_size']}")


def load_encoder(path: str | Path, config: Config) -> keras.Model:
    """Load a pretrained encoder (RUN/encoder.keras), checking it was trained at the config's image size."""
    check_encoder(path, config)
    return load_model(path)[0]


def new_regressor(record: dict, config: Config) -> keras.Model:
    """Build the regressor a run's record describes (AE-BoNet, from scratch, or a baseline); not compiled."""
    encoder = load_encoder(record["encoder"], config) if record["encoder"] else None
    return models.build_model(record["backbone"], config, encoder=encoder, weights=record["weights"],
                              sex_input=record["sex_input"], y_mean=record["y_mean"], y_std=record["y_std"])


def set_backbone_trainable(model: keras.Model, trainable: bool, config: Config, strategy) -> None:
    """Freeze or unfreeze the backbone, compiling afresh when that changes (or the model is not compiled yet)."""
    backbone = model.get_layer("encoder")  # the pretrained or random encoder, or a baseline's network
    if backbone.trainable == trainable and model.compiled:
        return
    backbone.trainable = trainable
    with build_scope(config, strategy):
        models.compile_regressor(model, config)


def phase_bounds(freeze_epochs: int, num_epochs: int) -> list[tuple[bool, int, int]]:
    """Return the training phases as (backbone trainable, first epoch, end epoch): frozen first, then fine-tuned."""
    freeze_epochs = min(freeze_epochs, num_epochs)
    phases = [(False, 0, freeze_epochs), (True, freeze_epochs, num_epochs)]
    return [phase for phase in phases if phase[2] > phase[1]]


def check_backbone(backbone: str, encoder) -> None:
    """Refuse AE-BoNet without a pretrained encoder, and an encoder given to another backbone."""
    if backbone == "aebonet" and encoder is None:
        raise AebonetError("backbone aebonet needs a pretrained encoder: give --encoder RUN/encoder.keras, "
                           "or use --backbone scratch")
    if encoder is not None and backbone != "aebonet":
        raise AebonetError(f"--encoder is for the aebonet backbone, not {backbone}; leave it out")


def backbone_line(backbone: str, encoder=None, weights: str | None = None) -> str:
    """Return one line saying which regressor is trained: AE-BoNet, the from-scratch control or a baseline."""
    if backbone == "aebonet":
        return f"training AE-BoNet on the pretrained encoder {encoder}"
    if backbone == "scratch":
        return ("training the from-scratch control (no --encoder given; "
                "pass --encoder RUN/encoder.keras for AE-BoNet)")
    return f"training the {backbone} baseline (weights: {weights or 'none, random initialization'})"


def backbone_summary(run_dir: str | Path, backbone: str, encoder=None, weights: str | None = None) -> str:
    """Return the line saying which regressor `train` trains in run_dir: the one its config.json records, if any."""
    record = read_record(run_dir) or {"backbone": backbone, "encoder": encoder, "weights": weights}
    check_backbone(record["backbone"], record["encoder"])
    return backbone_line(record["backbone"], record["encoder"], record["weights"])


def pretrained_ids(encoder: str | Path) -> set[str] | None:
    """Return the ids of the images the encoder was pretrained on (its run's splits/train.txt), or None without one."""
    path = Path(encoder).parent / "splits" / "train.txt"
    if not path.is_file():
        return None  # an older run, or an encoder copied out of its run folder
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}


def other_phantom_draw(encoder: str | Path, data: BoneAgeData) -> bool:
    """Return True when the encoder was pretrained on a phantom drawn with another seed: other images, the same ids."""
    from .data import is_phantom

    pretrained_on = read_model_meta(encoder).get("data", {})
    return (is_phantom(data.source) and is_phantom(pretrained_on.get("source"))
            and pretrained_on.get("seed", data.seed) != data.seed)


def held_out_ids(data: BoneAgeData) -> set[str]:
    """Return the ids of the data's validation and test images."""
    ids = np.asarray(data.ids, dtype=str)
    return {str(i) for name in ("val", "test") if name in data.splits for i in ids[data.splits[name]]}


def check_encoder_split(encoder: str | Path, data: BoneAgeData) -> None:
    """Refuse an encoder pretrained on any of the data's validation or test images: the test would not be blind."""
    seen = pretrained_ids(encoder)
    if seen is None or other_phantom_draw(encoder, data):
        return
    leaked = len(seen & held_out_ids(data))
    if leaked:
        seed = read_model_meta(encoder).get("data", {}).get("seed")
        same = f" (--seed {seed}, as its run)" if seed is not None else ""
        raise AebonetError(f"--encoder {encoder}: pretrained on {leaked} of this run's validation/test images "
                           f"(its splits/train.txt); pretrain with the same data and --seed, "
                           f"or train on the encoder's split{same}")


def train_record(data: BoneAgeData, config: Config, backbone: str, encoder, weights, sex_input: bool, num_epochs,
                 freeze_epochs, command) -> dict:
    """Return what config.json records for a regressor run, with absolute paths so that it resumes from anywhere."""
    check_backbone(backbone, encoder)
    if encoder is not None:
        check_encoder(encoder, config)
        check_encoder_split(encoder, data)
    y_mean, y_std = label_scale(data)
    return {"kind": "train", "config": config.to_dict(), "backbone": backbone, "weights": weights,
            "encoder": str(Path(encoder).resolve()) if encoder else None, "sex_input": sex_input,
            "y_mean": y_mean, "y_std": y_std, "num_epochs": num_epochs or config.reg_num_epochs,
            "freeze_epochs": config.freeze_epochs if freeze_epochs is None else freeze_epochs,
            "data": recorded_source(data.source), "command": command}


def train(data: BoneAgeData, config: Config, run_dir: str | Path, backbone: str = "aebonet",
          encoder: str | Path | None = None, weights: str | None = None, sex_input: bool = False,
          num_epochs: int | None = None, resume: bool = False, distribute: str = "none",
          freeze_epochs: int | None = None, progress: bool = True, command: str | None = None) -> Path:
    """Fine-tune a bone age regressor on the train split, keeping the epoch with the best validation MAE (chapter 4).

    `backbone` is "aebonet" (give `encoder`, a pretrained RUN/encoder.keras), "scratch"
    (the same network with a random encoder: the control) or a baseline name with
    `weights`. Loss MSE, metric MAE in months. With `freeze_epochs` the backbone is
    frozen for that many epochs first, then fine-tuned with a fresh optimizer.
    model.keras holds the weights of the epoch with the lowest validation MAE, not
    the last one; model.json beside it says how to preprocess images for it.
    Resumes like `pretrain`.
    """
    run_dir = Path(run_dir)
    check_run_dir(run_dir, resume, "train")
    record = read_record(run_dir) or train_record(data, resolve_precision(config), backbone, encoder, weights, sex_input, num_epochs,
                                                  freeze_epochs, command)
    if run_finished(run_dir):
        return run_dir
    config, model, strategy, data = open_run(run_dir, data, record, distribute)
    fit_phases(model, data, config, run_dir, record, strategy, progress)
    return finish_train(model, data, config, run_dir, record)


def fit_phases(model: keras.Model, data: BoneAgeData, config: Config, run_dir: Path, record: dict, strategy,
               progress: bool) -> None:
    """Fit the regressor from the last finished epoch: the frozen phase, then the fine-tuning phase."""
    done = read_state(run_dir).get("epochs_done", 0)
    truncate_history(run_dir / "history.csv", done)
    train_data, val_data = make_datasets(data, config, "age", strategy, record["sex_input"])
    with epoch_bar(record["num_epochs"], done, f"train {record['backbone']}", progress) as bar:
        for trainable, start, end in phase_bounds(record["freeze_epochs"], record["num_epochs"]):
            if end <= done:
                continue
            set_backbone_trainable(model, trainable, config, strategy)
            model.fit(train_data, validation_data=val_data, initial_epoch=max(start, done), epochs=end, verbose=0,
                      shuffle=False, validation_freq=validation_epochs(config, record["num_epochs"]),
                      callbacks=make_callbacks(run_dir, config, bar, 1 + int(trainable), "val_mae", record["num_epochs"]))
            if model.stop_training:  # EarlyStopping ended the run
                break


def finish_train(model: keras.Model, data: BoneAgeData, config: Config, run_dir: Path, record: dict) -> Path:
    """Restore the best validation epoch's weights, save model.keras, model.json and model.trust.json, mark it finished."""
    from . import trust  # imported here: trust loads models with this module's load_model

    state = read_state(run_dir)
    kept = state.get("best", state["latest"]) if config.keep == "best" else state["latest"]
    model.load_weights(run_dir / "checkpoint" / kept)
    meta = {"kind": "regressor", **data_meta(data, config), "backbone": record["backbone"],
            "sex_input": record["sex_input"], "y_mean": record["y_mean"], "y_std": record["y_std"],
            "best_epoch": state.get("best_epoch"), "best_val_mae": state.get("best_value"), "keep": config.keep,
            "epochs_done": state["epochs_done"]}
    save_model(model, run_dir / "model.keras", meta)
    trust.calibrate_run(run_dir / "model.keras", data, record["encoder"])
    mark_finished(run_dir)
    return run_dir
