"""Plots: each returns a Figure with the expected panels, labels and titles, and saves as a PNG."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from aebonet_lib.errors import AebonetError
from aebonet_lib.evaluation import metrics, plots


@pytest.fixture(autouse=True)
def close_figures():
    """Close every figure a test opened."""
    yield
    plt.close("all")


def predictions(n: int = 120, seed: int = 0):
    """Return true ages, predictions and sexes for n children."""
    rng = np.random.default_rng(seed)
    y = rng.uniform(6, 220, n)
    return y, y + rng.normal(2, 9, n), rng.integers(0, 2, n)


def assert_saves(fig: Figure, path) -> None:
    """Save a figure and check a non-trivial PNG arrived."""
    plots.save_figure(fig, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_history_of_a_regressor(tmp_path):
    history = pd.DataFrame({"epoch": range(5), "loss": [900, 400, 200, 150, 120], "mae": [25, 16, 11, 10, 9],
                            "val_loss": [950, 450, 260, 210, 200], "val_mae": [26, 17, 13, 12, 12]})
    history.to_csv(tmp_path / "history.csv", index=False)
    fig = plots.plot_history(tmp_path / "history.csv")
    assert [ax.get_title() for ax in fig.axes] == ["loss (MSE)", "MAE"]
    loss_ax = fig.axes[0]
    assert loss_ax.get_yscale() == "log" and loss_ax.get_xlabel() == "epoch"
    assert [line.get_label() for line in loss_ax.lines] == ["training", "validation"]
    np.testing.assert_array_equal(loss_ax.lines[0].get_xdata(), [1, 2, 3, 4, 5])
    assert_saves(fig, tmp_path / "history.png")


def test_history_of_an_autoencoder_with_stages():
    history = pd.DataFrame({"epoch": range(4), "loss": [0.05, 0.03, 0.02, 0.01], "accuracy": [0.5, 0.6, 0.7, 0.7],
                            "psnr": [14, 17, 19, 21], "ssim": [0.4, 0.6, 0.7, 0.8], "val_loss": [0.06, 0.04, 0.03, 0.02],
                            "val_accuracy": [0.5, 0.6, 0.6, 0.7], "val_psnr": [13, 16, 18, 20], "val_ssim": [0.4, 0.5, 0.7, 0.7]})
    fig = plots.plot_history(history, stage_ends=[2])
    assert [ax.get_title() for ax in fig.axes] == ["loss (MSE)", "accuracy", "PSNR (dB)", "SSIM"]
    assert len(fig.axes[1].lines) == 3  # training, validation, one stage boundary


def test_history_errors(tmp_path):
    with pytest.raises(AebonetError, match="not found"):
        plots.plot_history(tmp_path / "none.csv")
    with pytest.raises(AebonetError, match="no metric columns"):
        plots.plot_history(pd.DataFrame({"epoch": [0, 1]}))


def test_predictions_figure(tmp_path):
    y, y_hat, male = predictions()
    fig = plots.plot_predictions(y, y_hat, male)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "true bone age (months)" and ax.get_ylabel() == "predicted bone age (months)"
    assert f"MAE {metrics.mae(y, y_hat):.1f} months" in ax.get_title() and "n = 120" in ax.get_title()
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert f"boys (n = {male.sum()})" in labels and f"girls (n = {(male == 0).sum()})" in labels
    identity = ax.lines[0]
    np.testing.assert_array_equal(identity.get_xdata(), identity.get_ydata())
    assert_saves(fig, tmp_path / "predictions.png")


def test_bland_altman_figure(tmp_path):
    y, y_hat, _ = predictions()
    agreement = metrics.bland_altman(y, y_hat)
    fig = plots.plot_bland_altman(y, y_hat)
    ax = fig.axes[0]
    levels = sorted(line.get_ydata()[0] for line in ax.lines)
    np.testing.assert_allclose(levels, [agreement["lower_loa"], agreement["mean_difference"], agreement["upper_loa"]])
    assert ax.get_ylabel() == "predicted - true (months)" and ax.get_title().startswith("Bland-Altman")
    assert_saves(fig, tmp_path / "bland_altman.png")


def test_error_by_band_figure(tmp_path):
    y, y_hat, male = predictions(200)
    fig = plots.plot_error_by_band(y, y_hat)
    bars = fig.axes[0].patches
    np.testing.assert_allclose([bar.get_height() for bar in bars], metrics.mae_by_band(y, y_hat).mae)
    split = plots.plot_error_by_band(y, y_hat, male)
    assert len(split.axes[0].patches) == 2 * len(metrics.AGE_BANDS)
    assert sorted(t.get_text() for t in split.axes[0].get_legend().get_texts()) == ["boys", "girls"]
    assert fig.axes[0].get_xticklabels()[0].get_text().startswith("0-5 y\n(n = ")
    assert_saves(split, tmp_path / "bands.png")


def test_reconstructions_figure(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.uniform(0, 1, (3, 32, 32, 1)).astype(np.float32)
    fig = plots.plot_reconstructions(X, np.clip(X + 0.05, 0, 1), ages=[14, 100, 200])
    image_axes = fig.axes[:9]
    assert [ax.get_title() for ax in image_axes[:2]] == ["original", "reconstruction"]
    assert [image_axes[3 * row].get_ylabel() for row in range(3)] == ["1 y 2 m", "8 y 4 m", "16 y 8 m"]
    assert image_axes[2].get_title().startswith("mean |error| 0.0")
    assert len(fig.axes) == 10  # nine panels and one colour bar
    with pytest.raises(AebonetError, match="same images"):
        plots.plot_reconstructions(X, X[:2])
    assert_saves(fig, tmp_path / "reconstructions.png")


def test_gradcam_figure(tmp_path):
    image = np.random.default_rng(0).uniform(0, 1, (32, 32)).astype(np.float32)
    heatmap = np.zeros((32, 32), np.float32)
    heatmap[:16, :16] = 1
    fig = plots.plot_gradcam(image, heatmap, title="girl, 10 y")
    assert fig.axes[0].get_title() == "radiograph" and fig.axes[1].get_title() == "Grad-CAM overlay"
    assert fig._suptitle.get_text() == "girl, 10 y"
    assert len(fig.axes[1].images) == 2
    with pytest.raises(AebonetError, match="heatmap shape"):
        plots.plot_gradcam(image, heatmap[:8])
    assert_saves(fig, tmp_path / "gradcam.png")


def test_label_efficiency_from_seeds_and_from_intervals(tmp_path):
    rows = [{"fraction": f, "arm": arm, "seed": s, "mae": 10 / f ** 0.3 + (2 if arm == "scratch" else 0) + s}
            for f in (0.05, 0.1, 0.25, 0.5, 1.0) for arm in ("pretrained", "scratch") for s in range(3)]
    fig = plots.plot_label_efficiency(pd.DataFrame(rows))
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_ylabel() == "test MAE (months)"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["5 %", "10 %", "25 %", "50 %", "100 %"]
    assert "lowest to highest seed" in ax.get_title()
    means = plots.label_efficiency_summary(pd.DataFrame(rows))
    np.testing.assert_allclose(means[means.arm == "pretrained"].mae, [10 / f ** 0.3 + 1 for f in (0.05, 0.1, 0.25, 0.5, 1.0)])
    summary = pd.DataFrame({"fraction": [0.1, 1.0] * 2, "arm": ["pretrained"] * 2 + ["scratch"] * 2,
                            "mae": [12, 8, 14, 8.5], "ci_low": [11, 7, 13, 7.5], "ci_high": [13, 9, 15, 9.5]})
    fig = plots.plot_label_efficiency(summary)
    assert "95 % intervals" in fig.axes[0].get_title()
    assert sorted(t.get_text() for t in fig.axes[0].get_legend().get_texts()) == ["pretrained", "scratch"]
    with pytest.raises(AebonetError, match="missing column"):
        plots.plot_label_efficiency(pd.DataFrame({"arm": ["a"]}))
    assert_saves(fig, tmp_path / "labels.png")


def test_save_figure_refuses_unknown_formats(tmp_path):
    fig, _ = plt.subplots()
    with pytest.raises(AebonetError, match=".png"):
        plots.save_figure(fig, tmp_path / "figure")
    assert not list(tmp_path.iterdir())


def test_phantom_grid(tmp_path):
    pytest.importorskip("aebonet_lib.phantom")
    fig = plots.plot_phantom_grid(ages=(12, 120), size=64)
    assert [ax.get_title() for ax in fig.axes] == ["girl, 1 y 0 m", "girl, 10 y 0 m", "boy, 1 y 0 m", "boy, 10 y 0 m"]
    assert fig.axes[0].images[0].get_array().shape == (64, 64)
    assert_saves(fig, tmp_path / "phantoms.png")


def test_sim2real_figure_has_a_panel_per_split_and_a_row_per_model(tmp_path):
    rows = [{"name": name, "preset": preset, "split": split, "mae": mae, "ci_low": mae - 1, "ci_high": mae + 1,
             "median_predictor_mae": 33.0}
            for name, preset, mae in (("phantom model", "rsna-class", 31.0), ("real model", None, 18.0))
            for split in ("val", "test")]
    fig = plots.plot_sim2real(pd.DataFrame(rows))
    assert len(fig.axes) == 2 and [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["phantom model", "real model"]
    assert "predicting the median (33.0)" in fig.axes[1].get_xlabel()
    plots.save_figure(fig, tmp_path / "sim2real.png")
    assert (tmp_path / "sim2real.png").stat().st_size > 0


def test_label_curves_draw_each_method_with_its_band_per_panel():
    rows = []
    for kind, methods in (("finetune", ("scratch", "autoencoder")), ("probes", ("probe-random", "median"))):
        for method in methods:
            for fraction in (0.01, 0.1, 1.0):
                rows.append({"kind": kind, "method": method, "fraction": fraction, "split": "val", "seeds": 5,
                             "mae": 30 - 5 * fraction, "ci_low": 28 - 5 * fraction, "ci_high": 32 - 5 * fraction})
    fig = plots.plot_label_curves(pd.DataFrame(rows), "val", floor=33.0)
    tuned, probes = fig.axes
    assert [line.get_label() for line in tuned.lines[:2]] == ["autoencoder (5 seeds)", "scratch (5 seeds)"]
    assert len(tuned.collections) == 2 and len(probes.collections) == 1  # bands; the median is the floor, not a curve
    assert tuned.get_xscale() == "log" and any(line.get_label() == "median predictor" for line in tuned.lines)
    assert list(tuned.lines[0].get_ydata()) == [30 - 5 * f for f in (0.01, 0.1, 1.0)]
