"""Preprocessing: aspect-preserving resize, square padding, contrast steps, parameters."""

import numpy as np
import pytest

from aebonet_lib.data import preprocess
from aebonet_lib.data.preprocess import PreprocessParams
from aebonet_lib.errors import AebonetError


def portrait(height=200, width=100) -> np.ndarray:
    """Return a float32 image: a bright rectangle filling a portrait frame, with a left-to-right ramp."""
    return np.tile(np.linspace(0.2, 1.0, width, dtype=np.float32), (height, 1))


def test_resize_keeps_the_aspect_ratio():
    assert preprocess.resize_longest(portrait(200, 100), 64).shape == (64, 32)
    assert preprocess.resize_longest(portrait(100, 300), 60).shape == (20, 60)
    assert preprocess.resize_longest(portrait(10, 5), 40).shape == (40, 20)  # small images are enlarged


def test_pad_centres_the_image_on_black():
    square = preprocess.resize_pad(portrait(200, 100), 64)
    assert square.shape == (64, 64) and square.dtype == np.float32
    assert (square[:, :16] == 0).all() and (square[:, 48:] == 0).all()
    assert (square[:, 16:48] > 0.1).all()


def test_area_resize_averages_instead_of_sampling():
    stripes = np.zeros((256, 256), np.float32)
    stripes[:, ::2] = 1  # one-pixel stripes: sampling would give all 0 or all 1
    assert np.allclose(preprocess.resize_longest(stripes, 64), 0.5)


def test_percentile_normalize_stretches_to_the_full_range():
    dull = 0.4 + 0.2 * np.random.default_rng(0).random((50, 50)).astype(np.float32)
    stretched = preprocess.percentile_normalize(dull)
    assert stretched.min() == 0 and stretched.max() == 1
    assert np.mean(stretched == 0) == pytest.approx(0.01, abs=0.005)  # the darkest 1 % clipped to 0
    assert (preprocess.percentile_normalize(np.full((5, 5), 0.3, np.float32)) == 0).all()


def test_clahe_raises_local_contrast_and_stays_in_range():
    rng = np.random.default_rng(0)
    faint = (0.45 + 0.05 * rng.random((64, 64))).astype(np.float32)
    equalized = preprocess.clahe(faint)
    assert equalized.dtype == np.float32 and 0 <= equalized.min() and equalized.max() <= 1
    assert equalized.std() > 3 * faint.std()


def test_preprocess_applies_the_chosen_steps_and_keeps_the_padding_black():
    image = portrait(200, 100) * 0.5
    plain = preprocess.preprocess(image, PreprocessParams(64))
    both = preprocess.preprocess(image, PreprocessParams(64, clahe=True, normalize=True))
    assert np.allclose(plain, preprocess.resize_pad(image, 64))
    assert both[:, 16:48].max() == pytest.approx(1, abs=0.02) and plain.max() < 0.51
    assert (both[:, :16] == 0).all() and (both[:, 48:] == 0).all()


def test_params_round_trip_and_check():
    params = PreprocessParams(128, clahe=True)
    assert params.tag() == "128-clahe" and PreprocessParams(256, normalize=True).tag() == "256-norm"
    saved = params.to_dict()
    assert saved["version"] == preprocess.PREPROCESS_VERSION and saved["clahe_clip_limit"] == preprocess.CLAHE_CLIP_LIMIT
    assert PreprocessParams.from_dict(saved) == params
    with pytest.raises(AebonetError, match="image_size 0"):
        PreprocessParams(0).check()


def test_to_uint8_rounds_and_clips():
    assert preprocess.to_uint8(np.array([-0.1, 0, 0.5, 1, 1.2])).tolist() == [0, 0, 128, 255, 255]
