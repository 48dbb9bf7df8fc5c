"""Experiments: labelled subsets, fair arms on the same images, paired comparisons, files written, the CLI."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from aebonet_lib._engine.cli import main
from aebonet_lib._engine.files import read_json
from aebonet_lib.config import get_config
from aebonet_lib.data.loading import load_data
from aebonet_lib.errors import AebonetError
from aebonet_lib.evaluation import metrics
from aebonet_lib.experiments import protocol, studies

TINY_DATA = "phantom:120"
FRACTIONS = (0.25, 1.0)
STEPS = 6


def ids(path: Path) -> list[str]:
    """Return the image ids listed in a split file."""
    return path.read_text().split()


pytestmark = pytest.mark.usefixtures("module_cache")


@pytest.fixture(scope="module")
def config():
    """Return a tiny recipe: 32 px, width 0.125, two one-epoch pretraining stages."""
    return get_config("cpu", image_size=32, width=0.125, ae_stages=(1, 1), phantom_n=120)


@pytest.fixture(scope="module")
def label_experiment(tmp_path_factory, module_cache, config) -> tuple[pd.DataFrame, Path]:
    """Run the label-efficiency experiment on 120 phantom images, 2 fractions, 1 seed; return its table and folder."""
    out = tmp_path_factory.mktemp("labels") / "exp"
    table = studies.label_efficiency(TINY_DATA, config=config, fractions=FRACTIONS, num_seeds=1, steps=STEPS,
                                         pretrain_epochs=2, out_dir=out, cache_root=module_cache, n_boot=200, progress=False)
    return table, out


# Pure functions: subsets, steps, budgets


def test_label_subsets_have_the_right_size_nest_and_come_from_the_train_split():
    train = np.arange(10, 110)
    subsets = {f: protocol.label_subset(train, f, seed=3) for f in (0.05, 0.1, 0.25, 0.5, 1.0)}
    for fraction, subset in subsets.items():
        assert len(subset) == round(fraction * 100) and len(set(subset)) == len(subset)
        assert set(subset) <= set(train)
    assert set(subsets[0.05]) <= set(subsets[0.1]) <= set(subsets[0.25]) <= set(subsets[0.5]) <= set(subsets[1.0])
    assert set(subsets[1.0]) == set(train)
    assert not np.array_equal(protocol.label_subset(train, 0.1, 0), protocol.label_subset(train, 0.1, 1))
    np.testing.assert_array_equal(protocol.label_subset(train, 0.1, 3), subsets[0.1])
    assert len(protocol.label_subset(train, 0.001, 0)) == protocol.MIN_LABELS
    with pytest.raises(AebonetError, match="fraction"):
        protocol.label_subset(train, 0.0, 0)


def test_epochs_for_steps_give_the_same_steps_whatever_the_fraction():
    assert protocol.steps_per_epoch(53, 16) == 4
    assert protocol.epochs_for_steps(53, 16, steps=130, min_epochs=2) == 33
    assert protocol.epochs_for_steps(1050, 16, steps=130, min_epochs=2) == 2
    assert protocol.epochs_for_steps(1050, 16, steps=10, min_epochs=3) == 3
    for n_labels in (20, 53, 105, 525, 1050):
        epochs = protocol.epochs_for_steps(n_labels, 16, steps=200, min_epochs=1)
        assert 200 <= epochs * protocol.steps_per_epoch(n_labels, 16) < 200 + protocol.steps_per_epoch(n_labels, 16)


def test_budgets_and_their_errors():
    assert protocol.get_budget("cpu").fractions == protocol.BUDGETS["cpu"].fractions
    assert protocol.get_budget("paper").fractions == (0.05, 0.1, 0.25, 0.5, 1.0)
    assert protocol.get_budget("cpu", num_seeds=4, fractions=None).num_seeds == 4
    with pytest.raises(AebonetError, match="unknown preset"):
        protocol.get_budget("laptop")
    with pytest.raises(AebonetError, match=r"fraction 1.5"):
        protocol.get_budget("cpu", fractions=(0.5, 1.5))
    with pytest.raises(AebonetError, match="at least 1"):
        protocol.get_budget("cpu", steps=0)
    with pytest.raises(AebonetError, match="decoders"):
        studies.check_decoders(["upsample_conv", "deconv"])


# Comparisons on fake runs


def fake_run(folder: Path, y: np.ndarray, y_hat: np.ndarray, ids_=None) -> Path:
    """Write a predictions.csv like predict.evaluate's into a new folder; return the folder."""
    folder.mkdir(parents=True)
    ids_ = ids_ if ids_ is not None else [str(i) for i in range(len(y))]
    pd.DataFrame({"id": ids_, "true": y, "predicted": y_hat, "sex": "F"}).to_csv(folder / "predictions.csv", index=False)
    return folder


def test_comparison_table_averages_seeds_and_pairs_the_images(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.uniform(10, 200, 80)
    good = [fake_run(tmp_path / f"good{s}", y, y + rng.normal(0, 3, 80)) for s in range(2)]
    bad = [fake_run(tmp_path / f"bad{s}", y, y + rng.normal(0, 12, 80)) for s in range(2)]
    table = protocol.comparison_table({"good": good, "bad": bad}, baseline="bad", n_boot=500).set_index("arm")
    good_errors = np.mean([np.abs(pd.read_csv(d / "predictions.csv").eval("predicted - true")) for d in good], axis=0)
    bad_errors = np.mean([np.abs(pd.read_csv(d / "predictions.csv").eval("predicted - true")) for d in bad], axis=0)
    assert table.loc["good", "mae"] == pytest.approx(good_errors.mean())
    assert table.loc["good", "difference"] == pytest.approx(good_errors.mean() - bad_errors.mean())
    assert table.loc["good", "ci_low"] <= table.loc["good", "mae"] <= table.loc["good", "ci_high"]
    assert table.loc["good", "difference_ci_high"] < 0 and table.loc["good", "finding"] == "good lower MAE"
    assert table.loc["good", "seeds_better"] == 2 and table.loc["good", "seeds"] == 2
    assert np.isnan(table.loc["bad", "difference"]) and table.loc["bad", "finding"] == ""
    single = metrics.mae(y, pd.read_csv(good[0] / "predictions.csv").predicted)
    assert min(table.loc["good", ["seed_mae_min", "seed_mae_max"]]) <= single <= max(table.loc["good", ["seed_mae_min", "seed_mae_max"]])


def test_comparison_intervals_carry_the_seeds_variation(tmp_path):
    rng = np.random.default_rng(1)
    y = rng.uniform(10, 200, 200)
    noise = [rng.normal(0, 5, 200) for _ in range(3)]
    agree = [fake_run(tmp_path / f"agree{s}", y, y + noise[s] + 10) for s in range(3)]
    spread = [fake_run(tmp_path / f"spread{s}", y, y + noise[s] + 10 * (2 * s)) for s in range(3)]  # 0, 20, 40 months off
    table = protocol.comparison_table({"agree": agree, "spread": spread}, baseline="agree", n_boot=1000).set_index("arm")
    averaged = np.mean([np.abs(pd.read_csv(d / "predictions.csv").eval("predicted - true")) for d in spread], axis=0)
    images_only = metrics.bootstrap_ci(np.zeros(len(averaged)), averaged, metrics.mae, 1000, 0.95, 0)
    assert table.loc["spread", "ci_high"] - table.loc["spread", "ci_low"] > 3 * (images_only[1] - images_only[0])
    assert table.loc["spread", "difference_ci_low"] < table.loc["spread", "difference"] < table.loc["spread", "difference_ci_high"]


def test_comparison_refuses_arms_with_other_seeds(tmp_path):
    y = np.linspace(10, 200, 20)
    one = [fake_run(tmp_path / "one0", y, y + 1)]
    two = [fake_run(tmp_path / f"two{s}", y, y + 2) for s in range(2)]
    with pytest.raises(AebonetError, match="same seeds"):
        protocol.comparison_table({"one": one, "two": two}, baseline="two", n_boot=100)


def test_comparison_refuses_runs_tested_on_other_images(tmp_path):
    y = np.linspace(10, 200, 20)
    a = fake_run(tmp_path / "a", y, y + 1)
    b = fake_run(tmp_path / "b", y, y + 2, ids_=[str(i + 100) for i in range(20)])
    with pytest.raises(AebonetError, match="different images"):
        protocol.comparison_table({"a": [a], "b": [b]}, baseline="b", n_boot=100)


def test_findings_read_the_interval():
    assert protocol.finding(-3, -1, "pretrained", "scratch") == "pretrained lower MAE"
    assert protocol.finding(1, 3, "pretrained", "scratch") == "scratch lower MAE"
    assert protocol.finding(-1, 2, "pretrained", "scratch") == "no clear difference"


# The label-efficiency experiment, end to end


def test_label_efficiency_returns_one_row_per_fraction_and_arm(label_experiment):
    table, _ = label_experiment
    assert list(table.index) == [(0.25, "pretrained"), (0.25, "scratch"), (1.0, "pretrained"), (1.0, "scratch")]
    for column in ("n_labels", "epochs", "steps", "mae", "ci_low", "ci_high", "difference", "difference_ci_low",
                   "difference_ci_high", "p_value", "finding"):
        assert column in table.columns, column
    assert (table.ci_low <= table.mae).all() and (table.mae <= table.ci_high).all()
    assert (table.seeds == 1).all() and (table.steps >= STEPS).all()
    pretrained = table.xs("pretrained", level="arm")
    scratch = table.xs("scratch", level="arm")
    np.testing.assert_allclose(pretrained.difference, pretrained.mae - scratch.mae)
    assert scratch.difference.isna().all() and pretrained.difference.notna().all()
    assert pretrained.finding.isin(["pretrained lower MAE", "scratch lower MAE", "no clear difference"]).all()
    assert (table.median_predictor_mae > 0).all()
    assert (table.beats_median_predictor == (table.ci_high < table.median_predictor_mae)).all()


def test_the_mean_predictor_floor_is_the_training_mean_on_the_test_images(label_experiment, module_cache, config):
    table, out = label_experiment
    data = load_data(TINY_DATA, 32, split=config.split, cache_root=module_cache, progress=False)
    y_train, y_test = (data.y[data.splits[name]] for name in ("train", "test"))
    assert table.loc[(1.0, "scratch"), "median_predictor_mae"] == pytest.approx(np.mean(np.abs(y_test - np.median(y_train))))


def test_label_efficiency_writes_its_table_figure_and_runs(label_experiment):
    table, out = label_experiment
    for name in ("label_efficiency.csv", "label_efficiency.md", "label_efficiency.png", "label_efficiency.json",
                 "label_efficiency_runs.csv", "label_efficiency_runs.md"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "label_efficiency.png").read_bytes()[:4] == b"\x89PNG"
    runs = pd.read_csv(out / "label_efficiency_runs.csv")
    assert len(runs) == len(FRACTIONS) * 2
    saved = pd.read_csv(out / "label_efficiency.csv").set_index(["fraction", "arm"])
    np.testing.assert_allclose(saved.mae, table.mae)
    settings = read_json(out / "label_efficiency.json")
    assert settings["budget"]["steps"] == STEPS and settings["config"]["image_size"] == 32


def test_both_arms_see_the_same_labels_and_the_same_test_images(label_experiment):
    _, out = label_experiment
    pretrain = out / "runs" / "pretrain"
    pretrain_train, pretrain_test = set(ids(pretrain / "splits" / "train.txt")), ids(pretrain / "splits" / "test.txt")
    seed = 0
    subsets = {}
    for fraction in FRACTIONS:
        runs = {arm: protocol.label_run_dir(out / "runs", fraction, seed, arm) for arm in ("pretrained", "scratch")}
        train = {arm: ids(run / "splits" / "train.txt") for arm, run in runs.items()}
        assert train["pretrained"] == train["scratch"]
        assert set(train["pretrained"]) <= pretrain_train
        assert len(train["pretrained"]) == max(2, round(fraction * len(pretrain_train)))
        subsets[fraction] = set(train["pretrained"])
        for arm, run in runs.items():
            assert ids(run / "splits" / "test.txt") == pretrain_test
            assert sorted(pd.read_csv(run / "predictions.csv", dtype={"id": str}).id) == sorted(pretrain_test)
        records = {arm: read_json(run / "config.json") for arm, run in runs.items()}
        assert records["pretrained"]["num_epochs"] == records["scratch"]["num_epochs"]
        assert records["pretrained"]["config"]["seed"] == records["scratch"]["config"]["seed"] == seed
        assert records["pretrained"]["backbone"] == "aebonet" and records["scratch"]["backbone"] == "scratch"
        assert Path(records["pretrained"]["encoder"]) == pretrain / "encoder.keras"
        recipe = dict(protocol.get_budget("cpu").fine_tuning)  # both arms fine-tune with the budget's recipe
        for record in records.values():
            assert {field: record["config"][field] for field in recipe} == recipe
    assert subsets[0.25] <= subsets[1.0]
    assert read_json(pretrain / "config.json")["config"]["augment"] is False  # pretraining keeps the preset's


def test_label_efficiency_refuses_bad_folders(label_experiment, module_cache, config):
    _, out = label_experiment
    with pytest.raises(AebonetError, match="not empty.*resume"):
        studies.label_efficiency(TINY_DATA, config=config, out_dir=out, cache_root=module_cache, progress=False)
    wider = config.replace(width=0.25)
    with pytest.raises(AebonetError, match="width 0.125"):
        studies.label_efficiency(TINY_DATA, config=wider, fractions=(1.0,), pretrain_run=out / "runs" / "pretrain",
                                     cache_root=module_cache, progress=False)


# The other two experiments


def test_sex_input_experiment(label_experiment, tmp_path, module_cache, config):
    pretrain = label_experiment[1] / "runs" / "pretrain"
    out = tmp_path / "sex"
    table = studies.sex_input_experiment(TINY_DATA, config=config, num_seeds=1, num_epochs=1, pretrain_run=pretrain,
                                             out_dir=out, cache_root=module_cache, n_boot=100, progress=False)
    assert list(table.index) == ["without sex", "with sex"]
    assert np.isnan(table.loc["without sex", "difference"])
    assert table.loc["with sex", "difference"] == pytest.approx(table.loc["with sex", "mae"] - table.loc["without sex", "mae"])
    for name in ("sex_input.csv", "sex_input.md", "sex_input.png", "sex_input_runs.csv"):
        assert (out / name).is_file(), name
    records = {arm: read_json(out / "runs" / arm / "seed-0" / "config.json") for arm in ("with-sex", "without-sex")}
    assert records["with-sex"]["sex_input"] and not records["without-sex"]["sex_input"]
    assert records["with-sex"]["encoder"] == records["without-sex"]["encoder"] == str(pretrain / "encoder.keras")


def test_decoder_experiment(tmp_path, module_cache, config):
    out = tmp_path / "decoder"
    table = studies.decoder_experiment(TINY_DATA, config=config, decoders=("transpose",), stage_cuts=(1, 2),
                                           num_seeds=1, num_epochs=1, pretrain_epochs=2, out_dir=out,
                                           cache_root=module_cache, n_boot=100, progress=False)
    assert list(table.index) == ["scratch", "transpose, 1 epoch", "transpose, 2 epochs"]
    assert list(table.pretrain_epochs) == [0, 1, 2]
    assert table.val_psnr.iloc[1:].notna().all() and np.isnan(table.loc["scratch", "val_psnr"])
    assert table.difference.iloc[1:].notna().all()
    assert table.median_predictor_mae.nunique() == 1 and table.beats_median_predictor.dtype == bool
    for name in ("decoder.csv", "decoder.md", "decoder.png", "decoder_runs.csv"):
        assert (out / name).is_file(), name
    for stages, epochs in ((1, 1), (2, 2)):
        run = out / "runs" / f"pretrain-transpose-stages-{stages}"
        assert read_json(run / "config.json")["config"]["decoder"] == "transpose"
        assert len(pd.read_csv(run / "history.csv")) == epochs
    with pytest.raises(AebonetError, match="stage cut 3"):
        studies.decoder_experiment(TINY_DATA, config=config, decoders=("transpose",), stage_cuts=(3,),
                                       pretrain_epochs=2, cache_root=module_cache, progress=False)


# The command line


def test_cli_reuses_a_finished_pretraining_run_and_lists_its_files(label_experiment, tmp_path, capsys):
    pretrain = label_experiment[1] / "runs" / "pretrain"
    before = (pretrain / "encoder.keras").stat().st_mtime_ns
    out = tmp_path / "cli"
    code = main(["experiment", "label-efficiency", "--data", TINY_DATA, "--size", "32", "--width", "0.125",
                 "--fractions", "1", "--steps", "2", "--pretrain", str(pretrain), "--out", str(out)])
    assert code == 0
    assert (pretrain / "encoder.keras").stat().st_mtime_ns == before and not (out / "runs" / "pretrain").exists()
    assert read_json(out / "runs" / "labels-1" / "seed-0" / "pretrained" / "config.json")["encoder"] == str(pretrain / "encoder.keras")
    printed = capsys.readouterr().out
    assert "no clear difference" in printed or "lower MAE" in printed
    assert f"wrote {out / 'label_efficiency.png'}" in printed and f"wrote {out / 'label_efficiency.csv'}" in printed


def test_cli_fine_tunes_from_an_encoder_pretrained_on_other_images(tmp_path, capsys):
    # Chapter 7's third arm: an encoder pretrained elsewhere (here another phantom draw) is used as it is.
    tiny = ["--size", "32", "--width", "0.125"]
    assert main(["pretrain", "--data", "phantom:60", *tiny, "--epochs", "2", "--seed", "1", "--out", str(tmp_path / "ae")]) == 0
    encoder = tmp_path / "ae" / "encoder.keras"
    out = tmp_path / "cli"
    assert main(["experiment", "label-efficiency", "--data", TINY_DATA, *tiny, "--fractions", "1", "--steps", "2",
                 "--encoder", str(encoder), "--out", str(out)]) == 0
    assert read_json(out / "runs" / "labels-1" / "seed-0" / "pretrained" / "config.json")["encoder"] == str(encoder.resolve())
    assert not (out / "runs" / "pretrain").exists()
    assert read_json(out / "label_efficiency.json")["pretrain_run"] == str(encoder.resolve())
    capsys.readouterr()
    assert main(["experiment", "label-efficiency", "--encoder", str(encoder), "--pretrain", "runs/ae",
                 "--out", str(tmp_path / "both")]) == 2
    assert "--encoder and --pretrain: give one" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["experiment", "sex-input", "--fractions", "0.1,1"], "--fractions does not apply to the sex-input experiment"),
    (["experiment", "sex-input", "--encoder", "ae/encoder.keras"], "--encoder does not apply to the sex-input"),
    (["experiment", "decoder", "--pretrain", "runs/ae"], "--pretrain does not apply to the decoder experiment"),
    (["experiment", "label-efficiency", "--epochs", "3"], "--epochs does not apply to the label-efficiency"),
])
def test_cli_refuses_options_of_other_experiments(tmp_path, capsys, argv, message):
    assert main([*argv, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("aebonet experiment: error:")
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("argv", [
    ["experiment", "dropout", "--out", "x"],
    ["experiment", "label-efficiency", "--fractions", "0,2", "--out", "x"],
    ["experiment", "label-efficiency", "--fractions", "half", "--out", "x"],
    ["experiment", "label-efficiency", "--seeds", "0", "--out", "x"],
])
def test_cli_rejects_bad_arguments(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_cli_refuses_a_non_empty_out_folder(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("mine")
    assert main(["experiment", "label-efficiency", "--data", TINY_DATA, "--size", "32", "--out", str(tmp_path)]) == 2
    assert "not empty" in capsys.readouterr().err and (tmp_path / "keep.txt").read_text() == "mine"
