"""The real-data results that ship with the library, and what the book computes from them (chapters 4, 6, 7).

`aebonet experiment real --data RSNA --out OUT` trains the runs (module `real`) and then
`collect(OUT/runs, OUT/results)` writes these files; the library ships a copy in
`aebonet_lib/results/rsna-cpu/`:

- provenance.json: the command, commit, preset, budget, data checksum, machine, wall times;
- runs.csv: one row per fine-tuning run: arm, fraction, seed, epochs, wall time, and test
  and val MAE / MSE with 95 % bootstrap intervals;
- predictions.csv.gz: every run's prediction for each test and val image;
- history.csv: every run's training curves (the paper's Figure 3), pretraining included;
- stages.csv: the autoencoder's stages (the paper's Table 2 on real data);
- trust.csv: how often the real and a phantom-trained model flag real, phantom and odd images.

Measured on the RSNA Pediatric Bone Age training set (Halabi et al., Radiology 2019;
290(2):498-503): the images never ship, only numbers computed from them.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from aebonet_lib import paper
from aebonet_lib._engine.files import atomic_write, read_json, write_json
from aebonet_lib._engine.modelfiles import read_model_meta, write_model_meta
from aebonet_lib._engine.predict import PRETRAINED_DIR
from aebonet_lib._engine.records import read_record
from aebonet_lib.errors import AebonetError
from aebonet_lib.evaluation import metrics
from aebonet_lib.experiments import protocol

SHIPPED = Path(str(resources.files("aebonet_lib") / "results" / "rsna-cpu"))
BEST_CPU = Path(str(resources.files("aebonet_lib") / "results" / "best-cpu"))  # the shipped rsna-cpu (_engine.best_cpu)
SPLITS = ("test", "val")
RSNA_CITATION = ("Halabi SS, Prevedello LM, Kalpathy-Cramer J, et al. The RSNA Pediatric Bone Age Machine Learning "
                 "Challenge. Radiology. 2019;290(2):498-503")
N_BOOT = 2000


@dataclass
class RealResults:
    """Hold the shipped real-data results: runs, predictions, training curves, stages and provenance."""

    runs: pd.DataFrame
    predictions: pd.DataFrame
    history: pd.DataFrame
    stages: pd.DataFrame
    provenance: dict
    trust: pd.DataFrame | None = None  # flag rates on real, phantom and odd images (real.trust_report)

    def predicted(self, run: str, split: str = "val") -> pd.DataFrame:
        """Return one run's predictions on a split (id, true, predicted, male), in image-id order."""
        rows = self.predictions[(self.predictions.run == run) & (self.predictions.split == split)]
        if rows.empty:
            raise AebonetError(f"no {split} predictions for run {run!r}; runs: {', '.join(self.runs.run)}")
        return rows.sort_values("id").reset_index(drop=True)


# Writing the files from the run folders


def run_row(run_dir: Path, runs_dir: Path) -> dict:
    """Return one run's row: what it trained and its test and val metrics with their intervals."""
    record, meta = read_record(run_dir), read_model_meta(run_dir / "model.keras")
    name = str(run_dir.relative_to(runs_dir))
    group, seed, arm = name.split("/")
    n_labels = len((run_dir / "splits" / "train.txt").read_text().split())
    row = {"run": name, "group": group, "arm": arm, "seed": int(seed.split("-")[1]),
           "fraction": float(group.split("-")[1]) if group.startswith("labels-") else 1.0,
           "sex_input": record.sex_input, "augment": record.config.augment, "n_labels": n_labels,
           "epochs": record.num_epochs, "steps": record.num_epochs * -(-n_labels // record.config.reg_batch_size),
           "wall_seconds": read_json(run_dir / "wall_time.json")["seconds"], "y_mean": record.y_mean,
           "best_val_epoch": meta.best_epoch}
    for split in SPLITS:
        result = read_json(run_dir / split / "metrics.json")
        row |= {f"{split}_n": result["n"], f"{split}_mae": result["mae"], f"{split}_mae_low": result["mae_ci95"][0],
                f"{split}_mae_high": result["mae_ci95"][1], f"{split}_mse": result["mse"],
                f"{split}_mse_low": result["mse_ci95"][0], f"{split}_mse_high": result["mse_ci95"][1],
                f"{split}_bias": result["bias"]}
    return row


def finished_runs(runs_dir: Path) -> list[Path]:
    """Return the fine-tuning run folders that are tested on every split, in the order they were trained."""
    done = [p.parent for p in runs_dir.glob("*/seed-*/*/model.keras")
            if all((p.parent / split / "metrics.json").is_file() for split in SPLITS)]
    return sorted(done, key=lambda p: (p / "model.keras").stat().st_mtime)


def run_predictions(run_dir: Path, runs_dir: Path) -> pd.DataFrame:
    """Return a run's predictions on every split, with the run and split named."""
    parts = []
    for split in SPLITS:
        table = pd.read_csv(run_dir / split / "predictions.csv", dtype={"id": str})
        male = table["sex"].map({"M": 1.0, "F": 0.0}) if "sex" in table else np.nan
        parts.append(pd.DataFrame({"run": str(run_dir.relative_to(runs_dir)), "split": split, "id": table["id"],
                                   "true": table["true"], "predicted": table["predicted"], "male": male}))
    return pd.concat(parts, ignore_index=True)


def run_history(run_dir: Path, name: str) -> pd.DataFrame:
    """Return a run's history.csv with the run named (NA where validation was skipped)."""
    return pd.read_csv(run_dir / "history.csv", na_values=["NA"]).assign(run=name)


def write_csv(table: pd.DataFrame, path: Path) -> Path:
    """Write a table as CSV (gzip when the name ends in .gz), atomically."""
    with atomic_write(path, "wb" if path.suffix == ".gz" else "w") as f:
        table.to_csv(f, index=False, compression="gzip" if path.suffix == ".gz" else None)
    return path


def collect(runs_dir: str | Path, out_dir: str | Path, provenance: dict | None = None) -> list[Path]:
    """Write the results files (module docstring) from an experiment's run folders; return the paths."""
    runs_dir, out_dir = Path(runs_dir), Path(out_dir)
    done = finished_runs(runs_dir)
    if not done:
        raise AebonetError(f"{runs_dir}: no finished and tested run yet; run `aebonet experiment real` first")
    out_dir.mkdir(parents=True, exist_ok=True)
    names = [str(p.relative_to(runs_dir)) for p in done]
    history = pd.concat([run_history(runs_dir / "pretrain", "pretrain")]
                        + [run_history(p, n) for p, n in zip(done, names)], ignore_index=True)
    written = [write_csv(pd.DataFrame([run_row(p, runs_dir) for p in done]), out_dir / "runs.csv"),
               write_csv(pd.concat([run_predictions(p, runs_dir) for p in done]), out_dir / "predictions.csv.gz"),
               write_csv(history, out_dir / "history.csv"),
               write_csv(pd.read_csv(runs_dir / "pretrain" / "stages.csv"), out_dir / "stages.csv")]
    record = (provenance or {}) | {"collected": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "runs": len(done),
                                    "pretrain_wall_seconds": read_json(runs_dir / "pretrain" / "wall_time.json")["seconds"],
                                    "data_citation": RSNA_CITATION}
    write_json(out_dir / "provenance.json", record)
    return written + [out_dir / "provenance.json"]


# Reading them, and what the book computes from them


def load(folder: str | Path = SHIPPED) -> RealResults:
    """Read the real-data results (by default the ones shipped with the library)."""
    folder = Path(folder)
    if not (folder / "runs.csv").is_file():
        raise AebonetError(f"{folder}: no real-data results (runs.csv); make them with "
                           "`aebonet experiment real --data RSNA_FOLDER --out OUT` (OUT/results)")
    predictions = pd.read_csv(folder / "predictions.csv.gz", dtype={"id": str})
    trust = pd.read_csv(folder / "trust.csv") if (folder / "trust.csv").is_file() else None
    return RealResults(runs=pd.read_csv(folder / "runs.csv"), predictions=predictions,
                       history=pd.read_csv(folder / "history.csv"), stages=pd.read_csv(folder / "stages.csv"),
                       provenance=read_json(folder / "provenance.json"), trust=trust)


def main_run(arm: str, seed: int = 0) -> str:
    """Return the name of an arm's run on all the labels (no sex input, no augmentation)."""
    return f"labels-1/seed-{seed}/{arm}"


def mean_baseline(results: RealResults, split: str = "val") -> dict:
    """Return MAE and MSE (95 % intervals) of predicting the training images' mean age for every child."""
    y = results.predicted(main_run(protocol.PRETRAINED), split).true.to_numpy()
    y_mean = float(results.runs.set_index("run").loc[main_run(protocol.PRETRAINED), "y_mean"])
    return metrics.mean_predictor(y, y_mean, n_boot=N_BOOT)


def run_metrics(results: RealResults, run: str, split: str = "val") -> dict:
    """Return a run's MAE, MSE, RMSE and bias with 95 % intervals on a split."""
    table = results.predicted(run, split)
    return metrics.summarize(table.true, table.predicted, n_boot=N_BOOT)


def paired(results: RealResults, run_a: str, run_b: str, split: str = "val") -> dict:
    """Return MAE(run_a) - MAE(run_b) on the same images with its 95 % interval and p-value."""
    a, b = results.predicted(run_a, split), results.predicted(run_b, split)
    if not a.id.equals(b.id):
        raise AebonetError(f"runs {run_a} and {run_b} were not tested on the same {split} images")
    return metrics.paired_bootstrap(a.true.to_numpy(), a.predicted.to_numpy(), b.predicted.to_numpy(), N_BOOT)


def errors_by(results: RealResults, run: str, split: str = "val") -> dict[str, pd.DataFrame]:
    """Return a run's MAE with its interval by age band and by sex."""
    table = results.predicted(run, split)
    return {"band": metrics.mae_by_band(table.true, table.predicted, N_BOOT),
            "sex": metrics.mae_by_sex(table.true, table.predicted, table.male, N_BOOT)}


def seed_errors(results: RealResults, fraction: float, arm: str, split: str) -> np.ndarray | None:
    """Return each image's absolute error averaged over an arm's seeds at a fraction (None when no run finished)."""
    runs = results.runs[(results.runs.group == f"labels-{fraction:g}") & (results.runs.arm == arm)].run
    if runs.empty:
        return None
    return np.mean([np.abs(t.predicted - t.true).to_numpy() for t in (results.predicted(r, split) for r in runs)], 0)


def label_efficiency(results: RealResults, split: str = "val") -> pd.DataFrame:
    """Return one row per label fraction: each arm's MAE over seeds, and pretrained minus scratch with its interval."""
    rows = []
    for fraction in sorted(results.runs[results.runs.group.str.startswith("labels-")].fraction.unique()):
        pre, scr = (seed_errors(results, fraction, arm, split) for arm in (protocol.PRETRAINED, protocol.SCRATCH))
        if pre is None or scr is None:
            continue
        zeros = np.zeros(len(pre))  # mae(0, e) is the mean of e >= 0
        diff = metrics.paired_bootstrap(zeros, pre, scr, N_BOOT)
        part = results.runs[results.runs.group == f"labels-{fraction:g}"]
        rows.append({"fraction": fraction, "n_labels": int(part.n_labels.iloc[0]), "seeds": part.seed.nunique(),
                     "pretrained": pre.mean(), "pretrained_ci": metrics.bootstrap_ci(zeros, pre, metrics.mae, N_BOOT),
                     "scratch": scr.mean(), "scratch_ci": metrics.bootstrap_ci(zeros, scr, metrics.mae, N_BOOT),
                     "difference": diff["mae_difference"], "difference_low": diff["ci95"][0],
                     "difference_high": diff["ci95"][1], "p_value": diff["p_value"]})
    return pd.DataFrame(rows)


def benefit_trend(results: RealResults, split: str = "val", seed: int = 0) -> dict:
    """Test whether pretraining helps more with fewer labels: the slope of (scratch - pretrained) MAE on log2(fraction).

    Every run is tested on the same images, so one bootstrap resample of the images
    gives every fraction's benefit at once; the slope is fitted on each resample. A
    negative slope means the benefit grows as the labels shrink. Also returns the
    benefit at the smallest fraction minus the benefit at 100 %, with its interval.
    """
    table = label_efficiency(results, split)
    if len(table) < 2:
        raise AebonetError("benefit_trend needs finished runs at two or more label fractions")
    benefits = np.stack([seed_errors(results, f, protocol.SCRATCH, split)
                         - seed_errors(results, f, protocol.PRETRAINED, split) for f in table.fraction])
    x = np.log2(table.fraction.to_numpy())
    idx = metrics.resample_indices(benefits.shape[1], N_BOOT, seed)
    resampled = benefits[:, idx].mean(axis=2)  # (fractions, n_boot)
    slopes = np.polyfit(x, resampled, 1)[0]
    contrast = resampled[0] - resampled[-1]
    observed = benefits.mean(axis=1)
    return {"slope_per_halving": -float(np.polyfit(x, observed, 1)[0]),
            "slope_ci": sorted((-float(v) for v in metrics.percentile_interval(slopes))),
            "smallest_minus_full": float(observed[0] - observed[-1]),
            "smallest_minus_full_ci": list(metrics.percentile_interval(contrast)),
            "fractions": table.fraction.tolist(), "benefits": observed.tolist(), "n": int(benefits.shape[1])}


def label_efficiency_long(table: pd.DataFrame) -> pd.DataFrame:
    """Return the label-efficiency table as one row per (fraction, arm), the form plots.plot_label_efficiency takes."""
    rows = [{"fraction": r.fraction, "arm": arm, "mae": getattr(r, arm), "ci_low": getattr(r, f"{arm}_ci")[0],
             "ci_high": getattr(r, f"{arm}_ci")[1]}
            for r in table.itertuples() for arm in (protocol.PRETRAINED, protocol.SCRATCH)]
    return pd.DataFrame(rows)


def format_mae(row: dict) -> str:
    """Return "12.3 (11.9-12.8)" from a metrics.summarize result."""
    low, high = row["mae_ci95"]
    return f"{row['mae']:.1f} ({low:.1f}-{high:.1f})"


def best_cpu_row(held_out: str, folder: Path = BEST_CPU) -> str | None:
    """Return the README row of the shipped rsna-cpu model (results/best-cpu), or None before it was made."""
    if not (folder / "runs.csv").is_file():
        return None
    runs = pd.read_csv(folder / "runs.csv").set_index("split")
    chosen = pd.read_csv(folder / "selection.csv").query("chosen").iloc[0]
    provenance = read_json(folder / "provenance.json")
    config, cpus = provenance["config"], provenance["machine"]["available_cpus"]
    maes = " / ".join(f"{runs.loc[s, 'mae']:.1f} ({runs.loc[s, 'mae_low']:.1f}-{runs.loc[s, 'mae_high']:.1f})"
                      for s in ("test", "val"))
    recipe = (f"{config['image_size']} px, width {chosen['width']:g}, {chosen['reg_num_epochs']} epochs, sex input, "
              f"augmentation, on a {cpus}-core CPU; `aebonet experiment best-cpu`")
    return f"| `rsna-cpu`, the shipped model, this course ({recipe}) | {held_out} | {maes} | `aebonet_lib/results/best-cpu` |"


def readme_table(results: RealResults) -> str:
    """Return the README's table: our real-data MAEs (95 % intervals) beside the paper's and the best published."""
    preset, cpus = results.provenance["config"], results.provenance["machine"]["available_cpus"]
    ours = (f"{preset['image_size']} px, width {preset['width']:g}, {preset['reg_num_epochs']} epochs, on a {cpus}-core "
            "CPU; `aebonet experiment real`")
    n = results.runs.iloc[0]
    held_out = f"paper's split: {n.test_n} test / {n.val_n:,} validation"
    lines = ["| method | test images | MAE, months (95 % CI) | source |", "| --- | --- | --- | --- |"]
    best = best_cpu_row(held_out)
    lines += [best] if best else []
    for arm, label in ((protocol.PRETRAINED, "AE-BoNet as in the paper (`rsna-cpu-paper`), this course"),
                      (protocol.SCRATCH, "same network from scratch, this course")):
        run = main_run(arm)
        lines.append(f"| {label} ({ours}) | {held_out} | "
                     f"{format_mae(run_metrics(results, run, 'test'))} / {format_mae(run_metrics(results, run, 'val'))} "
                     "| `aebonet_lib/results/rsna-cpu` |")
    lines.append(f"| predicting the training mean for every child | {held_out} | "
                 f"{format_mae(mean_baseline(results, 'test'))} / {format_mae(mean_baseline(results, 'val'))} | same |")
    lines.append(f"| AE-BoNet, the paper (256 px, full width, GPU) | 200 drawn from the 12,611 training images | "
                 f"{paper.TEST_MAE:g} | Sirati-Amsheh et al. 2025, Table 5 |")
    lines.append(f"| MobileNet (ImageNet), the paper, 256 px | same | {paper.TABLE5[256]['MobileNet'][0]:g} "
                 "| Sirati-Amsheh et al. 2025, Table 5 |")
    lines.append("| RSNA 2017 challenge winner | official test set (200) | 4.2 (MAD) | Halabi et al., Radiology 2019 |")
    lines.append("| Deeplasia | official test set (200) | 3.87 (MAD) | Rassmann et al., Pediatric Radiology 2024 |")
    return "\n".join(lines)


README_START = "<!-- results-table: written by rsna_results.readme_table; tests/test_readme.py checks it -->\n"
README_END = "\n<!-- end results-table -->"


def readme_section(text: str) -> str:
    """Return the results table between the README's markers."""
    if README_START not in text or README_END not in text:
        raise AebonetError("README.md: the results-table markers are missing; restore them around the table")
    return text.split(README_START, 1)[1].split(README_END, 1)[0]


def update_readme(path: str | Path, results: RealResults | None = None) -> None:
    """Write the results table (readme_table) between the README's markers (python -m aebonet_lib._engine.rsna_results)."""
    path = Path(path)
    text = path.read_text()
    table = readme_table(results or load())
    path.write_text(text.replace(README_START + readme_section(text) + README_END, README_START + table + README_END))


SHIPPED_MODEL_FILES = ("model.keras", "model.trust.json", "model.trust.npz", "model.autoencoder.keras", "model.autoencoder.json")


def ship_model(run_dir: str | Path, name: str = "rsna-cpu-paper", results: str = "aebonet_lib/results/rsna-cpu",
               trained_on: str = "RSNA Pediatric Bone Age training set (paper's random split, train part)") -> Path:
    """Copy a finished, calibrated run's model into the package (pretrained/NAME), with the RSNA attribution."""
    run_dir, dest = Path(run_dir), PRETRAINED_DIR / name
    if not (run_dir / "model.trust.json").is_file():
        raise AebonetError(f"{run_dir}: the model has no trust calibration (model.trust.json); run the experiment to its end")
    dest.mkdir(parents=True, exist_ok=True)
    for file in SHIPPED_MODEL_FILES:
        if (run_dir / file).is_file():
            shutil.copyfile(run_dir / file, dest / file)
    meta = read_model_meta(run_dir / "model.keras")
    meta.notes |= {
        "name": name, "trained_on": trained_on,
        "attribution": f"Trained on RSNA challenge data; cite {RSNA_CITATION}. Use under the RSNA challenge's terms "
                       "(non-commercial research and education, with attribution).",
        "results": results, "run": run_dir.name}
    write_model_meta(dest / "model.keras", meta)
    return dest / "model.keras"


def publish(out_dir: str | Path, readme: str | Path = Path(__file__).resolve().parents[2] / "README.md") -> None:
    """Ship an experiment's results and its AE-BoNet (all labels, seed 0) with the library, and update the README table."""
    out_dir = Path(out_dir)
    SHIPPED.mkdir(parents=True, exist_ok=True)
    for path in sorted((out_dir / "results").iterdir()):
        shutil.copyfile(path, SHIPPED / path.name)
    ship_model(out_dir / "runs" / main_run(protocol.PRETRAINED), "rsna-cpu-paper")
    update_readme(readme)


if __name__ == "__main__":  # python -m aebonet_lib._engine.rsna_results OUT: ship OUT/results and its model, update the README
    import sys

    publish(sys.argv[1]) if len(sys.argv) > 1 else update_readme(Path(__file__).resolve().parents[2] / "README.md")
