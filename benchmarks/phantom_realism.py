"""Measure how close the phantom is to real radiographs, and how a phantom-trained model does on them.

    .venv/bin/python benchmarks/phantom_realism.py report [--n 500] [--style raw] [--out FILE.csv]
    .venv/bin/python benchmarks/phantom_realism.py table [--n 500] [--before WORKTREE] [--out FILE.csv]
    .venv/bin/python benchmarks/phantom_realism.py sim2real MODEL [--name NAME] [--real DIR] [--out FILE.json]
    .venv/bin/python benchmarks/phantom_realism.py train PHANTOM_DIR --out DIR [--preset rsna-class] [--pretrain]
        [--normalize] [--clahe] [--augment] [--seed S] [--n 3000 --style raw] [--real DIR]
    .venv/bin/python benchmarks/phantom_realism.py collect DIR [DIR ...] --out FILE.csv   (and FILE_predictions.csv.gz)
    .venv/bin/python benchmarks/phantom_realism.py pretraining --phantom-runs RUNS --real-runs RUNS --out FILE.csv
    .venv/bin/python benchmarks/phantom_realism.py finetune ENCODER --fraction F --runs DIR [--real DIR]

`report` prints the realism table (`aebonet_lib._engine.realism`): phantom and real on the same
measures. `table` does it for both styles and, with `--before` (a worktree of an older commit,
`git worktree add /tmp/old-phantom fdbc06e`), for the phantom as it was there. `sim2real` tests a model trained only on phantoms on the real validation split (the
paper's split of ../shared/rsna_bone_age_256, 2,323 images) beside the median predictor.
`train` trains a model on the phantoms of PHANTOM_DIR only (written by `aebonet phantom`) and tests
it on the real training (the selection set), test and validation splits (`aebonet_lib._engine.sim2real`),
writing DIR/sim2real.json and DIR/predictions.csv.gz;
`collect` turns several such folders into one table (results/phantom/sim2real.csv) and names the
recipe chosen on the real training split (`sim2real.choose`: lowest MAE there, averaged over seeds).
`pretraining` tests chapter 7's three arms (autoencoder pretrained on phantoms, on the real images,
not at all) on the real validation and test splits (results/phantom/label_efficiency.csv).
`finetune` fine-tunes AE-BoNet from an encoder (say, pretrained on phantoms) on a fraction of the
real labels, with the recipe of `aebonet experiment real` (preset rsna-cpu), and tests it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from aebonet_lib._engine import realism
from aebonet_lib._engine.files import atomic_write

PRESET = "rsna-cpu"


def real_data(real_dir: Path):
    """Return the real set at the preset's size with the paper's split, as the real-data experiment reads it."""
    from aebonet_lib.config import get_config
    from aebonet_lib.data.loading import load_data

    config = get_config(PRESET)
    return load_data(real_dir, config.image_size, seed=config.seed, split=config.split, progress=False), config


def old_phantom(worktree: Path):
    """Return the phantom module of an older commit (one phantom.py) checked out in `worktree`."""
    import importlib.util
    import types

    package = types.ModuleType("old_aebonet_lib")
    package.__path__ = [str(worktree / "aebonet_lib")]
    sys.modules["old_aebonet_lib"] = package
    spec = importlib.util.spec_from_file_location("old_aebonet_lib.phantom", worktree / "aebonet_lib" / "phantom.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_aebonet_lib.phantom"] = module
    spec.loader.exec_module(module)
    return module


def before_column(worktree: Path, n: int, seed: int = 0) -> dict:
    """Return the realism measures of the older phantom in `worktree`, on the ages, sexes and seeds of the new one."""
    from aebonet_lib.phantom.dataset import AGE_RANGE, dataset_plan, image_seed

    old = old_phantom(worktree)
    ages, males, labels = dataset_plan(n, seed, AGE_RANGE, 5.3)
    images = [old.render(float(a), bool(m), 256, image_seed(seed, i)) for i, (a, m) in enumerate(zip(ages, males))]
    column = {**realism.summarise(realism.quantised(images)), **realism.shortcut_test(images, labels, males, seed)}
    fine = [old.render(float(a), bool(m), realism.FINE_SIZE, image_seed(seed, i)) for i, (a, m) in enumerate(zip(ages[:8], males[:8]))]
    column.update({f"{k}_1024": v for k, v in realism.fine_measures(realism.quantised(fine)).items()})
    return column


def table(n: int, before: Path | None, real_dir: Path):
    """Return the realism table for both styles, the older phantom (if `before`) and the real set."""
    import pandas as pd

    raw = realism.realism_report(n, "raw", real_dir).set_index("measure")
    registered = realism.realism_report(n, "registered", real_dir).set_index("measure")
    columns = {"phantom_raw": raw["phantom"], "phantom_registered": registered["phantom"]}
    if before:
        columns["phantom_before"] = pd.Series(before_column(before, n))
    columns["real"] = raw["real"]
    result = pd.DataFrame(columns)
    result.index.name = "measure"
    return result


def sim2real(model_path: Path, real_dir: Path, name: str) -> dict:
    """Return the MAE (95 % CI) of any regressor on the real training, test and validation splits, beside the median predictor.

    The result has the layout of `experiments.sim2real.run` (no recipe), so that `collect` puts a
    model trained on real labels beside the phantom-trained ones as a reference.
    """
    from aebonet_lib._engine import predict
    from aebonet_lib._engine import sim2real as sim2real_lib

    model, meta = predict.load_regressor(model_path)
    data = sim2real_lib.load_real(real_dir, meta.params.image_size, meta.params.clahe, meta.params.normalize)
    predictions = sim2real_lib.predict_real(model, data)
    result = {"name": name, "model": str(model_path), "recipe": {}, "n_phantoms": 0, "phantom_val_mae": None,
              **sim2real_lib.transfer_measures(data, predictions)}
    for split, y_hat in predictions.items():
        result[split].update(what_predictions_follow(data.X[data.splits[split]], y_hat))
    return result


def what_predictions_follow(X: np.ndarray, y_hat: np.ndarray) -> dict:
    """Return the correlation of predictions with image measures that carry no age in real data (brightness, hand size)."""
    rows = [realism.image_measures(np.squeeze(x).astype(np.float32) / 255) for x in X]
    return {f"corr_with_{name}": float(np.corrcoef([r[name] for r in rows], y_hat)[0, 1])
            for name in ("inside_mean", "hand_fraction")}


def finetune(encoder: Path, fraction: float, runs_dir: Path, real_dir: Path) -> dict:
    """Fine-tune AE-BoNet from `encoder` on `fraction` of the real training labels (seed 0) and return its MAEs."""
    from aebonet_lib._engine import real
    from aebonet_lib._engine.files import read_json
    from aebonet_lib.experiments import protocol

    data, config = real_data(real_dir)
    budget = protocol.get_budget(PRESET)
    job = real.Job(fraction, 0, protocol.PRETRAINED)
    run_dir = real.run_job(job, data, config, budget, encoder, runs_dir)
    return {"run": str(run_dir), "fraction": fraction, "encoder": str(encoder),
            **{split: read_json(run_dir / split / "metrics.json")["mae"] for split in real.EVAL_SPLITS}}


def pretraining(phantom_runs: Path, real_runs: Path, preset: str, real_dir: Path):
    """Return chapter 7's three arms (pretrained on phantoms, on real images, not at all) tested on val and test.

    `phantom_runs` and `real_runs` are the runs/ folders of two label-efficiency experiments on the
    real set, the first with `--encoder` (pretrained on phantoms). Each arm's absolute errors are
    averaged over its seeds per image, then compared with scratch's on the same images (paired bootstrap).
    """
    import pandas as pd

    from aebonet_lib._engine import predict
    from aebonet_lib.config import get_config
    from aebonet_lib.data.loading import load_data
    from aebonet_lib.evaluation import metrics
    from aebonet_lib.experiments import protocol

    config = get_config(preset)
    data = load_data(real_dir, config.image_size, seed=config.seed, split=config.split, progress=False)
    arms = {"phantom images": (phantom_runs, protocol.PRETRAINED), "real training images": (real_runs, protocol.PRETRAINED),
            "none (scratch)": (real_runs, protocol.SCRATCH)}
    rows = []
    for fraction in protocol.get_budget(preset).fractions:
        for split in ("val", "test"):
            index = data.splits[split]
            errors, runs = {}, {}
            for arm, (folder, name) in arms.items():
                runs[arm] = sorted(folder.glob(f"labels-{fraction:g}/seed-*/{name}/model.keras"))
                errors[arm] = np.mean([np.abs(predict.predict_arrays(predict.load_regressor(m)[0], data.X[index])
                                              - data.y[index]) for m in runs[arm]], axis=0)
            zero = np.zeros(len(index), np.float32)  # MAE(0, errors) is the mean error: the metrics work on errors too
            for arm in arms:
                row = {"preset": preset, "fraction": fraction, "pretraining": arm, "split": split, "seeds": len(runs[arm]),
                       **metrics.mae_with_ci(zero, errors[arm])}
                if arm != "none (scratch)":
                    gain = metrics.paired_bootstrap(zero, errors[arm], errors["none (scratch)"])
                    row.update(minus_scratch=gain["mae_difference"], minus_scratch_low=gain["ci95"][0],
                               minus_scratch_high=gain["ci95"][1])
                rows.append({**row, "runs": " ".join(str(m.parent) for m in runs[arm])})
    return pd.DataFrame(rows)


def write_csv(table, path: Path, index: bool = False) -> None:
    """Write a table as CSV atomically, with four decimals."""
    from aebonet_lib._engine.files import atomic_write

    with atomic_write(path) as f:
        table.to_csv(f, index=index, float_format="%.4f", lineterminator="\n")


def main() -> None:
    """Run one of report, sim2real or finetune and print (and optionally write) its result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("report")
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--style", default="raw", choices=["raw", "registered"])
    p.add_argument("--out", type=Path)
    p = sub.add_parser("table")
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--before", type=Path, help="a worktree of an older commit, to measure its phantom too")
    p.add_argument("--out", type=Path)
    p = sub.add_parser("sim2real")
    p.add_argument("model", type=Path)
    p.add_argument("--name", default="model", help="the row's name in the collected table")
    p.add_argument("--out", type=Path)
    p = sub.add_parser("train")
    p.add_argument("phantoms", type=Path, help="a phantom dataset folder (aebonet phantom --out DIR); written if missing")
    p.add_argument("--n", type=int, default=3000, help="phantoms to write when the folder holds none (default 3000)")
    p.add_argument("--style", default="raw", choices=["raw", "registered"], help="their style, when written here")
    p.add_argument("--out", type=Path, required=True, help="folder for the runs and sim2real.json (resumes)")
    p.add_argument("--preset", default="rsna-class")
    for flag in ("--pretrain", "--normalize", "--clahe", "--augment"):
        p.add_argument(flag, action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("collect")
    p.add_argument("folders", nargs="+", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("pretraining")
    p.add_argument("--phantom-runs", type=Path, required=True, help="runs/ of the label-efficiency experiment run with --encoder")
    p.add_argument("--real-runs", type=Path, required=True, help="runs/ of the one pretrained on the real images")
    p.add_argument("--preset", default="rsna-class")
    p.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("finetune")
    p.add_argument("encoder", type=Path)
    p.add_argument("--fraction", type=float, required=True)
    p.add_argument("--runs", type=Path, required=True)
    p.add_argument("--out", type=Path)
    for p in sub.choices.values():
        p.add_argument("--real", type=Path, default=realism.REAL_256, help="the RSNA training set (Kaggle layout)")
    args = parser.parse_args()
    if args.what == "report":
        sys.exit(realism.report_main(args.n, args.style, args.real, args.out))
    if args.what == "table":
        result = table(args.n, args.before, args.real)
        print(result.to_string(float_format=lambda x: f"{x:.3f}"))
        if args.out:
            write_csv(result, args.out, index=True)
        return
    if args.what == "pretraining":
        result = pretraining(args.phantom_runs, args.real_runs, args.preset, args.real)
        print(result.drop(columns="runs").to_string(float_format=lambda x: f"{x:.2f}"))
        write_csv(result, args.out)
        return
    if args.what == "collect":
        from aebonet_lib._engine import sim2real as sim2real_lib

        result = sim2real_lib.collect(args.folders)
        print(result[["name", "split", "mae", "median_predictor_mae", "minus_median_predictor", "minus_low",
                      "minus_high", "corr_with_age"]].to_string(float_format=lambda x: f"{x:.2f}"))
        print(f"chosen on the real training split: {sim2real_lib.choose(result)}")
        write_csv(result, args.out)
        predictions = sim2real_lib.collect_predictions(args.folders)
        with atomic_write(args.out.with_name(args.out.stem + "_predictions.csv.gz"), "wb") as f:
            predictions.to_csv(f, index=False, compression="gzip", float_format="%.2f")
        return
    if args.what == "train":
        from aebonet_lib._engine import sim2real as sim2real_lib

        recipe = sim2real_lib.Recipe(args.preset, args.pretrain, args.clahe, args.normalize, args.augment, args.seed,
                                     args.style)
        result = sim2real_lib.run(args.phantoms, args.real, recipe, args.out, args.n)
    elif args.what == "sim2real":
        result = sim2real(args.model, args.real, args.name)
    else:
        result = finetune(args.encoder, args.fraction, args.runs, args.real)
    result["command"] = " ".join(sys.argv)
    print(json.dumps(result, indent=1))
    if getattr(args, "out", None):
        from aebonet_lib._engine.files import write_json

        write_json(args.out / "sim2real.json" if args.what == "train" else args.out, result)


if __name__ == "__main__":
    main()
