"""`aebonet report`: the paper's tables and figures for finished runs, ours beside the published ones (chapter 6).

A pretraining run (stages.csv, history.csv) gives Table 2 and its curves (the paper's
Figure 3 for the autoencoder). A training run gives its curves (Figure 3); once
`aebonet evaluate` has written metrics.json and predictions.csv into it, it also gives a
row of our runs table, of Tables 4 and 5 (marked as measured by this project), the
predicted-against-true scatter (Figure 4), a Bland-Altman plot and the error by age band.
Runs evaluated on the same images are compared two by two with a paired bootstrap.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from aebonet_lib import results
from aebonet_lib._engine.files import read_json, require_empty_dir
from aebonet_lib.errors import AebonetError
from aebonet_lib.evaluation import metrics, plots

REPORTABLE = ("history.csv", "stages.csv", "metrics.json")


def check_run(run_dir: str | Path) -> Path:
    """Return a run folder as a Path, refusing one that is missing or holds nothing to report."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise AebonetError(f"run folder {run_dir}: not found; give folders written by aebonet pretrain or train")
    if not any((run_dir / name).is_file() for name in REPORTABLE):
        raise AebonetError(f"run folder {run_dir}: nothing to report (no {', '.join(REPORTABLE)}); "
                           "give a run written by aebonet pretrain or train (evaluated with aebonet evaluate)")
    return run_dir


def run_labels(run_dirs: list[Path]) -> list[str]:
    """Return a unique short name per run for file names: the folder's name, with its parent's when names repeat."""
    names = [d.name for d in run_dirs]
    names = [f"{d.parent.name}-{d.name}" if names.count(d.name) > 1 else d.name for d in run_dirs]
    return [name if names.count(name) == 1 else f"{name}-{i + 1}" for i, name in enumerate(names)]


def is_evaluated(run_dir: Path) -> bool:
    """Return True when `aebonet evaluate` has written metrics.json and predictions.csv into the run folder."""
    return (run_dir / "metrics.json").is_file() and (run_dir / "predictions.csv").is_file()


def read_predictions(run_dir: Path) -> pd.DataFrame:
    """Return a run's predictions.csv sorted by image id, with `male` as 1.0 boy, 0.0 girl, NaN unknown."""
    table = pd.read_csv(run_dir / "predictions.csv", dtype={"id": str, "sex": str}, keep_default_na=False)
    table["male"] = table.sex.map({"M": 1.0, "F": 0.0}).astype(float)
    return table.sort_values("id", ignore_index=True)


def data_description(run_dir: Path, result: dict) -> str:
    """Return which data and split a run was tested on, such as "phantom:1500, test split"."""
    record_path = run_dir / "config.json"
    source = read_json(record_path).get("data", "") if record_path.is_file() else ""
    return f"{source}, {result.get('split', '?')} split" if source else f"{result.get('split', '?')} split"


def run_record(run_dir: Path, label: str) -> dict:
    """Return an evaluated run's metrics with its name, backbone, image size and data, for results.runs_table."""
    record = results.read_run(run_dir)
    return record | {"run": label, "data": data_description(run_dir, record)}


# Tables


def runs_table(evaluated: dict[str, Path]) -> pd.DataFrame:
    """Return our evaluated runs, one row each, with MAE and its 95 % interval."""
    return results.runs_table([run_record(run_dir, label) for label, run_dir in evaluated.items()])


def same_images(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    """Return True when two prediction tables hold the same images with the same true ages."""
    return a.id.equals(b.id) and np.allclose(a.true, b.true)


def paired_row(label_a: str, a: pd.DataFrame, label_b: str, b: pd.DataFrame, n_boot: int, seed: int) -> dict:
    """Return one paired comparison: MAE(a) - MAE(b) on the same images, its 95 % interval and p-value."""
    result = metrics.paired_bootstrap(a.true, a.predicted, b.predicted, n_boot, seed)
    low, high = result["ci95"]
    return {"run_a": label_a, "run_b": label_b, "n": result["n"], "mae_a": result["mae_a"], "mae_b": result["mae_b"],
            "difference": result["mae_difference"], "ci_low": low, "ci_high": high, "p_value": result["p_value"],
            "MAE difference (95% CI)": results.format_ci(result["mae_difference"], low, high, digits=2)}


def paired_table(predictions: dict[str, pd.DataFrame], n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Return a paired bootstrap for every two runs tested on the same images (empty when none are)."""
    rows = [paired_row(a, predictions[a], b, predictions[b], n_boot, seed)
            for a, b in itertools.combinations(predictions, 2) if same_images(predictions[a], predictions[b])]
    return pd.DataFrame(rows).set_index(["run_a", "run_b"]) if rows else pd.DataFrame()


def write_run_tables(out_dir: Path, evaluated: dict[str, Path], predictions: dict[str, pd.DataFrame],
                     n_boot: int, seed: int) -> list[Path]:
    """Write our runs table, Tables 4 and 5 with our rows, and the paired comparisons; return the paths."""
    ours = runs_table(evaluated) if evaluated else None
    written = list(results.save_table(results.table4(ours), out_dir / "table4"))
    written += results.save_table(results.table5(ours), out_dir / "table5")
    if ours is not None:
        written += results.save_table(ours, out_dir / "runs")
    paired = paired_table(predictions, n_boot, seed)
    if not paired.empty:
        written += results.save_table(paired, out_dir / "paired")
    return written


def write_stage_tables(out_dir: Path, pretrain_runs: dict[str, Path]) -> list[Path]:
    """Write Table 2 (the paper's stages beside ours) for each pretraining run; return the paths."""
    written = []
    for label, run_dir in pretrain_runs.items():
        written += results.save_table(results.table2(run_dir / "stages.csv"), out_dir / f"table2_{label}")
    return written


def write_band_tables(out_dir: Path, predictions: dict[str, pd.DataFrame], n_boot: int, seed: int) -> list[Path]:
    """Write each evaluated run's MAE per age band with 95 % intervals; return the paths."""
    written = []
    for label, table in predictions.items():
        written += results.save_table(metrics.mae_by_band(table.true, table.predicted, n_boot, seed),
                                     out_dir / f"age_bands_{label}")
    return written


# Figures


def save_and_close(fig, path: Path) -> Path:
    """Save a figure as PNG and free its memory; return the path."""
    plots.save_figure(fig, path)
    plt.close(fig)
    return path


def stage_ends(run_dir: Path) -> list[int] | None:
    """Return the last epoch of each pretraining stage from stages.csv, or None for a run without stages."""
    path = run_dir / "stages.csv"
    return pd.read_csv(path)["end_epoch"].tolist() if path.is_file() and path.stat().st_size else None


def write_history_figures(out_dir: Path, runs: dict[str, Path]) -> list[Path]:
    """Write the training and validation curves (Figure 3) of each run with a history.csv; return the paths."""
    return [save_and_close(plots.plot_history(run_dir / "history.csv", stage_ends(run_dir)), out_dir / f"curves_{label}.png")
            for label, run_dir in runs.items() if (run_dir / "history.csv").is_file()]


def write_prediction_figures(out_dir: Path, predictions: dict[str, pd.DataFrame]) -> list[Path]:
    """Write Figure 4 (predicted against true), Bland-Altman and error by age band for each evaluated run."""
    written = []
    for label, table in predictions.items():
        y, y_hat, male = table.true, table.predicted, table.male
        written.append(save_and_close(plots.plot_predictions(y, y_hat, male), out_dir / f"scatter_{label}.png"))
        written.append(save_and_close(plots.plot_bland_altman(y, y_hat), out_dir / f"bland_altman_{label}.png"))
        by_sex = None if male.isna().any() else male  # split each band by sex when every sex is known
        written.append(save_and_close(plots.plot_error_by_band(y, y_hat, by_sex), out_dir / f"error_by_band_{label}.png"))
    return written


def report(runs: list[str | Path], out_dir: str | Path, n_boot: int = 2000, seed: int = 0) -> list[Path]:
    """Write the tables (CSV and Markdown) and figures (PNG) for finished runs into out_dir; return the files (chapter 6).

    Tables: runs (our evaluated runs with 95 % intervals), table2_RUN per pretraining run,
    table4 and table5 (published figures, ours marked as measured by this project),
    age_bands_RUN, and paired (every two runs tested on the same images). Figures:
    curves_RUN (Figure 3), scatter_RUN (Figure 4), bland_altman_RUN, error_by_band_RUN.
    out_dir must be new or empty.
    """
    run_dirs = [check_run(run) for run in runs]
    out_dir = require_empty_dir(out_dir, "--out")
    by_label = dict(zip(run_labels(run_dirs), run_dirs))
    evaluated = {label: run_dir for label, run_dir in by_label.items() if is_evaluated(run_dir)}
    predictions = {label: read_predictions(run_dir) for label, run_dir in evaluated.items()}
    pretrain_runs = {label: run_dir for label, run_dir in by_label.items() if (run_dir / "stages.csv").is_file()}
    written = write_run_tables(out_dir, evaluated, predictions, n_boot, seed)
    written += write_stage_tables(out_dir, pretrain_runs) + write_band_tables(out_dir, predictions, n_boot, seed)
    return written + write_history_figures(out_dir, by_label) + write_prediction_figures(out_dir, predictions)
