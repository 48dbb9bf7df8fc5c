"""Tests of the realism report: its measures, the shortcut test, and phantom against real when ../shared is there."""

import numpy as np
import pytest

from aebonet_lib._engine import realism


def test_image_measures_see_a_bright_square_on_black():
    image = np.zeros((64, 64), np.float32)
    image[16:48, 16:48] = 0.6
    measures = realism.image_measures(image)
    assert measures["hand_fraction"] == pytest.approx(0.25, abs=0.05)
    assert measures["zeros_outside"] > 0.9 and measures["clipped_in_hand"] == 0


def test_shortcut_test_finds_a_planted_cue_and_no_cue_in_noise():
    rng = np.random.default_rng(0)
    labels, males = rng.uniform(0, 228, 200), rng.random(200) < 0.5
    cued = [np.full((16, 16), a / 240, np.float32) for a in labels]
    noise = [rng.random((16, 16), dtype=np.float32) for _ in labels]
    assert realism.shortcut_test(cued, labels, males)["thumbnail_ridge_mae"] < 5
    plain = realism.shortcut_test(noise, labels, males)
    assert plain["thumbnail_ridge_mae"] > 0.9 * plain["mean_predictor_mae"]


def test_the_phantom_carries_no_cheap_thumbnail_cue():
    images, labels, males = realism.phantom_set(300, 64, 0, "raw")
    result = realism.shortcut_test(images, labels, males)
    assert result["thumbnail_ridge_mae"] > 0.85 * result["mean_predictor_mae"]


def test_report_without_real_data_has_an_empty_real_column(tmp_path):
    table = realism.realism_report(n=10, real_dir=tmp_path, sample_dir=tmp_path)
    assert {"measure", "phantom", "real"} <= set(table.columns)
    assert table["real"].isna().all() and table["phantom"].notna().all()


@pytest.mark.skipif(not realism.REAL_256.is_dir(), reason="../shared/rsna_bone_age_256 is absent")
def test_phantom_is_near_real_on_the_simple_measures():
    table = realism.realism_report(n=60).set_index("measure")
    for measure, tolerance in [("inside_mean", 0.15), ("outside_mean", 0.15), ("hand_fraction", 0.15)]:
        assert abs(table.loc[measure, "phantom"] - table.loc[measure, "real"]) < tolerance, measure
    assert table.loc["images_clipping_over_1pct", "phantom"] <= table.loc["images_clipping_over_1pct", "real"] + 0.05


def test_realism_figure_draws_both_histograms(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    fig = realism.realism_figure(n=5, real_dir=tmp_path)
    assert len(fig.axes) == 2 and all(ax.lines for ax in fig.axes)


def test_shipped_realism_table_has_the_real_column():
    table = realism.shipped_realism()
    assert {"phantom_raw", "phantom_registered", "real"} <= set(table.columns)
    assert table.loc["images_clipping_over_1pct", "phantom_raw"] < 0.05
