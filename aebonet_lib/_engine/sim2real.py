"""Sim-to-real: a model trained only on phantoms, tested on real radiographs (chapter 7).

The phantom earns its place as the course's offline dataset only if what a network learns on
it is true of real hands. The test: train AE-BoNet (or the from-scratch control) on phantoms
alone, then predict the bone age of the real RSNA images of the paper's validation and test
splits, beside the median predictor (the training labels' median for every child, the best
constant under MAE), which every model must beat. No real label is used in training.

Which recipe is the headline is decided on the real *training* split, which no phantom-trained
model learns from (it gives only the median the floor predicts), by a rule fixed before any
model was scored: the recipe with the lowest MAE there, averaged over its seeds (`choose`).
Its test rows are then read first, and val second; neither steered the choice.

A recipe (`Recipe`) says how the phantom-trained model is made: the preset (size, width,
epochs), whether the autoencoder is pretrained on the phantoms first, and what both sides'
images go through (percentile normalization and CLAHE, `data.preprocess`) and whether
training augments them (`data.pipeline.augment_batch`). The command behind each shipped
row is `benchmarks/phantom_realism.py train`.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from aebonet_lib import phantom
from aebonet_lib._engine import predict, records
from aebonet_lib._engine import runner as training
from aebonet_lib._engine.files import atomic_write, read_json, write_json
from aebonet_lib.config import PAPER_SPLIT, get_config
from aebonet_lib.data.loading import BoneAgeData, load_data
from aebonet_lib.errors import AebonetError
from aebonet_lib.evaluation import metrics

SPLITS = ("train", "test", "val")  # train: the selection set (no phantom-trained model learns from it)
RESULTS = Path(__file__).resolve().parents[1] / "results" / "phantom"
RESULTS_CSV = RESULTS / "sim2real.csv"  # benchmarks/phantom_realism.py train ..., then collect
PREDICTIONS_CSV = RESULTS / "sim2real_predictions.csv.gz"  # written by the same collect
PRETRAINING_CSV = RESULTS / "label_efficiency.csv"  # chapter 7's third arm: pretrained on phantoms, fine-tuned on real labels


@dataclass(frozen=True)
class Recipe:
    """Hold how a phantom-trained model is made: preset, pretraining, preprocessing, augmentation, seed."""

    preset: str = "rsna-class"
    pretrain: bool = False  # pretrain the autoencoder on the phantoms first (AE-BoNet), else the scratch control
    clahe: bool = False
    normalize: bool = False
    augment: bool = False
    seed: int = 0
    style: str = "raw"  # the phantoms' style (phantom.STYLES), when `run` writes them

    def name(self) -> str:
        """Return a short name such as 'aebonet-norm-clahe-aug-s0' (prefixed by preset and style unless the defaults)."""
        parts = [self.preset] * (self.preset != Recipe.preset) + [self.style] * (self.style != Recipe.style)
        parts += ["aebonet" if self.pretrain else "scratch"]
        parts += ["norm"] * self.normalize + ["clahe"] * self.clahe + ["aug"] * self.augment
        return "-".join(parts + [f"s{self.seed}"])


def load_phantoms(folder: str | Path, recipe: Recipe) -> BoneAgeData:
    """Load a phantom dataset folder (written by `aebonet phantom`) at the recipe's size and preprocessing."""
    config = get_config(recipe.preset)
    return load_data(folder, config.image_size, seed=0, split=config.split, clahe=recipe.clahe,
                     normalize=recipe.normalize, progress=False)


def load_real(real_dir: str | Path, image_size: int, clahe: bool, normalize: bool) -> BoneAgeData:
    """Load the real set with the paper's split (seed 0), prepared as a model's training images were."""
    return load_data(real_dir, image_size, seed=0, split=PAPER_SPLIT, clahe=clahe, normalize=normalize, progress=False)


def train_on_phantoms(phantoms: BoneAgeData, recipe: Recipe, out_dir: str | Path) -> Path:
    """Pretrain (if the recipe says so) and train a regressor on phantoms only; return its model.keras (resumes)."""
    out_dir = Path(out_dir)
    config = get_config(recipe.preset, augment=recipe.augment, seed=recipe.seed)
    encoder = None
    if recipe.pretrain:
        pretrain_dir = out_dir / "pretrain"
        training.pretrain(phantoms, config, pretrain_dir, resume=pretrain_dir.exists(), progress=False)
        encoder = pretrain_dir / "encoder.keras"
    run_dir = out_dir / "regressor"
    training.train(phantoms, config, run_dir, backbone="aebonet" if encoder else "scratch", encoder=encoder,
                   resume=run_dir.exists(), progress=False)
    return run_dir / "model.keras"


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Return Pearson's r, or NaN when either side is constant (a model that predicts one age)."""
    return float(np.corrcoef(a, b)[0, 1]) if np.std(a) > 0 and np.std(b) > 0 else float("nan")


def predict_real(model, real: BoneAgeData) -> dict[str, np.ndarray]:
    """Return a loaded regressor's predicted ages (months) for each real split in SPLITS."""
    return {split: predict.predict_arrays(model, real.X[real.splits[split]]) for split in SPLITS}


def transfer_measures(real: BoneAgeData, predictions: dict[str, np.ndarray], n_boot: int = 2000) -> dict:
    """Return, per split, the MAE (95 % CI), the median predictor's, their paired difference and the correlation with age."""
    median = float(np.median(real.y[real.splits["train"]]))
    result = {}
    for split, y_hat in predictions.items():
        y = real.y[real.splits[split]]
        floor = np.full(len(y), median, np.float32)
        gain = metrics.paired_bootstrap(y, y_hat, floor, n_boot=n_boot)
        result[split] = {**metrics.mae_with_ci(y, y_hat, n_boot=n_boot), "median_predictor_mae": metrics.mae(y, floor),
                         "minus_median_predictor": gain["mae_difference"], "minus_low": gain["ci95"][0],
                         "minus_high": gain["ci95"][1], "corr_with_age": correlation(y, y_hat),
                         "predicted_sd": float(np.std(y_hat))}
    return result


def predictions_table(real: BoneAgeData, predictions: dict[str, np.ndarray]) -> pd.DataFrame:
    """Return one row per real image predicted: split, id, true and predicted age."""
    return pd.concat([pd.DataFrame({"split": split, "id": real.ids[real.splits[split]],
                                    "y": real.y[real.splits[split]], "y_hat": y_hat})
                      for split, y_hat in predictions.items()], ignore_index=True)


def run(phantom_dir: str | Path, real_dir: str | Path, recipe: Recipe, out_dir: str | Path, n: int = 3000) -> dict:
    """Train on the phantoms in `phantom_dir` with `recipe`, test on the real set; write and return out_dir/sim2real.json.

    Without a dataset in `phantom_dir`, first write `n` phantoms there (256 px, seed 0, the recipe's style).
    """
    out_dir, phantom_dir = Path(out_dir), Path(phantom_dir)
    if not (phantom_dir / phantom.LABELS_CSV).is_file():
        phantom.write_dataset(phantom_dir, n, size=256, seed=0, style=recipe.style, progress=False)
    start = time.perf_counter()
    phantoms = load_phantoms(phantom_dir, recipe)
    model = train_on_phantoms(phantoms, recipe, out_dir)
    seconds = time.perf_counter() - start
    regressor, meta = predict.load_regressor(model)
    real = load_real(real_dir, meta.params.image_size, recipe.clahe, recipe.normalize)
    predictions = predict_real(regressor, real)
    phantom_val = phantoms.splits["val"]
    result = {"recipe": dataclasses.asdict(recipe), "name": recipe.name(), "phantoms": str(phantom_dir),
              "n_phantoms": len(phantoms.y), "train_seconds": round(seconds, 1),
              "phantom_val_mae": metrics.mae(phantoms.y[phantom_val],
                                             predict.predict_arrays(regressor, phantoms.X[phantom_val])),
              **transfer_measures(real, predictions), **records.git_state()}
    with atomic_write(out_dir / "predictions.csv.gz", "wb") as f:
        predictions_table(real, predictions).to_csv(f, index=False, compression="gzip")
    write_json(out_dir / "sim2real.json", result)
    return result


def result_rows(result: dict) -> list[dict]:
    """Return one table row per real split of a sim2real.json result (a model trained on real labels has no recipe)."""
    recipe = {**dataclasses.asdict(Recipe()), **result["recipe"]} if result["recipe"] else {"preset": None}
    return [{"name": result["name"], **recipe, "n_phantoms": result["n_phantoms"], "split": split,
             "command": result.get("command"), "commit": result.get("commit"), "dirty": result.get("dirty"),
             "train_seconds": result.get("train_seconds"),
             "phantom_val_mae": result["phantom_val_mae"], **result[split]} for split in SPLITS if split in result]


def recipe_of(name: str) -> str:
    """Return a row's recipe without its seed, such as 'aebonet-norm-clahe-aug' for 'aebonet-norm-clahe-aug-s2'."""
    return name.rsplit("-s", 1)[0]


def choose(table: pd.DataFrame) -> str:
    """Return the phantom-trained recipe with the lowest MAE on the real training split, averaged over its seeds."""
    rows = table[table.preset.notna() & (table.split == "train")]
    if rows.empty:
        raise AebonetError("no phantom-trained row scored on the real training split: run "
                           "`benchmarks/phantom_realism.py train` first, then `collect`")
    return rows.groupby(rows.name.map(recipe_of)).mae.mean().idxmin()


def collect(paths: list[str | Path]) -> pd.DataFrame:
    """Return the table of several sim2real results (run folders holding sim2real.json, or JSON files), one row per split."""
    files = [Path(p) / "sim2real.json" if Path(p).is_dir() else Path(p) for p in paths]
    table = pd.DataFrame([row for path in files for row in result_rows(read_json(path))])
    first = [c for c in ["name", *dataclasses.asdict(Recipe()), "n_phantoms", "split", "n", "mae", "ci_low", "ci_high",
                         "median_predictor_mae", "minus_median_predictor", "minus_low", "minus_high", "corr_with_age",
                         "predicted_sd", "phantom_val_mae", "train_seconds", "command", "commit", "dirty"]
             if c in table.columns]
    return table[first + [c for c in table.columns if c not in first]]


def collect_predictions(paths: list[str | Path]) -> pd.DataFrame:
    """Return the per-image predictions of several run folders (each holding predictions.csv.gz), with the run's name."""
    folders = [Path(p) for p in paths if (Path(p) / "predictions.csv.gz").is_file()]
    frames = [pd.read_csv(folder / "predictions.csv.gz", dtype={"id": str})
              .assign(name=read_json(folder / "sim2real.json")["name"]) for folder in folders]
    return pd.concat(frames, ignore_index=True)[["name", "split", "id", "y", "y_hat"]]


def pooled(predictions: pd.DataFrame, recipe: str, split: str, n_boot: int = 2000, seed: int = 0) -> dict:
    """Return a recipe's MAE on a split over all its seeds, and its MAE minus the median predictor's, each with a
    95 % interval that resamples seeds and images together (metrics.two_level_bootstrap)."""
    rows = predictions[(predictions.name.map(recipe_of) == recipe) & (predictions.split == split)]
    if rows.empty:
        raise AebonetError(f"no predictions of recipe {recipe!r} on the {split} split: collect its runs first")
    median = float(np.median(predictions[(predictions.split == "train")].drop_duplicates("id").y))
    wide = rows.pivot(index="name", columns="id", values="y_hat")
    y = rows.drop_duplicates("id").set_index("id").y[wide.columns].to_numpy()
    errors = np.abs(wide.to_numpy() - y)
    gains = errors - np.abs(median - y)
    result = {"recipe": recipe, "split": split, "seeds": len(wide), "n": len(y),
              "median_predictor_mae": float(np.mean(np.abs(median - y)))}
    for name, values in (("mae", errors), ("minus_median_predictor", gains)):
        low, high = np.percentile(metrics.two_level_bootstrap(values, n_boot, seed), [2.5, 97.5])
        result |= {name: float(values.mean()), f"{name}_low": float(low), f"{name}_high": float(high)}
    return result


def read_results(path: str | Path = RESULTS_CSV) -> pd.DataFrame:
    """Return the shipped sim-to-real table (results/phantom/sim2real.csv)."""
    return pd.read_csv(path)


def read_predictions(path: str | Path = PREDICTIONS_CSV) -> pd.DataFrame:
    """Return the shipped per-image predictions of the sim-to-real runs (results/phantom/sim2real_predictions.csv.gz)."""
    return pd.read_csv(path, dtype={"id": str})


def read_pretraining(path: str | Path = PRETRAINING_CSV) -> pd.DataFrame:
    """Return the shipped label-efficiency runs with phantom, real and no pretraining (results/phantom/label_efficiency.csv)."""
    return pd.read_csv(path)


def describe(row) -> str:
    """Return a recipe in words, such as 'AE-BoNet, equalised, augmented' (a model trained on real labels says so)."""
    if not isinstance(row.preset, str):
        return f"{'AE-BoNet' if 'aebonet' in row.name else 'from scratch'}, trained on the real labels"
    words = ["AE-BoNet" if row.pretrain else "from scratch"] + [row.preset] * (row.preset != Recipe.preset)
    words += [f"{row.style} phantoms"] * (getattr(row, "style", Recipe.style) != Recipe.style)
    words += ["equalised"] * bool(row.clahe and row.normalize) + ["augmented"] * bool(row.augment)
    return ", ".join(words)
