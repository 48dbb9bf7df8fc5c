"""How far off are the predictions? Errors in months, with their uncertainty.

MAE and MSE are the paper's equations 3 and 4. A test set of 200 images gives an MAE
that could easily have come out a month higher or lower, so every figure here can
carry a 95 % percentile bootstrap interval: resample the test images with replacement,
recompute the metric, and read off the middle 95 % of the values. Chapter 6 explains it.

Sign convention: an error is `y_hat - y`, so a positive bias means the model
over-estimates bone age (it says the child is older than the reference says).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd

from aebonet_lib.errors import AebonetError

# Age bands of chapter 6, in months: [low, high), the last one closed at 19 years.
AGE_BANDS: dict[str, tuple[float, float]] = {
    "0-5 y": (0.0, 60.0),
    "5-10 y": (60.0, 120.0),
    "10-15 y": (120.0, 180.0),
    "15-19 y": (180.0, 228.0),
}
OUTSIDE_BANDS = "outside 0-19 y"
SEX_GROUPS = ("girls", "boys", "unknown")
MIN_N_FOR_INTERVAL = 20  # below this many images a bootstrap interval means nothing: it is not shown


def as_vector(values, name: str) -> np.ndarray:
    """Return `values` as a 1-D float64 array, refusing empty input and NaN."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]  # a Keras prediction of shape (N, 1)
    if array.ndim != 1:
        raise AebonetError(f"{name}: expected one value per image (shape (N,)), got shape {array.shape}")
    if array.size == 0:
        raise AebonetError(f"{name}: no values; pass at least one image's age")
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        raise AebonetError(f"{name}: {bad.size} NaN or infinite value(s), first at index {bad[0]}; drop those images first")
    return array


def check_pair(y, y_hat) -> tuple[np.ndarray, np.ndarray]:
    """Return true ages and predictions as matching 1-D float arrays, or raise AebonetError."""
    y, y_hat = as_vector(y, "y (true ages)"), as_vector(y_hat, "y_hat (predictions)")
    if len(y) != len(y_hat):
        raise AebonetError(f"y has {len(y)} values but y_hat has {len(y_hat)}: pass one prediction per image, in the same order")
    return y, y_hat


# Row metrics: one value per row of a (n_boot, n) batch of resampled images.
def mae_rows(y: np.ndarray, y_hat: np.ndarray) -> np.ndarray:
    """Return the mean absolute error along the last axis."""
    return np.mean(np.abs(y - y_hat), axis=-1)


def mse_rows(y: np.ndarray, y_hat: np.ndarray) -> np.ndarray:
    """Return the mean squared error along the last axis."""
    return np.mean((y - y_hat) ** 2, axis=-1)


def rmse_rows(y: np.ndarray, y_hat: np.ndarray) -> np.ndarray:
    """Return the root mean squared error along the last axis."""
    return np.sqrt(mse_rows(y, y_hat))


def bias_rows(y: np.ndarray, y_hat: np.ndarray) -> np.ndarray:
    """Return the mean signed error (y_hat - y) along the last axis."""
    return np.mean(y_hat - y, axis=-1)


def mae(y, y_hat) -> float:
    """Return the mean absolute error in months, (1/n) sum |y_i - y_hat_i| (paper, equation 3)."""
    return float(mae_rows(*check_pair(y, y_hat)))


def mse(y, y_hat) -> float:
    """Return the mean squared error in months squared, (1/n) sum (y_i - y_hat_i)^2 (paper, equation 4)."""
    return float(mse_rows(*check_pair(y, y_hat)))


def rmse(y, y_hat) -> float:
    """Return the root mean squared error in months."""
    return float(rmse_rows(*check_pair(y, y_hat)))


def bias(y, y_hat) -> float:
    """Return the mean signed error (y_hat - y) in months; positive means the model over-estimates."""
    return float(bias_rows(*check_pair(y, y_hat)))


ROW_METRICS: dict[Callable, Callable] = {mae: mae_rows, mse: mse_rows, rmse: rmse_rows, bias: bias_rows}


def resample_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    """Return an (n_boot, n) array of image indices drawn with replacement."""
    if n_boot < 1:
        raise AebonetError(f"n_boot {n_boot}: must be at least 1 (2000 is usual)")
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n), dtype=np.int32)


def bootstrap_values(y, y_hat, metric: Callable = mae, n_boot: int = 2000, seed: int = 0) -> np.ndarray:
    """Return `metric` on `n_boot` resamples of the images (vectorized for mae, mse, rmse and bias)."""
    y, y_hat = check_pair(y, y_hat)
    idx = resample_indices(len(y), n_boot, seed)
    if metric in ROW_METRICS:
        return ROW_METRICS[metric](y[idx], y_hat[idx])
    return np.array([metric(y[rows], y_hat[rows]) for rows in idx])


def percentile_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Return the central `level` interval of bootstrap values (the percentile method)."""
    if not 0 < level < 1:
        raise AebonetError(f"level {level}: must be between 0 and 1, such as 0.95")
    tail = (1 - level) / 2
    low, high = np.quantile(values, [tail, 1 - tail])
    return float(low), float(high)


def bootstrap_ci(y, y_hat, metric: Callable = mae, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Return a percentile bootstrap confidence interval (low, high) for `metric` over the images."""
    return percentile_interval(bootstrap_values(y, y_hat, metric, n_boot, seed), level)


def summarize(y, y_hat, n_boot: int = 2000, seed: int = 0) -> dict:
    """Return MAE, MSE, RMSE, bias, 95 % intervals for MAE and MSE, and n, as plain JSON-ready numbers."""
    y, y_hat = check_pair(y, y_hat)
    return {
        "mae": mae(y, y_hat),
        "mse": mse(y, y_hat),
        "rmse": rmse(y, y_hat),
        "bias": bias(y, y_hat),
        "mae_ci95": list(bootstrap_ci(y, y_hat, mae, n_boot, 0.95, seed)),
        "mse_ci95": list(bootstrap_ci(y, y_hat, mse, n_boot, 0.95, seed)),
        "n": int(len(y)),
    }


def interval_note(n: int) -> str | None:
    """Return why a bootstrap interval over n images is not shown (n below MIN_N_FOR_INTERVAL), or None when it is."""
    if n >= MIN_N_FOR_INTERVAL:
        return None
    return (f"n = {n} image{'s' if n != 1 else ''}, below {MIN_N_FOR_INTERVAL}: a bootstrap interval over so few "
            "means nothing, so none is shown; evaluate on more images")


def mean_predictor(y, train_mean: float, n_boot: int = 2000, seed: int = 0) -> dict:
    """Return the metrics of predicting the training labels' mean age for every child: the floor a model must beat."""
    y = as_vector(y, "y (true ages)")
    return summarize(y, np.full(len(y), float(train_mean)), n_boot=n_boot, seed=seed) | {"y_mean": float(train_mean)}


def median_predictor(y, train_median: float, n_boot: int = 2000, seed: int = 0) -> dict:
    """Return the metrics of predicting the training labels' median age for every child: the best constant under MAE."""
    y = as_vector(y, "y (true ages)")
    return summarize(y, np.full(len(y), float(train_median)), n_boot=n_boot, seed=seed) | {"y_median": float(train_median)}


def age_band(y) -> np.ndarray:
    """Return the AGE_BANDS label of each age in months (OUTSIDE_BANDS beyond 0-228 months)."""
    y = as_vector(y, "y (true ages)")
    labels = np.full(len(y), OUTSIDE_BANDS, dtype=object)
    for label, (low, high) in AGE_BANDS.items():
        labels[(y >= low) & (y < high)] = label
    last_label, (_, last_high) = list(AGE_BANDS.items())[-1]
    labels[y == last_high] = last_label  # exactly 19 years still counts
    return labels


def sex_label(male) -> np.ndarray:
    """Return "boys", "girls" or "unknown" for each value of `male` (1/True boy, 0/False girl, NaN unknown)."""
    male = np.asarray(male, dtype=np.float64).ravel()
    odd = ~np.isnan(male) & ~np.isin(male, (0.0, 1.0))
    if odd.any():
        raise AebonetError(f"male: values must be 0 (girl), 1 (boy) or NaN (unknown); got {male[odd][0]!r} at index {np.flatnonzero(odd)[0]}")
    labels = np.full(len(male), "unknown", dtype=object)
    labels[male == 1.0] = "boys"
    labels[male == 0.0] = "girls"
    return labels


def error_frame(y, y_hat, male=None) -> pd.DataFrame:
    """Return one row per image: y, y_hat, error (y_hat - y), abs_error, band and sex."""
    y, y_hat = check_pair(y, y_hat)
    sex = np.full(len(y), "unknown", dtype=object) if male is None else sex_label(male)
    if len(sex) != len(y):
        raise AebonetError(f"male has {len(sex)} values but y has {len(y)}: pass one sex per image, in the same order")
    return pd.DataFrame({"y": y, "y_hat": y_hat, "error": y_hat - y, "abs_error": np.abs(y_hat - y), "band": age_band(y), "sex": sex})


def mae_with_ci(y, y_hat, n_boot: int = 2000, seed: int = 0) -> dict:
    """Return n, MAE and its 95 % bootstrap interval (NaN for no images) as one table row."""
    if len(y) == 0:
        return {"n": 0, "mae": np.nan, "ci_low": np.nan, "ci_high": np.nan}
    low, high = bootstrap_ci(y, y_hat, mae, n_boot, 0.95, seed)
    return {"n": len(y), "mae": mae(y, y_hat), "ci_low": low, "ci_high": high}


def group_mae(frame: pd.DataFrame, column: str, groups, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Return n, MAE and its 95 % interval for each group of `column` in an error_frame."""
    rows = {}
    for group in groups:
        part = frame[frame[column] == group]
        rows[group] = mae_with_ci(part.y, part.y_hat, n_boot, seed)
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis(column)


def mae_by_band(y, y_hat, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Return n, MAE and its 95 % interval per age band (index: band); chapter 6."""
    frame = error_frame(y, y_hat)
    groups = list(AGE_BANDS) + ([OUTSIDE_BANDS] if (frame.band == OUTSIDE_BANDS).any() else [])
    return group_mae(frame, "band", groups, n_boot, seed)


def mae_by_sex(y, y_hat, male, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Return n, MAE and its 95 % interval for girls and boys (and unknown, if any); index: sex."""
    frame = error_frame(y, y_hat, male)
    groups = [g for g in SEX_GROUPS if g != "unknown" or (frame.sex == "unknown").any()]
    return group_mae(frame, "sex", groups, n_boot, seed)


def bland_altman(y, y_hat) -> dict:
    """Return the Bland-Altman bias, SD and 95 % limits of agreement, with the means and differences to plot."""
    y, y_hat = check_pair(y, y_hat)
    if len(y) < 2:
        raise AebonetError("bland_altman: needs at least 2 images to estimate a standard deviation")
    difference = y_hat - y
    mean_difference, sd = float(np.mean(difference)), float(np.std(difference, ddof=1))
    return {
        "mean_difference": mean_difference,
        "sd": sd,
        "lower_loa": mean_difference - 1.96 * sd,
        "upper_loa": mean_difference + 1.96 * sd,
        "means": (y + y_hat) / 2,
        "differences": difference,
        "n": int(len(y)),
    }


def bootstrap_p_value(boot: np.ndarray, observed: float) -> float:
    """Return the two-sided bootstrap p-value of `observed`: how often a resample lies as far from it as it lies from 0."""
    boot = np.asarray(boot, dtype=float)
    return float((np.sum(np.abs(boot - observed) >= abs(observed)) + 1) / (len(boot) + 1))


def paired_bootstrap(y, y_hat_a, y_hat_b, n_boot: int = 2000, seed: int = 0) -> dict:
    """Return MAE(a) - MAE(b) on the same images, its 95 % interval and a two-sided bootstrap p-value.

    Both models are scored on the same resamples, so image difficulty cancels out. The
    p-value asks how often a resampled difference lies as far from the observed one as the
    observed one lies from zero (the bootstrap distribution shifted to the null of no difference).
    """
    y, y_hat_a = check_pair(y, y_hat_a)
    y, y_hat_b = check_pair(y, y_hat_b)
    idx = resample_indices(len(y), n_boot, seed)
    differences = mae_rows(y[idx], y_hat_a[idx]) - mae_rows(y[idx], y_hat_b[idx])
    observed = mae(y, y_hat_a) - mae(y, y_hat_b)
    return {
        "mae_a": mae(y, y_hat_a),
        "mae_b": mae(y, y_hat_b),
        "mae_difference": observed,
        "ci95": list(percentile_interval(differences)),
        "p_value": bootstrap_p_value(differences, observed),
        "n": int(len(y)),
        "n_boot": int(n_boot),
    }


def format_ci(value: float, low: float, high: float, digits: int = 1) -> str:
    """Return a figure with its interval, such as "7.9 (7.1-8.8)" (" to " when a bound is negative)."""
    if np.isnan(value):
        return ""
    if np.isnan(low) or np.isnan(high):
        return f"{value:.{digits}f}"
    between = " to " if min(low, high) < 0 else "-"
    return f"{value:.{digits}f} ({low:.{digits}f}{between}{high:.{digits}f})"


def two_level_bootstrap(errors: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Return n_boot means of a (seeds x images) array, resampling seeds and images together (chapter 7).

    One training run is itself a random draw: resampling the images alone would hide how much
    another seed changes the answer, so each resample draws seeds, then images, with replacement.
    """
    rng = np.random.default_rng(seed)
    k, n = errors.shape
    values = np.empty(n_boot)
    for b in range(n_boot):
        rows = errors[rng.integers(0, k, k)]
        values[b] = rows[:, rng.integers(0, n, n)].mean()
    return values
