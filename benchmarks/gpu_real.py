"""The real-data GPU check behind `gpu_check.py --real PACK`: the colab preset, budgeted, on packed radiographs.

    python benchmarks/pack_rsna.py --data ../shared/rsna_bone_age_256 --out .gpu-data   # here: about 50 MiB
    python benchmarks/gpu_check.py --real .gpu-data/rsna.npz --out gpu-real.json        # there: at most 8 minutes

It runs the course's recipe (`paper.py`) at the `colab` preset: a budgeted pretraining, then a
budgeted fine-tuning of AE-BoNet on the pretrained encoder, with the planning and warning of
`runs.budget` (the library's `--budget`), and writes what a class needs to know: the device,
the throughput of both phases, the validation and test MAE after this short run, and the wall
time. It needs no TensorFlow: Keras 3 runs the same model code on JAX, batches come from NumPy
(`Batches`), and the images were preprocessed here, by the course's own loader, before packing.
Unlike `aebonet pretrain --budget`, which times a throwaway copy of the model, the check times
its first steps on the model itself and then puts its weights and optimizer state back, which
saves compiling each model twice. It writes no checkpoints.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import keras
import numpy as np

from aebonet_lib import paper
from aebonet_lib._engine import budget as budgets
from aebonet_lib._engine.checkpoints import EpochTimer
from aebonet_lib._engine.hardware import gpu_precision
from aebonet_lib.config import get_config
from aebonet_lib.paper import cosine_rate, validation_epochs

POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}
PRETRAIN_SHARE = 0.6  # of the minutes left after loading: pretraining; fine-tuning gets what pretraining leaves
RESERVE_MINUTES = 0.5  # kept back for the final evaluation and writing the JSON
SPLITS = ("train", "val", "test")


class Batches(keras.utils.PyDataset):
    """Yield (x, target) float32 batches from uint8 images, shuffled by (seed, epoch) when a seed is given."""

    def __init__(self, X: np.ndarray, y: np.ndarray | None, batch_size: int, seed: int | None = None):
        """Keep the images, their targets (None: the images themselves) and the batch size."""
        super().__init__(workers=2)
        self.X, self.y, self.batch_size, self.seed, self.epoch = X, y, batch_size, seed, 0
        self.order = self.shuffled()

    def shuffled(self) -> np.ndarray:
        """Return this epoch's order of the images."""
        if self.seed is None:
            return np.arange(len(self.X))
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.X))

    def __len__(self) -> int:
        """Return the batches per epoch."""
        return math.ceil(len(self.X) / self.batch_size)

    def __getitem__(self, index: int):
        """Return batch `index` of this epoch."""
        rows = np.sort(self.order[index * self.batch_size:(index + 1) * self.batch_size])
        x = self.X[rows][..., None].astype(np.float32) / 255.0
        return (x, x) if self.y is None else (x, self.y[rows])

    def on_epoch_end(self):
        """Shuffle again for the next epoch."""
        self.epoch += 1
        self.order = self.shuffled()


def load_pack(path: Path) -> dict:
    """Return the packed images (uint8, decoded), labels and split indices of pack_rsna.py's file."""
    from pack_rsna import decode

    pack = np.load(path)
    offsets, jpeg = pack["offsets"], pack["jpeg"]
    X = np.stack([decode(jpeg[offsets[i]:offsets[i + 1]].tobytes()) for i in range(len(offsets) - 1)])
    split = pack["split"]
    return {"X": X, "y": pack["y"], "male": pack["male"], "meta": json.loads(str(pack["meta"])),
            "splits": {name: np.flatnonzero(split == k) for k, name in enumerate(SPLITS)}}


def device_and_backend() -> tuple[str, str]:
    """Return the device training runs on and the Keras backend with its version."""
    if keras.backend.backend() == "jax":
        import jax

        device = jax.devices()[0]
        name = f"GPU: {device.device_kind}" if device.platform == "gpu" else "CPU"
        return name, f"keras {keras.__version__} on jax {jax.__version__}"
    from aebonet_lib._engine.hardware import gpu_info

    gpus = gpu_info()
    import tensorflow as tf

    return (f"GPU: {gpus[0]['name']}" if gpus else "CPU"), f"keras {keras.__version__} on tensorflow {tf.__version__}"


def precision_for(config) -> str:
    """Return the precision to train in: the config's, or for "auto" bf16/fp16 by the GPU's capability, else fp32."""
    if config.precision != "auto":
        return config.precision
    if keras.backend.backend() == "jax":
        import jax

        device = jax.devices()[0]
        if device.platform != "gpu":
            return "fp32"
        capability = getattr(device, "compute_capability", None)  # such as "9.0"
        return gpu_precision([int(p) for p in str(capability).split(".")]) if capability else "bf16"
    from aebonet_lib._engine.hardware import best_precision

    return best_precision(width=config.width)


def snapshot(model: keras.Model) -> tuple[list, list]:
    """Return the model's weights and its (built) optimizer's variables, to put back after timing."""
    model.optimizer.build(model.trainable_variables)
    return model.get_weights(), [np.array(v) for v in model.optimizer.variables]


def restore(model: keras.Model, saved: tuple[list, list]) -> None:
    """Put back what `snapshot` saved."""
    weights, variables = saved
    model.set_weights(weights)
    for variable, value in zip(model.optimizer.variables, variables):
        variable.assign(value)


def timed_plan(model, X, y, batch_size: int, n_val: int, minutes: float, started: float, most: int) -> budgets.Budget:
    """Time a few steps on the run's images (then undo them) and plan the epochs that fit `minutes`."""
    saved = snapshot(model)

    def fit_steps(steps: int) -> None:
        rows = np.arange(steps * batch_size) % len(X)
        model.fit(Batches(X[rows], None if y is None else y[rows], batch_size), epochs=1, verbose=0)

    rate, compile_s = budgets.measure_rate(fit_steps, batch_size)
    restore(model, saved)
    return budgets.plan_budget(minutes, started, rate, compile_s, 0.0, batch_size, len(X), n_val, most)


def compile_autoencoder(model: keras.Model, config) -> keras.Model:
    """Compile as the recipe does; without TensorFlow, with the paper's "accuracy" only (PSNR and SSIM need tf.image)."""
    if keras.backend.backend() == "tensorflow":
        return paper.compile_autoencoder(model, config)
    from aebonet_lib.paper import reconstruction_metrics

    model.compile(optimizer=keras.optimizers.Adam(config.ae_lr), loss="mse", metrics=reconstruction_metrics()[:1],
                  jit_compile=config.jit)
    return model


def pretrain_phase(config, data: dict, minutes: float, report: list) -> tuple[keras.Model, dict]:
    """Pretrain the autoencoder within `minutes`, in the paper's stage proportions; return it and the phase's record."""
    started = budgets.clock()
    X = {name: data["X"][data["splits"][name]] for name in SPLITS}
    model = compile_autoencoder(paper.build_autoencoder(config), config)
    plan = timed_plan(model, X["train"], None, config.ae_batch_size, len(X["val"]), minutes, started,
                      config.ae_num_epochs)
    stages = budgets.proportional_stages(config.ae_stages, plan.epochs)
    report.append(budgets.plan_line(plan, "pretraining", stages))
    watch, timer = budgets.BudgetWatch(plan, plan.epochs, started, report=report.append), EpochTimer()
    history = keras.callbacks.History()
    paper.pretrain_autoencoder(model, Batches(X["train"], None, config.ae_batch_size, config.seed),
                               Batches(X["val"], None, config.ae_batch_size), stages,
                               callbacks=lambda stage: [timer, watch, history])
    return model, phase_record(plan, started, history, stages=stages)


def train_phase(config, data: dict, encoder, minutes: float, report: list) -> tuple[keras.Model, dict]:
    """Fine-tune AE-BoNet on the pretrained encoder within `minutes`; return it and the phase's record."""
    started = budgets.clock()
    X = {name: data["X"][data["splits"][name]] for name in SPLITS}
    y = {name: data["y"][data["splits"][name]] for name in SPLITS}
    model = paper.build_regressor(encoder, config, y_mean=float(np.mean(y["train"])), y_std=float(np.std(y["train"])))
    paper.compile_regressor(model, config)
    plan = timed_plan(model, X["train"], y["train"], config.reg_batch_size, len(X["val"]), minutes, started,
                      config.reg_num_epochs)
    report.append(budgets.plan_line(plan, "training AE-BoNet"))
    history = keras.callbacks.History()
    callbacks = [EpochTimer(), budgets.BudgetWatch(plan, plan.epochs, started, report=report.append), history]
    if config.lr_schedule == "cosine":
        callbacks.append(keras.callbacks.LearningRateScheduler(cosine_rate(config, plan.epochs)))
    paper.fit_regressor(model, Batches(X["train"], y["train"], config.reg_batch_size, config.seed),
                        Batches(X["val"], y["val"], config.reg_batch_size), plan.epochs, 0, callbacks,
                        validation_epochs(config, plan.epochs))
    return model, phase_record(plan, started, history)


def phase_record(plan: budgets.Budget, started: float, history, **more) -> dict:
    """Return what the JSON says about one phase: its plan, epochs, seconds and last logged values."""
    logs = history.history
    seconds = [float(s) for s in logs.get("seconds", [])]
    last = {k: float(v[-1]) for k, v in logs.items() if v and k != "seconds"}
    per_epoch = plan.train_images + plan.val_images
    steady = seconds[1:] or seconds
    return {"budget": plan.to_dict(), "epochs": len(seconds), "seconds": budgets.clock() - started,
            "epoch_seconds": seconds, "measured_images_per_s": plan.images_per_s,
            "epoch_images_per_s": per_epoch / float(np.median(steady)) if steady else None, "last": last, **more}


def mae(model, X: np.ndarray, y: np.ndarray, batch_size: int) -> float:
    """Return the model's mean absolute error in months on images X with ages y."""
    y_hat = model.predict(Batches(X, y, batch_size), verbose=0).ravel()
    return float(np.mean(np.abs(y_hat - y)))


def overrides(pairs: list[str]) -> dict:
    """Return --set KEY=VALUE pairs as Config overrides, each value read as JSON where it can be (else a string)."""
    changes = {}
    for pair in pairs or []:
        key, _, value = pair.partition("=")
        try:
            changes[key] = json.loads(value)
        except json.JSONDecodeError:
            changes[key] = value
        if isinstance(changes[key], list):
            changes[key] = tuple(changes[key])
    return changes


def write(out: Path, result: dict) -> None:
    """Write the result as JSON (rewritten after each phase, so a run cut short keeps what it measured)."""
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")


def run_real(args) -> int:
    """Run the budgeted colab preset on the packed data and write the JSON."""
    started = budgets.clock()
    config = get_config("colab", **overrides(args.set))
    device, backend = device_and_backend()
    precision = precision_for(config)
    keras.config.set_dtype_policy(POLICIES[precision])
    keras.utils.set_random_seed(config.seed)
    data = load_pack(args.real)
    if data["X"].shape[1] != config.image_size:
        raise SystemExit(f"gpu_check: {args.real} holds {data['X'].shape[1]} px images; the config says "
                         f"{config.image_size} (pack with --size {config.image_size}, or --set image_size=...)")
    report: list[str] = []
    result = {"device": device, "backend": backend, "command": " ".join(sys.argv), "preset": "colab",
              "overrides": overrides(args.set), "precision": precision, "minutes": args.minutes,
              "data": data["meta"] | {"packed": str(args.real), "n": {k: len(v) for k, v in data["splits"].items()}},
              "load_seconds": budgets.clock() - started, "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    left = args.minutes - RESERVE_MINUTES - (budgets.clock() - started) / 60
    autoencoder, result["pretrain"] = pretrain_phase(config, data, PRETRAIN_SHARE * left, report)
    result["budget_lines"] = report
    write(args.out, result)
    left = args.minutes - RESERVE_MINUTES - (budgets.clock() - started) / 60
    regressor, result["train"] = train_phase(config, data, paper.encoder_of(autoencoder), left, report)
    X, y = ({n: data[k][data["splits"][n]] for n in SPLITS} for k in ("X", "y"))
    result |= {"val_mae": mae(regressor, X["val"], y["val"], config.reg_batch_size),
               "test_mae": mae(regressor, X["test"], y["test"], config.reg_batch_size) if len(y["test"]) else None,
               "val_mae_mean_predictor": float(np.mean(np.abs(y["val"] - np.mean(y["train"])))),
               "wall_seconds": budgets.clock() - started, "budget_lines": report}
    write(args.out, result)
    print("\n".join(report))
    print(json.dumps({k: result[k] for k in ("device", "precision", "val_mae", "test_mae", "wall_seconds")}))
    return 0
