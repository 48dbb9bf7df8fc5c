"""Pack a dataset for `gpu_check.py --real` into one small file: the course's preprocessed images as JPEG, labels, split.

    python benchmarks/pack_rsna.py --data ../shared/rsna_bone_age_256 --out .gpu-data

A lent GPU machine sees only what travels with the repository (at most 64 MiB in all), and has
no TensorFlow to build the course's cache with. So this reads the dataset once here through the
course's own loader (`data.loading.load_data`: the same preprocessing and the paper's seeded
split, 10,088 / 2,323 / 200 of the RSNA training set), re-encodes each preprocessed image as a
JPEG at the highest quality that keeps the file under `--max-mib`, and writes OUT/rsna.npz:
`jpeg` (the bytes, one after another) and `offsets`, `y` (months), `male`, `ids`, `split` (0 train,
1 val, 2 test) and `meta` (JSON: source, size, quality, fraction, and the re-encoding's pixel error
measured on every image). `--fraction` keeps that share of each split (seeded), so a subsample
keeps the paper's split: no image changes sides. The file holds RSNA images: keep it out of the
repository (the folder is git-ignored only if you ignore it; `.gpu-data/` is, see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aebonet_lib.errors import AebonetError  # noqa: E402  (the check's machine imports `decode` alone: no loader there)

SPLITS = ("train", "val", "test")
QUALITIES = (95, 90, 85, 80, 75, 70, 65, 60, 55, 50, 45, 40, 35, 30)
PACK = "rsna.npz"


def encode(image: np.ndarray, quality: int) -> bytes:
    """Return a grayscale uint8 image as JPEG bytes at `quality`."""
    ok, buffer = cv2.imencode(".jpg", np.asarray(image), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise AebonetError(f"JPEG encoding failed at quality {quality}")
    return buffer.tobytes()


def decode(data: bytes) -> np.ndarray:
    """Return JPEG bytes as a grayscale uint8 image."""
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)


def kept_indices(splits: dict, fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Return the indices kept from each split: `fraction` of it (at least one), drawn with `seed`, in order."""
    rng = np.random.default_rng(seed)
    sizes = {name: min(len(splits[name]), max(1, round(fraction * len(splits[name])))) for name in SPLITS}
    return {name: np.sort(rng.choice(splits[name], sizes[name], replace=False)) for name in SPLITS}


def pick_quality(X: np.ndarray, indices: np.ndarray, max_bytes: float, sample: int = 300) -> int:
    """Return the highest quality whose bytes per image, on a sample, keep all `indices` under `max_bytes`."""
    probe = np.random.default_rng(0).choice(indices, min(sample, len(indices)), replace=False)
    for quality in QUALITIES:
        per_image = np.mean([len(encode(X[i], quality)) for i in probe])
        if per_image * len(indices) < max_bytes:
            return quality
    raise AebonetError(f"{len(indices)} images do not fit even at quality {QUALITIES[-1]}; pass --fraction below 1")


def pixel_error(originals, packed: list[bytes]) -> dict:
    """Return the re-encoding's error in grey levels (0-255): mean absolute, RMS, largest, and the PSNR in dB."""
    total_abs = total_sq = largest = 0.0
    count = 0
    for original, data in zip(originals, packed):
        diff = decode(data).astype(np.float64) - original
        total_abs, total_sq = total_abs + np.abs(diff).sum(), total_sq + (diff ** 2).sum()
        largest, count = max(largest, float(np.abs(diff).max())), count + diff.size
    rms = float(np.sqrt(total_sq / count))
    return {"mean_abs": float(total_abs / count), "rms": rms, "max_abs": largest,
            "psnr_db": float(20 * np.log10(255 / rms)) if rms > 0 else None}


def pack(data_source: str, out: Path, size: int, fraction: float, max_mib: float, quality: int | None,
         seed: int = 0) -> dict:
    """Write OUT/rsna.npz and return its meta: load and preprocess as the course does, subsample, re-encode."""
    from aebonet_lib.config import PAPER_SPLIT
    from aebonet_lib.data.loading import load_data

    data = load_data(data_source, size, seed=seed, split=PAPER_SPLIT, split_kind="paper", workers=1)
    kept = kept_indices(data.splits, fraction, seed)
    order = np.concatenate([kept[name] for name in SPLITS])
    split = np.concatenate([np.full(len(kept[name]), k, np.int8) for k, name in enumerate(SPLITS)])
    quality = quality or pick_quality(data.X, order, 0.97 * max_mib * 2**20)
    packed = [encode(np.asarray(data.X[i]), quality) for i in order]
    meta = {"source": str(data_source), "size": size, "quality": quality, "fraction": fraction, "seed": seed,
            "split_kind": "paper", "split_sizes": {n: int(len(kept[n])) for n in SPLITS},
            "full_split_sizes": {n: int(len(data.splits[n])) for n in SPLITS},
            "pixel_error": pixel_error((np.asarray(data.X[i]) for i in order), packed)}
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / PACK, jpeg=np.frombuffer(b"".join(packed), np.uint8),
             offsets=np.cumsum([0] + [len(b) for b in packed]).astype(np.int64),
             y=data.y[order].astype(np.float32), male=data.male[order].astype(np.float32),
             ids=np.asarray(data.ids)[order].astype(str), split=split, meta=np.asarray(json.dumps(meta)))
    meta["mib"] = (out / PACK).stat().st_size / 2**20
    return meta


def as_uint8(image: np.ndarray) -> np.ndarray:
    """Return an image of grey levels as uint8."""
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def prediction_shift(pack_file: Path, data_source: str, model: str = "rsna-cpu-paper", split: int = 1) -> dict:
    """Return a trained model's MAE on one split's original and packed images, and how far its predictions move."""
    from aebonet_lib._engine.predict import load_regressor, predict_arrays, resolve_model
    from aebonet_lib.data.preprocess import resize_pad

    pack = np.load(pack_file)
    meta = json.loads(str(pack["meta"]))
    regressor, model_meta = load_regressor(resolve_model(model))
    size = model_meta.params.image_size
    from aebonet_lib.config import PAPER_SPLIT
    from aebonet_lib.data.loading import load_data

    data = load_data(data_source, meta["size"], seed=meta["seed"], split=PAPER_SPLIT, split_kind="paper", workers=1,
                     progress=False)
    where = {i: k for k, i in enumerate(np.asarray(data.ids).astype(str))}
    rows, offsets = np.flatnonzero(pack["split"] == split), pack["offsets"]
    original = np.stack([as_uint8(resize_pad(np.asarray(data.X[where[i]]), size)) for i in pack["ids"][rows]])
    packed = np.stack([as_uint8(resize_pad(decode(pack["jpeg"][offsets[k]:offsets[k + 1]].tobytes()), size))
                       for k in rows])
    y, a, b = pack["y"][rows], predict_arrays(regressor, original), predict_arrays(regressor, packed)
    return {"model": model, "images": int(len(rows)), "mae_original": float(np.mean(np.abs(a - y))),
            "mae_packed": float(np.mean(np.abs(b - y))), "mean_abs_change": float(np.mean(np.abs(a - b))),
            "max_abs_change": float(np.max(np.abs(a - b))),
            "mean_predictor_mae": float(np.mean(np.abs(y - np.mean(pack["y"][pack["split"] == 0]))))}


def main() -> int:
    """Pack the dataset and print what was written."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="dataset folder (Kaggle layout), or phantom:N")
    parser.add_argument("--out", type=Path, required=True, help="folder to write rsna.npz into")
    parser.add_argument("--size", type=int, default=256, help="image size (default 256, the paper's)")
    parser.add_argument("--fraction", type=float, default=1.0, help="share of each split to keep (default all)")
    parser.add_argument("--max-mib", type=float, default=50.0, help="the file's limit in MiB (default 50)")
    parser.add_argument("--quality", type=int, help="JPEG quality (default: the highest that fits --max-mib)")
    parser.add_argument("--check-model", metavar="MODEL",
                        help="also compare a trained model's validation predictions on original and packed images "
                             "(such as rsna-cpu, the shipped model); prints them beside the meta")
    args = parser.parse_args()
    try:
        meta = pack(args.data, args.out, args.size, args.fraction, args.max_mib, args.quality)
        if args.check_model:
            meta["prediction_shift"] = prediction_shift(args.out / PACK, args.data, args.check_model)
    except AebonetError as e:
        print(f"pack_rsna: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(meta, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
