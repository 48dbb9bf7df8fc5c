"""Metrics: hand-computed values, scikit-learn agreement, bootstrap behaviour, bad input."""

import json

import numpy as np
import pytest
import sklearn.metrics

from aebonet_lib.errors import AebonetError
from aebonet_lib.evaluation import metrics

Y = [10.0, 20.0, 30.0, 40.0]
Y_HAT = [12.0, 17.0, 30.0, 44.0]  # errors +2, -3, 0, +4


def noisy_predictions(n: int, sd: float = 10.0, shift: float = 0.0, seed: int = 0):
    """Return true ages over 0-19 years and predictions with Gaussian error."""
    rng = np.random.default_rng(seed)
    y = rng.uniform(0, 228, n)
    return y, y + shift + rng.normal(0, sd, n)


def test_hand_computed_values():
    assert metrics.mae(Y, Y_HAT) == pytest.approx(9 / 4)
    assert metrics.mse(Y, Y_HAT) == pytest.approx((4 + 9 + 0 + 16) / 4)
    assert metrics.rmse(Y, Y_HAT) == pytest.approx(np.sqrt(29 / 4))
    assert metrics.bias(Y, Y_HAT) == pytest.approx(3 / 4)


def test_bias_sign_means_over_estimation():
    assert metrics.bias([100.0, 100.0], [110.0, 106.0]) == pytest.approx(8.0)
    assert metrics.bias([100.0, 100.0], [90.0, 94.0]) == pytest.approx(-8.0)


def test_agrees_with_scikit_learn():
    y, y_hat = noisy_predictions(300)
    assert metrics.mae(y, y_hat) == pytest.approx(sklearn.metrics.mean_absolute_error(y, y_hat))
    assert metrics.mse(y, y_hat) == pytest.approx(sklearn.metrics.mean_squared_error(y, y_hat))
    sklearn_rmse = getattr(sklearn.metrics, "root_mean_squared_error", None)
    expected_rmse = sklearn_rmse(y, y_hat) if sklearn_rmse else np.sqrt(sklearn.metrics.mean_squared_error(y, y_hat))
    assert metrics.rmse(y, y_hat) == pytest.approx(expected_rmse)


def test_keras_shaped_predictions_are_accepted():
    assert metrics.mae(Y, np.array(Y_HAT).reshape(-1, 1)) == pytest.approx(9 / 4)


@pytest.mark.parametrize(
    "y, y_hat, message",
    [
        ([1.0, 2.0], [1.0], "one prediction per image"),
        ([], [], "no values"),
        ([1.0, np.nan], [1.0, 2.0], "NaN"),
        ([1.0, 2.0], [1.0, np.inf], "index 1"),
        (np.ones((2, 2)), np.ones((2, 2)), "shape"),
    ],
)
def test_bad_input_is_refused_clearly(y, y_hat, message):
    with pytest.raises(AebonetError, match=message):
        metrics.mae(y, y_hat)


def test_bootstrap_interval_holds_the_estimate_and_narrows_with_n():
    widths = []
    for n in (50, 200, 2000):
        y, y_hat = noisy_predictions(n, seed=n)
        low, high = metrics.bootstrap_ci(y, y_hat, n_boot=1000)
        assert low < metrics.mae(y, y_hat) < high
        widths.append(high - low)
    assert widths[0] > widths[1] > widths[2]
    assert widths[1] / widths[2] == pytest.approx(np.sqrt(10), rel=0.3)  # width ~ 1/sqrt(n)


def test_bootstrap_is_reproducible_and_vectorized_matches_a_loop():
    y, y_hat = noisy_predictions(40)
    assert metrics.bootstrap_ci(y, y_hat, seed=3) == metrics.bootstrap_ci(y, y_hat, seed=3)
    assert metrics.bootstrap_ci(y, y_hat, seed=3) != metrics.bootstrap_ci(y, y_hat, seed=4)
    fast = metrics.bootstrap_values(y, y_hat, metrics.mse, n_boot=200, seed=1)
    slow = metrics.bootstrap_values(y, y_hat, lambda a, b: metrics.mse(a, b), n_boot=200, seed=1)
    np.testing.assert_allclose(fast, slow)


def test_bootstrap_interval_has_roughly_nominal_coverage():
    true_mae = 10.0 * np.sqrt(2 / np.pi)  # E|N(0, 10^2)|
    hits = 0
    for seed in range(60):
        y, y_hat = noisy_predictions(100, seed=seed)
        low, high = metrics.bootstrap_ci(y, y_hat, n_boot=500, seed=seed)
        hits += low <= true_mae <= high
    assert 0.83 <= hits / 60 <= 1.0


def test_summarize_is_json_ready():
    y, y_hat = noisy_predictions(100)
    summary = metrics.summarize(y, y_hat, n_boot=300)
    assert set(summary) == {"mae", "mse", "rmse", "bias", "mae_ci95", "mse_ci95", "n"}
    assert json.loads(json.dumps(summary)) == summary
    assert summary["n"] == 100 and summary["mae"] == pytest.approx(metrics.mae(y, y_hat))
    assert summary["mse_ci95"][0] < summary["mse"] < summary["mse_ci95"][1]


def test_age_bands_cover_0_to_19_years():
    bands = metrics.age_band([0, 59.9, 60, 119, 120, 180, 228, 230])
    assert list(bands) == ["0-5 y", "0-5 y", "5-10 y", "5-10 y", "10-15 y", "15-19 y", "15-19 y", metrics.OUTSIDE_BANDS]


def test_mae_by_band():
    y = np.array([10.0, 20.0, 70.0, 200.0])
    y_hat = np.array([12.0, 24.0, 60.0, 200.0])
    table = metrics.mae_by_band(y, y_hat, n_boot=100)
    assert list(table.index) == list(metrics.AGE_BANDS)
    assert table.loc["0-5 y", "n"] == 2 and table.loc["0-5 y", "mae"] == pytest.approx(3.0)
    assert table.loc["5-10 y", "mae"] == pytest.approx(10.0)
    assert table.loc["10-15 y", "n"] == 0 and np.isnan(table.loc["10-15 y", "mae"])
    assert table.loc["15-19 y", "mae"] == 0.0


def test_mae_by_sex():
    table = metrics.mae_by_sex([10, 20, 30, 40], [11, 22, 33, 44], male=[1, 0, 1, np.nan], n_boot=100)
    assert list(table.index) == ["girls", "boys", "unknown"]
    assert table.loc["boys", "mae"] == pytest.approx(2.0)
    assert table.loc["girls", "mae"] == pytest.approx(2.0)
    assert table.loc["unknown", "n"] == 1
    with pytest.raises(AebonetError, match="male"):
        metrics.mae_by_sex([10, 20], [11, 22], male=[1, 2])
    with pytest.raises(AebonetError, match="one sex per image"):
        metrics.mae_by_sex([10, 20], [11, 22], male=[1])


def test_bland_altman_on_known_data():
    y = np.array([100.0, 110.0, 120.0, 130.0])
    y_hat = y + np.array([1.0, 3.0, 5.0, 7.0])
    result = metrics.bland_altman(y, y_hat)
    sd = np.std([1, 3, 5, 7], ddof=1)
    assert result["mean_difference"] == pytest.approx(4.0)
    assert result["sd"] == pytest.approx(sd)
    assert result["lower_loa"] == pytest.approx(4.0 - 1.96 * sd)
    assert result["upper_loa"] == pytest.approx(4.0 + 1.96 * sd)
    np.testing.assert_allclose(result["means"], [100.5, 111.5, 122.5, 133.5])
    with pytest.raises(AebonetError, match="at least 2"):
        metrics.bland_altman([1.0], [2.0])


def test_paired_bootstrap_detects_a_real_difference():
    y, better = noisy_predictions(200, sd=8.0, seed=1)
    worse = better + np.random.default_rng(2).normal(0, 8.0, 200)
    result = metrics.paired_bootstrap(y, worse, better, n_boot=1000)
    assert result["mae_difference"] > 0
    assert 0 < result["ci95"][0] < result["mae_difference"] < result["ci95"][1]
    assert result["p_value"] < 0.01


def test_paired_bootstrap_does_not_invent_a_difference():
    y, a = noisy_predictions(200, seed=1)
    b = y + np.random.default_rng(5).normal(0, 10.0, 200)  # another model of the same quality
    result = metrics.paired_bootstrap(y, a, b, n_boot=1000)
    assert result["ci95"][0] < 0 < result["ci95"][1]
    assert result["p_value"] > 0.05
    same = metrics.paired_bootstrap(y, a, a, n_boot=100)
    assert same["mae_difference"] == 0 and same["p_value"] == 1.0


def test_mean_predictor_is_the_one_floor_every_table_uses():
    y = np.array([10.0, 20.0, 30.0, 100.0])
    result = metrics.mean_predictor(y, 40.0, n_boot=50)
    assert result["mae"] == pytest.approx((30 + 20 + 10 + 60) / 4) and result["y_mean"] == 40.0
    assert result["n"] == 4 and result["mae_ci95"][0] <= result["mae"] <= result["mae_ci95"][1]


def test_bootstrap_p_value_is_small_far_from_zero_and_one_at_zero():
    rng = np.random.default_rng(0)
    far = rng.normal(5.0, 1.0, 999)
    assert metrics.bootstrap_p_value(far, 5.0) == pytest.approx(1 / 1000, abs=0.002)
    assert metrics.bootstrap_p_value(rng.normal(0.0, 1.0, 999), 0.0) == 1.0
    near = rng.normal(1.0, 1.0, 999)  # observed one SD from zero: about 0.32 of resamples lie as far
    assert 0.25 < metrics.bootstrap_p_value(near, 1.0) < 0.40


def test_median_predictor_is_the_best_constant_under_mae():
    y = np.random.default_rng(1).gamma(2.0, 30.0, 400)  # skewed ages: mean and median differ
    median = metrics.median_predictor(y, np.median(y), n_boot=50)
    assert median["mae"] == pytest.approx(np.mean(np.abs(y - np.median(y))))
    assert median["mae"] < metrics.mean_predictor(y, y.mean(), n_boot=50)["mae"]
    for shift in (-5.0, -0.5, 0.5, 5.0):
        assert median["mae"] <= metrics.median_predictor(y, np.median(y) + shift, n_boot=50)["mae"]
