"""A run folder that survives being killed: checkpoint state, callbacks, history and stage tables (chapter 5)."""

from __future__ import annotations

import time
import warnings
import zipfile
from pathlib import Path

import keras
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from aebonet_lib import paper
from aebonet_lib._engine.files import (
    atomic_path,
    atomic_write,
    read_json,
    require_empty_dir,
    write_json,
)
from aebonet_lib._engine.records import read_record
from aebonet_lib.config import Config
from aebonet_lib.errors import AebonetError
from aebonet_lib.paper import stage_bounds

SHOWN_IN_PROGRESS = ("loss", "val_loss", "mae", "val_mae", "psnr", "val_psnr")


# Run folders


def read_state(run_dir: str | Path) -> dict:
    """Return the run's checkpoint/state.json, or {} before its first epoch has ended."""
    path = Path(run_dir) / "checkpoint" / "state.json"
    return read_json(path) if path.is_file() else {}


def run_finished(run_dir: str | Path) -> bool:
    """Return True when `run_dir` holds a run that has finished."""
    return bool(read_state(run_dir).get("finished"))


def check_run_dir(run_dir: str | Path, resume: bool, kind: str) -> None:
    """Refuse a folder holding another run (or one of another kind) unless resuming it."""
    record = read_record(run_dir)
    if record is None:
        require_empty_dir(run_dir)
    elif not resume:
        raise AebonetError(f"{run_dir}: already holds a run; add --resume (resume=True) to continue it, "
                           "or choose a new folder")
    elif record.kind != kind:
        raise AebonetError(f"{run_dir}: holds a {record.kind} run, not a {kind} run; choose another folder")


def saved_config(run_dir: str | Path) -> Config | None:
    """Return the Config a run in `run_dir` was started with, or None when there is no run."""
    record = read_record(run_dir)
    return record.config if record else None


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
    killed, state.json therefore points to complete files only. It also keeps the state
    of the epoch before (`previous`), so that a run whose newest file was damaged later
    resumes from the one before (`load_latest_checkpoint`). Files it no longer names are deleted.
    """

    def __init__(self, run_dir: Path, stage: int = 1, monitor: str | None = None, counters: list | None = None):
        """Continue the run's state.json; with `monitor` (such as "val_mae", lower is better) track the best epoch.

        `counters` are callbacks whose counters (patience, best value) are saved too, for a resumed run.
        """
        super().__init__()
        self.folder = Path(run_dir) / "checkpoint"
        self.stage = stage
        self.monitor = monitor
        self.counters = counters or []
        self.state = read_state(run_dir)

    def on_epoch_end(self, epoch, logs=None):
        """Write this epoch's model, then the state that names it."""
        name = f"epoch_{epoch + 1:04d}.keras"
        with atomic_path(self.folder / name) as tmp:
            self.model.save(tmp)
        if "latest" in self.state:
            self.state["previous"] = {k: v for k, v in self.state.items() if k != "previous"}
        self.state.update(epochs_done=epoch + 1, latest=name, stage=self.stage,
                          counters={type(c).__name__: c.counters() for c in self.counters})
        if self.monitor and is_better(logs.get(self.monitor), self.state.get("best_value")):
            self.state.update(best=name, best_value=float(logs[self.monitor]), best_epoch=epoch + 1)
        write_json(self.folder / "state.json", self.state)
        remove_stale_checkpoints(self.folder, keep=named_checkpoints(self.state))


def named_checkpoints(state: dict) -> set:
    """Return the checkpoint files a state names: latest and best, and those of the epoch before."""
    previous = state.get("previous", {})
    return {state["latest"], state.get("best"), previous.get("latest"), previous.get("best")} - {None}


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


def checkpoint_problem(path: Path, error: Exception) -> str:
    """Return why a checkpoint did not load: missing, cut short (not a whole zip file), or Keras's own error."""
    if not path.is_file():
        return "file missing"
    if not zipfile.is_zipfile(path):
        return "not a whole .keras (zip) file: cut short or overwritten"
    return f"{type(error).__name__}: {error}"


def load_latest_checkpoint(run_dir: Path) -> keras.Model:
    """Load the newest checkpoint that loads; after a damaged one (a warning names it) fall back to the epoch before.

    Falling back rewrites state.json as it was at that epoch (epochs done, best epoch,
    counters), so the run redoes the epochs after it and history.csv is cut to match.
    """
    state = read_state(run_dir)
    damaged = []
    for candidate in (state, state.get("previous")):
        if not candidate:
            continue
        path = run_dir / "checkpoint" / candidate["latest"]
        try:
            model = load_checkpoint(run_dir, candidate["latest"])
        except Exception as e:  # a truncated or garbled file fails in many ways; any of them means damaged
            warnings.warn(f"{path}: damaged checkpoint, cannot be loaded ({checkpoint_problem(path, e)})", stacklevel=2)
            damaged.append(str(path))
            continue
        if damaged:
            warnings.warn(f"resuming from {path}, epoch {candidate['epochs_done']}, the checkpoint before", stacklevel=2)
            write_json(run_dir / "checkpoint" / "state.json", candidate)
        return model
    raise AebonetError(f"{run_dir}: cannot be resumed: no checkpoint loads ({', '.join(damaged)} damaged); "
                       "start the run again in a new folder")


def truncate_history(path: Path, epochs_done: int) -> None:
    """Drop history.csv rows of epochs after the checkpoint (the epoch a killed run was in)."""
    if path.is_file() and path.stat().st_size == 0:
        path.unlink()
    if not path.is_file():
        return
    history = pd.read_csv(path)
    with atomic_write(path) as f:
        history[history["epoch"] < epochs_done].to_csv(f, index=False)


class StreamEpoch(keras.callbacks.Callback):
    """Set the training stream's epoch variable as each epoch begins (data.pipeline): its batches depend on the epoch alone."""

    def __init__(self, epoch):
        """Keep the int64 tf.Variable the training dataset reads."""
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        """Point the stream at this epoch."""
        self.epoch.assign(epoch)


def finite_or_none(value) -> float | None:
    """Return a counter's value as a float, or None when unset or infinite (JSON has no infinity)."""
    if value is None:
        return None
    value = float(value)
    return value if np.isfinite(value) else None


class ResumableCounters:
    """Mix into a Keras callback: its counters are saved at each epoch end and restored when training begins."""

    FIELDS: tuple[str, ...] = ()

    def __init__(self, *args, saved: dict | None = None, **kwargs):
        """Take the callback's arguments and the counters saved by an interrupted run."""
        super().__init__(*args, **kwargs)
        self.saved = saved or {}

    def on_train_begin(self, logs=None):
        """Reset as Keras does, then put the saved counters back."""
        super().on_train_begin(logs)
        restore_counters(self, self.saved)

    def counters(self) -> dict:
        """Return the counters to save."""
        return {field: finite_or_none(getattr(self, field)) for field in self.FIELDS}


class ResumableReduceLR(ResumableCounters, keras.callbacks.ReduceLROnPlateau):
    """ReduceLROnPlateau whose counters survive a resume."""

    FIELDS = ("wait", "best", "cooldown_counter")


class ResumableEarlyStopping(ResumableCounters, keras.callbacks.EarlyStopping):
    """EarlyStopping whose patience counter and best value survive a resume."""

    FIELDS = ("wait", "best", "best_epoch", "stopped_epoch")


def restore_counters(callback, saved: dict) -> None:
    """Set a callback's counters from a saved dict (None: keep the value Keras reset it to, such as an infinity)."""
    for field, value in saved.items():
        if value is not None:
            setattr(callback, field, float(value) if field == "best" else int(value))


class StageTable(keras.callbacks.Callback):
    """Rewrite stages.csv (our Table 2) from history.csv when a pretraining stage ends."""

    def __init__(self, run_dir: Path, plan: list[int]):
        """Keep the run folder and the epochs of each stage."""
        super().__init__()
        self.run_dir, self.plan = Path(run_dir), list(plan)

    def on_train_end(self, logs=None):
        """Write stages.csv."""
        write_stages(self.run_dir, self.plan)


def make_callbacks(run_dir: Path, config: Config, bar: tqdm, stage: int = 1, monitor: str | None = None,
                   num_epochs: int | None = None, plan: list[int] | None = None, stream_epoch=None) -> list:
    """Return a run's callbacks: timer, stream epoch, LR schedule, early stop, CSV log, checkpoint, TensorBoard, progress.

    With `plan` (a pretraining run's stages) stages.csv is rewritten as each stage ends.
    `stream_epoch` is the training dataset's epoch variable. The counters of
    ReduceLROnPlateau and EarlyStopping are saved with each checkpoint and restored on
    resume (within the same phase), so an interrupted run continues as if it had not stopped.
    """
    saved = read_state(run_dir)
    counters_saved = saved.get("counters", {}) if saved.get("stage") == stage else {}
    callbacks = [EpochTimer()] + ([StreamEpoch(stream_epoch)] if stream_epoch is not None else [])
    counters = []
    controls = paper.fine_tuning_controls(config, num_epochs) if monitor else {}
    if controls.get("schedule"):
        callbacks.append(keras.callbacks.LearningRateScheduler(controls["schedule"]))
    if controls.get("reduce_lr"):
        counters.append(ResumableReduceLR(monitor, controls["reduce_lr"]["factor"], controls["reduce_lr"]["patience"],
                                          saved=counters_saved.get("ResumableReduceLR")))
    if controls.get("early_stop"):
        counters.append(ResumableEarlyStopping(monitor, patience=controls["early_stop"]["patience"],
                                               saved=counters_saved.get("ResumableEarlyStopping")))
    callbacks += counters + [
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
        EpochCheckpoint(run_dir, stage, monitor, counters),
        keras.callbacks.TensorBoard(str(run_dir / "logs"), write_graph=False),
        TqdmProgress(bar),
    ]
    if plan:
        callbacks.append(StageTable(run_dir, plan))
    return callbacks


def epoch_bar(total: int, done: int, desc: str, progress: bool) -> tqdm:
    """Return a progress bar over a run's epochs, starting at the epochs already done."""
    return tqdm(total=total, initial=done, unit="epoch", desc=desc, disable=not progress)


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


def mark_finished(run_dir: Path) -> None:
    """Record in state.json that the run has finished."""
    write_json(run_dir / "checkpoint" / "state.json", read_state(run_dir) | {"finished": True})
