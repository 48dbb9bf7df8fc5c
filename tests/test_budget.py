"""Tests of aebonet_lib._engine.budget: GPU estimates, the colab preset, and `--budget` (plan, follow, resume, warn)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import killed_after_epoch

from aebonet_lib import paper
from aebonet_lib._engine import budget as budgets
from aebonet_lib._engine import checkpoints, modelfiles, records
from aebonet_lib._engine import runner as training
from aebonet_lib.config import PRESETS, get_config
from aebonet_lib.data.loading import load_data
from aebonet_lib.errors import AebonetError

REPO = Path(__file__).resolve().parents[1]


# Estimates and the colab preset


def test_colab_is_the_papers_model_in_the_papers_stage_proportions():
    colab, recipe = PRESETS["colab"], PRESETS["paper"]
    for field in ("image_size", "width", "filters", "bottleneck", "decoder", "ae_batch_size", "reg_batch_size",
                  "ae_lr", "reg_lr", "split"):
        assert getattr(colab, field) == getattr(recipe, field), field
    ratios = np.asarray(paper.AE_STAGES) / np.asarray(colab.ae_stages)
    assert np.allclose(ratios, ratios[0])


def test_the_colab_run_fits_an_hour_on_a_t4_even_at_the_slow_end():
    t4 = budgets.estimate(PRESETS["colab"], "T4")
    assert t4["total_minutes_fast"] < t4["total_minutes_slow"] <= 60
    assert t4["pretrain_images_per_s_slow"] == pytest.approx(budgets.reference_rate("autoencoder", "fp16") * 65 / 989.4)


def test_estimates_order_the_gpus_and_the_reference_is_its_own_measurement():
    rows = {row["gpu"]: row for row in budgets.estimate_table(PRESETS["colab"])}
    assert list(rows) == ["T4", "L4", "A100", "H100"]
    slow = [rows[g]["total_minutes_slow"] for g in rows]
    assert slow == sorted(slow, reverse=True)
    h100 = rows["H100"]
    assert h100["total_minutes_fast"] == h100["total_minutes_slow"]
    assert h100["pretrain_images_per_s_fast"] == budgets.reference_rate("autoencoder", "bf16")


def test_slowdown_is_the_smaller_and_larger_datasheet_ratio():
    assert budgets.slowdown("T4") == pytest.approx((3350 / 320, 989.4 / 65))
    assert budgets.slowdown("H200") == pytest.approx((3350 / 4800, 1.0))
    with pytest.raises(AebonetError, match="choose one of"):
        budgets.slowdown("GTX 480")


def test_the_method_brackets_the_h200_it_did_not_see():
    check = budgets.method_check()
    assert check["h200_low"] <= check["h200_measured"] <= check["h200_high"]


def test_estimates_refuse_a_model_the_gpu_did_not_time():
    with pytest.raises(AebonetError, match="gpu_check"):
        budgets.estimate(PRESETS["cpu"], "T4")


# Planning


def test_stages_keep_the_papers_proportions_and_one_epoch_each_when_they_can():
    assert budgets.proportional_stages(paper.AE_STAGES, 18) == [6, 4, 2, 3, 3]
    assert budgets.proportional_stages(paper.AE_STAGES, 5) == [1, 1, 1, 1, 1]
    assert budgets.proportional_stages(paper.AE_STAGES, 9) == [3, 2, 1, 2, 1]
    assert budgets.proportional_stages(paper.AE_STAGES, 2) == [1, 1]  # fewer epochs than stages: fewer stages
    for n in range(1, 60):
        stages = budgets.proportional_stages(paper.AE_STAGES, n)
        assert sum(stages) == n and len(stages) == min(n, 5) and min(stages) >= 1


def test_a_plan_fits_the_budget_left_after_setup_and_compilation(monkeypatch):
    monkeypatch.setattr(budgets, "clock", lambda: 130.0)  # 30 s after the start at 100
    plan = budgets.plan_budget(10, 100.0, rate=100.0, compile_s=30.0, checkpoint_s=2.0, batch_size=8,
                               n_train=5000, n_val=900, most=50)
    assert plan.epoch_seconds == pytest.approx(50 + 3 + 2)
    assert plan.epochs == (600 - 30 - 30) // 55 and plan.setup_seconds == 30
    assert budgets.plan_budget(10, 100.0, 100.0, 30.0, 2.0, 8, 5000, 900, most=4).epochs == 4
    assert budgets.plan_budget(0.5, 100.0, 100.0, 30.0, 2.0, 8, 5000, 900, most=4).epochs == 1
    with pytest.raises(AebonetError, match="above 0"):
        budgets.plan_budget(0, 100.0, 100.0, 30.0, 2.0, 8, 5000, 900, most=4)


def test_measure_rate_times_the_steps_after_the_compiled_ones(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(budgets, "clock", lambda: now[0])

    def fit_steps(steps):
        now[0] += 10.0 + 0.5 * steps if steps == budgets.COMPILE_STEPS else 0.5 * steps

    rate, compile_s = budgets.measure_rate(fit_steps, batch_size=8)
    assert rate == pytest.approx(16.0) and compile_s == pytest.approx(10.0)


def a_plan(**changes) -> budgets.Budget:
    """Return a plan of 8 epochs of 60 s after 10 s of setup and 5 s of compilation, in a 10-minute budget."""
    values = dict(minutes=10, images_per_s=100.0, batch_size=8, compile_seconds=5.0, checkpoint_seconds=1.0,
                  setup_seconds=10.0, epoch_seconds=60.0, epochs=8, recipe_epochs=18, train_images=5000,
                  val_images=900)
    return budgets.Budget(**(values | changes))


@pytest.mark.parametrize("epoch_seconds, warned", [(60.0, False), (80.0, False), (90.0, True)])
def test_the_watch_warns_once_when_epochs_run_long(monkeypatch, epoch_seconds, warned):
    times = iter([10.0] + [15.0 + epoch_seconds * k for k in range(1, 9)])
    monkeypatch.setattr(budgets, "clock", lambda: next(times))
    lines = []
    watch = budgets.BudgetWatch(a_plan(), 8, started=0.0, report=lines.append)
    watch.on_train_begin()
    for epoch in range(8):
        watch.on_epoch_end(epoch)
    assert len(lines) == int(warned)
    if warned:
        assert lines[0].startswith("warning: epoch 1 of 8 ended at 1.8 min; at 1.50 min per epoch (planned 1.00)")
        assert "over its 10-min budget" in lines[0]


def test_a_budget_record_survives_config_json(tmp_path):
    record = records.RunRecord("pretrain", get_config("colab"), "phantom", plan=[1, 1], budget=a_plan().to_dict())
    records.write_record(tmp_path, record)
    again = records.read_record(tmp_path)
    assert budgets.Budget.from_dict(again.budget) == a_plan() and again.plan == [1, 1]


# Budgeted runs (tiny: 32 px, width 0.125)


@pytest.fixture(scope="module")
def config():
    """Return a tiny recipe with the colab preset's five stages, deterministic, in fp32."""
    return get_config("cpu", image_size=32, width=0.125, ae_stages=(6, 4, 2, 3, 3), reg_num_epochs=6, phantom_n=60,
                      precision="fp32", deterministic=True)


@pytest.fixture(scope="module")
def data(tmp_path_factory, config):
    """Return 60 phantom radiographs at 32 px."""
    return load_data("phantom:60", 32, split=config.split, cache_root=tmp_path_factory.mktemp("cache"), progress=False)


def slow_rate(monkeypatch, rate: float = 0.5) -> None:
    """Make every budget measure `rate` training images/s, with no compilation time."""
    monkeypatch.setattr(budgets, "measure_rate", lambda fit_steps, batch_size: (rate, 0.0))


def test_a_budget_cuts_the_epochs_records_the_plan_and_resume_keeps_it(data, config, tmp_path, monkeypatch, capsys):
    slow_rate(monkeypatch)  # an epoch of 42 + 9 images: about 90 s; 7 minutes hold 4 epochs (with < 58 s of setup)
    with killed_after_epoch(monkeypatch, 1):
        training.pretrain(data, config, tmp_path / "ae", budget=7, progress=False)
    record = records.read_record(tmp_path / "ae")
    assert record.plan == [1, 1, 1, 1] and record.budget["epochs"] == 4 and record.budget["recipe_epochs"] == 18
    assert record.budget["images_per_s"] == 0.5 and record.budget["train_images"] == len(data.splits["train"])
    assert "cut from the recipe's 18 to fit" in capsys.readouterr().err

    def never(*args):
        raise AssertionError("a resumed run must not measure again")

    monkeypatch.setattr(budgets, "measure_rate", never)
    training.pretrain(data, config, tmp_path / "ae", budget=1, resume=True, progress=False)
    assert "ignored: a resumed run follows its recorded plan" in capsys.readouterr().err
    assert records.read_record(tmp_path / "ae").budget == record.budget
    history = pd.read_csv(tmp_path / "ae" / "history.csv")
    assert history["epoch"].tolist() == [0, 1, 2, 3]
    assert len(pd.read_csv(tmp_path / "ae" / "stages.csv")) == 4


def test_a_budgeted_run_trains_like_the_same_epochs_without_a_budget(data, config, tmp_path):
    budgeted = training.pretrain(data, config, tmp_path / "budgeted", num_epochs=5, budget=60, progress=False)
    record = records.read_record(budgeted)
    assert record.plan == [1, 1, 1, 1, 1] and record.budget["images_per_s"] > 0  # measured; the recipe's 5 fit
    plain = training.pretrain(data, config, tmp_path / "plain", num_epochs=5, progress=False)
    weights = [modelfiles.load_model(run / "encoder.keras")[0].get_weights() for run in (budgeted, plain)]
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_a_budgeted_regressor_records_its_epochs(data, config, tmp_path, monkeypatch):
    slow_rate(monkeypatch, rate=1.0)  # an epoch of 42 + 9 images: about 45 s; 2.5 minutes hold 3 epochs
    run = training.train(data, config, tmp_path / "reg", backbone="scratch", budget=2.5, progress=False)
    record = records.read_record(run)
    assert record.num_epochs == 3 and record.budget["recipe_epochs"] == 6
    assert checkpoints.read_state(run)["epochs_done"] == 3


def test_a_run_whose_clock_runs_a_thousand_times_fast_keeps_one_epoch_and_warns(data, config, tmp_path, monkeypatch,
                                                                                    capsys):
    monkeypatch.setattr(budgets, "clock", lambda: 1000 * time.perf_counter())  # every real second looks like 17 min
    run = training.train(data, config, tmp_path / "reg", backbone="scratch", budget=2.5, progress=False)
    assert records.read_record(run).num_epochs == 1  # the budget was spent before training: one epoch at least
    err = capsys.readouterr().err
    assert "aebonet: budget: warning: epoch 1 of 1 ended at" in err and "over its 2.5-min budget" in err


def test_a_budget_on_several_workers_is_refused():
    with pytest.raises(AebonetError, match="--epochs instead"):
        budgets.check_budget(10, "multiworker")


def test_the_command_line_lists_colab_and_refuses_a_budget_of_nothing(tmp_path):
    shown = subprocess.run([sys.executable, "-m", "aebonet_lib.cli", "pretrain", "--help"], capture_output=True,
                           text=True, cwd=REPO, timeout=60)
    assert "colab" in shown.stdout and "--budget MINUTES" in shown.stdout
    refused = subprocess.run([sys.executable, "-m", "aebonet_lib.cli", "train", "--budget", "0", "--out",
                              str(tmp_path / "r")], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert refused.returncode == 2 and "must be greater than 0" in refused.stderr
