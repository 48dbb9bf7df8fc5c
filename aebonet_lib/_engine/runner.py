"""Training: staged autoencoder pretraining, regressor fine-tuning, and runs that resume.

Chapter 3 pretrains the autoencoder (`pretrain`), chapter 4 fine-tunes the bone age
regressor (`train`), chapter 5 explains what makes a long run safe and fast:
checkpoints, precision, XLA and `tf.distribute`. Every run lives in one folder
(ARCHITECTURE.md, "Run folders"). A checkpoint is written at each epoch end, so a run
killed at any moment continues with `resume=True` (`--resume`), redoing only the
epoch it was in.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from aebonet_lib import paper
from aebonet_lib._engine import baselines
from aebonet_lib._engine import budget as budgets
from aebonet_lib._engine import trust
from aebonet_lib._engine.checkpoints import (
    check_run_dir,
    epoch_bar,
    load_latest_checkpoint,
    make_callbacks,
    mark_finished,
    read_state,
    run_finished,
    truncate_history,
)
from aebonet_lib._engine.devices import (
    build_scope,
    get_strategy,
    resolve_precision,
    set_seeds,
    synchronize_batch_norm,
    worker_run_dir,
)
from aebonet_lib._engine.modelfiles import (
    ModelMeta,
    load_model,
    read_model_meta,
    save_model,
)
from aebonet_lib._engine.records import RunRecord, git_state, read_record, write_record
from aebonet_lib.config import Config
from aebonet_lib.data import loading, pipeline
from aebonet_lib.data.loading import BoneAgeData, is_phantom
from aebonet_lib.errors import AebonetError


def use_run_splits(data: BoneAgeData, run_dir: Path) -> BoneAgeData:
    """Save the data's split in a new run folder, or return the data with the split saved there."""
    if (run_dir / "splits").is_dir():
        return dataclasses.replace(data, splits=loading.load_splits(run_dir, data.ids))
    loading.save_splits(run_dir, data.splits, data.ids)
    return data


def check_image_size(data: BoneAgeData, config: Config) -> None:
    """Refuse data prepared at another image size than the run's."""
    size = data.X.shape[1]
    if size != config.image_size:
        raise AebonetError(f"data are {size} px but the run's config says {config.image_size} px; "
                           f"load the data with image_size={config.image_size} (--size {config.image_size})")


def latest_or_new_model(run_dir: Path, config: Config, strategy, record: RunRecord) -> keras.Model:
    """Load the run's last checkpoint, or build its model afresh: seeded, on the strategy's devices, at its precision.

    The regressor is compiled later, when its backbone is frozen or unfrozen.
    """
    set_seeds(config)
    state = read_state(run_dir)
    with build_scope(config, strategy):
        if state:
            model = load_latest_checkpoint(run_dir)
        else:
            model = new_autoencoder(config) if record.kind == "pretrain" else new_regressor(record, config)
    synchronize_batch_norm(model, strategy)
    return model


def make_datasets(data: BoneAgeData, config: Config, target: str, strategy: tf.distribute.Strategy,
                  sex_input: bool = False) -> tuple[tf.data.Dataset, tf.data.Dataset, tf.Variable]:
    """Return the training batches, the validation batches and the training stream's epoch variable.

    The training batches of epoch e are shuffled and augmented by (seed, e) alone, so a
    resumed run sees the batches of the uninterrupted one (checkpoints.StreamEpoch sets e).
    The batch size is global: each of several replicas gets its share. With several
    replicas a last partial batch is dropped, since a replica left with no image breaks
    BatchNormalization, and validation batches are cut to fit a small split (`validation_batch_size`).
    """
    batch_size = config.ae_batch_size if target == "image" else config.reg_batch_size
    drop_remainder = strategy.num_replicas_in_sync > 1
    epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="stream_epoch")
    train_data = pipeline.make_tf_dataset(data, "train", batch_size, target=target, sex_input=sex_input, shuffle=True,
                                          augment=config.augment, seed=config.seed, drop_remainder=drop_remainder,
                                          epoch=epoch)
    val_size = validation_batch_size(batch_size, len(pipeline.usable_indices(data, "val", target, sex_input)),
                                     strategy.num_replicas_in_sync)
    val_data = pipeline.make_tf_dataset(data, "val", val_size, target=target, sex_input=sex_input, shuffle=False,
                                        drop_remainder=drop_remainder)
    return train_data, val_data, epoch


def validation_batch_size(batch_size: int, num_images: int, replicas: int) -> int:
    """Return the validation batch size: with several replicas, at most the images of the split's whole batches.

    Full batches only are kept then, and a split smaller than one batch would give none.
    """
    if replicas == 1:
        return batch_size
    return max(replicas, min(batch_size, num_images // replicas * replicas))


def recorded_source(source: str) -> str:
    """Return a data source as a run records it: phantom[:N] as given, a folder or file as an absolute path."""
    return source if is_phantom(source) else str(Path(source).resolve())


def model_meta(kind: str, data: BoneAgeData, config: Config, **regressor) -> ModelMeta:
    """Return what a saved model needs to read new images: preprocessing, the Config and the data it saw."""
    return ModelMeta(kind, data.params, config, source=data.source, seed=data.seed, **regressor)


# Autoencoder pretraining (chapter 3)


def stage_epochs(stages: tuple[int, ...], num_epochs: int | None = None) -> list[int]:
    """Return the epochs of each stage, scaled in proportion to sum to `num_epochs` (budget.proportional_stages)."""
    return list(stages) if num_epochs is None else budgets.proportional_stages(stages, num_epochs)


def new_autoencoder(config: Config) -> keras.Model:
    """Build and compile the paper's autoencoder (MSE, Adam, accuracy, PSNR and SSIM)."""
    model = paper.build_autoencoder(config)
    paper.compile_autoencoder(model, config)
    return model


def open_run(run_dir: Path, data: BoneAgeData, record: RunRecord, strategy: tf.distribute.Strategy) -> tuple:
    """Check the data against the run's config, reload or build its model, write config.json and pin its splits.

    Returns (config, model, data), the data restricted to the run's saved splits.
    """
    config = record.config
    check_image_size(data, config)
    model = latest_or_new_model(run_dir, config, strategy, record)
    write_record(run_dir, record)
    return config, model, use_run_splits(data, run_dir)


def pretrain(data: BoneAgeData, config: Config, run_dir: str | Path, num_epochs: int | None = None,
             resume: bool = False, distribute: str = "none", progress: bool = True, command: str | None = None,
             budget: float | None = None) -> Path:
    """Train the autoencoder to reconstruct the training images, in the stages of the paper's Table 2 (chapter 3).

    Trains on the train split and validates on val; labels are never used. `num_epochs`
    replaces the total of `config.ae_stages`, spread over the stages in proportion.
    Writes config.json, splits/, history.csv, stages.csv, logs/ (TensorBoard),
    checkpoint/ and finally autoencoder.keras and encoder.keras. With `resume=True`
    an interrupted run continues from its last finished epoch, with the config it was
    started with; on a finished run it does nothing. With `distribute="multiworker"`
    (TF_CONFIG set on every worker) give every worker the same `run_dir`: only the
    chief (task 0) writes it; the others write to a temporary folder removed at the end.
    With `budget` (minutes, counted from this call) a new run first times a few steps and
    keeps as many of the epochs as fit, in the stages' proportions (`runs.budget`).
    """
    started = budgets.clock()
    budgets.check_budget(budget, distribute)
    strategy = get_strategy(distribute)  # first: a multi-worker strategy must exist before TensorFlow runs any op
    with worker_run_dir(Path(run_dir), distribute, resume) as folder:
        pretrain_in(folder, data, config, num_epochs, resume, strategy, progress, command, budget, started)
    return Path(run_dir)


def pretrain_in(run_dir: Path, data: BoneAgeData, config: Config, num_epochs: int | None, resume: bool, strategy,
                progress: bool, command: str | None, budget: float | None = None, started: float | None = None) -> None:
    """Pretrain in run_dir on the given strategy: `pretrain` once the folder this process writes is known."""
    check_run_dir(run_dir, resume, "pretrain")
    record = read_record(run_dir)
    fresh = record is None
    record = record or RunRecord("pretrain", resolve_precision(config), recorded_source(data.source), command,
                                 plan=stage_epochs(config.ae_stages, num_epochs), **git_state())
    if run_finished(run_dir):
        return
    started = budgets.clock() if started is None else started
    record = with_budget(record, fresh, budget, data, strategy, run_dir, started)
    config, model, data = open_run(run_dir, data, record, strategy)
    fit_stages(model, data, config, run_dir, record.plan, strategy, progress,
               extra=budgets.watch_for(record, run_dir, started, fresh))
    finish_pretrain(model, data, config, run_dir)


def fit_stages(model: keras.Model, data: BoneAgeData, config: Config, run_dir: Path, plan: list[int], strategy,
               progress: bool, extra: list | tuple = ()) -> None:
    """Run the recipe's staged pretraining from the last finished epoch, with the run folder's callbacks."""
    done = read_state(run_dir).get("epochs_done", 0)
    truncate_history(run_dir / "history.csv", done)
    train_data, val_data, epoch = make_datasets(data, config, "image", strategy)
    with epoch_bar(sum(plan), done, "pretrain", progress) as bar:
        paper.pretrain_autoencoder(model, train_data, val_data, plan, done, callbacks=lambda stage: make_callbacks(
            run_dir, config, bar, stage, plan=plan, stream_epoch=epoch) + list(extra))


def finish_pretrain(model: keras.Model, data: BoneAgeData, config: Config, run_dir: Path) -> Path:
    """Save autoencoder.keras and encoder.keras, then mark the run finished."""
    save_model(model, run_dir / "autoencoder.keras", model_meta("autoencoder", data, config))
    save_model(model.get_layer("encoder"), run_dir / "encoder.keras", model_meta("encoder", data, config))
    mark_finished(run_dir)
    return run_dir


# Regressor fine-tuning (chapter 4)


def label_scale(data: BoneAgeData) -> tuple[float, float]:
    """Return the mean and standard deviation of the training split's bone ages (months)."""
    y = data.y[data.splits["train"]]
    return float(np.nanmean(y)), float(np.nanstd(y))


def check_encoder(path: str | Path, config: Config) -> ModelMeta:
    """Refuse a file that is not a pretrained encoder (RUN/encoder.keras) at the config's image size; return its sidecar."""
    if not Path(path).is_file():
        raise AebonetError(f"--encoder {path}: file not found; give RUN/encoder.keras written by `aebonet pretrain`")
    meta = read_model_meta(path)
    if meta.kind != "encoder":
        raise AebonetError(f"{path}: holds a model of kind {meta.kind!r}, not an encoder; "
                           "give the encoder written by pretraining (RUN/encoder.keras)")
    if meta.image_size != config.image_size:
        raise AebonetError(f"{path}: encoder pretrained at {meta.image_size} px but the config says "
                           f"{config.image_size} px; train with --size {meta.image_size}")
    return meta


def load_encoder(path: str | Path, config: Config) -> keras.Model:
    """Load a pretrained encoder (RUN/encoder.keras), checking it was trained at the config's image size."""
    check_encoder(path, config)
    return load_model(path)[0]


def new_regressor(record: RunRecord, config: Config) -> keras.Model:
    """Build the regressor a run's record describes (AE-BoNet, from scratch, or a baseline); not compiled."""
    encoder = load_encoder(record.encoder, config) if record.encoder else None
    return baselines.build_model(record.backbone, config, encoder=encoder, weights=record.weights,
                                 sex_input=record.sex_input, y_mean=record.y_mean, y_std=record.y_std)


def set_backbone_trainable(model: keras.Model, trainable: bool, config: Config, strategy) -> None:
    """Freeze or unfreeze the backbone, compiling afresh when that changes (or the model is not compiled yet)."""
    backbone = model.get_layer("encoder")  # the pretrained or random encoder, or a baseline's network
    if backbone.trainable == trainable and model.compiled:
        return
    backbone.trainable = trainable
    with build_scope(config, strategy):
        paper.compile_regressor(model, config)


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
    record = read_record(run_dir)
    if record is not None:
        backbone, encoder, weights = record.backbone, record.encoder, record.weights
    baselines.check_backbone(backbone, encoder is not None, weights)
    return backbone_line(backbone, encoder, weights)


def pretrained_ids(encoder: str | Path) -> set[str] | None:
    """Return the ids of the images the encoder was pretrained on (its run's splits/train.txt), or None without one."""
    path = Path(encoder).parent / "splits" / "train.txt"
    if not path.is_file():
        return None  # an older run, or an encoder copied out of its run folder
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}


def other_phantom_draw(pretrained_on: ModelMeta, data: BoneAgeData) -> bool:
    """Return True when the encoder was pretrained on a phantom drawn with another seed: other images, the same ids."""
    return (is_phantom(data.source) and is_phantom(pretrained_on.source)
            and pretrained_on.seed is not None and pretrained_on.seed != data.seed)


def same_source(pretrained_on: ModelMeta, data: BoneAgeData) -> bool:
    """Return False when the encoder was pretrained on another dataset (its ids name other images), else True."""
    source = pretrained_on.source
    if source is None or (is_phantom(source) and is_phantom(data.source)):
        return True
    return recorded_source(str(source)) == recorded_source(data.source)


def held_out_ids(data: BoneAgeData) -> set[str]:
    """Return the ids of the data's validation and test images."""
    ids = np.asarray(data.ids, dtype=str)
    return {str(i) for name in ("val", "test") if name in data.splits for i in ids[data.splits[name]]}


def check_encoder_split(encoder: str | Path, data: BoneAgeData, meta: ModelMeta | None = None) -> None:
    """Refuse an encoder pretrained on any of the data's validation or test images: the test would not be blind."""
    seen = pretrained_ids(encoder)
    meta = meta or read_model_meta(encoder)
    if seen is None or other_phantom_draw(meta, data) or not same_source(meta, data):
        return
    leaked = len(seen & held_out_ids(data))
    if leaked:
        seed = meta.seed
        same = f" (--seed {seed}, as its run)" if seed is not None else ""
        raise AebonetError(f"--encoder {encoder}: pretrained on {leaked} of this run's validation/test images "
                           f"(its splits/train.txt); pretrain with the same data and --seed, "
                           f"or train on the encoder's split{same}")


def train_record(data: BoneAgeData, config: Config, backbone: str, encoder, weights, sex_input: bool, num_epochs,
                 freeze_epochs, command) -> RunRecord:
    """Return what config.json records for a regressor run, with absolute paths so that it resumes from anywhere."""
    baselines.check_backbone(backbone, encoder is not None, weights)
    if encoder is not None:
        check_encoder_split(encoder, data, check_encoder(encoder, config))
    y_mean, y_std = label_scale(data)
    return RunRecord("train", config, recorded_source(data.source), command, backbone=backbone, weights=weights,
                     encoder=str(Path(encoder).resolve()) if encoder else None, sex_input=sex_input,
                     y_mean=y_mean, y_std=y_std, num_epochs=num_epochs or config.reg_num_epochs,
                     freeze_epochs=config.freeze_epochs if freeze_epochs is None else freeze_epochs, **git_state())


def train(data: BoneAgeData, config: Config, run_dir: str | Path, backbone: str = "aebonet",
          encoder: str | Path | None = None, weights: str | None = None, sex_input: bool = False,
          num_epochs: int | None = None, resume: bool = False, distribute: str = "none",
          freeze_epochs: int | None = None, progress: bool = True, command: str | None = None,
          budget: float | None = None) -> Path:
    """Fine-tune a bone age regressor on the train split, keeping the epoch with the best validation MAE (chapter 4).

    `backbone` is "aebonet" (give `encoder`, a pretrained RUN/encoder.keras), "scratch"
    (the same network with a random encoder: the control) or a baseline name with
    `weights`. Loss MSE, metric MAE in months. With `freeze_epochs` the backbone is
    frozen for that many epochs first, then fine-tuned with a fresh optimizer.
    model.keras holds the weights of the epoch `config.keep` names (the lowest validation
    MAE, or the last); model.json beside it says how to preprocess images for it.
    Resumes like `pretrain`, and runs on several workers like it: only the chief writes `run_dir`.
    With `budget` (minutes) a new run keeps as many of its epochs as fit, like `pretrain`.
    """
    started = budgets.clock()
    budgets.check_budget(budget, distribute)
    strategy = get_strategy(distribute)  # first: a multi-worker strategy must exist before TensorFlow runs any op
    with worker_run_dir(Path(run_dir), distribute, resume) as folder:
        check_run_dir(folder, resume, "train")
        record = read_record(folder)
        fresh = record is None
        record = record or train_record(data, resolve_precision(config), backbone, encoder, weights, sex_input,
                                        num_epochs, freeze_epochs, command)
        if not run_finished(folder):
            record = with_budget(record, fresh, budget, data, strategy, folder, started)
            config, model, data = open_run(folder, data, record, strategy)
            fit_phases(model, data, config, folder, record, strategy, progress,
                       extra=budgets.watch_for(record, folder, started, fresh))
            finish_train(model, data, config, folder, record)
    return Path(run_dir)


def fit_phases(model: keras.Model, data: BoneAgeData, config: Config, run_dir: Path, record: RunRecord, strategy,
               progress: bool, extra: list | tuple = ()) -> None:
    """Run the recipe's fine-tuning from the last finished epoch: a frozen-backbone phase first when asked."""
    done = read_state(run_dir).get("epochs_done", 0)
    truncate_history(run_dir / "history.csv", done)
    train_data, val_data, epoch = make_datasets(data, config, "age", strategy, record.sex_input)
    num_epochs = record.num_epochs
    with epoch_bar(num_epochs, done, f"train {record.backbone}", progress) as bar:
        for trainable, start, end in paper.phase_bounds(record.freeze_epochs, num_epochs):
            if end <= done or getattr(model, "stop_training", False):  # finished, or EarlyStopping ended the run
                continue
            set_backbone_trainable(model, trainable, config, strategy)
            callbacks = make_callbacks(run_dir, config, bar, 1 + int(trainable), "val_mae", num_epochs,
                                       stream_epoch=epoch) + list(extra)
            paper.fit_regressor(model, train_data, val_data, end, max(start, done), callbacks,
                                paper.validation_epochs(config, num_epochs))


def finish_train(model: keras.Model, data: BoneAgeData, config: Config, run_dir: Path, record: RunRecord) -> Path:
    """Restore the best validation epoch's weights, save model.keras, model.json and model.trust.json, mark it finished."""
    state = read_state(run_dir)
    model.load_weights(run_dir / "checkpoint" / paper.kept_checkpoint(config, state))
    meta = model_meta("regressor", data, config, backbone=record.backbone, sex_input=record.sex_input,
                      y_mean=record.y_mean, y_std=record.y_std, keep=config.keep, best_epoch=state.get("best_epoch"),
                      best_val_mae=state.get("best_value"), epochs_done=state["epochs_done"])
    save_model(model, run_dir / "model.keras", meta)
    trust.calibrate_run(run_dir / "model.keras", data, record.encoder)
    mark_finished(run_dir)
    return run_dir


# Time budgets (chapter 5): `--budget MINUTES`, planned once when a run starts (runs.budget)


def with_budget(record: RunRecord, fresh: bool, budget: float | None, data: BoneAgeData, strategy, run_dir: Path,
                started: float) -> RunRecord:
    """Return a new run's record with its budget's plan; a resumed run keeps its own (saying so if given another)."""
    if budget is None:
        return record
    if not fresh:
        kept = "its recorded plan" if record.budget else "the epochs it was started with"
        budgets.say(f"--budget {budget:g} ignored: a resumed run follows {kept}")
        return record
    task = "image" if record.kind == "pretrain" else "age"
    model = throwaway_model(record, strategy)
    train_data = make_datasets(data, record.config, task, strategy, record.sex_input)[0]
    sizes = [len(pipeline.usable_indices(data, split, task, record.sex_input)) for split in ("train", "val")]
    most = sum(record.plan) if record.kind == "pretrain" else record.num_epochs
    batch_size = record.config.ae_batch_size if record.kind == "pretrain" else record.config.reg_batch_size
    plan = measured_plan(model, train_data, run_dir, budget, started, batch_size, *sizes, most)
    del model
    if record.kind == "pretrain":
        stages = stage_epochs(record.config.ae_stages, plan.epochs)
        budgets.say(budgets.plan_line(plan, "pretraining", stages))
        return dataclasses.replace(record, plan=stages, budget=plan.to_dict())
    budgets.say(budgets.plan_line(plan, f"training {record.backbone}"))
    return dataclasses.replace(record, num_epochs=plan.epochs, budget=plan.to_dict())


def throwaway_model(record: RunRecord, strategy) -> keras.Model:
    """Build and compile the run's model afresh, to be timed and dropped (the run's own model stays untouched)."""
    config = record.config
    with build_scope(config, strategy):
        model = new_autoencoder(config) if record.kind == "pretrain" else new_regressor(record, config)
    if record.kind == "train":
        set_backbone_trainable(model, True, config, strategy)  # times the fine-tuning phase, the slower one
    return model


def measured_plan(model: keras.Model, train_data: tf.data.Dataset, run_dir: Path, minutes: float, started: float,
                  batch_size: int, n_train: int, n_val: int, most: int) -> budgets.Budget:
    """Time a few steps on the run's batches and one checkpoint save, then plan the epochs that fit."""
    rate, compile_s = budgets.measure_rate(
        lambda steps: model.fit(train_data.repeat().take(steps), epochs=1, verbose=0, shuffle=False), batch_size)
    Path(run_dir).parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=Path(run_dir).parent) as folder:  # the run's disk, outside its folder
        checkpoint_s = budgets.measure_seconds(lambda: model.save(Path(folder) / "probe.keras"))
    return budgets.plan_budget(minutes, started, rate, compile_s, checkpoint_s, batch_size, n_train, n_val, most)
