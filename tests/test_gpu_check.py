"""Tests of the real-data GPU check on the CPU, at a tiny size: benchmarks/pack_rsna.py, then gpu_check.py --real."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def run(args: list, cache: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run a command from the repository root with its own cache root; fail the test with its stderr if it fails."""
    result = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, cwd=REPO,
                            timeout=timeout, env=ENV | {"AEBONET_CACHE": str(cache)})
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> Path:
    """Return a folder of 40 phantom radiographs at 32 px in the Kaggle layout (written by `aebonet phantom`)."""
    folder = tmp_path_factory.mktemp("phantoms") / "kaggle"
    run(["-m", "aebonet_lib.cli", "phantom", "--out", folder, "--n", 40, "--size", 32], folder.parent / "cache")
    return folder


@pytest.fixture(scope="module")
def packed(phantoms, tmp_path_factory) -> Path:
    """Return the folder pack_rsna.py wrote for the phantoms at 32 px."""
    out = tmp_path_factory.mktemp("pack")
    run(["benchmarks/pack_rsna.py", "--data", phantoms, "--out", out, "--size", 32], out / "cache")
    return out


def test_the_pack_holds_every_image_its_labels_and_the_papers_split(packed):
    pack = np.load(packed / "rsna.npz")
    meta = json.loads(str(pack["meta"]))
    assert len(pack["offsets"]) == 41 and len(pack["y"]) == len(pack["male"]) == len(pack["ids"]) == 40
    assert pack["offsets"][-1] == len(pack["jpeg"]) and set(np.unique(pack["split"])) <= {0, 1, 2}
    assert meta["split_sizes"] == meta["full_split_sizes"] and meta["split_kind"] == "paper"
    assert meta["split_sizes"]["train"] == np.sum(pack["split"] == 0)
    assert meta["quality"] == 95  # 40 small images fit 50 MiB at the highest quality tried
    error = meta["pixel_error"]
    assert 0 < error["mean_abs"] <= error["rms"] <= error["max_abs"] and error["psnr_db"] > 30


def test_a_subsample_keeps_each_images_side_of_the_split(phantoms, packed, tmp_path):
    run(["benchmarks/pack_rsna.py", "--data", phantoms, "--out", tmp_path, "--size", 32, "--fraction", 0.5,
         "--quality", 50], tmp_path / "cache")
    full, half = np.load(packed / "rsna.npz"), np.load(tmp_path / "rsna.npz")
    side = dict(zip(full["ids"], full["split"]))
    assert 0 < len(half["ids"]) < 40 and all(side[i] == s for i, s in zip(half["ids"], half["split"]))
    assert json.loads(str(half["meta"]))["quality"] == 50


def test_the_real_check_trains_both_phases_within_its_budget_and_writes_its_json(packed, tmp_path):
    out = tmp_path / "gpu-real.json"
    settings = ["image_size=32", "width=0.125", "jit=false", "precision=fp32", "ae_stages=[2,1]", "reg_num_epochs=2"]
    result = run(["benchmarks/gpu_check.py", "--real", packed / "rsna.npz", "--out", out, "--minutes", 4,
                  *[arg for s in settings for arg in ("--set", s)]], tmp_path / "cache")
    check = json.loads(out.read_text())
    assert check["device"] == "CPU" and check["backend"].startswith("keras") and check["precision"] == "fp32"
    assert check["overrides"]["image_size"] == 32 and check["data"]["n"]["train"] > 0
    for phase, most in (("pretrain", 3), ("train", 2)):
        assert check[phase]["measured_images_per_s"] > 0 and check[phase]["epoch_images_per_s"] > 0
        assert 1 <= check[phase]["epochs"] == check[phase]["budget"]["epochs"] <= most
    assert sum(check["pretrain"]["stages"]) == check["pretrain"]["epochs"]
    assert math.isfinite(check["val_mae"]) and math.isfinite(check["val_mae_mean_predictor"])
    assert 0 < check["wall_seconds"] < 4 * 60
    assert "min for pretraining: measured" in result.stdout and "val_mae" in result.stdout
