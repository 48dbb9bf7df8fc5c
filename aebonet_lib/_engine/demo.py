"""The whole course in one call: phantom radiographs, pretraining, AE-BoNet against the control.

`demo` is what `aebonet demo` runs and what the book's first chapter shows: it answers
the paper's question (does autoencoder pretraining help?) on a laptop in minutes,
beside the simplest possible predictor, the training mean.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from aebonet_lib._engine import runner as training
from aebonet_lib._engine.files import atomic_write, require_empty_dir
from aebonet_lib._engine.predict import evaluate
from aebonet_lib.config import get_config
from aebonet_lib.data.loading import BoneAgeData, load_data
from aebonet_lib.evaluation import metrics
from aebonet_lib.results import format_ci


def mean_baseline(data: BoneAgeData, n_boot: int = 2000, seed: int = 0) -> dict:
    """Return the test metrics of predicting the training split's mean bone age for every image."""
    return metrics.mean_predictor(data.y[data.splits["test"]], np.nanmean(data.y[data.splits["train"]]), n_boot, seed)


def median_baseline(data: BoneAgeData, n_boot: int = 2000, seed: int = 0) -> dict:
    """Return the test metrics of predicting the training split's median bone age (the best constant under MAE)."""
    return metrics.median_predictor(data.y[data.splits["test"]], np.nanmedian(data.y[data.splits["train"]]), n_boot, seed)


def demo_table(results: dict[str, dict]) -> pd.DataFrame:
    """Return one row per model: test MAE and MSE (months) with their 95 % bootstrap intervals."""
    rows = [{"model": name, "mae": r["mae"], "mae_low": r["mae_ci95"][0], "mae_high": r["mae_ci95"][1],
             "mse": r["mse"], "mse_low": r["mse_ci95"][0], "mse_high": r["mse_ci95"][1], "n": r["n"]}
            for name, r in results.items()]
    return pd.DataFrame(rows).set_index("model")


def format_comparison(table: pd.DataFrame) -> str:
    """Return the comparison as text: MAE and MSE, each with its interval, such as '7.9 (7.1-8.8)'."""
    shown = pd.DataFrame({
        "test MAE, months (95% CI)": [format_ci(r.mae, r.mae_low, r.mae_high) for r in table.itertuples()],
        "test MSE, months^2 (95% CI)": [format_ci(r.mse, r.mse_low, r.mse_high, digits=0) for r in table.itertuples()],
        "n": table["n"].to_numpy(),
    }, index=table.index)
    return shown.to_string()


def demo(out_dir: str | Path = "runs/demo", seed: int = 0, precision: str | None = None, resume: bool = False,
         cache_root: str | Path | None = None, progress: bool = True) -> pd.DataFrame:
    """Run the whole pipeline on the phantom with the cpu preset and compare AE-BoNet with its controls (chapter 0).

    Generates the phantom data set, pretrains the autoencoder, trains AE-BoNet and the
    from-scratch regressor, evaluates both on the test split and returns their MAE and
    MSE beside predicting the training mean. Runs go to out_dir/{pretrain,aebonet,scratch};
    the table also to out_dir/comparison.csv. `resume=True` continues an interrupted demo.
    """
    out_dir = Path(out_dir)
    if not resume:
        require_empty_dir(out_dir)
    config = get_config("cpu", seed=seed, precision=precision)
    data = load_data(f"phantom:{config.phantom_n}", config.image_size, seed=seed, split=config.split,
                     cache_root=cache_root, progress=progress)
    training.pretrain(data, config, out_dir / "pretrain", resume=resume, progress=progress)
    encoder = out_dir / "pretrain" / "encoder.keras"
    training.train(data, config, out_dir / "aebonet", encoder=encoder, resume=resume, progress=progress)
    training.train(data, config, out_dir / "scratch", backbone="scratch", resume=resume, progress=progress)
    table = demo_table({
        "predict the training mean": mean_baseline(data, seed=seed),
        "from scratch": evaluate(out_dir / "scratch" / "model.keras", data, seed=seed, progress=progress),
        "AE-BoNet": evaluate(out_dir / "aebonet" / "model.keras", data, seed=seed, progress=progress),
    })
    with atomic_write(out_dir / "comparison.csv") as f:
        table.to_csv(f)
    return table
