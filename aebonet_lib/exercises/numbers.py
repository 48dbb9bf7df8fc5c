"""Checks of the numeric coding exercises of chapters 3 to 7: fresh random inputs, a reference computed here."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np

from aebonet_lib import paper
from aebonet_lib import paper as recipe
from aebonet_lib.config import PRESETS
from aebonet_lib.evaluation import metrics
from aebonet_lib.exercises import forbidden


def check_conv_block_params(conv_block_params, rng) -> None:
    """Compare conv_block_params with the weights Keras counts in a convolution and a batch norm."""
    import keras


    for c_in, c_out in rng.integers(1, 300, size=(3, 2)):
        layers = [keras.layers.Conv2D(int(c_out), 3), keras.layers.BatchNormalization()]
        keras.Sequential([keras.Input((8, 8, int(c_in))), *layers])
        expected = sum(layer.count_params() for layer in layers)
        with forbidden((paper, "conv_block"), (keras.layers.Layer, "count_params")):   # count by hand
            got = conv_block_params(int(c_in), int(c_out))
        assert got == expected, f"{c_in} to {c_out} channels: Keras counts {expected:,}, you {got}"


def check_constant_accuracy(constant_accuracy, rng) -> None:
    """Compare constant_accuracy with pixel_accuracy of a constant image, on random images."""
    images = rng.random((3, 8, 8, 1)).astype(np.float32)
    images[images < 0.4], images[images > 0.9] = 0.0, 1.0
    for c in rng.uniform(0, 1, 3):
        expected = float(np.mean(paper.pixel_accuracy(images, np.full_like(images, c))))
        got = constant_accuracy(images, float(c))
        assert isinstance(got, float), f"return one number (a float), got {type(got).__name__}"
        assert abs(got - expected) < 1e-6, f"c = {c:.2f}: expected {expected:.4f}, got {got:.4f}"


def check_receptive_field(receptive_field, rng) -> None:
    """Compare receptive_field with the field walked layer by layer, for random kernels and poolings."""
    for _ in range(4):
        blocks, kernel, pool = int(rng.integers(0, 6)), int(rng.choice([3, 5, 7])), int(rng.choice([2, 3]))
        field, jump = 1, 1
        for _ in range(blocks):
            field += (kernel - 1) * jump + (pool - 1) * jump
            jump *= pool
        expected = field + (kernel - 1) * jump
        got = receptive_field(blocks, kernel=kernel, pool=pool)
        assert got == expected, f"{blocks} blocks, kernel {kernel}, pool {pool}: expected {expected} pixels, got {got}"


def check_head_params(head_params, rng) -> None:
    """Compare head_params with the weights Keras counts in BatchNormalization, Dense(units), Dense(1)."""
    import keras


    for n, units in zip(rng.integers(1, 2000, 3), rng.integers(1, 40, 3)):
        layers = [keras.layers.BatchNormalization(), keras.layers.Dense(int(units)), keras.layers.Dense(1)]
        keras.Sequential([keras.Input((int(n),)), *layers])
        expected = sum(layer.count_params() for layer in layers)
        with forbidden((paper, "add_head"), (keras.layers.Layer, "count_params")):   # count by hand
            got = head_params(int(n), units=int(units))
        assert got == expected, f"{n} features, Dense({units}): Keras counts {expected:,}, you {got}"


def check_sex_mean_baseline(sex_mean_baseline, rng) -> None:
    """Compare sex_mean_baseline's MAE with the training mean per sex, on random labels."""
    n = 60
    d = SimpleNamespace(y=rng.uniform(0, 228, n), male=rng.integers(0, 2, n).astype(float),
                        splits={"train": np.arange(0, 40), "val": np.arange(40, 45), "test": np.arange(45, n)})
    train, test = d.splits["train"], d.splits["test"]
    means = {sex: d.y[train][d.male[train] == sex].mean() for sex in (0.0, 1.0)}
    expected = np.mean(np.abs(d.y[test] - np.array([means[s] for s in d.male[test]])))
    result = sex_mean_baseline(d)
    assert "mae" in result, f"return metrics.summarize(...), a dict with 'mae'; got {type(result).__name__}"
    assert abs(result["mae"] - expected) < 1e-3, f"expected an MAE of {expected:.2f} months, got {result['mae']:.2f}"


def check_ridge_predict(ridge_predict, rng) -> None:
    """Compare ridge_predict with the closed form on random data; scikit-learn's models are no answer."""
    from sklearn.linear_model import _base, _ridge

    n, k = int(rng.integers(30, 60)), int(rng.integers(2, 8))
    F, y, alpha = rng.normal(size=(n + 10, k)), rng.normal(100, 30, n), float(rng.uniform(0.1, 10))
    mean, y_mean = F[:n].mean(axis=0), y.mean()
    w = np.linalg.solve((F[:n] - mean).T @ (F[:n] - mean) + alpha * np.eye(k), (F[:n] - mean).T @ (y - y_mean))
    expected = (F[n:] - mean) @ w + y_mean
    with forbidden((_base.LinearModel, "predict"), (_base.LinearModel, "_decision_function"),
                   (_ridge, "_ridge_regression"), (_ridge, "ridge_regression")):
        got = ridge_predict(F[:n], y, F[n:], alpha)
    assert np.shape(got) == (10,), f"one prediction per test row: expected shape (10,), got {np.shape(got)}"
    assert np.allclose(got, expected, atol=1e-6), f"expected {np.round(expected[:3], 2)}..., got {np.round(got[:3], 2)}..."


def check_lost_in_fp16(lost_in_fp16, rng) -> None:
    """Compare lost_in_fp16 with a float16 cast of random values of every magnitude."""
    x = (rng.choice([-1, 1], 30) * 10.0 ** rng.uniform(-12, 0, 30)).astype(np.float32)
    x[rng.choice(30, 3, replace=False)] = 0
    for scale in (1.0, float(2 ** rng.integers(4, 16))):
        expected = (x != 0) & ((x * np.float32(scale)).astype(np.float16) == 0)
        got = np.asarray(lost_in_fp16(x.copy(), scale))
        assert got.shape == x.shape and got.dtype == bool, f"expected a boolean array of shape {x.shape}, got {got.dtype} {got.shape}"
        assert np.array_equal(got, expected), f"scale {scale:g}: expected {expected.sum()} lost, got {got.sum()}"


def check_fair_recipe(fair_recipe, rng) -> None:
    """Compare fair_recipe with steps, linear scaling and equal total steps for random recipes."""
    for _ in range(3):
        batch, base = int(rng.integers(1, 257)), int(rng.integers(1, 33))
        n, epochs, lr = int(rng.integers(500, 20_000)), int(rng.integers(1, 1000)), float(rng.uniform(1e-4, 1e-2))
        steps = math.ceil(n / batch)
        expected = {"steps_per_epoch": steps, "learning_rate": lr * batch / base,
                    "epochs": math.ceil(epochs * math.ceil(n / base) / steps)}
        got = fair_recipe(batch, n_train=n, epochs=epochs, base_batch=base, base_lr=lr)
        assert set(got) == set(expected), f"expected the keys {sorted(expected)}, got {sorted(got)}"
        assert got["steps_per_epoch"] == steps and got["epochs"] == expected["epochs"], \
            f"batch {batch} on {n} images: expected {expected}, got {got}"
        assert abs(got["learning_rate"] - expected["learning_rate"]) < 1e-12, f"expected {expected}, got {got}"


def check_schedule_hours(schedule_hours, rng) -> None:
    """Compare schedule_hours with both phases' epochs at random rates (validation: a third of a step)."""
    paper = PRESETS["paper"]
    n_train, n_val, _ = recipe.SPLIT_SIZES
    for ae, reg in rng.uniform(5, 2000, size=(3, 2)):
        def epoch(rate):
            return n_train / rate + n_val / (3 * rate)
        expected = (paper.ae_num_epochs * epoch(ae) + paper.reg_num_epochs * epoch(reg)) / 3600
        got = schedule_hours(ae, reg)
        assert abs(got - expected) / expected < 1e-6, f"at {ae:.0f} and {reg:.0f} images/s: expected {expected:.3f} h, got {got:.3f} h"


def check_error_summary(error_summary, rng) -> None:
    """Compare error_summary with MAE, RMSE and bias computed here; the library's metrics are no answer."""
    y = rng.uniform(0, 228, 25)
    y_hat = y + rng.normal(rng.uniform(-5, 5), 10, 25)
    e = y_hat - y
    expected = {"mae": np.mean(np.abs(e)), "rmse": np.sqrt(np.mean(e ** 2)), "bias": np.mean(e)}
    with forbidden(*((metrics, name) for name in ("mae", "rmse", "bias", "summarize"))):
        got = error_summary(y, y_hat)
    assert set(got) == set(expected), f"expected the keys mae, rmse and bias, got {sorted(got)}"
    for name, value in expected.items():
        assert abs(got[name] - value) < 1e-9, f"{name}: expected {value:.3f}, got {got[name]:.3f}"


def check_images_needed(images_needed, rng) -> None:
    """Compare images_needed with (1.96 SD(|e|) / half-width)^2, rounded up, on random errors."""
    for _ in range(3):
        errors = np.abs(rng.normal(0, rng.uniform(2, 20), int(rng.integers(20, 200))))
        half = float(rng.uniform(0.2, 3))
        accepted = {int(np.ceil((1.96 * np.std(errors, ddof=ddof) / half) ** 2)) for ddof in (0, 1)}
        got = images_needed(errors, half)
        assert got in accepted, f"half-width {half:.2f}: expected {min(accepted)}, got {got}"


def check_paired_interval(paired_interval, rng) -> None:
    """Compare paired_interval with a bootstrap on the same resamples; the library's is no answer."""
    n, n_boot, seed = int(rng.integers(20, 60)), int(rng.integers(100, 400)), int(rng.integers(0, 1000))
    y = rng.uniform(0, 228, n)
    a, b = y + rng.normal(0, 10, n), y + rng.normal(1, 12, n)
    rows = np.random.default_rng(seed).integers(0, n, size=(n_boot, n), dtype=np.int32)
    differences = np.abs(a[rows] - y[rows]).mean(axis=1) - np.abs(b[rows] - y[rows]).mean(axis=1)
    expected = np.quantile(differences, [0.025, 0.975])
    with forbidden((metrics, "paired_bootstrap")):
        got = paired_interval(y, a, b, n_boot=n_boot, seed=seed)
    assert len(got) == 2 and got[0] <= got[1], f"return (low, high), got {got}"
    assert np.allclose(got, expected, atol=1e-6), f"expected {np.round(expected, 3)}, got {np.round(got, 3)}"


def check_n_labels(n_labels, rng) -> None:
    """Compare n_labels with round(fraction * n) clipped to [minimum, n], for random budgets."""
    for _ in range(6):
        n, fraction, minimum = int(rng.integers(3, 20_000)), float(rng.choice([rng.uniform(0, 1), 1e-4, 1.0])), int(rng.integers(1, 3))
        expected = min(n, max(minimum, round(fraction * n)))
        got = n_labels(n, fraction, minimum=minimum)
        assert got == expected, f"{n} images, fraction {fraction:.4f}, minimum {minimum}: expected {expected}, got {got}"


def check_mae_floor(mae_floor, rng) -> None:
    """Check that mae_floor simulates: it varies with the seed as a sample of size n does, around the formula."""
    sd, readers, n = float(rng.uniform(2, 8)), int(rng.integers(1, 7)), 400
    formula = sd * np.sqrt(2 / np.pi) / np.sqrt(readers)
    seeds = rng.choice(10_000, 30, replace=False)
    results = [mae_floor(sd, readers, n=n, seed=int(s)) for s in seeds]
    simulated = np.array([r[0] for r in results])
    assert all(abs(r[1] - formula) < 1e-9 for r in results), f"{readers} readers, SD {sd:.2f}: the formula gives {formula:.3f}, you {results[0][1]:.3f}"
    assert mae_floor(sd, readers, n=n, seed=int(seeds[0]))[0] == simulated[0], "the same seed must give the same simulation"
    spread = sd / np.sqrt(readers) * np.sqrt(1 - 2 / np.pi) / np.sqrt(n)   # SD of a mean of n |errors|
    assert 0.5 * spread < simulated.std() < 2 * spread, (
        f"simulations of {n} children should scatter by about {spread:.3f} months between seeds, yours by "
        f"{simulated.std():.3f}: simulate the readers' labels, do not return the formula")
    assert abs(simulated.mean() - formula) < 4 * spread, f"simulated {simulated.mean():.3f} on average, expected about {formula:.3f}"


def check_fit_power_law(fit_power_law, rng) -> None:
    """Compare fit_power_law with a least-squares line through the logarithms of random noisy laws."""
    n = np.sort(rng.choice(np.arange(50, 20_000), 6, replace=False)).astype(float)
    a, b = rng.uniform(50, 500), rng.uniform(0.1, 0.6)
    mae = a * n ** -b * np.exp(rng.normal(0, 0.05, len(n)))
    slope, intercept = np.polyfit(np.log(n), np.log(mae), 1)
    got = fit_power_law(n.copy(), mae.copy())
    assert abs(got[0] - np.exp(intercept)) / np.exp(intercept) < 1e-6 and abs(got[1] + slope) < 1e-6, \
        f"expected ({np.exp(intercept):.3f}, {-slope:.4f}), got ({got[0]:.3f}, {got[1]:.4f})"
