"""The experiments of chapter 7, each a set of arms compared on the same test images.

The rules that keep the arms fair (label subsets, equal optimizer steps, budgets) are in
`protocol`, below this module; chapter 7 reads them from here (`studies.label_subset`, ...).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from aebonet_lib._engine import runner as training
from aebonet_lib.config import DECODERS, Config
from aebonet_lib.data.loading import BoneAgeData
from aebonet_lib.errors import AebonetError
from aebonet_lib.evaluation import plots
from aebonet_lib.experiments.protocol import (
    COMPARISON_COLUMNS,
    PRETRAINED,
    SCRATCH,
    WITH_SEX,
    WITHOUT_SEX,
    Budget,
    comparison_table,
    epochs_for_steps,
    experiment_data,
    experiment_folder,
    fine_tune_and_test,
    get_budget,
    label_run_dir,
    label_subset,
    median_predictor_mae,
    own_pretrain_epochs,
    plot_arms,
    pretrain_folder,
    pretrained_encoder,
    run_record,
    run_steps,
    settings_record,
    setup,
    steps_per_epoch,
    with_floor,
    with_labels,
    write_results,
)


def label_efficiency_runs(data: BoneAgeData, config: Config, encoder: Path, budget: Budget, runs_dir: Path,
                          n_boot: int, progress: bool) -> pd.DataFrame:
    """Fine-tune both arms on each fraction's labelled subset for each seed, test them, and return one row per run."""
    steps = run_steps(budget, config, len(data.splits["train"]))
    jobs = [(f, s, arm) for f in budget.fractions for s in range(budget.num_seeds) for arm in (PRETRAINED, SCRATCH)]
    rows = []
    for fraction, seed, arm in tqdm(jobs, desc="label efficiency", unit="run", disable=not progress):
        subset = label_subset(data.splits["train"], fraction, config.seed + seed)
        num_epochs = epochs_for_steps(len(subset), config.reg_batch_size, steps, budget.min_epochs)
        run_dir = label_run_dir(runs_dir, fraction, seed, arm)
        run_config = config.replace(seed=config.seed + seed, **dict(budget.fine_tuning))
        result = fine_tune_and_test(with_labels(data, subset), run_config, run_dir,
                                    encoder if arm == PRETRAINED else None, num_epochs, n_boot=n_boot)
        rows.append({"fraction": fraction, "n_labels": len(subset), "seed": seed, "arm": arm,
                     "steps": num_epochs * steps_per_epoch(len(subset), config.reg_batch_size),
                     **run_record(run_dir, result, runs_dir.parent),
                     "median_predictor_mae": median_predictor_mae(data, subset)})
    return pd.DataFrame(rows)


def label_efficiency_table(runs: pd.DataFrame, runs_dir: Path, n_boot: int, seed: int) -> pd.DataFrame:
    """Return one row per (fraction, arm): MAE over seeds with its interval, and pretrained minus scratch."""
    parts = []
    for fraction, group in runs.groupby("fraction"):
        arms = {arm: [runs_dir.parent / run for run in group[group.arm == arm].run] for arm in (PRETRAINED, SCRATCH)}
        part = comparison_table(arms, SCRATCH, n_boot, seed)
        first = group.iloc[0]
        part = part.assign(fraction=fraction, n_labels=first.n_labels, epochs=first.epochs, steps=first.steps)
        parts.append(with_floor(part, group.median_predictor_mae.mean()))
    table = pd.concat(parts, ignore_index=True)
    columns = ["n_labels", "epochs", "steps", *COMPARISON_COLUMNS[1:], "median_predictor_mae", "beats_median_predictor"]
    return table.set_index(["fraction", "arm"])[columns]


def label_efficiency(source: str = "phantom", preset: str = "cpu", fractions: tuple[float, ...] | None = None,
                     num_seeds: int | None = None, out_dir: str | Path | None = None,
                     pretrain_run: str | Path | None = None, steps: int | None = None,
                     pretrain_epochs: int | None = None, resume: bool = False, config: Config | None = None,
                     cache_root: str | Path | None = None, n_boot: int = 2000, progress: bool = True,
                     encoder: str | Path | None = None) -> pd.DataFrame:
    """Measure whether pretraining reduces the labels needed: AE-BoNet against the control per label fraction (chapter 7).

    The autoencoder is pretrained once on all training images, without labels, in
    `pretrain_run` (reused, or resumed, when it holds a run; by default out_dir/runs/pretrain,
    with `pretrain_epochs`), unless `encoder` names one pretrained elsewhere (on phantoms, say),
    which is then used as it is. For each fraction of the training split's labels and each seed,
    AE-BoNet (pretrained encoder) and the from-scratch control are fine-tuned on the same
    seeded random subset for the same gradient steps (module docstring), validated on the
    whole val split and tested on the same test images. Returns one row per (fraction, arm):
    MAE with its 95 % interval, on the pretrained rows MAE(pretrained) - MAE(scratch)
    with its paired-bootstrap interval, and the MAE of predicting the labelled images' median
    age for every child (`median_predictor_mae`, the floor a regressor must beat). With out_dir, writes label_efficiency.{csv,md,png,json}
    and label_efficiency_runs.{csv,md} (one row per run) beside runs/.
    """
    config, budget = setup(preset, config, {"fractions": fractions, "num_seeds": num_seeds, "steps": steps,
                                            "pretrain_epochs": pretrain_epochs})
    with experiment_folder(out_dir, resume) as folder:
        data = experiment_data(source, config, cache_root, progress)
        if encoder is None:
            pretrain_dir = pretrain_folder(pretrain_run, folder)
            encoder, data = pretrained_encoder(data, config, pretrain_dir, own_pretrain_epochs(budget, pretrain_run,
                                                                                              pretrain_epochs), progress)
        else:
            pretrain_dir = Path(encoder).resolve()
            training.check_encoder(pretrain_dir, config)
        runs = label_efficiency_runs(data, config, encoder, budget, folder / "runs", n_boot, progress)
        table = label_efficiency_table(runs, folder / "runs", n_boot, config.seed)
        if out_dir is not None:
            fig = plots.plot_label_efficiency(table.reset_index())
            write_results(folder, "label_efficiency", table, fig, runs.set_index(["fraction", "seed", "arm"]),
                          settings_record("label efficiency", source, config, budget, pretrain_run=str(pretrain_dir)))
    return table


# The sex input


def sex_input_experiment(source: str = "phantom", preset: str = "cpu", num_seeds: int | None = None,
                         out_dir: str | Path | None = None, pretrain_run: str | Path | None = None,
                         num_epochs: int | None = None, pretrain_epochs: int | None = None, resume: bool = False,
                         config: Config | None = None, cache_root: str | Path | None = None, n_boot: int = 2000,
                         progress: bool = True) -> pd.DataFrame:
    """Measure what giving AE-BoNet the child's sex as a second input changes (chapter 7).

    Both arms fine-tune the same pretrained encoder on all training labels with the same
    seeds and epochs (`num_epochs`, by default the budget's steps over the full train
    split); one also gets the sex. Returns one row per arm, MAE with its 95 % interval, and
    on the "with sex" row MAE(with) - MAE(without) with its paired-bootstrap interval. With
    out_dir, writes sex_input.{csv,md,png,json} and sex_input_runs.{csv,md} beside runs/.
    """
    config, budget = setup(preset, config, {"num_seeds": num_seeds, "pretrain_epochs": pretrain_epochs})
    with experiment_folder(out_dir, resume) as folder:
        data = experiment_data(source, config, cache_root, progress)
        pretrain_dir = pretrain_folder(pretrain_run, folder)
        encoder, data = pretrained_encoder(data, config, pretrain_dir, own_pretrain_epochs(budget, pretrain_run,
                                                                                          pretrain_epochs), progress)
        num_epochs = num_epochs or full_data_epochs(budget, config, data)
        arms = {WITHOUT_SEX: False, WITH_SEX: True}
        runs = seeded_runs(data, config, encoder, arms, budget.num_seeds, num_epochs, folder / "runs", n_boot, progress)
        table = comparison_table(run_dirs_by_arm(runs, folder), WITHOUT_SEX, n_boot, config.seed).set_index("arm")
        table = with_floor(table, median_predictor_mae(data, data.splits["train"]))
        if out_dir is not None:
            fig = plot_arms(table.reset_index(), "AE-BoNet with and without the sex input")
            write_results(folder, "sex_input", table, fig, runs.set_index(["arm", "seed"]),
                          settings_record("sex input", source, config, budget, num_epochs=num_epochs))
    return table


def full_data_epochs(budget: Budget, config: Config, data: BoneAgeData) -> int:
    """Return the fine-tuning epochs on the whole train split: the budget's steps, at least its minimum epochs."""
    n_train = len(data.splits["train"])
    return epochs_for_steps(n_train, config.reg_batch_size, run_steps(budget, config, n_train), budget.min_epochs)


def seeded_runs(data: BoneAgeData, config: Config, encoder: Path | None, arms: dict[str, bool], num_seeds: int,
                num_epochs: int, runs_dir: Path, n_boot: int, progress: bool) -> pd.DataFrame:
    """Fine-tune each arm (name -> sex input) for each seed on all training labels; return one row per run."""
    jobs = [(seed, arm) for seed in range(num_seeds) for arm in arms]
    rows = []
    for seed, arm in tqdm(jobs, desc="fine-tune", unit="run", disable=not progress):
        run_dir = runs_dir / arm.replace(" ", "-") / f"seed-{seed}"
        result = fine_tune_and_test(data, config.replace(seed=config.seed + seed), run_dir, encoder, num_epochs,
                                    sex_input=arms[arm], n_boot=n_boot)
        rows.append({"arm": arm, "seed": seed, **run_record(run_dir, result, runs_dir.parent)})
    return pd.DataFrame(rows)


def run_dirs_by_arm(runs: pd.DataFrame, folder: Path) -> dict[str, list[Path]]:
    """Return each arm's run folders, ordered by seed, in the order the arms first appear."""
    runs = runs.sort_values("seed", kind="stable")
    return {arm: [folder / run for run in runs[runs.arm == arm].run] for arm in runs.arm.unique()}


# Decoder variant and pretraining length


def check_decoders(decoders) -> None:
    """Refuse an empty or unknown list of decoder variants before anything trains."""
    unknown = [d for d in decoders if d not in DECODERS]
    if unknown or not decoders:
        raise AebonetError(f"decoders {list(decoders)}: choose one or more of {', '.join(DECODERS)}")


def stage_plan(config: Config, num_epochs: int | None) -> list[int]:
    """Return the epochs of each pretraining stage: the config's staged plan, scaled to num_epochs when given."""
    return training.stage_epochs(config.ae_stages, num_epochs)


def cut_config(config: Config, decoder: str, plan: list[int], stages: int) -> Config:
    """Return the config of a pretraining run with `decoder` that stops after its first `stages` stages."""
    if not 1 <= stages <= len(plan):
        raise AebonetError(f"stage cut {stages}: the pretraining plan {plan} has stages 1 to {len(plan)}")
    return config.replace(decoder=decoder, ae_stages=tuple(plan[:stages]))


def reconstruction_quality(run_dir: Path) -> dict:
    """Return the autoencoder's validation loss and PSNR at the end of a pretraining run."""
    last = pd.read_csv(run_dir / "history.csv").iloc[-1]
    return {"val_loss": float(last.get("val_loss", np.nan)), "val_psnr": float(last.get("val_psnr", np.nan))}


def variant_name(decoder: str, epochs: int) -> str:
    """Return an arm's name, such as "transpose, 3 epochs"."""
    return f"{decoder}, {epochs} epoch{'' if epochs == 1 else 's'}"


def pretrain_variants(data: BoneAgeData, config: Config, decoders, cuts, plan: list[int], runs_dir: Path,
                      progress: bool) -> list[dict]:
    """Pretrain one autoencoder per decoder and stage cut (each from the start); return one record per run."""
    records = []
    for decoder in decoders:
        for stages in cuts:
            run_dir = runs_dir / f"pretrain-{decoder}-stages-{stages}"
            variant = cut_config(config, decoder, plan, stages)
            training.pretrain(data, variant, run_dir, resume=True, progress=progress)
            records.append({"arm": variant_name(decoder, sum(plan[:stages])), "decoder": decoder, "stages": stages,
                            "pretrain_epochs": sum(plan[:stages]), "encoder": run_dir / "encoder.keras",
                            **reconstruction_quality(run_dir)})
    return records


def decoder_runs(data: BoneAgeData, config: Config, variants: list[dict], num_seeds: int, num_epochs: int,
                 runs_dir: Path, n_boot: int, progress: bool) -> pd.DataFrame:
    """Fine-tune AE-BoNet on each pretrained variant, and the from-scratch control, for each seed; one row per run."""
    arms = [{"arm": SCRATCH, "decoder": "", "stages": 0, "pretrain_epochs": 0, "encoder": None}, *variants]
    jobs = [(seed, arm) for seed in range(num_seeds) for arm in arms]
    rows = []
    for seed, arm in tqdm(jobs, desc="fine-tune", unit="run", disable=not progress):
        name = "scratch" if arm["encoder"] is None else arm["encoder"].parent.name.replace("pretrain-", "aebonet-")
        run_dir = runs_dir / name / f"seed-{seed}"
        result = fine_tune_and_test(data, config.replace(seed=config.seed + seed), run_dir, arm["encoder"],
                                    num_epochs, n_boot=n_boot)
        rows.append({"arm": arm["arm"], "seed": seed, **run_record(run_dir, result, runs_dir.parent)})
    return pd.DataFrame(rows)


def decoder_experiment(source: str = "phantom", preset: str = "cpu", decoders: tuple[str, ...] = DECODERS,
                       stage_cuts: tuple[int, ...] | None = None, num_seeds: int | None = None,
                       out_dir: str | Path | None = None, num_epochs: int | None = None,
                       pretrain_epochs: int | None = None, resume: bool = False, config: Config | None = None,
                       cache_root: str | Path | None = None, n_boot: int = 2000, progress: bool = True) -> pd.DataFrame:
    """Measure how the decoder variant and the pretraining length change AE-BoNet's downstream MAE (chapter 7).

    For each decoder (upsample_conv, conv_upsample, transpose) and each stage cut, an
    autoencoder is pretrained from the start for the first `stages` stages of the staged
    plan (`pretrain_epochs` in all, spread over the stages as `aebonet pretrain --epochs`
    does); with the same seed this is, up to floating-point nondeterminism, the full run
    stopped at the end of that stage. Each
    encoder is then fine-tuned on all training labels, beside the from-scratch control
    (0 pretraining epochs), with the same seeds and epochs. Returns one row per arm: its
    reconstruction quality, MAE with its 95 % interval, and MAE(arm) - MAE(scratch) with
    its paired-bootstrap interval. With out_dir, writes decoder.{csv,md,png,json} and
    decoder_runs.{csv,md} beside runs/.
    """
    config, budget = setup(preset, config, {"num_seeds": num_seeds, "pretrain_epochs": pretrain_epochs,
                                            "stage_cuts": stage_cuts})
    plan = stage_plan(config, budget.pretrain_epochs)
    check_decoders(decoders)
    with experiment_folder(out_dir, resume) as folder:
        data = experiment_data(source, config, cache_root, progress)
        variants = pretrain_variants(data, config, decoders, budget.stage_cuts, plan, folder / "runs", progress)
        num_epochs = num_epochs or full_data_epochs(budget, config, data)
        runs = decoder_runs(data, config, variants, budget.num_seeds, num_epochs, folder / "runs", n_boot, progress)
        table = with_floor(decoder_table(runs, variants, folder, n_boot, config.seed),
                           median_predictor_mae(data, data.splits["train"]))
        if out_dir is not None:
            fig = plot_arms(table.reset_index(), "Decoder variant and pretraining length against downstream MAE")
            write_results(folder, "decoder", table, fig, runs.set_index(["arm", "seed"]),
                          settings_record("decoder", source, config, budget, plan=plan, num_epochs=num_epochs))
    return table


def decoder_table(runs: pd.DataFrame, variants: list[dict], folder: Path, n_boot: int, seed: int) -> pd.DataFrame:
    """Return one row per arm: decoder, pretraining epochs, reconstruction quality, MAE, and the difference from scratch."""
    comparison = comparison_table(run_dirs_by_arm(runs, folder), SCRATCH, n_boot, seed)
    details = pd.DataFrame([{k: v for k, v in variant.items() if k != "encoder"} for variant in variants])
    scratch = pd.DataFrame([{"arm": SCRATCH, "decoder": "", "stages": 0, "pretrain_epochs": 0}])
    table = pd.concat([scratch, details], ignore_index=True).merge(comparison, on="arm")
    return table.set_index("arm")
