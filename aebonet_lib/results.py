"""Results: the paper's tables, the published results on RSNA, and this project's shipped results.

Every number typed into this module comes from the publication named in the same row
(the paper's own tables as summarised in ../shared/PAPER.md). Where the paper gives no
figure the cell is NaN and the `note` column says why: an empty cell is honest, a guessed
one is not. Published figures keep
their own metric (MAE, MAD, RMS) and unit, because they are not the same measurement.
Chapters 3 and 6 show these tables; `aebonet report` writes them with `save_table`.

The shipped results a chapter reads (the real-data runs in `results/rsna-cpu`, the
label-efficiency grid in `results/label_efficiency`, sim-to-real and the phantom's realism in
`results/phantom`) are collected by the engine (`aebonet_lib._engine`); the functions below
the tables are the door a chapter reads them through.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from aebonet_lib import paper
from aebonet_lib._engine.baselines import BASELINES
from aebonet_lib._engine.files import read_json, read_table, save_table
from aebonet_lib._engine.grid import THUMBNAIL
from aebonet_lib._engine.grid_results import POWER, load_summary, verdict_line, verdicts
from aebonet_lib._engine.modelfiles import read_sidecar
from aebonet_lib._engine.realism import THUMB, realism_figure, shipped_realism
from aebonet_lib._engine.rsna_results import (
    errors_by,
    format_mae,
    label_efficiency,
    label_efficiency_long,
    load,
    main_run,
    mean_baseline,
    paired,
    run_metrics,
)
from aebonet_lib._engine.sim2real import (
    Recipe,
    choose,
    describe,
    pooled,
    read_predictions,
    read_pretraining,
    read_results,
    recipe_of,
)
from aebonet_lib.config import PRESETS
from aebonet_lib.errors import AebonetError
from aebonet_lib.evaluation.metrics import format_ci

PAPER = "Sirati-Amsheh, Shabaninia & Chaparian, J Biomed Phys Eng 2025, doi:10.31661/jbpe.v0i0.2304-1609"
NO_ROW = "named in the paper's text, but Table 5 has no row for it"
THIS_PROJECT = "this project"
RSNA_TEST_200 = "RSNA 2017 challenge test set (200 images)"

# Table 4: published results on RSNA data, each with its own metric and unit.
PUBLISHED: list[dict] = [
    {"method": "Wibisono et al. 2019", "metric": "MAE", "value": 14.78, "unit": "months", "data": "RSNA",
     "source": f"as listed in Table 4 of {PAPER}", "note": ""},
    {"method": "Gao et al. 2020", "metric": "MAE", "value": 9.997, "unit": "months", "data": "RSNA",
     "source": f"as listed in Table 4 of {PAPER}", "note": ""},
    {"method": "AE-BoNet (Sirati-Amsheh et al. 2025)", "metric": "MAE", "value": paper.TEST_MAE, "unit": "months",
     "data": "RSNA, 200 test images drawn from the 12,611 training images", "source": PAPER, "note": "abstract"},
    {"method": "RSNA 2017 challenge, top five", "metric": "MAD", "value": 4.2, "value_low": 4.2, "value_high": 4.5,
     "unit": "months", "data": RSNA_TEST_200,
     "source": "Halabi et al., Radiology 2019;290(2):498-503, doi:10.1148/radiol.2018180736",
     "note": "best five: 4.2, 4.4, 4.4, 4.5, 4.5; value is the winner"},
    {"method": "Deeplasia", "metric": "MAD", "value": 3.87, "unit": "months", "data": RSNA_TEST_200,
     "source": "Rassmann et al., Pediatric Radiology 2024, doi:10.1007/s00247-023-05789-1", "note": ""},
    {"method": "BoneXpert v3", "metric": "RMS error", "value": 0.45, "unit": "years",
     "data": f"{RSNA_TEST_200}, against the average of six manual ratings",
     "source": "Martin et al., Scientific Reports 2022;12:6388, doi:10.1038/s41598-022-10292-y", "note": ""},
    {"method": "one radiologist against the reference", "metric": "MAD", "value": np.nan, "value_low": 4.8,
     "value_high": 7.0, "unit": "months", "data": RSNA_TEST_200,
     "source": "Table 1 of the Deeplasia-GE study, Scientific Reports 2025, doi:10.1038/s41598-025-20148-w",
     "note": "estimated range over single raters, not one figure"},
]
TABLE4_COLUMNS = ["metric", "value", "value_low", "value_high", "unit", "value_months", "data", "source", "measured_by", "note"]

# Table 5: backbones with the same head (paper, MAE in months at 256 x 256).
BACKBONE_NAMES = {"aebonet": "AE-BoNet", "mobilenet": "MobileNet", "xception": "Xception", "inceptionv3": "InceptionV3",
                  "vgg16": "VGG16", "resnet50": "ResNet50", "scratch": "from scratch (control)"}
# The paper's Table 5 in full: (MAE in months, MSE in months squared) at each input size.
PAPER_TABLE5 = paper.TABLE5
PAPER_TABLE5_MAE_256 = {name: mae for name, (mae, _) in PAPER_TABLE5[256].items()}
# The paper's Table 2: each autoencoder stage's epochs, and its end-of-stage training MSE and "Accuracy".
PAPER_TABLE2 = [row[1:] for row in paper.TABLE2]




def experiment_table(table: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Return an experiment's table in words: each arm's MAE and its paired difference from `baseline`."""
    rows = table.reset_index()
    if "fraction" in rows.columns:
        rows["labels used"] = [f"{f:.0%}" for f in rows.fraction]
    keys = [c for c in ("labels used", "arm") if c in rows.columns]
    shown = pd.DataFrame({
        **({"labels": rows.n_labels} if "n_labels" in rows.columns else {}),
        "MAE, months (95% CI)": [format_ci(r.mae, r.ci_low, r.ci_high) for r in rows.itertuples()],
        f"minus {baseline} (95% CI)": [format_ci(r.difference, r.difference_ci_low, r.difference_ci_high)
                                       for r in rows.itertuples()],
        "p": ["" if np.isnan(p) else f"{p:.3f}" if p >= 0.001 else "<0.001" for p in rows.p_value.astype(float)],
        "beats the median": rows.beats_median_predictor.map({True: "yes", False: "no"}),
    })
    return shown.set_index(pd.MultiIndex.from_frame(rows[keys]) if len(keys) > 1 else rows[keys[0]])


def pretraining_direction(low: float, high: float) -> str:
    """Return what a 95 % interval of MAE(pretrained) - MAE(scratch) says, in words."""
    return "pretraining helped" if high < 0 else "pretraining hurt" if low > 0 else "no clear difference"


def in_months(value: float, unit: str) -> float:
    """Return a figure in months, converting from years where needed."""
    return value * 12 if unit == "years" else value


def published_results() -> pd.DataFrame:
    """Return the published RSNA results of Table 4, one row per method, with sources."""
    table = pd.DataFrame(PUBLISHED).reindex(columns=["method", *TABLE4_COLUMNS])
    table["value_months"] = [in_months(v, u) for v, u in zip(table.value, table.unit)]
    table["measured_by"] = "paper"
    return table.fillna({"note": ""}).set_index("method")


def optional_column(frame: pd.DataFrame, name: str, default=np.nan) -> np.ndarray:
    """Return a column's values, or `default` repeated when the column is absent."""
    return frame[name].to_numpy() if name in frame.columns else np.full(len(frame), default, dtype=object)


def require_columns(frame: pd.DataFrame, columns: list[str], what: str) -> None:
    """Raise AebonetError when `frame` lacks one of `columns`."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise AebonetError(f"{what}: missing column(s) {missing}; pass runs_table(...) or a DataFrame with columns {columns}")


def our_table4_rows(our_results: pd.DataFrame) -> pd.DataFrame:
    """Return our measured MAEs as Table 4 rows, marked as measured by this project on their data."""
    require_columns(our_results, ["method", "mae", "data"], "table4 our_results")
    rows = pd.DataFrame({
        "method": [f"{BACKBONE_NAMES.get(str(m).lower(), m)}, {THIS_PROJECT}" for m in our_results.method],
        "metric": "MAE", "value": our_results.mae.to_numpy(dtype=float),
        "value_low": optional_column(our_results, "mae_ci_low").astype(float),
        "value_high": optional_column(our_results, "mae_ci_high").astype(float),
        "unit": "months", "data": our_results.data.to_numpy(), "source": THIS_PROJECT, "measured_by": THIS_PROJECT,
        "note": "interval: 95 % bootstrap over test images",
    })
    rows["value_months"] = rows.value
    return rows.set_index("method").reindex(columns=TABLE4_COLUMNS)


def table4(our_results: pd.DataFrame | None = None) -> pd.DataFrame:
    """Return Table 4, published results on RSNA, with our measured rows appended (chapter 6)."""
    table = published_results()
    if our_results is None or our_results.empty:
        return table
    return pd.concat([table, our_table4_rows(our_results.reset_index(drop=True))])


def paper_table5() -> pd.DataFrame:
    """Return the paper's Table 5 rows: backbone and input size -> MAE and MSE in months (NaN for ResNet50, which has no row)."""
    rows = []
    for size in (256, 450):
        for name in (name for key, name in BACKBONE_NAMES.items() if key != "scratch"):
            mae, mse = PAPER_TABLE5[size].get(name, (np.nan, np.nan))
            rows.append({"method": name, "image_size": size, "paper_mae": mae, "paper_mse": mse,
                         "note": NO_ROW if np.isnan(mae) else ""})
    return pd.DataFrame(rows)


def our_table5_rows(our_results: pd.DataFrame) -> pd.DataFrame:
    """Return our measured MAEs keyed by backbone display name and image size."""
    require_columns(our_results, ["method", "image_size", "mae"], "table5 our_results")
    mae = our_results.mae.to_numpy(dtype=float)
    low = optional_column(our_results, "mae_ci_low").astype(float)
    high = optional_column(our_results, "mae_ci_high").astype(float)
    return pd.DataFrame({
        "method": [BACKBONE_NAMES.get(str(m).lower(), m) for m in our_results.method],
        "image_size": our_results.image_size.astype(int).to_numpy(),
        "ours_mae": mae,
        "ours_mae_ci": [format_ci(*figures) for figures in zip(mae, low, high)],
        "ours_data": optional_column(our_results, "data", ""),
    })


def table5(our_results: pd.DataFrame | None = None) -> pd.DataFrame:
    """Return Table 5, backbones at 256 and 450 pixels: the paper's MAE beside ours where we ran them."""
    table = paper_table5()
    if our_results is not None and not our_results.empty:
        table = table.merge(our_table5_rows(our_results.reset_index(drop=True)), on=["method", "image_size"], how="outer")
    rank = table.method.map({name: i for i, name in enumerate(BACKBONE_NAMES.values())}).fillna(len(BACKBONE_NAMES))
    table = table.assign(rank=rank).sort_values(["image_size", "rank"], kind="stable")
    columns = ["paper_mae", "paper_mse", "ours_mae", "ours_mae_ci", "ours_data", "note"]
    return table.reindex(columns=["image_size", "method", *columns]).fillna({"note": ""}).set_index(["image_size", "method"])


def paper_table2() -> pd.DataFrame:
    """Return the paper's Table 2: each stage's epochs and its end-of-stage training MSE (loss) and "Accuracy"."""
    epochs, loss, accuracy = zip(*PAPER_TABLE2)
    if tuple(epochs) != PRESETS["paper"].ae_stages:
        raise AebonetError(f"the paper preset's stages {PRESETS['paper'].ae_stages} differ from Table 2's {epochs}")
    return pd.DataFrame({"stage": range(1, len(epochs) + 1), "paper_epochs": epochs, "paper_loss": loss,
                         "paper_accuracy": accuracy, "note": ""})


def table2(stages: str | os.PathLike | pd.DataFrame | None = None) -> pd.DataFrame:
    """Return Table 2, autoencoder training stages (numbered from 1): the paper's rows beside ours (chapter 3)."""
    table = paper_table2()
    if stages is not None:
        ours = read_table(stages, "give the stages.csv written by `aebonet pretrain`")
        require_columns(ours, ["stage"], "stages")
        ours = ours.rename(columns=lambda c: c if c == "stage" else f"ours_{c}")
        table = table.merge(ours, on="stage", how="outer")
    columns = [c for c in table.columns if c != "note"] + ["note"]
    return table[columns].fillna({"note": ""}).set_index("stage")


def read_run(run: dict | str | os.PathLike) -> dict:
    """Return one run's figures: a dict as given, or metrics.json (a file or its run folder) with model.json beside it."""
    if isinstance(run, dict):
        return dict(run)
    path = Path(run)
    path = path / "metrics.json" if path.is_dir() else path
    record = {"run": path.parent.name, **read_json(path)}
    if (path.parent / "model.json").is_file():
        meta = read_sidecar(path.parent / "model.json")
        record.setdefault("method", meta.backbone)
        record.setdefault("image_size", meta.image_size)
    return record


def run_row(record: dict) -> dict:
    """Return one runs_table row from a run's metrics (keys mae, mae_ci95, n at least)."""
    missing = [k for k in ("mae", "mae_ci95", "n") if k not in record]
    if missing:
        raise AebonetError(f"run {record.get('run', '?')}: metrics lack {missing}; rerun `aebonet evaluate` on it")
    low, high = record["mae_ci95"]
    return {
        "run": record.get("run", ""), "method": record.get("method") or record.get("backbone") or "",
        "data": record.get("data", ""), "image_size": record.get("image_size", np.nan), "n": int(record["n"]),
        "mae": float(record["mae"]), "mae_ci_low": float(low), "mae_ci_high": float(high),
        "MAE (95% CI)": format_ci(record["mae"], low, high),
        "rmse": record.get("rmse", np.nan), "bias": record.get("bias", np.nan),
    }


def runs_table(runs: list) -> pd.DataFrame:
    """Return our runs, one row each, with MAE and its 95 % interval written like "7.9 (7.1-8.8)" (chapter 6).

    Each run is a dict (keys mae, mae_ci95, n; optional run, method, data, image_size, rmse, bias),
    a metrics.json path, or a run folder holding one. The result feeds table4 and table5.
    """
    if not runs:
        raise AebonetError("runs_table: no runs given; pass run folders, metrics.json paths or dicts")
    rows = [run_row(read_run(run)) for run in runs]
    for i, row in enumerate(rows):
        row["run"] = row["run"] or f"run {i + 1}"
    return pd.DataFrame(rows).set_index("run")

