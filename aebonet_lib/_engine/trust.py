"""Predictions a user can trust: flag ages outside the possible range and images unlike the training images.

A regressor answers for any image, even a foot, an inverted radiograph or a blank
one, and its answer looks as confident as any other. Chapter 6 puts two flags beside
every prediction: `out_of_range` (the age is outside 0-240 months and is reported
clamped) and `unlike_training`. An image is unlike the training images when the
regressor's pooled features lie farther from theirs than the 99th percentile of the
training images' own distances (Mahalanobis distance with a Ledoit-Wolf covariance),
or, for AE-BoNet, when the pretraining autoencoder redraws it worse than the 99th
percentile or better than the 1st (a blank or synthetic image is redrawn too well).
`ood_score` puts both on one scale: above 1 is beyond a threshold. The thresholds are
calibrated once, at the end of training, and saved beside the model as RUN/model.trust.json.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from aebonet_lib._engine.files import atomic_path, read_json, write_json
from aebonet_lib._engine.modelfiles import load_model, read_model_meta, write_model_meta
from aebonet_lib.data.loading import BoneAgeData
from aebonet_lib.data.preprocess import to_float
from aebonet_lib.errors import AebonetError

AGE_RANGE = (0.0, 240.0)  # months: birth to 20 years, the span of the RSNA labels
MAX_CALIBRATION_IMAGES = 3000  # training images scored for the calibration, at most
CALIBRATION_SEED = 0
BATCH_SIZE = 64
CALIBRATION_FORMAT = 2  # 2: feature distance in principal directions, with the reconstruction error beside it
MIN_IMAGES_PER_DIMENSION = 10  # the feature distance keeps at most n_train / 10 principal directions
MAX_FEATURE_DIMENSIONS = 512  # above this (wide encoders), only the last block's pooled features: a smaller covariance
FLAG_COLUMNS = ("predicted_raw", "out_of_range", "ood_score", "unlike_training", "flagged")


# Paths beside the model


def trust_path(model_path: str | Path) -> Path:
    """Return where a model's calibration lives: RUN/model.trust.json."""
    return Path(model_path).with_suffix(".trust.json")


def autoencoder_copy(model_path: str | Path) -> Path:
    """Return where a model keeps its own copy of the autoencoder: RUN/model.autoencoder.keras."""
    return Path(model_path).with_suffix(".autoencoder.keras")


def read_calibration(model_path: str | Path) -> dict | None:
    """Return the model's saved calibration, or None when it has none."""
    path = trust_path(model_path)
    return read_json(path) if path.is_file() else None


# Images in batches


def as_batch(X: np.ndarray, image_size: int) -> np.ndarray:
    """Return images as float32 (N, S, S, 1) in [0, 1], from float (N, S, S[, 1]) or a uint8 cache."""
    x = to_float(X)
    x = x[..., None] if x.ndim == 3 else x
    if x.ndim != 4 or x.shape[1:] != (image_size, image_size, 1):
        raise AebonetError(f"images of shape {np.shape(X)}: the model reads (N, {image_size}, {image_size}) images; "
                           "prepare them with the model's preprocessing (predict.load_data_for_model)")
    return x


def batched(function, X: np.ndarray, image_size: int) -> np.ndarray:
    """Apply `function` (a batch (B, S, S, 1) -> (B,) scores) to X in batches of 64."""
    scores = [function(as_batch(X[start:start + BATCH_SIZE], image_size)) for start in range(0, len(X), BATCH_SIZE)]
    return np.concatenate(scores) if scores else np.zeros(0, np.float32)


def to_numpy(tensor) -> np.ndarray:
    """Return a model output as a float32 array (bfloat16 and float16 outputs included)."""
    return keras.ops.convert_to_numpy(tensor).astype(np.float32)


# (a) Reconstruction error of the pretraining autoencoder


def reconstruction_errors(autoencoder: keras.Model, X: np.ndarray) -> np.ndarray:
    """Return each image's mean squared reconstruction error under the autoencoder."""
    def errors(x):
        return np.mean((to_numpy(autoencoder(x, training=False)) - x) ** 2, axis=(1, 2, 3))
    return batched(errors, X, autoencoder.input_shape[1])


# (b) Distance from the training images in the regressor's pooled features


def image_input(model: keras.Model):
    """Return the image input of a regressor (its only input, or "image" beside "sex")."""
    return next(tensor for tensor in model.inputs if len(tensor.shape) == 4)


def block_outputs(encoder: keras.Model) -> list:
    """Return the outputs of an AE-BoNet encoder's blocks (enc1_bn ... bottleneck_bn); [] for other backbones."""
    names = [layer.name for layer in encoder.layers if layer.name.endswith("_bn")]
    return [encoder.get_layer(name).output for name in names] if "bottleneck_bn" in names else []


def feature_model(model: keras.Model) -> keras.Model:
    """Return image -> pooled features: every encoder block's, averaged over the image, when small enough; else head_gap's.

    Pooling every block (not only the last, which the head reads) lets the distance see
    unusual textures and edges as well as unusual content: on real radiographs it flags
    73 % of phantom images against 52 % with the last block alone, at the same false-flag
    rate. The sex input joins after the pooling, so the features need the image only.
    """
    encoder = model.get_layer("encoder")
    blocks = block_outputs(encoder)
    if blocks and sum(int(b.shape[-1]) for b in blocks) <= MAX_FEATURE_DIMENSIONS:
        pooled = [keras.layers.GlobalAveragePooling2D(name=f"trust_gap{i}")(b) for i, b in enumerate(blocks)]
        return keras.Model(encoder.input, keras.layers.Concatenate(name="trust_features")(pooled))
    return keras.Model(image_input(model), model.get_layer("head_gap").output)


def pooled_features(model: keras.Model, X: np.ndarray) -> np.ndarray:
    """Return the regressor's pooled features (N, C) for images X."""
    return features_of(feature_model(model), X)


def features_of(features: keras.Model, X: np.ndarray) -> np.ndarray:
    """Return the pooled features (N, C) a `feature_model` gives images X, in batches."""
    batches = [to_numpy(features(as_batch(X[start:start + BATCH_SIZE], features.input_shape[1]), training=False))
               for start in range(0, len(X), BATCH_SIZE)]
    return np.concatenate(batches) if batches else np.zeros((0, features.output_shape[-1]), np.float32)


def fit_feature_distance(features: np.ndarray) -> dict[str, np.ndarray]:
    """Return the training features' mean, principal directions and inverse covariance in them (Ledoit-Wolf).

    With few training images for many features (n < 10 per dimension), only the top
    n / 10 principal directions are kept: a covariance estimated from fewer images than
    dimensions would call every new image far.
    """
    from sklearn.covariance import LedoitWolf

    features = features.astype(np.float64)
    mean = features.mean(axis=0)
    keep = int(min(features.shape[1], max(2, len(features) // MIN_IMAGES_PER_DIMENSION)))
    components = np.linalg.svd(features - mean, full_matrices=False)[2][:keep]
    fitted = LedoitWolf().fit((features - mean) @ components.T)
    return {"location": mean, "components": components, "precision": fitted.precision_}


def feature_arrays_path(model_path: str | Path) -> Path:
    """Return where the feature distance's mean and inverse covariance live: RUN/model.trust.npz."""
    return Path(model_path).with_suffix(".trust.npz")


def save_feature_arrays(model_path: str | Path, fitted: dict[str, np.ndarray]) -> Path:
    """Write the feature distance's arrays beside the model, atomically."""
    path = feature_arrays_path(model_path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **{name: array.astype(np.float32) for name, array in fitted.items()})
    return path


def load_feature_arrays(model_path: str | Path) -> dict[str, np.ndarray]:
    """Read the feature distance's arrays saved beside the model."""
    with np.load(feature_arrays_path(model_path)) as arrays:
        return {name: arrays[name] for name in arrays.files}


def feature_distances(features: np.ndarray, fitted: dict) -> np.ndarray:
    """Return each image's squared Mahalanobis distance from the training images in the regressor's feature space.

    An image whose features sit far from the training images' gives the head an input it
    never learned; the covariance makes the distance count directions the training
    images do not vary in, which a per-feature z-score misses.
    """
    projected = (features.astype(np.float64) - fitted["location"]) @ fitted["components"].T
    return np.einsum("ij,jk,ik->i", projected, fitted["precision"], projected)


def residual_distances(features: np.ndarray, fitted: dict) -> np.ndarray:
    """Return each image's squared distance from the kept principal directions (0 when all are kept)."""
    centred = features.astype(np.float64) - fitted["location"]
    return np.sum((centred - (centred @ fitted["components"].T) @ fitted["components"]) ** 2, axis=1)


def feature_scores(features: np.ndarray, fitted: dict, record: dict) -> np.ndarray:
    """Return each image's feature score over its threshold: Mahalanobis distance, and the residual when kept."""
    scores = feature_distances(features, fitted) / record["threshold"]
    if record.get("residual_threshold"):
        scores = np.maximum(scores, residual_distances(features, fitted) / record["residual_threshold"])
    return scores


# Calibration on the training images


def sample_index(n: int, most: int | None = None, seed: int = CALIBRATION_SEED) -> np.ndarray:
    """Return sorted indices of at most `most` (default MAX_CALIBRATION_IMAGES) of n images, drawn with a fixed seed."""
    most = MAX_CALIBRATION_IMAGES if most is None else most
    if n <= most:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, most, replace=False))


def copy_autoencoder(autoencoder_path: str | Path, model_path: str | Path, image_size: int) -> Path:
    """Copy a pretraining autoencoder (and its sidecar) beside the model, atomically; return the copy's path."""
    meta = read_model_meta(autoencoder_path)
    if meta.kind != "autoencoder" or meta.image_size != image_size:
        raise AebonetError(f"{autoencoder_path}: not an autoencoder of {image_size} px images (kind "
                           f"{meta.kind!r}, {meta.image_size} px); give RUN/autoencoder.keras of the "
                           "pretraining run whose encoder the model uses")
    target = autoencoder_copy(model_path)
    with atomic_path(target) as tmp:
        shutil.copyfile(autoencoder_path, tmp)
    write_model_meta(target, meta)
    return target


def calibrate(model_path: str | Path, X_train: np.ndarray, autoencoder_path: str | Path | None = None,
              male: np.ndarray | None = None, percentile: float = 99.0) -> dict:
    """Score the training images and save the flagging thresholds beside the model as RUN/model.trust.json (chapter 6).

    Always the distance in the regressor's pooled features; with `autoencoder_path`
    also the autoencoder's reconstruction error (the autoencoder is copied beside the
    model, so the run folder is self-contained). At most MAX_CALIBRATION_IMAGES
    images, drawn with a fixed seed, are scored (`n` in the record). `male` is
    accepted like predict's, but no score reads it: the pooled features come before the sex input.
    """
    meta = read_model_meta(model_path)
    X = X_train[sample_index(len(X_train))]
    if len(X) < 2:
        raise AebonetError(f"{model_path}: {len(X)} training images to calibrate on; give the run's training split")
    record = {"percentile": float(percentile), "n": int(len(X)), "n_train": int(len(X_train)),
              "seed": CALIBRATION_SEED, "image_size": meta.image_size, "method": "features",
              "format": CALIBRATION_FORMAT}
    features = pooled_features(load_model(model_path)[0], X)
    fitted = fit_feature_distance(features)
    arrays = save_feature_arrays(model_path, fitted)
    record["features"] = {"arrays": arrays.name, "dimensions": int(features.shape[1]),
                          "directions": int(len(fitted["components"])),
                          "threshold": float(np.percentile(feature_distances(features, fitted), percentile))}
    if len(fitted["components"]) < features.shape[1]:  # few images: also how far off the kept directions
        record["features"]["residual_threshold"] = float(np.percentile(residual_distances(features, fitted), percentile))
    if autoencoder_path is not None:
        copy = copy_autoencoder(autoencoder_path, model_path, meta.image_size)
        errors = reconstruction_errors(load_model(copy)[0], X)
        record["method"] = "reconstruction+features"
        record["reconstruction"] = {"autoencoder": copy.name, "autoencoder_source": str(autoencoder_path),
                                    "threshold": float(np.percentile(errors, percentile)),
                                    "low_threshold": float(np.percentile(errors, 100 - percentile))}
    write_json(trust_path(model_path), record)
    return record


def calibrate_run(model_path: str | Path, data: BoneAgeData, encoder_path: str | Path | None = None) -> dict:
    """Calibrate a training run's model on its train split; by reconstruction when the encoder's autoencoder is at hand.

    An AE-BoNet encoder (PRETRAIN_RUN/encoder.keras) has autoencoder.keras beside it;
    without one, the features method is used. Only the sampled images are read from the cache.
    """
    train = data.splits["train"]
    train = train[sample_index(len(train))]
    autoencoder = Path(encoder_path).with_name("autoencoder.keras") if encoder_path else None
    if autoencoder is not None and not autoencoder.is_file():
        autoencoder = None
    return calibrate(model_path, data.X[train], autoencoder, data.male[train])


# Scoring and flagging new images


def is_current(record: dict | None) -> bool:
    """Return True for a calibration record of this version's format."""
    return record is not None and record.get("format") == CALIBRATION_FORMAT


def score(model_path: str | Path, X: np.ndarray, male: np.ndarray | None = None,
          model: keras.Model | None = None) -> np.ndarray | None:
    """Return the images' out-of-distribution scores (above 1: unlike the training images), or None without a calibration.

    Pass the loaded regressor as `model` to spare loading it again.
    """
    record = read_calibration(model_path)
    return None if record is None else calibrated_scores(record, model_path, X, model)


def calibrated_scores(record: dict, model_path: str | Path, X: np.ndarray, model: keras.Model | None) -> np.ndarray:
    """Return each image's largest score relative to its threshold: feature distance, and reconstruction error if calibrated."""
    return load_scorer(model_path, model, record)[1](X)


def load_scorer(model_path: str | Path, model: keras.Model | None = None, record: dict | None = None) -> tuple:
    """Return the calibration record ({} without one) and a function images -> scores (None without one), loaded once.

    Scoring batch after batch (`predict.predict_images`) then loads the feature arrays
    and the autoencoder only once.
    """
    record = read_calibration(model_path) if record is None else record
    if not record:
        return {}, None
    if not is_current(record):
        raise AebonetError(f"{trust_path(model_path)}: a calibration of an older version; calibrate again "
                           "(trust.calibrate_run on the run's training split)")
    features = feature_model(model if model is not None else load_model(model_path)[0])
    fitted, autoencoder = load_feature_arrays(model_path), calibration_autoencoder(record, model_path)

    def scores(X: np.ndarray) -> np.ndarray:
        result = feature_scores(features_of(features, X), fitted, record["features"])
        return result if autoencoder is None else np.maximum(result, reconstruction_scores(autoencoder, X, record))
    return record, scores


def calibration_autoencoder(record: dict, model_path: str | Path) -> keras.Model | None:
    """Load the autoencoder a calibration names, refusing a name that is not a file in the model's own folder."""
    if "reconstruction" not in record:
        return None
    name = str(record["reconstruction"].get("autoencoder", ""))
    if Path(name).name != name or name in ("", ".", ".."):
        raise AebonetError(f"{trust_path(model_path)}: names the autoencoder {name!r}, which is not a file in the "
                           "model's folder; restore the file written with the model, or calibrate again")
    return load_model(Path(model_path).parent / name)[0]


def reconstruction_scores(autoencoder: keras.Model, X: np.ndarray, record: dict) -> np.ndarray:
    """Return each image's reconstruction error over its threshold, or the low threshold over it (redrawn too well)."""
    limits = record["reconstruction"]
    errors = reconstruction_errors(autoencoder, X).astype(np.float64)
    return np.maximum(errors / limits["threshold"], limits["low_threshold"] / np.maximum(errors, 1e-12))


def outside(scores: np.ndarray) -> np.ndarray:
    """Return which images lie beyond a calibrated threshold (a score above 1)."""
    return scores > 1.0


def flag(model_path: str | Path, X: np.ndarray, y_hat: np.ndarray, male: np.ndarray | None = None,
         model: keras.Model | None = None, scorer: tuple | None = None) -> pd.DataFrame:
    """Return one row per image: the clamped prediction, the raw one, and the flags (chapter 6).

    Columns: predicted (clamped to AGE_RANGE), predicted_raw, out_of_range, ood_score
    (NaN without a calibration), unlike_training (False without one), flagged (either flag).
    The table's attrs["trust"] names the method and percentile, for `flag_summary`.
    `scorer` (from `load_scorer`) spares loading the calibration again for each batch.
    """
    y_hat = np.asarray(y_hat, np.float64).reshape(-1)
    record, score_images = scorer or load_scorer(model_path, model)
    scores = None if score_images is None else score_images(X)
    out_of_range = (y_hat < AGE_RANGE[0]) | (y_hat > AGE_RANGE[1]) | ~np.isfinite(y_hat)
    unlike = np.zeros(len(y_hat), bool) if scores is None else outside(scores)
    table = pd.DataFrame({"predicted": np.clip(np.nan_to_num(y_hat, nan=AGE_RANGE[0]), *AGE_RANGE),
                          "predicted_raw": y_hat, "out_of_range": out_of_range,
                          "ood_score": np.full(len(y_hat), np.nan) if scores is None else scores,
                          "unlike_training": unlike, "flagged": out_of_range | unlike})
    table.attrs["trust"] = {"method": record.get("method"), "percentile": record.get("percentile")}
    return table


def flag_counts(table: pd.DataFrame) -> dict:
    """Return how many images a flagged table holds, how many are flagged and why, and the flag rate."""
    n = len(table)
    info = table.attrs.get("trust", {})
    return {"n": n, "flagged": int(table["flagged"].sum()), "out_of_range": int(table["out_of_range"].sum()),
            "unlike_training": int(table["unlike_training"].sum()),
            "flag_rate": float(table["flagged"].mean()) if n else 0.0,
            "ood_method": info.get("method"), "ood_percentile": info.get("percentile")}


def ordinal(number: float) -> str:
    """Return a percentile as an ordinal: 99 -> '99th', 95 -> '95th', 91 -> '91st', 99.5 -> '99.5th'."""
    if number != int(number):
        return f"{number:g}th"
    number = int(number)
    suffix = "th" if 10 <= number % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
    return f"{number}{suffix}"


def method_words(counts: dict) -> str:
    """Return how an image is judged unlike the training images, for the one-line warning."""
    percentile = counts.get("ood_percentile") or 99.0
    features = f"feature distance above the {ordinal(percentile)} percentile"
    if counts.get("ood_method") != "reconstruction+features":
        return f"{features} of the training set"
    return (f"reconstruction error outside the {ordinal(100 - percentile)} to {ordinal(percentile)} percentile, "
            f"or {features}, of the training set")


def counts_summary(counts: dict) -> str | None:
    """Return the one-line warning for `flag_counts` (or metrics.json) counts, or None when nothing is flagged."""
    if not counts.get("flagged"):
        return None
    reasons = []
    if counts["out_of_range"]:
        plural = "s" if counts["out_of_range"] > 1 else ""
        reasons.append(f"{counts['out_of_range']} prediction{plural} outside "
                       f"{AGE_RANGE[0]:g}-{AGE_RANGE[1]:g} months (clamped)")
    if counts["unlike_training"]:
        reasons.append(f"{counts['unlike_training']} unlike the training images ({method_words(counts)})")
    n, flagged = counts["n"], counts["flagged"]
    return (f"warning: {flagged} of {n} image{'s' if n > 1 else ''} flagged: {', '.join(reasons)}; "
            "see the flag columns")


def flag_summary(table: pd.DataFrame) -> str | None:
    """Return a one-line warning saying how many images are flagged and why, or None when none is."""
    return counts_summary(flag_counts(table))
