"""Sim-to-real: train on phantoms only, test on another set, beside the median predictor (_engine.sim2real)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from aebonet_lib import phantom
from aebonet_lib._engine import sim2real
from aebonet_lib.errors import AebonetError

pytestmark = pytest.mark.usefixtures("module_cache")


def test_recipe_names_say_what_they_do():
    assert sim2real.Recipe().name() == "scratch-s0" and sim2real.Recipe("rsna-cpu").name() == "rsna-cpu-scratch-s0"
    assert sim2real.Recipe(pretrain=True, clahe=True, normalize=True, augment=True, seed=2).name() == \
        "aebonet-norm-clahe-aug-s2"


def test_train_on_phantoms_and_test_on_another_set(tmp_path):
    # A second phantom draw stands in for the real set: the test only checks the plumbing, not realism.
    phantom.write_dataset(tmp_path / "other", 40, size=64, seed=1, progress=False)
    recipe = sim2real.Recipe("cpu", pretrain=True, clahe=True, normalize=True, augment=True, style="registered")
    result = sim2real.run(tmp_path / "train", tmp_path / "other", recipe, tmp_path / "out", n=40)  # writes the phantoms
    assert (tmp_path / "train" / phantom.LABELS_CSV).is_file()
    assert (tmp_path / "out" / "pretrain" / "encoder.keras").is_file()
    assert result["name"] == "cpu-registered-aebonet-norm-clahe-aug-s0" and result["n_phantoms"] == 40
    for split in sim2real.SPLITS:
        row = result[split]
        assert row["n"] > 0 and np.isfinite(row["mae"]) and row["ci_low"] <= row["mae"] <= row["ci_high"]
        assert row["minus_low"] <= row["minus_median_predictor"] <= row["minus_high"]
        assert abs(row["mae"] - row["median_predictor_mae"] - row["minus_median_predictor"]) < 1e-3
    predictions = pd.read_csv(tmp_path / "out" / "predictions.csv.gz", dtype={"id": str})
    assert list(predictions.split.unique()) == list(sim2real.SPLITS)
    train_ages = predictions[predictions.split == "train"].y
    test = predictions[predictions.split == "test"]
    assert np.isclose(result["test"]["median_predictor_mae"], np.mean(np.abs(test.y - np.median(train_ages))), atol=1e-3)
    assert np.isclose(result["test"]["mae"], np.mean(np.abs(test.y - test.y_hat)), atol=1e-3)
    assert "commit" in result and "dirty" in result
    table = sim2real.collect([tmp_path / "out"])
    assert list(table.split) == list(sim2real.SPLITS) and set(table.name) == {result["name"]}
    assert table.clahe.all() and table.augment.all() and set(table["style"]) == {"registered"}
    assert sim2real.describe(next(table.itertuples())) == "AE-BoNet, cpu, registered phantoms, equalised, augmented"


def test_choose_takes_the_lowest_training_split_mae_over_seeds_and_never_reads_val_or_test():
    rows = [("scratch-s0", "train", 30.0), ("scratch-s1", "train", 40.0),      # scratch: 35 on average
            ("aebonet-s0", "train", 33.0), ("aebonet-s1", "train", 34.0),      # aebonet: 33.5, the lowest
            ("aebonet-s0", "test", 90.0), ("scratch-s0", "val", 1.0),          # val and test must not count
            ("real-labels", "train", 5.0)]                                     # no recipe: not a candidate
    table = pd.DataFrame(rows, columns=["name", "split", "mae"]).assign(preset="rsna-class")
    table.loc[table.name == "real-labels", "preset"] = None
    assert sim2real.choose(table) == "aebonet"
    with pytest.raises(AebonetError, match="training split"):
        sim2real.choose(table[table.split != "train"])


def test_pooled_scores_a_recipe_over_its_seeds_against_the_training_median():
    rng = np.random.default_rng(3)
    train = pd.DataFrame({"split": "train", "id": [f"t{i}" for i in range(50)], "y": rng.uniform(0, 200, 50)})
    test_ids, test_y = [f"x{i}" for i in range(40)], rng.uniform(0, 200, 40)
    frames = []
    for seed, noise in ((0, 5.0), (1, 30.0)):
        frames.append(train.assign(name=f"aebonet-s{seed}", y_hat=train.y))
        frames.append(pd.DataFrame({"name": f"aebonet-s{seed}", "split": "test", "id": test_ids, "y": test_y,
                                    "y_hat": test_y + rng.normal(0, noise, 40)}))
    frames.append(train.assign(name="scratch-s0", y_hat=0.0))  # another recipe: must not count
    predictions = pd.concat(frames, ignore_index=True)
    result = sim2real.pooled(predictions, "aebonet", "test", n_boot=300)
    tested = predictions[(predictions.split == "test")]
    assert result["seeds"] == 2 and result["n"] == 40
    assert np.isclose(result["mae"], np.mean(np.abs(tested.y - tested.y_hat)))
    floor = np.mean(np.abs(test_y - np.median(train.y)))
    assert np.isclose(result["median_predictor_mae"], floor)
    assert np.isclose(result["minus_median_predictor"], result["mae"] - floor)
    assert result["mae_low"] < result["mae"] < result["mae_high"]
    assert result["minus_median_predictor_low"] < result["minus_median_predictor"] < result["minus_median_predictor_high"]
    with pytest.raises(AebonetError, match="no predictions"):
        sim2real.pooled(predictions, "masked", "test")


@pytest.mark.skipif(not sim2real.RESULTS_CSV.is_file(), reason="no shipped sim2real table")
def test_shipped_table_scores_every_run_on_three_real_splits_from_a_clean_commit():
    table = sim2real.read_results()
    assert all(list(splits) == list(sim2real.SPLITS) for splits in table.groupby("name").split.apply(list))
    assert (table.median_predictor_mae > 25).all() and table.corr_with_age.between(-1, 1).all()
    assert table.commit.str.fullmatch("[0-9a-f]{40}").all() and not table.dirty.any()
    assert table.command.str.startswith("benchmarks/phantom_realism.py train").all()
    seeds = table[table.split == "train"].groupby(table.name.map(sim2real.recipe_of)).seed.nunique()
    assert len(seeds) >= 4 and (seeds >= 3).all()


@pytest.mark.skipif(not sim2real.PREDICTIONS_CSV.is_file(), reason="no shipped sim2real predictions")
def test_shipped_predictions_reproduce_the_table():
    table = sim2real.read_results().set_index(["name", "split"])
    predictions = sim2real.read_predictions()
    assert set(predictions.name) == set(table.index.get_level_values("name"))
    for (name, split), rows in predictions.groupby(["name", "split"]):
        assert np.isclose(np.mean(np.abs(rows.y - rows.y_hat)), table.loc[(name, split), "mae"], atol=0.01)
        assert len(rows) == table.loc[(name, split), "n"]
