"""The label-efficiency grid's results: one table of runs, and the summaries chapter 7 reads.

`collect` turns a grid folder (experiments.grid) into `runs.csv` (one row per method,
fraction, seed and split), `predictions_finetune.csv.gz`, `predictions_probes.csv.gz` and
`pretraining.csv` (the reconstruction curves). `summarize` gives each (method, fraction,
split) its MAE over seeds with a 95 % interval that resamples seeds and images together,
its difference from a baseline with the same interval, and the smallest difference the
design detects with 80 % power.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from aebonet_lib._engine.files import atomic_write, read_json, write_json
from aebonet_lib.evaluation.metrics import two_level_bootstrap

RUN_COLUMNS = ["method", "fraction", "seed", "steps", "n_labels", "split", "mae", "budget", "wall_s", "commit",
               "dirty"]
POWER = 0.8
Z_POWER = 1.959964 + 0.841621  # normal quantiles: two-sided 5 % test (0.975) plus POWER (0.8)


def finetune_rows(grid: Path) -> tuple[list[dict], list[pd.DataFrame]]:
    """Return the finished fine-tuning runs' rows (one per split) and their predictions."""
    rows, predictions = [], []
    for path in sorted(grid.glob("runs/*/*/*/result.json")):
        result = read_json(path)
        for split, mae in result["mae"].items():
            rows.append({k: result.get(k) for k in RUN_COLUMNS if k not in ("split", "mae")} | {"split": split,
                                                                                                  "mae": mae})
        frame = pd.read_csv(path.parent / "predictions.csv", dtype={"id": str})
        predictions.append(frame.assign(method=result["method"], fraction=result["fraction"], seed=result["seed"]))
    return rows, predictions


def probe_results(grid: Path) -> tuple[list[dict], list[pd.DataFrame]]:
    """Return the probes' rows (with their commit) and predictions."""
    rows, predictions = [], []
    for path in sorted(grid.glob("probes/*.json")):
        record = read_json(path)
        rows += [row | {"budget": None, "commit": record["commit"], "dirty": record["dirty"]} for row in record["rows"]]
        predictions.append(pd.read_csv(path.with_suffix(".csv.gz"), dtype={"id": str}))
    return rows, predictions


def pretraining_curves(grid: Path) -> pd.DataFrame:
    """Return every pretraining run's history: objective, epoch, MSE and SSIM on train and held-out images, seconds."""
    parts = []
    for history in sorted(grid.glob("pretrain/*/history.csv")):
        parts.append(pd.read_csv(history).assign(objective=history.parent.name))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def pretraining_snapshots(grid: Path) -> pd.DataFrame:
    """Return which epoch each objective handed on at each budget, and its held-out MSE."""
    rows = [read_json(p) | {"objective": p.parent.parent.name} for p in sorted(grid.glob("pretrain/*/snapshots/*.json"))]
    return pd.DataFrame(rows)


def collect(grid: str | Path, out: str | Path) -> pd.DataFrame:
    """Write runs.csv, the predictions, the pretraining curves and summary.csv from a grid folder; return runs."""
    grid, out = Path(grid), Path(out)
    finetune, finetune_predictions = finetune_rows(grid)
    probes, probe_predictions = probe_results(grid)
    runs = pd.DataFrame(finetune + probes, columns=RUN_COLUMNS).sort_values(["method", "fraction", "seed", "split"])
    with atomic_write(out / "runs.csv") as f:
        runs.to_csv(f, index=False)
    for name, frames in (("finetune", finetune_predictions), ("probes", probe_predictions)):
        if frames:
            with atomic_write(out / f"predictions_{name}.csv.gz", "wb") as f:
                pd.concat(frames).to_csv(f, index=False, compression="gzip")
    for name, table in (("pretraining", pretraining_curves(grid)), ("snapshots", pretraining_snapshots(grid))):
        with atomic_write(out / f"{name}.csv") as f:
            table.to_csv(f, index=False)
    compute = {p.parent.name: read_json(p) for p in sorted(grid.glob("pretrain/*/done.json"))}
    write_json(out / "pretraining_compute.json", compute)
    with atomic_write(out / "summary.csv") as f:
        with_commits(summarize(out), runs).to_csv(f, index=False)
    return runs


def with_commits(summary: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Add to each summary row the commits (and whether any tree was dirty) of the runs it summarizes."""
    if summary.empty:
        return summary
    made_by = runs.groupby(["method", "fraction", "split"]).agg(
        commits=("commit", lambda c: " ".join(sorted({str(x) for x in c}))), dirty=("dirty", "max")).reset_index()
    return summary.merge(made_by, on=["method", "fraction", "split"], how="left")


# Intervals over seeds and images


def error_matrix(predictions: pd.DataFrame, truth: pd.Series) -> pd.DataFrame:
    """Return absolute errors as a (seed x image id) table from one cell's predictions."""
    table = predictions.pivot_table(index="seed", columns="id", values="predicted")
    return (table - truth.reindex(table.columns)).abs()


def cell_summary(errors: np.ndarray, baseline: np.ndarray | None, n_boot: int, seed: int) -> dict:
    """Return a cell's MAE with its interval, its seeds' spread, and its paired difference from the baseline."""
    boot = two_level_bootstrap(errors, n_boot, seed)
    per_seed = errors.mean(axis=1)
    row = {"seeds": len(errors), "n_images": errors.shape[1], "mae": float(errors.mean()),
           "ci_low": float(np.percentile(boot, 2.5)), "ci_high": float(np.percentile(boot, 97.5)),
           "seed_sd": float(per_seed.std(ddof=1)) if len(per_seed) > 1 else np.nan}
    if baseline is not None:
        difference = two_level_bootstrap(errors - baseline, n_boot, seed + 1)
        row |= {"difference": float((errors - baseline).mean()), "difference_ci_low": float(np.percentile(difference, 2.5)),
                "difference_ci_high": float(np.percentile(difference, 97.5)),
                "detectable_80": float(Z_POWER * difference.std(ddof=1))}
    return row


def summarize(results: str | Path, baselines: dict | None = None, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Return one row per (method, fraction, split): MAE over seeds with its interval, and the paired difference.

    Fine-tuned methods are compared with scratch, probes with the random-encoder probe,
    each on the seeds (label draws) both have, image by image.
    """
    results = Path(results)
    baselines = baselines or {"finetune": "scratch", "probes": "probe-random"}
    rows = []
    for kind, baseline in baselines.items():
        path = results / f"predictions_{kind}.csv.gz"
        if not path.is_file():
            continue
        predictions = pd.read_csv(path, dtype={"id": str})
        truth = truth_of(results, predictions)
        for (fraction, split), cell in predictions.groupby(["fraction", "split"]):
            base = error_matrix(cell[cell.method == baseline], truth[split]) if baseline in set(cell.method) else None
            for method, part in cell.groupby("method"):
                errors = error_matrix(part, truth[split])
                paired = None
                if base is not None and method != baseline:
                    common = errors.index.intersection(base.index)
                    errors, paired = errors.loc[common], base.loc[common, errors.columns].to_numpy()
                rows.append({"kind": kind, "method": method, "fraction": fraction, "split": split,
                             "baseline": baseline if paired is not None else "",
                             **cell_summary(errors.to_numpy(), paired, n_boot, seed)})
    return pd.DataFrame(rows)


def truth_of(results: Path, predictions: pd.DataFrame) -> dict[str, pd.Series]:
    """Return each split's true ages by image id, from the fine-tuning predictions (or the probes' ids)."""
    finetune = results / "predictions_finetune.csv.gz"
    source = pd.read_csv(finetune, dtype={"id": str}) if finetune.is_file() else predictions
    if "true" not in source:
        raise ValueError(f"{results}: no true ages recorded; collect fine-tuning runs first")
    return {split: part.drop_duplicates("id").set_index("id")["true"] for split, part in source.groupby("split")}


# What chapter 7 reads

RESULTS = Path(__file__).resolve().parent.parent / "results" / "label_efficiency"


def load_summary(results: str | Path = RESULTS) -> pd.DataFrame | None:
    """Return the shipped grid's summary.csv, or None where no grid has been collected."""
    path = Path(results) / "summary.csv"
    return pd.read_csv(path) if path.is_file() else None


def verdicts(summary: pd.DataFrame, method: str, split: str = "val") -> pd.DataFrame:
    """Return, per fraction, whether `method` beats its baseline (interval of the difference below 0), and by how much."""
    rows = summary[(summary.method == method) & (summary.split == split) & (summary.baseline.fillna("") != "")]
    verdict = np.where(rows.difference_ci_high < 0, "yes", np.where(rows.difference_ci_low > 0, "no, worse",
                                                                    "no clear difference"))
    return rows.assign(beats_baseline=verdict)[["fraction", "seeds", "mae", "ci_low", "ci_high", "baseline",
                                                "difference", "difference_ci_low", "difference_ci_high",
                                                "detectable_80", "beats_baseline"]].sort_values("fraction")


def verdict_line(row) -> str:
    """Return one verdict as a sentence part, such as "at 1 %: yes, by -2.1 months (-3.0 to -1.2; 5 seeds)"."""
    return (f"at {row.fraction:.1%}".replace(".0%", "%") + f": {row.beats_baseline}, "
            f"{row.difference:+.1f} months ({row.difference_ci_low:+.1f} to {row.difference_ci_high:+.1f}; "
            f"{row.seeds} seeds)")
