"""Every figure of the course, in one style.

Each function takes plain arrays, DataFrames or paths, draws one matplotlib Figure and
returns it; none trains anything. `set_style` is the one place the look is decided, and
every function calls it, so a figure looks the same in the book, a notebook and a report.
`save_figure` writes a figure atomically.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from aebonet_lib import phantom
from aebonet_lib._engine.files import atomic_path, read_table
from aebonet_lib.errors import AebonetError
from aebonet_lib.evaluation import metrics

SEX_COLORS = {"girls": "#d6604d", "boys": "#4393c3", "unknown": "#7f7f7f"}
ARM_COLORS = {"pretrained": "#1b7837", "scratch": "#762a83"}
METRIC_TITLES = {"loss": "loss (MSE)", "mae": "MAE", "mse": "MSE", "accuracy": "accuracy", "psnr": "PSNR (dB)", "ssim": "SSIM"}
NOT_METRICS = ("epoch", "lr", "learning_rate", "seconds")


def set_style() -> None:
    """Set the course's one figure style: seaborn white grid, readable fonts, no top and right spines."""
    sns.set_theme(context="notebook", style="whitegrid", font_scale=0.95)
    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 150, "savefig.bbox": "tight",
                         "figure.constrained_layout.use": True, "axes.spines.top": False,
                         "axes.spines.right": False, "image.cmap": "gray"})


def save_figure(fig: Figure, path: str | os.PathLike) -> Path:
    """Write a figure to `path` (PNG unless the suffix says otherwise), atomically; return the path."""
    path = Path(path)
    suffix = path.suffix.lstrip(".").lower()
    if suffix not in fig.canvas.get_supported_filetypes():
        raise AebonetError(f"{path}: cannot write a figure as {suffix or 'a file without a suffix'}; end the name in .png")
    with atomic_path(path) as tmp:
        fig.savefig(tmp)
    return path


def history_metrics(history: pd.DataFrame) -> list[str]:
    """Return the training metric names in a history (loss first), each with or without a val_ twin."""
    names = [c for c in history.columns if not c.startswith("val_") and c not in NOT_METRICS]
    if not names:
        raise AebonetError(f"history has no metric columns (found {list(history.columns)}); expected loss, mae, ...")
    return sorted(names, key=lambda name: name != "loss")


def plot_history(history: str | os.PathLike | pd.DataFrame, stage_ends: list[int] | None = None) -> Figure:
    """Plot training and validation curves per epoch, one panel per metric (the paper's Figure 3).

    Works for the regressor (loss, mae) and the autoencoder (loss, accuracy, psnr, ssim);
    the loss is drawn on a log scale. `stage_ends` marks the end of each pretraining stage.
    """
    set_style()
    history = read_table(history, "give RUN/history.csv written during training")
    names = history_metrics(history)
    epochs = history["epoch"] + 1 if "epoch" in history else np.arange(1, len(history) + 1)
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.4), squeeze=False)
    for ax, name in zip(axes[0], names):
        draw_curves(ax, epochs, history, name)
        for end in stage_ends or []:
            ax.axvline(end, color="0.6", linestyle=":", linewidth=1)
    return fig


def draw_curves(ax, epochs, history: pd.DataFrame, name: str) -> None:
    """Draw one metric's training curve and, when logged, its validation curve."""
    ax.plot(epochs, history[name], label="training", color="#2166ac")
    if f"val_{name}" in history:
        ax.plot(epochs, history[f"val_{name}"], label="validation", color="#b2182b")
    if name == "loss":
        ax.set_yscale("log")
    ax.set(title=METRIC_TITLES.get(name, name), xlabel="epoch", ylabel=name)
    ax.legend()


def mae_title(y, y_hat) -> str:
    """Return "MAE 8.1 months (95 % CI 7.2-9.0), n = 200" for a title."""
    row = metrics.mae_with_ci(y, y_hat)
    return f"MAE {row['mae']:.1f} months (95 % CI {row['ci_low']:.1f}-{row['ci_high']:.1f}), n = {row['n']}"


def plot_predictions(y, y_hat, male=None) -> Figure:
    """Plot predicted against true bone age with the identity line, coloured by sex (the paper's Figure 4)."""
    set_style()
    frame = metrics.error_frame(y, y_hat, male)
    fig, ax = plt.subplots(figsize=(5.4, 5.2))
    for sex, group in frame.groupby("sex"):
        ax.scatter(group.y, group.y_hat, s=14, alpha=0.7, color=SEX_COLORS[sex], label=f"{sex} (n = {len(group)})")
    low, top = min(0, frame.y_hat.min()), max(frame.y.max(), frame.y_hat.max()) * 1.05
    ax.plot([low, top], [low, top], color="0.3", linestyle="--", linewidth=1, label="perfect prediction")
    ax.set(xlim=(low, top), ylim=(low, top), aspect="equal", xlabel="true bone age (months)",
           ylabel="predicted bone age (months)", title=mae_title(frame.y, frame.y_hat))
    ax.legend(loc="upper left")
    return fig


def plot_bland_altman(y, y_hat) -> Figure:
    """Plot prediction minus truth against their mean, with the bias and 95 % limits of agreement."""
    set_style()
    agreement = metrics.bland_altman(y, y_hat)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.scatter(agreement["means"], agreement["differences"], s=14, alpha=0.6, color="#4d4d4d")
    lines = {"bias": agreement["mean_difference"], "lower limit": agreement["lower_loa"], "upper limit": agreement["upper_loa"]}
    for label, level in lines.items():
        ax.axhline(level, color="#b2182b", linestyle="-" if label == "bias" else "--", linewidth=1)
        ax.annotate(f"{label} {level:+.1f}", (1.0, level), xycoords=("axes fraction", "data"),
                    xytext=(4, 0), textcoords="offset points", va="center", fontsize=9, color="#b2182b")
    ax.set(xlabel="mean of true and predicted bone age (months)", ylabel="predicted - true (months)",
           title=f"Bland-Altman: bias {lines['bias']:+.1f}, 95 % limits {lines['lower limit']:+.1f} to {lines['upper limit']:+.1f} months")
    return fig


def band_tables(y, y_hat, male=None) -> dict[str, pd.DataFrame]:
    """Return mae_by_band for everyone, or for each sex present when `male` is given."""
    if male is None:
        return {"all": metrics.mae_by_band(y, y_hat)}
    frame = metrics.error_frame(y, y_hat, male)
    present = [sex for sex in metrics.SEX_GROUPS if (frame.sex == sex).any()]
    return {sex: metrics.mae_by_band(frame.y[frame.sex == sex], frame.y_hat[frame.sex == sex]) for sex in present}


def plot_error_by_band(y, y_hat, male=None) -> Figure:
    """Plot MAE per age band with 95 % bootstrap intervals, split by sex when `male` is given."""
    set_style()
    groups = band_tables(y, y_hat, male)
    bands = list(metrics.AGE_BANDS)
    width = 0.8 / len(groups)
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for i, (group, table) in enumerate(groups.items()):
        table = table.reindex(bands)
        x = np.arange(len(bands)) + (i - (len(groups) - 1) / 2) * width
        errors = np.vstack([table.mae - table.ci_low, table.ci_high - table.mae])
        ax.bar(x, table.mae, width, yerr=errors, capsize=3, color=SEX_COLORS.get(group, "#4d4d4d"), label=group)
    counts = metrics.error_frame(y, y_hat).band.value_counts()
    ax.set_xticks(np.arange(len(bands)), [f"{band}\n(n = {counts.get(band, 0)})" for band in bands])
    ax.set(xlabel="age band (true bone age)", ylabel="MAE (months)", title="Error by age band, 95 % bootstrap intervals")
    if male is not None:
        ax.legend()
    return fig


def as_images(X, name: str) -> np.ndarray:
    """Return images as an (N, H, W) float array, accepting (N, H, W, 1) batches."""
    X = np.asarray(X, dtype=np.float32)
    if X.ndim == 4 and X.shape[-1] == 1:
        X = X[..., 0]
    if X.ndim != 3:
        raise AebonetError(f"{name}: expected images of shape (N, H, W) or (N, H, W, 1), got {X.shape}")
    return X


def age_label(months: float) -> str:
    """Return an age in months as "10 y 4 m"."""
    years, rest = divmod(int(round(months)), 12)
    return f"{years} y {rest} m"


def plot_reconstructions(X, X_hat, ages=None, max_rows: int = 6) -> Figure:
    """Show original, autoencoder reconstruction and absolute-error map for several images, one row each."""
    set_style()
    X, X_hat = as_images(X, "X")[:max_rows], as_images(X_hat, "X_hat")[:max_rows]
    if X.shape != X_hat.shape:
        raise AebonetError(f"X has shape {X.shape} but X_hat has {X_hat.shape}: pass the autoencoder's output for the same images")
    errors = np.abs(X - X_hat)
    fig, axes = plt.subplots(len(X), 3, figsize=(7.2, 2.5 * len(X)), squeeze=False)
    for row, (image, rebuilt, error) in enumerate(zip(X, X_hat, errors)):
        name = age_label(ages[row]) if ages is not None else f"image {row + 1}"
        axes[row, 0].imshow(image, vmin=0, vmax=1)
        axes[row, 1].imshow(rebuilt, vmin=0, vmax=1)
        shown = axes[row, 2].imshow(error, cmap="magma", vmin=0, vmax=errors.max() or 1)
        axes[row, 0].set_ylabel(name)
        axes[row, 2].set_title(f"mean |error| {error.mean():.3f}", fontsize=9)
    for ax, title in zip(axes[0], ("original", "reconstruction")):
        ax.set_title(title)
    hide_ticks(axes)
    fig.colorbar(shown, ax=axes[:, 2], shrink=0.8, label="|original - reconstruction|")
    return fig


def hide_ticks(axes) -> None:
    """Remove ticks and grid from image panels, keeping their labels."""
    for ax in np.ravel(axes):
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)


def plot_gradcam(image, heatmap, title: str | None = None, alpha: float = 0.45) -> Figure:
    """Show a radiograph alone and with its Grad-CAM heatmap laid over it (chapter 6)."""
    set_style()
    image = as_images(np.asarray(image)[None], "image")[0]
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if heatmap.shape != image.shape:
        raise AebonetError(f"heatmap shape {heatmap.shape} differs from image shape {image.shape}; use explain.gradcam on this image")
    fig, axes = plt.subplots(1, 2, figsize=(7.6, 3.9))
    axes[0].imshow(image, vmin=0, vmax=1)
    axes[1].imshow(image, vmin=0, vmax=1)
    shown = axes[1].imshow(heatmap, cmap="jet", alpha=alpha, vmin=0, vmax=1)
    axes[0].set_title("radiograph")
    axes[1].set_title("Grad-CAM overlay")
    hide_ticks(axes)
    fig.colorbar(shown, ax=list(axes), shrink=0.8, label="raises the predicted age")
    if title:
        fig.suptitle(title)
    return fig


def plot_phantom_grid(ages=(12, 36, 72, 120, 168, 216), size: int = 256, seed: int = 1) -> Figure:
    """Show phantom hands at several bone ages, girls in the top row and boys below (chapter 0)."""
    set_style()
    fig, axes = plt.subplots(2, len(ages), figsize=(1.9 * len(ages), 4.4), squeeze=False)
    for row, (sex, male) in enumerate((("girl", False), ("boy", True))):
        for col, months in enumerate(ages):
            axes[row, col].imshow(phantom.render(months, male, size=size, seed=seed), vmin=0, vmax=1)
            axes[row, col].set_title(f"{sex}, {age_label(months)}", fontsize=9)
    hide_ticks(axes)
    fig.suptitle("Phantom hand radiographs by bone age")
    return fig


def label_efficiency_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Return one row per (arm, fraction): MAE with `low` and `high` ends of its error bar.

    Rows with `ci_low` and `ci_high` keep them; rows per seed are averaged, the bar
    spanning the lowest to the highest seed.
    """
    if "ci_low" in df.columns:
        return df.rename(columns={"ci_low": "low", "ci_high": "high"}).sort_values(["arm", "fraction"])
    grouped = df.groupby(["arm", "fraction"], sort=True).mae
    return pd.DataFrame({"mae": grouped.mean(), "low": grouped.min(), "high": grouped.max()}).reset_index()


def arm_colors(arms) -> dict:
    """Return a colour per arm: the course's colours for pretrained and scratch, seaborn's for any other."""
    palette = sns.color_palette("deep", len(arms))
    return {arm: ARM_COLORS.get(arm, palette[i]) for i, arm in enumerate(arms)}


def draw_arm(ax, rows: pd.DataFrame, seeds: pd.DataFrame | None, color, label: str) -> None:
    """Draw one arm's MAE line with its error bars, and its single seeds as faint dots when given."""
    errors = np.vstack([rows.mae - rows.low, rows.high - rows.mae])
    ax.errorbar(rows.fraction * 100, rows.mae, yerr=errors, marker="o", capsize=3, color=color, label=label)
    if seeds is not None:
        ax.scatter(seeds.fraction * 100, seeds.mae, s=10, alpha=0.4, color=color)


def plot_label_efficiency(df: pd.DataFrame) -> Figure:
    """Plot test MAE against the fraction of labels used, one line per arm (chapter 7).

    `df` has columns `fraction` (0-1], `arm` (such as "pretrained" or "scratch") and `mae`
    (months), and either:
    - `ci_low` and `ci_high`: one row per (arm, fraction), the 95 % interval of its MAE; or
    - `seed`: one row per (arm, fraction, seed); each seed is drawn as a dot, the line
      follows the mean over seeds and the bars span the lowest to highest seed.
    """
    set_style()
    missing = [c for c in ("fraction", "arm", "mae") if c not in df.columns]
    if missing:
        raise AebonetError(f"label efficiency table: missing column(s) {missing}; see plot_label_efficiency's docstring")
    per_seed = "ci_low" not in df.columns
    summary = label_efficiency_summary(df)
    colors = arm_colors(sorted(summary.arm.unique()))
    fig, ax = plt.subplots(figsize=(6.2, 4.2))
    for arm, rows in summary.groupby("arm"):
        draw_arm(ax, rows, df[df.arm == arm] if per_seed else None, colors[arm], arm)
    fractions = np.sort(summary.fraction.unique()) * 100
    ax.set_xscale("log")
    ax.set_xticks(fractions, [f"{f:g} %" for f in fractions])
    ax.minorticks_off()
    bars = "lowest to highest seed" if per_seed else "95 % intervals"
    ax.set(xlabel="labels used (% of training set)", ylabel="test MAE (months)", title=f"Label efficiency (bars: {bars})")
    ax.legend(title="arm")
    return fig


def plot_sim2real(table: pd.DataFrame) -> Figure:
    """Draw each model's MAE on real radiographs (95 % CI) per split, beside the median predictor (chapter 7, sim-to-real).

    `table` has one row per model and split with `mae`, `ci_low`, `ci_high` and
    `median_predictor_mae` (_engine.sim2real); rows without a preset are models trained on
    real labels, drawn in another colour as the reference.
    """
    set_style()
    splits = list(dict.fromkeys(table.split))
    names = list(dict.fromkeys(table.name))
    fig, axes = plt.subplots(1, len(splits), figsize=(4.6 * len(splits), 0.42 * len(names) + 1.4), sharey=True)
    axes = np.atleast_1d(axes)
    for ax, split in zip(axes, splits):
        rows = table[table.split == split].set_index("name").reindex(names)
        for y, row in enumerate(rows.itertuples()):
            color = "#1b7837" if isinstance(row.preset, str) else "#4393c3"
            ax.errorbar(row.mae, y, xerr=[[row.mae - row.ci_low], [row.ci_high - row.mae]], fmt="o", color=color,
                        capsize=3)
        floor = rows["median_predictor_mae"].mean()
        ax.axvline(floor, color="#7f7f7f", linestyle="--")
        ax.set_xlabel(f"MAE on real {split} images (months)\ndashed: predicting the median ({floor:.1f})")
    axes[0].set_yticks(np.arange(len(names)), names)
    axes[0].invert_yaxis()  # the axes share y: invert once
    return fig


def plot_label_curves(summary: pd.DataFrame, split: str = "val", floor: float | None = None) -> Figure:
    """Draw MAE against labels on a log axis: fine-tuned methods (left) and linear probes (right), seed bands (chapter 7).

    `summary` is `_engine.grid_results.summarize`'s table: one row per (kind, method,
    fraction, split) with `mae`, `ci_low` and `ci_high` (intervals over seeds and images).
    `floor` (such as the median predictor's MAE) is drawn as a dashed line.
    """
    set_style()
    rows = summary[summary.split == split]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, kind, title in zip(axes, ("finetune", "probes"), ("fine-tuned, equal steps", "linear probes (frozen)")):
        part = rows[(rows.kind == kind) & (rows.method != "median")]
        colors = arm_colors(sorted(part.method.unique()))
        for method, cell in part.sort_values("fraction").groupby("method"):
            x = cell.fraction * 100
            few, many = cell.seeds.min(), cell.seeds.max()
            count = f"{many}" if few == many else f"{few}-{many}"
            unit = "seeds" if kind == "finetune" else "label draws"
            ax.plot(x, cell.mae, marker="o", color=colors[method], label=f"{method} ({count} {unit})")
            ax.fill_between(x, cell.ci_low, cell.ci_high, color=colors[method], alpha=0.18, linewidth=0)
        if floor is not None:
            ax.axhline(floor, color="0.5", linestyle="--", linewidth=1, label="median predictor")
        ax.set_xscale("log")
        fractions = np.sort(part.fraction.unique()) * 100
        ax.set_xticks(fractions, [f"{f:g} %" for f in fractions])
        ax.minorticks_off()
        ax.set(xlabel="labels used (% of the training split)", title=title)
        ax.legend(fontsize=8)
    axes[0].set_ylabel(f"{split} MAE (months); bands: 95 % over seeds and images")
    return fig
