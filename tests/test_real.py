"""The real-data experiment (`aebonet experiment real`) and the results files it writes.

The end-to-end test runs on a few hundred real RSNA radiographs when ../shared/rsna_bone_age_256
is present, and on a tiny phantom otherwise; both train tiny models for a minute or less.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aebonet_lib._engine import real, rsna_results
from aebonet_lib.config import get_config
from aebonet_lib.errors import AebonetError
from aebonet_lib.experiments import protocol

SHARED_RSNA = Path(__file__).resolve().parents[2] / "shared" / "rsna_bone_age_256"
TINY = dict(image_size=32, width=0.125, ae_stages=(1,), reg_num_epochs=2, lr_schedule="cosine", keep="last",
            split=(0.6, 0.25, 0.15), phantom_n=120)
TINY_BUDGET = protocol.Budget(fractions=(0.5, 1.0), num_seeds=1, pretrain_epochs=None, steps=None, min_epochs=2,
                                 stage_cuts=(1,))


def test_plan_trains_the_main_comparison_first_and_every_arm_at_every_fraction_and_seed():
    jobs = real.plan((0.05, 0.1, 0.25, 1.0), num_seeds=2)
    names = [job.name for job in jobs]
    assert names[:2] == ["labels-1/seed-0/pretrained", "labels-1/seed-0/scratch"]
    assert len(names) == len(set(names)) == 4 * 2 * 2 + 1
    assert names[-1] == "sex-augment/seed-0/pretrained" and jobs[-1].sex_input and jobs[-1].augment
    for fraction in (0.05, 0.1, 0.25, 1.0):
        for seed in (0, 1):
            assert {f"labels-{fraction:g}/seed-{seed}/{arm}" for arm in ("pretrained", "scratch")} <= set(names)


def test_dataset_digest_changes_with_any_byte(tmp_path):
    (tmp_path / "a.csv").write_text("id,boneage\n1,12\n")
    first = real.dataset_digest(tmp_path)
    (tmp_path / "a.csv").write_text("id,boneage\n1,13\n")
    assert real.dataset_digest(tmp_path)["sha256"] != first["sha256"]
    assert first["files"] == 1


def test_collect_refuses_a_folder_without_finished_runs(tmp_path):
    with pytest.raises(AebonetError, match="no finished"):
        rsna_results.collect(tmp_path, tmp_path / "results")


def test_load_says_how_to_make_missing_results(tmp_path):
    with pytest.raises(AebonetError, match="aebonet experiment real"):
        rsna_results.load(tmp_path)


def rsna_subset(folder: Path, n: int = 300) -> Path:
    """Write a Kaggle-layout folder holding links to the first n real RSNA training radiographs."""
    labels = pd.read_csv(SHARED_RSNA / "boneage-training-dataset.csv").head(n)
    images = folder / "boneage-training-dataset"
    images.mkdir(parents=True)
    for image_id in labels.id:
        (images / f"{image_id}.jpg").symlink_to(SHARED_RSNA / "boneage-training-dataset" / f"{image_id}.jpg")
    labels.to_csv(folder / "boneage-training-dataset.csv", index=False)
    return folder


@pytest.fixture(scope="module")
def tiny_experiment(tmp_path_factory, module_cache) -> Path:
    """Run the real-data experiment with tiny models: on real radiographs when present, else on a phantom."""
    root = tmp_path_factory.mktemp("real")
    source = str(rsna_subset(root / "rsna")) if SHARED_RSNA.is_dir() else "phantom:150"
    config = get_config("cpu", **TINY)
    return real.real_experiment(source, root / "out", config=config, budget=TINY_BUDGET, extras=False)


def test_experiment_writes_every_results_file_with_provenance(tiny_experiment):
    results = rsna_results.load(tiny_experiment / "results")
    assert sorted(results.runs.run) == sorted(f"labels-{f:g}/seed-0/{arm}" for f in (0.5, 1.0)
                                              for arm in ("pretrained", "scratch"))
    assert set(results.predictions.split) == {"test", "val"}
    assert results.provenance["config"]["image_size"] == 32
    assert "machine" in results.provenance and results.provenance["runs"] == 4
    assert {"run", "epoch", "loss"} <= set(results.history.columns)
    assert "pretrain" in set(results.history.run)
    full = results.runs.set_index("run").loc["labels-1/seed-0/pretrained"]
    half = results.runs.set_index("run").loc["labels-0.5/seed-0/pretrained"]
    assert half.n_labels == pytest.approx(full.n_labels / 2, abs=1)
    assert full.val_mae_low <= full.val_mae <= full.val_mae_high


def test_results_recompute_the_runs_own_metrics(tiny_experiment):
    results = rsna_results.load(tiny_experiment / "results")
    row = results.runs.set_index("run").loc["labels-1/seed-0/scratch"]
    assert rsna_results.run_metrics(results, "labels-1/seed-0/scratch", "val")["mae"] == pytest.approx(row.val_mae,
                                                                                                        abs=0.01)
    diff = rsna_results.paired(results, "labels-1/seed-0/pretrained", "labels-1/seed-0/scratch", "test")
    assert diff["mae_b"] == pytest.approx(row.test_mae, abs=0.01)
    assert diff["mae_difference"] == pytest.approx(diff["mae_a"] - diff["mae_b"])
    assert diff["ci95"][0] <= diff["mae_difference"] <= diff["ci95"][1]
    baseline = rsna_results.mean_baseline(results, "val")
    assert baseline["n"] == row.val_n and baseline["y_mean"] == pytest.approx(row.y_mean)


def test_label_efficiency_and_trend_compare_the_arms_on_the_same_images(tiny_experiment):
    results = rsna_results.load(tiny_experiment / "results")
    table = rsna_results.label_efficiency(results, "val")
    assert list(table.fraction) == [0.5, 1.0]
    assert np.allclose(table.difference, table.pretrained - table.scratch)
    trend = rsna_results.benefit_trend(results, "val")
    benefits = (table.scratch - table.pretrained).to_numpy()
    assert trend["benefits"] == pytest.approx(benefits)
    assert trend["smallest_minus_full"] == pytest.approx(benefits[0] - benefits[-1])
    assert trend["slope_ci"][0] <= trend["slope_per_halving"] <= trend["slope_ci"][1]


def test_rerunning_the_experiment_resumes_without_training_again(tiny_experiment):
    model = tiny_experiment / "runs" / "labels-1" / "seed-0" / "scratch" / "model.keras"
    before = model.stat().st_mtime_ns
    source = (tiny_experiment.parent / "rsna") if SHARED_RSNA.is_dir() else "phantom:150"
    real.real_experiment(str(source), tiny_experiment, config=get_config("cpu", **TINY), budget=TINY_BUDGET,
                         extras=False)
    assert model.stat().st_mtime_ns == before


@pytest.mark.skipif(not SHARED_RSNA.is_dir(), reason="../shared/rsna_bone_age_256 is absent")
def test_real_radiographs_give_ages_in_the_rsna_range(tiny_experiment):
    results = rsna_results.load(tiny_experiment / "results")
    assert results.predictions.true.between(1, 228).all()
    assert results.provenance["data_checksum"]["files"] == 301  # 300 images and the label file


def test_trust_report_measures_both_models_on_real_phantom_and_odd_images(tiny_experiment):
    trust = rsna_results.load(tiny_experiment / "results").trust
    assert set(trust.model) == {"AE-BoNet trained on RSNA", "AE-BoNet trained on the phantom"}
    assert {"RSNA val split", "phantom test split", "blank, black", "inverted", "rotated 90 degrees"} <= set(trust.images)
    assert trust.flagged.between(0, 1).all() and (trust.flagged >= trust.unlike_training).all()
    on_real = trust[trust.images == "RSNA val split"].set_index("model")
    assert on_real.mae.notna().all() and on_real.constant_mae.nunique() == 1  # one constant: the real training mean
    assert (tiny_experiment / "runs" / "phantom" / "aebonet" / "model.trust.json").is_file()


SHARED_SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "rsna_sample"


@pytest.mark.parametrize("name", ["rsna-cpu", "rsna-cpu-paper"])
def test_the_rsna_models_ship_with_the_rsna_attribution(name):
    from aebonet_lib._engine import modelfiles, predict

    assert name in predict.shipped_models()
    meta = modelfiles.read_model_meta(predict.resolve_model(name))
    assert "Halabi" in meta.notes["attribution"] and "non-commercial" in meta.notes["attribution"]
    assert meta.notes["name"] == name and (predict.resolve_model(name).with_suffix(".trust.json")).is_file()


def test_the_shipped_rsna_cpu_model_takes_the_sex_and_the_paper_model_does_not():
    from aebonet_lib._engine import modelfiles, predict

    assert modelfiles.read_model_meta(predict.resolve_model("rsna-cpu")).sex_input
    assert not modelfiles.read_model_meta(predict.resolve_model("rsna-cpu-paper")).sex_input


@pytest.mark.skipif(not SHARED_RSNA.is_dir(), reason="../shared/rsna_bone_age_256 is absent")
@pytest.mark.parametrize("name", ["rsna-cpu", "rsna-cpu-paper"])
def test_the_shipped_models_predict_real_radiographs_within_a_sane_range(name):
    from aebonet_lib._engine import predict

    labels_file = SHARED_RSNA / "boneage-training-dataset.csv"
    labels = pd.read_csv(labels_file).sample(12, random_state=1)
    files = [SHARED_RSNA / "boneage-training-dataset" / f"{i}.jpg" for i in labels.id]
    table = predict.predict_images(name, files, progress=False, sex_from=labels_file if name == "rsna-cpu" else None)
    assert table.bone_age_months.between(0, 240).all()
    errors = (table.bone_age_months.to_numpy() - labels.boneage.to_numpy())
    assert np.abs(errors).mean() < 30  # both models: under 16 months on 2,323 images; predicting the mean: 32.9
    assert not table.out_of_range.any()


@pytest.mark.skipif(not SHARED_SAMPLE.is_dir(), reason="../shared/rsna_sample is absent")
def test_the_shipped_model_reads_full_resolution_registered_radiographs(capsys):
    from aebonet_lib._engine.cli import main

    labels = SHARED_SAMPLE / "boneage-training-dataset.csv"
    assert main(["predict", "--model", "rsna-cpu", "--sex-from", str(labels),
                 str(SHARED_SAMPLE / "boneage-training-dataset")]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith("#") and "not for clinical use" in out[0]  # the CSV opens with its provenance
    lines = [line for line in out if not line.startswith("#")]
    assert lines[0].startswith("file,bone_age_months,bone_age") and len(lines) == 9


def test_collect_only_leaves_out_unfinished_runs_and_trains_nothing(tiny_experiment):
    source = (tiny_experiment.parent / "rsna") if SHARED_RSNA.is_dir() else "phantom:150"
    budget = protocol.Budget(fractions=(0.25, 0.5, 1.0), num_seeds=1, pretrain_epochs=None, steps=None,
                                min_epochs=2, stage_cuts=(1,))
    real.real_experiment(str(source), tiny_experiment, config=get_config("cpu", **TINY), budget=budget, extras=False,
                         collect_only=True)
    assert not (tiny_experiment / "runs" / "labels-0.25").exists()
    assert "labels-0.25/seed-0/scratch" not in set(rsna_results.load(tiny_experiment / "results").runs.run)


def test_cli_refuses_real_experiment_options_elsewhere(capsys):
    from aebonet_lib._engine.cli import main

    assert main(["experiment", "label-efficiency", "--collect-only", "--out", "x"]) == 2
    assert "--collect-only does not apply" in capsys.readouterr().err
