"""The phantom's record: each image's true age, label, sex, seed and region boxes, kept when it is drawn."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest

from aebonet_lib import phantom
from aebonet_lib.errors import AebonetError


@pytest.fixture(scope="module", params=[(6, 64, 3, 5.0), (4, (96, 80), 11, 0.0)], ids=["noisy-64", "exact-96x80"])
def written(request, tmp_path_factory):
    """Write a tiny phantom dataset; return its folder and the arguments that made it."""
    n, size, seed, noise = request.param
    out = phantom.write_dataset(tmp_path_factory.mktemp("phantom") / "data", n, size=size, seed=seed,
                                label_noise_sd=noise, progress=False)
    return out, n, size, seed


def png(folder, image_id) -> np.ndarray:
    """Return one written image, float in [0, 1]."""
    return cv2.imread(str(folder / phantom.IMAGE_DIR / f"{image_id}.png"), cv2.IMREAD_UNCHANGED) / 255.0


def test_record_is_written_and_read_back(written):
    folder, n, size, seed = written
    record = phantom.read_record(folder)
    labels = pd.read_csv(folder / phantom.LABELS_CSV)
    assert sorted(record["images"], key=int) == [str(i) for i in labels["id"]]
    height, width = (size, size) if isinstance(size, int) else size
    assert record["size"] == [height, width]
    for row in labels.itertuples():
        image = record["images"][str(row.id)]
        assert image["label"] == pytest.approx(row.boneage) and image["male"] == row.male
        assert png(folder, row.id).shape == (height, width)
        assert image["boxes"] == phantom.regions(image["age"], image["male"], size, image["seed"])


def test_record_keeps_the_true_age_beside_the_noisy_label(written):
    folder, *_ = written
    record = phantom.read_record(folder)["images"]
    truth = folder / phantom.TRUE_AGES_CSV
    if truth.exists():
        for row in pd.read_csv(truth).itertuples():
            assert record[str(row.id)]["age"] == row.boneage
    else:   # without label noise the label is the true age
        assert all(image["age"] == image["label"] for image in record.values())


def contrast(pixels: np.ndarray, boxes, shift: int = 0) -> float:
    """Return the mean brightness inside the boxes (moved up by `shift` pixels) less that of a band around them."""
    inside = np.zeros(pixels.shape, bool)
    for x0, y0, x1, y1 in boxes:
        inside[max(0, y0 - shift):max(0, y1 - shift), x0:x1] = True
    around = cv2.dilate(inside.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool) & ~inside
    return pixels[inside].mean() - pixels[around].mean()


def test_record_boxes_lie_on_the_drawn_bones(written):
    """Bone is bright on a radiograph: inside its boxes an image is brighter than around them, and more so
    than inside the same boxes moved up by a quarter of the image."""
    folder, *_ = written
    for image_id, image in phantom.read_record(folder)["images"].items():
        pixels, boxes = png(folder, image_id), list(image["boxes"].values())
        for x0, y0, x1, y1 in boxes:
            assert 0 <= x0 < x1 <= pixels.shape[1] and 0 <= y0 < y1 <= pixels.shape[0]
        here, moved = contrast(pixels, boxes), contrast(pixels, boxes, shift=pixels.shape[0] // 4)
        assert here > 0 and here > moved, f"image {image_id}: contrast {here:.3f} at its boxes, {moved:.3f} moved"


def test_read_record_of_a_folder_without_one_says_so(tmp_path):
    with pytest.raises(AebonetError, match="no phantom record"):
        phantom.read_record(tmp_path)
