"""The best bone age model this course trains on a 2-core CPU (`aebonet experiment best-cpu`, the shipped rsna-cpu).

The design, fixed before any run was scored:

- **Candidates** (`CANDIDATES`): what the course measured to help on real radiographs at
  128 px. The sex input and augmentation (chapter 7's sex-input run: 12.8 months on val
  against 15.6 without them), longer cosine schedules than the paper experiment's 20
  epochs, and a wider network. No autoencoder pretraining: the label-efficiency grid found
  that it does not help fine-tuning at 100 % of the labels (results/label_efficiency).
- **Selection** (`RULE`): every candidate trains on the training split less a seeded slice
  of `SELECTION` (10 %) of it, and is scored on that slice alone. The lowest slice MAE wins.
  The choice is written to selection.json before any validation or test image is scored;
  then the winner alone is tested on val (2,323 images) and the paper's 200 test images.
  Val and test steer nothing: each run decays its rate to 0 and keeps its last epoch.
- **The shipped model is the winner as trained**, on 90 % of the training split (it is not
  retrained on the slice: that would be a model nobody selected).

Every run resumes (`--resume` is implied: rerun the command) and may be shared between
processes with `--part K/N`; a last call without `--part` selects, tests and collects.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import pandas as pd

from aebonet_lib._engine import checkpoints, predict
from aebonet_lib._engine import runner as training
from aebonet_lib._engine import trust
from aebonet_lib._engine.files import read_json, write_json
from aebonet_lib._engine.grid import holdout_split
from aebonet_lib._engine.hardware import describe_machine
from aebonet_lib._engine.real import dataset_digest, log, record_wall_time
from aebonet_lib._engine.records import git_state
from aebonet_lib.config import Config, get_config
from aebonet_lib.data.loading import BoneAgeData, load_data
from aebonet_lib.errors import AebonetError

PRESET = "rsna-cpu"  # 128 px, the paper's split, cosine decay, last epoch kept
SELECTION = 0.10  # fraction of the training split held out to choose between candidates
SELECTION_SEED = 0
RULE = ("lowest MAE on the selection slice (a seeded 10 % of the training split); val and test are scored "
        "for the winner only, after selection.json is written")
# name: (the rsna-cpu preset's fields changed, what it tests). Every candidate: sex input, augmentation, from scratch.
CANDIDATES: dict[str, tuple[dict, str]] = {
    "narrow-100": ({"width": 0.125, "reg_num_epochs": 100}, "width 0.125 (8-128 filters), 100 epochs"),
    "wide-50": ({"width": 0.25, "reg_num_epochs": 50}, "width 0.25 (16-256 filters), 50 epochs: about the same time"),
}
EVAL_SPLITS = ("val", "test")


def selection_split(data: BoneAgeData, seed: int = SELECTION_SEED) -> BoneAgeData:
    """Return the data with a seeded SELECTION slice of its training split as "val" and the rest as "train"."""
    return holdout_split(data, seed, SELECTION)


def candidate_config(name: str, base: Config) -> Config:
    """Return a candidate's recipe: the base preset with the candidate's fields and augmentation."""
    if name not in CANDIDATES:
        raise AebonetError(f"candidate {name!r}: choose one of {', '.join(CANDIDATES)}")
    return base.replace(augment=True, **CANDIDATES[name][0])


def train_candidate(name: str, data: BoneAgeData, base: Config, runs_dir: Path) -> Path:
    """Train one candidate on the selection data (resuming), score it on the slice; return its run folder."""
    run_dir = runs_dir / name
    start = time.perf_counter()
    training.train(data, candidate_config(name, base), run_dir, backbone="scratch", sex_input=True, resume=True,
                   progress=False)
    if not (run_dir / "selection" / "metrics.json").is_file():
        (run_dir / "selection").mkdir(exist_ok=True)
        predict.evaluate(run_dir / "model.keras", data, split="val", out_dir=run_dir / "selection", progress=False)
        record_wall_time(run_dir, time.perf_counter() - start)
    return run_dir


def selection_table(runs_dir: Path) -> pd.DataFrame:
    """Return one row per finished candidate: its recipe, epochs, wall time and slice MAE with its interval."""
    rows = []
    for name, (fields, what) in CANDIDATES.items():
        metrics_path = runs_dir / name / "selection" / "metrics.json"
        if not metrics_path.is_file():
            continue
        result, record = read_json(metrics_path), read_json(runs_dir / name / "config.json")
        rows.append({"candidate": name, "recipe": what, **{k: fields[k] for k in sorted(fields)},
                     "n_selection": result["n"], "mae": result["mae"], "mae_low": result["mae_ci95"][0],
                     "mae_high": result["mae_ci95"][1],
                     "wall_s": read_json(runs_dir / name / "wall_time.json")["seconds"],
                     "commit": record.get("commit"), "dirty": record.get("dirty")})
    return pd.DataFrame(rows)


def choose(table: pd.DataFrame) -> str:
    """Return the winner by RULE: the candidate with the lowest selection MAE."""
    if len(table) < len(CANDIDATES):
        missing = sorted(set(CANDIDATES) - set(table["candidate"] if len(table) else []))
        raise AebonetError(f"candidates {missing} have not finished; rerun the command to train them")
    return str(table.sort_values("mae").iloc[0]["candidate"])


def test_winner(run_dir: Path, data: BoneAgeData, out: Path) -> dict[str, dict]:
    """Test the winner on the paper's val and test splits (a copy of its model without its run's splits)."""
    model_dir = out / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    for file in ("model.keras", "model.json", "model.trust.json", "model.trust.npz"):
        if (run_dir / file).is_file():
            shutil.copyfile(run_dir / file, model_dir / file)
    results = {}
    for split in EVAL_SPLITS:
        if not (model_dir / split / "metrics.json").is_file():
            (model_dir / split).mkdir(exist_ok=True)
            predict.evaluate(model_dir / "model.keras", data, split=split, out_dir=model_dir / split, progress=False)
        results[split] = read_json(model_dir / split / "metrics.json")
    return results


def best_cpu(source: str, out: str | Path, part: tuple[int, int] | None = None, command: str | None = None,
             base: Config | None = None, cache_root=None) -> Path | None:
    """Train the candidates (every N-th from the K-th with `part`), then choose, test and collect; return results/."""
    out = Path(out)
    base = base or get_config(PRESET)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "provenance.json").is_file():
        write_json(out / "provenance.json", {
            "command": command or " ".join(sys.argv), "commit": git_state()["commit"], "preset": base.name,
            "config": base.to_dict(), "candidates": {k: v[0] for k, v in CANDIDATES.items()}, "rule": RULE,
            "data": str(Path(source).resolve()), "machine": describe_machine(),
            "data_checksum": dataset_digest(source) if Path(source).is_dir() else None,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    data = load_data(source, base.image_size, seed=base.seed, split=base.split, phantom_n=base.phantom_n,
                     cache_root=cache_root, progress=False)
    selection = selection_split(data)
    log(f"data: {len(selection.splits['train'])} training / {len(selection.splits['val'])} selection images")
    names = list(CANDIDATES)
    for name in names if part is None else names[part[0]::part[1]]:
        run_dir = train_candidate(name, selection, base, out / "runs")
        log(f"{name}: selection MAE {read_json(run_dir / 'selection' / 'metrics.json')['mae']:.2f} months")
    if part is not None:
        return None
    return collect(out, data, selection)


def collect(out: Path, data: BoneAgeData, selection: BoneAgeData) -> Path:
    """Choose the winner, write selection.json, then test it and write results/ (tables, predictions, history)."""
    table = selection_table(out / "runs")
    winner = choose(table)
    if not (out / "selection.json").is_file():
        write_json(out / "selection.json", {"winner": winner, "rule": RULE, "candidates": table.to_dict("records"),
                                            "chosen": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    winner = read_json(out / "selection.json")["winner"]  # a rerun keeps the choice written first
    run_dir = out / "runs" / winner
    if not trust.is_current(trust.read_calibration(run_dir / "model.keras")):
        trust.calibrate_run(run_dir / "model.keras", selection)
    results = test_winner(run_dir, data, out)
    log(f"{winner}: val MAE {results['val']['mae']:.2f}, test MAE {results['test']['mae']:.2f} months")
    return write_results(out, table, winner, results)


def write_results(out: Path, table: pd.DataFrame, winner: str, results: dict[str, dict]) -> Path:
    """Write results/: selection.csv, runs.csv (the winner on val and test), predictions, histories, provenance."""
    folder = out / "results"
    folder.mkdir(exist_ok=True)
    table.assign(chosen=table["candidate"] == winner).to_csv(folder / "selection.csv", index=False)
    record = read_json(out / "runs" / winner / "config.json")
    rows = [{"model": "rsna-cpu", "candidate": winner, "split": split, "n": r["n"], "mae": r["mae"],
             "mae_low": r["mae_ci95"][0], "mae_high": r["mae_ci95"][1], "bias": r["bias"],
             "commit": record.get("commit"), "dirty": record.get("dirty")} for split, r in results.items()]
    pd.DataFrame(rows).to_csv(folder / "runs.csv", index=False)
    frames = [pd.read_csv(out / "model" / split / "predictions.csv").assign(split=split) for split in EVAL_SPLITS]
    pd.concat(frames).to_csv(folder / "predictions.csv.gz", index=False)
    histories = [pd.read_csv(out / "runs" / name / "history.csv").assign(candidate=name)
                 for name in table["candidate"] if (out / "runs" / name / "history.csv").is_file()]
    pd.concat(histories).to_csv(folder / "history.csv", index=False)
    write_json(folder / "provenance.json", read_json(out / "provenance.json")
               | {"selection": read_json(out / "selection.json"), "collected_commit": git_state()["commit"]})
    return folder


def ship(out: str | Path, results_dir: str | Path) -> Path:
    """Copy the winner into the package as the shipped rsna-cpu model, and its results into results_dir."""
    from aebonet_lib._engine.rsna_results import ship_model

    out = Path(out)
    winner = read_json(out / "selection.json")["winner"]
    if not checkpoints.run_finished(out / "runs" / winner):
        raise AebonetError(f"{out / 'runs' / winner}: not finished; rerun the experiment")
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    for path in sorted((out / "results").iterdir()):
        shutil.copyfile(path, results_dir / path.name)
    return ship_model(out / "runs" / winner, "rsna-cpu", results="aebonet_lib/results/best-cpu",
                      trained_on="RSNA Pediatric Bone Age training set (paper's random split, train part less its "
                                 "10 % selection slice)")


if __name__ == "__main__":  # python -m aebonet_lib._engine.best_cpu OUT RESULTS: ship OUT's winner and its results
    print(ship(sys.argv[1], sys.argv[2]))
