"""The label-efficiency grid: held-out checkpoint choice, equal steps, provenance, collection and intervals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from aebonet_lib import paper
from aebonet_lib._engine import grid, grid_results
from aebonet_lib.config import get_config
from aebonet_lib.data.loading import load_data
from aebonet_lib.errors import AebonetError
from aebonet_lib.evaluation import metrics


@pytest.fixture(scope="module")
def tiny_grid(tmp_path_factory):
    """Run a whole tiny grid (masked pretraining, scratch, probes) on 120 phantoms at 32 px once."""
    root = tmp_path_factory.mktemp("grid")
    config = get_config("cpu", image_size=32, width=0.125, phantom_n=120)
    data = load_data("phantom:120", 32, seed=0, split=config.split, phantom_n=120, cache_root=root / "cache",
                     progress=False)
    plan = grid.get_plan("cpu", budgets=(1, 2), fractions=(0.2, 1.0), num_seeds=2, steps=10, methods=("scratch", "masked"),
                         probe_fractions=(0.5, 1.0), probe_draws=2, patience=5)
    out = grid.label_grid(data, config, plan, root / "out", log=lambda line: None)
    grid_results.collect(out, root / "results")
    return data, plan, out, root / "results"


def test_holdout_slice_comes_from_the_training_split(tiny_grid):
    data, *_ = tiny_grid
    held = grid.holdout_split(data, 0)
    train = set(data.splits["train"])
    assert set(held.splits["val"]) <= train and set(held.splits["train"]) <= train
    assert not set(held.splits["val"]) & set(held.splits["train"])
    assert not set(held.splits["val"]) & (set(data.splits["val"]) | set(data.splits["test"]))


def test_each_budget_hands_on_its_best_held_out_epoch(tiny_grid):
    _, plan, out, results = tiny_grid
    for objective in ("masked",):
        history = pd.read_csv(out / "pretrain" / objective / "history.csv")
        for budget in plan.budgets:
            snap = pd.read_json(out / "pretrain" / objective / "snapshots" / f"within-{budget}.json", typ="series")
            within = history[history.epoch < budget]
            assert snap.epoch == int(within.val_loss.idxmin()) + 1 <= budget
            assert snap.holdout_mse == pytest.approx(within.val_loss.min())
    assert {"objective", "epoch", "val_loss", "val_ssim"} <= set(pd.read_csv(results / "pretraining.csv"))


def test_every_fraction_trains_the_same_steps_and_records_its_commit(tiny_grid):
    _, plan, _, results = tiny_grid
    runs = pd.read_csv(results / "runs.csv")
    tuned = runs[~runs.method.str.startswith("probe") & (runs.method != "median")]
    assert set(tuned.method) == set(plan.methods)
    assert set(tuned.steps) == {plan.steps}
    assert set(tuned.fraction) == set(plan.fractions) and set(tuned.seed) == set(range(plan.num_seeds))
    assert len(tuned) == len(plan.methods) * len(plan.fractions) * plan.num_seeds * 2
    assert runs.commit.str.fullmatch(r"[0-9a-f]{40}").all() and runs.dirty.isin([True, False]).all()
    probes = runs[runs.method.str.startswith("probe") | (runs.method == "median")]
    assert {"median", "probe-thumbnail", "probe-random", "probe-masked-e1", "probe-masked-e2"} <= set(probes.method)
    assert (probes.steps == 0).all()


def test_same_seed_draws_the_same_labels_for_every_method(tiny_grid):
    _, _, out, _ = tiny_grid
    n_labels = {grid.read_json(path)["n_labels"] for path in out.glob("runs/*/labels-0.2/seed-1/result.json")}
    assert len(n_labels) == 1


def test_rerunning_the_grid_trains_nothing_again(tiny_grid, monkeypatch):
    data, plan, out, _ = tiny_grid
    monkeypatch.setattr(grid, "build_method", lambda *a, **k: pytest.fail("a finished run was trained again"))
    monkeypatch.setattr(grid.paper, "pretrain_autoencoder", lambda *a, **k: pytest.fail("pretrained again"))
    grid.label_grid(data, get_config("cpu", image_size=32, width=0.125), plan, out, log=lambda line: None)


def test_summary_has_seed_intervals_and_differences(tiny_grid):
    *_, results = tiny_grid
    summary = pd.read_csv(results / "summary.csv")
    tuned = summary[(summary.kind == "finetune") & (summary.method == "masked")]
    assert (tuned.ci_low <= tuned.mae).all() and (tuned.mae <= tuned.ci_high).all()
    assert (tuned.difference_ci_low <= tuned.difference).all() and (tuned.detectable_80 > 0).all()
    assert (tuned.seeds == 2).all()
    assert summary.commits.str.fullmatch(r"[0-9a-f]{40}( [0-9a-f]{40})*").all()


def test_two_level_bootstrap_widens_with_seed_variance():
    rng = np.random.default_rng(0)
    images = rng.exponential(10, size=(1, 400))
    same_seeds = np.repeat(images, 5, axis=0)
    spread_seeds = same_seeds + np.arange(5)[:, None] * 3.0
    narrow = metrics.two_level_bootstrap(same_seeds, 500, 0)
    wide = metrics.two_level_bootstrap(spread_seeds, 500, 0)
    assert np.std(wide) > 1.5 * np.std(narrow)
    assert np.mean(narrow) == pytest.approx(images.mean(), rel=0.05)


def test_patch_mask_hides_whole_patches_only_while_training():
    layer = paper.PatchMask(patch=4, ratio=0.5, seed=1)
    images = np.ones((8, 32, 32, 1), "float32")
    assert np.array_equal(np.asarray(layer(images, training=False)), images)
    masked = np.asarray(layer(images, training=True))
    patches = masked[..., 0].reshape(8, 8, 4, 8, 4).transpose(0, 1, 3, 2, 4).reshape(8, 64, 16)
    assert set(np.unique(patches.min(axis=2) == patches.max(axis=2))) == {True}  # each patch all 0 or all 1
    assert 0.35 < 1 - masked.mean() < 0.65


def test_masked_objective_keeps_the_paper_encoder():
    config = get_config("cpu", image_size=32, width=0.125)
    plain, masked = (paper.build_autoencoder(config.replace(objective=o)) for o in ("autoencoder", "masked"))
    assert masked.count_params() == plain.count_params()
    assert paper.encoder_of(masked).count_params() == paper.encoder_of(plain).count_params()
    with pytest.raises(AebonetError, match="objective"):
        config.replace(objective="jigsaw")


def test_unknown_grid_method_is_refused():
    with pytest.raises(AebonetError, match="methods"):
        grid.get_plan("cpu", methods=("scratch", "simclr"))


def test_pretrain_objective_masked_from_the_command_line(tmp_path):
    from aebonet_lib._engine.cli import main
    from aebonet_lib._engine.records import read_record

    out = tmp_path / "ae"
    argv = ["pretrain", "--data", "phantom:60", "--preset", "cpu", "--size", "32", "--width", "0.125",
            "--epochs", "1", "--objective", "masked", "--out", str(out)]
    assert main(argv) == 0
    record = read_record(out)
    assert record.config.objective == "masked"
    assert record.command == "aebonet " + " ".join(argv)  # the arguments given to main, not the test runner's
    assert (out / "encoder.keras").is_file()
