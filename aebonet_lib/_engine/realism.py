"""How close is the phantom to real radiographs? The same measures on both, side by side.

`realism_report` renders phantoms and reads real images (the RSNA training set at 256 px, and
the registered full-resolution sample for the 1024-px measures) and returns one table:
intensities inside and outside the hand, clipping, the hand's share of the frame, fine-scale
noise at 256 and 1024 px, and the thumbnail shortcut (a ridge regression on 8x8 thumbnails and
sex: if it beats the mean predictor by far, images carry a cheap global cue to the label).
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from aebonet_lib._engine import files
from aebonet_lib.errors import AebonetError
from aebonet_lib.phantom.children import READER_SD_MONTHS
from aebonet_lib.phantom.dataset import (
    AGE_RANGE,
    IMAGE_DIR,
    LABELS_CSV,
    dataset_plan,
    image_seed,
)
from aebonet_lib.phantom.radiograph import render
from aebonet_lib.phantom.styles import DEFAULT_STYLE

SHARED = Path(__file__).resolve().parents[3] / "shared"
REAL_256 = SHARED / "rsna_bone_age_256"  # the RSNA training set, raw, 256x256 JPEG
REAL_SAMPLE = SHARED / "rsna_sample"  # eight registered full-resolution radiographs
RESULTS = Path(__file__).resolve().parents[1] / "results" / "phantom"  # the measured tables the library ships
FINE_SIZE = (1024, 788)  # the 1024-px measures: height x width of the registered frame
FOLDS, RIDGE_ALPHA, THUMB = 5, 10.0, 8


def hand_mask(image: np.ndarray) -> np.ndarray:
    """Return the hand (and anything as bright) as a boolean mask: Otsu's threshold on the smoothed image."""
    pixels = (np.clip(image, 0, 1) * 255).astype(np.uint8)
    smooth = cv2.GaussianBlur(pixels, (0, 0), max(1.0, image.shape[0] / 256))
    _, mask = cv2.threshold(smooth, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return mask.astype(bool)


def fine_residual(image: np.ndarray) -> np.ndarray:
    """Return the image minus its Gaussian blur of 1.5 px: the finest detail and the noise."""
    return image - cv2.GaussianBlur(image, (0, 0), 1.5)


def neighbour_correlation(residual: np.ndarray, mask: np.ndarray) -> float:
    """Return the correlation of horizontally neighbouring residuals inside `mask`."""
    both = mask[:, :-1] & mask[:, 1:]
    left, right = residual[:, :-1][both], residual[:, 1:][both]
    return float(np.corrcoef(left, right)[0, 1]) if len(left) > 10 else float("nan")


def image_measures(image: np.ndarray) -> dict:
    """Return one image's measures: intensities inside and outside the hand, clipping, zeros, hand fraction, fine noise."""
    mask = hand_mask(image)
    inside, outside = image[mask], image[~mask]
    residual = fine_residual(image)
    return {
        "inside_mean": float(inside.mean()) if inside.size else float("nan"),
        "outside_mean": float(outside.mean()) if outside.size else float("nan"),
        "clipped_in_hand": float((inside >= 1.0).mean()) if inside.size else 0.0,
        "zeros_outside": float((outside <= 0.0).mean()) if outside.size else 0.0,
        "hand_fraction": float(mask.mean()),
        "fine_sd": float(residual[mask].std()) if inside.size else float("nan"),
        "fine_correlation": neighbour_correlation(residual, mask),
    }


def histogram(values: np.ndarray, bins: int = 20) -> np.ndarray:
    """Return the share of `values` (0-1) in each of `bins` equal bins."""
    counts, _ = np.histogram(values, bins=bins, range=(0, 1))
    return counts / max(1, counts.sum())


def summarise(images: list[np.ndarray]) -> dict:
    """Return the measures averaged over images, and the share of images with over 1 % of hand pixels at 1.0."""
    rows = pd.DataFrame([image_measures(image) for image in images])
    summary = rows.mean().to_dict()
    summary["images_clipping_over_1pct"] = float((rows["clipped_in_hand"] > 0.01).mean())
    return summary


def histograms(images: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Return the pooled intensity histograms inside and outside the hand."""
    masks = [hand_mask(image) for image in images]
    return {"inside": histogram(np.concatenate([im[m] for im, m in zip(images, masks)])),
            "outside": histogram(np.concatenate([im[~m] for im, m in zip(images, masks)]))}


def thumbnails(images: list[np.ndarray], males: np.ndarray) -> np.ndarray:
    """Return each image as its 8x8 thumbnail (64 numbers) and its sex, one row per image."""
    small = [cv2.resize(image.astype(np.float32), (THUMB, THUMB), interpolation=cv2.INTER_AREA).ravel() for image in images]
    return np.column_stack([np.array(small), np.asarray(males, np.float32)])


def ridge_fit_predict(X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray) -> np.ndarray:
    """Return a ridge regression's predictions on X_test, fitted on standardised X_train."""
    mean, sd = X_train.mean(0), X_train.std(0) + 1e-6
    A, B = (X_train - mean) / sd, (X_test - mean) / sd
    w = np.linalg.solve(A.T @ A + RIDGE_ALPHA * np.eye(A.shape[1]), A.T @ (y_train - y_train.mean()))
    return B @ w + y_train.mean()


def shortcut_test(images: list[np.ndarray], labels: np.ndarray, males: np.ndarray, seed: int = 0) -> dict:
    """Return the 5-fold MAE of a ridge on 8x8 thumbnails + sex, and of the training folds' mean, in months."""
    X, y = thumbnails(images, males), np.asarray(labels, np.float64)
    folds = np.random.default_rng(seed).permutation(len(y)) % FOLDS
    ridge, mean = np.empty(len(y)), np.empty(len(y))
    for k in range(FOLDS):
        test, train = folds == k, folds != k
        ridge[test] = ridge_fit_predict(X[train], y[train], X[test])
        mean[test] = y[train].mean()
    return {"thumbnail_ridge_mae": float(np.abs(ridge - y).mean()), "mean_predictor_mae": float(np.abs(mean - y).mean())}


def phantom_set(n: int, size, seed: int, style: str, variation: bool = True) -> tuple[list, np.ndarray, np.ndarray]:
    """Return `n` phantom images with one reader's labels (as a real set has), and their sexes."""
    ages, males, labels = dataset_plan(n, seed, AGE_RANGE, READER_SD_MONTHS)
    images = [render(float(a), bool(m), size, image_seed(seed, i), style, variation) for i, (a, m) in enumerate(zip(ages, males))]
    return images, labels, males


def real_set(n: int, folder: Path = REAL_256, seed: int = 0) -> tuple[list, np.ndarray, np.ndarray]:
    """Return `n` real radiographs drawn at random from a Kaggle-layout folder (grey, 0-1), their labels and sexes."""
    if not (folder / LABELS_CSV).is_file():
        raise AebonetError(f"{folder}: no {LABELS_CSV}; give the RSNA training set (Kaggle layout)")
    table = pd.read_csv(folder / LABELS_CSV)
    table = table.iloc[np.sort(np.random.default_rng(seed).permutation(len(table))[:n])]
    images = [read_grey(next((folder / IMAGE_DIR).glob(f"{image_id}.*"))) for image_id in table["id"]]
    return images, table["boneage"].to_numpy(float), table["male"].astype(str).str.lower().eq("true").to_numpy()


def read_grey(path: Path, height: int | None = None) -> np.ndarray:
    """Return an image file as float32 grey in [0, 1], resized (area) to `height` rows if given."""
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise AebonetError(f"{path}: not an image OpenCV can read")
    if height:
        image = cv2.resize(image, (round(image.shape[1] * height / image.shape[0]), height), interpolation=cv2.INTER_AREA)
    return image.astype(np.float32) / 255


def fine_measures(images: list[np.ndarray]) -> dict:
    """Return the mean fine-scale residual SD and neighbour correlation inside the hand."""
    rows = [image_measures(image) for image in images]
    return {"fine_sd": float(np.mean([r["fine_sd"] for r in rows])),
            "fine_correlation": float(np.nanmean([r["fine_correlation"] for r in rows]))}


def quantised(images: list[np.ndarray]) -> list[np.ndarray]:
    """Return images rounded to 8 bits, as the real ones are stored (so that 'exactly 1.0' means the same)."""
    return [np.round(np.clip(image, 0, 1) * 255).astype(np.float32) / 255 for image in images]


def realism_report(n: int = 500, style: str = DEFAULT_STYLE, real_dir: str | Path = REAL_256,
                   sample_dir: str | Path = REAL_SAMPLE, seed: int = 0) -> pd.DataFrame:
    """Return the phantom's measures beside the real set's (columns measure, phantom, real); real columns NaN when absent.

    256-px measures on `n` images of each; 1024-px fine-noise measures on the eight registered samples
    and eight registered phantoms; the shortcut test on the same `n` images.
    """
    images, labels, males = phantom_set(n, 256, seed, style)
    columns = {"phantom": {**summarise(quantised(images)), **shortcut_test(images, labels, males, seed)}}
    fine = quantised(phantom_set(8, FINE_SIZE, seed, "registered")[0])
    columns["phantom"].update({f"{k}_1024": v for k, v in fine_measures(fine).items()})
    real_dir, sample_dir = Path(real_dir), Path(sample_dir)
    columns["real"] = {}
    if (real_dir / LABELS_CSV).is_file():
        real, real_labels, real_males = real_set(n, real_dir, seed)
        columns["real"] = {**summarise(real), **shortcut_test(real, real_labels, real_males, seed)}
    if (sample_dir / LABELS_CSV).is_file():
        sample = [read_grey(p, FINE_SIZE[0]) for p in sorted((sample_dir / IMAGE_DIR).glob("*.png"))]
        columns["real"].update({f"{k}_1024": v for k, v in fine_measures(sample).items()})
    table = pd.DataFrame(columns)
    table.index.name = "measure"
    return table.reset_index()


def realism_figure(n: int = 200, style: str = DEFAULT_STYLE, real_dir: str | Path = REAL_256, seed: int = 0):
    """Return a matplotlib figure: intensity histograms inside and outside the hand, phantom against real (chapter 2)."""
    import matplotlib.pyplot as plt

    sets = {"phantom": quantised(phantom_set(n, 256, seed, style)[0])}
    if (Path(real_dir) / LABELS_CSV).is_file():
        sets["real (RSNA)"] = real_set(n, Path(real_dir), seed)[0]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), sharey=True)
    centres = np.arange(20) / 20 + 0.025
    for name, images in sets.items():
        for ax, (where, shares) in zip(axes, histograms(images).items()):
            ax.plot(centres, shares, marker="o", label=name)
            ax.set_title(f"{where} the hand")
            ax.set_xlabel("grey level")
    axes[0].set_ylabel("share of pixels")
    axes[0].legend()
    fig.tight_layout()
    return fig


def shipped_realism() -> pd.DataFrame:
    """Return the realism table measured on this project's machine (results/phantom/realism.csv), for the book."""
    return pd.read_csv(RESULTS / "realism.csv", index_col="measure")


def print_report(table: pd.DataFrame, out=sys.stdout) -> None:
    """Print the realism table with three decimals."""
    print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"), file=out)


def report_main(n: int = 500, style: str = DEFAULT_STYLE, real_dir: str | Path = REAL_256, out: str | Path | None = None) -> int:
    """Run the realism report, print it, and write it as CSV to `out` if given; return 0 (for `aebonet phantom --report`)."""
    table = realism_report(n, style, real_dir)
    print_report(table)
    if out:
        with files.atomic_write(Path(out)) as f:
            table.to_csv(f, index=False, lineterminator="\n", float_format="%.4f")
    return 0
