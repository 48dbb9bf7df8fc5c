"""Tests of the best-CPU experiment at a tiny size: candidates scored on a training slice, the winner tested after."""

import numpy as np
import pandas as pd
import pytest

from aebonet_lib._engine import best_cpu
from aebonet_lib._engine.files import read_json
from aebonet_lib.config import get_config
from aebonet_lib.data.loading import load_data
from aebonet_lib.errors import AebonetError

TINY = {"a": ({"reg_num_epochs": 1}, "one epoch"), "b": ({"reg_num_epochs": 2}, "two epochs")}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """Run the experiment on 160 phantoms at 32 px with two tiny candidates, in two parts, then collect."""
    out = tmp_path_factory.mktemp("best")
    base = get_config("cpu", image_size=32, phantom_n=160, width=0.125, reg_batch_size=16)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(best_cpu, "CANDIDATES", TINY)
        cache = tmp_path_factory.mktemp("cache")
        for k in range(2):
            assert best_cpu.best_cpu("phantom", out, part=(k, 2), base=base, cache_root=cache) is None
        results = best_cpu.best_cpu("phantom", out, base=base, cache_root=cache)
        data = load_data("phantom", 32, split=base.split, phantom_n=160, cache_root=cache, progress=False)
    return out, results, data


def test_selection_slice_is_part_of_the_training_split_only():
    data = load_data("phantom", 32, split=(0.7, 0.15, 0.15), phantom_n=160, progress=False)
    selection = best_cpu.selection_split(data)
    train, held = set(selection.splits["train"]), set(selection.splits["val"])
    assert not train & held and train | held == set(data.splits["train"])
    assert len(held) == round(best_cpu.SELECTION * len(data.splits["train"]))
    assert not held & (set(data.splits["val"]) | set(data.splits["test"]))


def test_winner_is_the_lowest_selection_mae_and_is_tested_on_val_and_test(finished):
    out, results, data = finished
    table = pd.read_csv(results / "selection.csv")
    assert set(table["candidate"]) == set(TINY)
    winner = read_json(out / "selection.json")["winner"]
    assert winner == table.sort_values("mae").iloc[0]["candidate"] and table.set_index("candidate")["chosen"][winner]
    runs = pd.read_csv(results / "runs.csv").set_index("split")
    predictions = pd.read_csv(results / "predictions.csv.gz")
    for split in ("val", "test"):
        rows = predictions[predictions["split"] == split]
        assert len(rows) == len(data.splits[split]) == runs.loc[split, "n"]
        assert runs.loc[split, "mae"] == pytest.approx(np.mean(np.abs(rows["true"] - rows["predicted"])), rel=1e-4)
    assert runs["commit"].notna().all()


def test_choice_needs_every_candidate():
    table = pd.DataFrame({"candidate": ["narrow-100"], "mae": [9.0]})
    with pytest.raises(AebonetError, match="not finished"):
        best_cpu.choose(table)


def test_cli_refuses_the_phantom_and_other_presets(tmp_path, capsys):
    from aebonet_lib._engine.cli import main

    assert main(["experiment", "best-cpu", "--out", str(tmp_path / "x")]) == 2
    assert "needs real radiographs" in capsys.readouterr().err
    assert main(["experiment", "best-cpu", "--data", str(tmp_path), "--preset", "cpu", "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()
