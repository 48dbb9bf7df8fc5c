"""Shared test fixtures: a temporary cache root and tiny datasets written to disk."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import pandas as pd
import pytest

SHARED_SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "rsna_sample"


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch) -> Path:
    """Point $AEBONET_CACHE at a fresh temporary folder, so that no test writes to the real cache."""
    root = tmp_path / "aebonet-cache"
    monkeypatch.setenv("AEBONET_CACHE", str(root))
    return root


@pytest.fixture(scope="module")
def module_cache(tmp_path_factory) -> Iterator[Path]:
    """Point $AEBONET_CACHE at one temporary folder for a whole test module (runs there are shared)."""
    root = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AEBONET_CACHE", str(root))
        yield root


def blob_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Return a uint8 stand-in for a radiograph: a bright noisy ellipse on a dark background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    inside = ((yy - height / 2) / (0.45 * height)) ** 2 + ((xx - width / 2) / (0.4 * width)) ** 2 < 1
    image = np.where(inside, 150 + 60 * rng.random((height, width)), 10 * rng.random((height, width)))
    return image.astype(np.uint8)


def write_kaggle(folder: Path, n: int = 12, size: tuple[int, int] = (48, 36), seed: int = 0,
                 nested: bool = False) -> pd.DataFrame:
    """Write n blob images in the Kaggle RSNA training layout under `folder`; return the label table."""
    rng = np.random.default_rng(seed)
    labels = pd.DataFrame({"id": [str(1000 + i) for i in range(n)],
                           "boneage": rng.integers(6, 229, n).astype(float),
                           "male": rng.random(n) < 0.5})
    images = folder / "boneage-training-dataset"
    if nested:
        images = images / "boneage-training-dataset"
    images.mkdir(parents=True, exist_ok=True)
    for k, i in enumerate(labels["id"]):
        cv2.imwrite(str(images / f"{i}.png"), blob_image(*size, seed=seed * 1000 + k))
    labels.to_csv(folder / "boneage-training-dataset.csv", index=False)
    return labels


@pytest.fixture
def kaggle_dir(tmp_path) -> Path:
    """Return a folder holding 12 blob images in the Kaggle RSNA training layout."""
    folder = tmp_path / "kaggle"
    write_kaggle(folder)
    return folder


@contextlib.contextmanager
def killed_after_epoch(monkeypatch, last_epoch: int = 1) -> Iterator[None]:
    """Make a run raise RuntimeError("killed") right after epoch `last_epoch` (0-based) has saved its checkpoint."""
    from aebonet_lib._engine import checkpoints

    original = checkpoints.EpochCheckpoint.on_epoch_end

    def killed(self, epoch, logs=None):
        original(self, epoch, logs)
        if epoch == last_epoch:
            raise RuntimeError("killed")

    with monkeypatch.context() as patch:
        patch.setattr(checkpoints.EpochCheckpoint, "on_epoch_end", killed)
        with pytest.raises(RuntimeError, match="killed"):
            yield
