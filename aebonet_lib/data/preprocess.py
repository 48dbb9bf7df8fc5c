"""From a decoded radiograph of any size to the square network input (chapter 2).

Every image goes through the same few steps: shrink it so that its longer side is
`image_size` (keeping the aspect ratio, so bones are not squashed), optionally stretch
its contrast (percentile normalization) and equalize it locally (CLAHE), then pad it
with black to a square. The result is float32 in [0, 1], shape (S, S).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import cv2
import numpy as np

from aebonet_lib.errors import AebonetError

# Bump when a preprocessing step changes, so that every cache made before is rebuilt.
PREPROCESS_VERSION = 1
CLAHE_CLIP_LIMIT = 2.0  # contrast limit per tile, in multiples of the mean histogram height
CLAHE_TILES = 8  # tiles per side of the square image
NORMALIZE_PERCENTILES = (1.0, 99.0)  # the grey levels mapped to 0 and 1


@dataclass(frozen=True)
class PreprocessParams:
    """Hold everything that decides how a raw image becomes a network input."""

    image_size: int = 256
    clahe: bool = False
    normalize: bool = False

    def check(self) -> None:
        """Raise AebonetError when the image size is unusable."""
        if not isinstance(self.image_size, (int, np.integer)) or self.image_size < 8:
            raise AebonetError(f"image_size {self.image_size!r}: give a whole number of pixels, at least 8 (256 as in the paper)")

    def tag(self) -> str:
        """Return a short name for folder names, such as '256' or '256-clahe-norm'."""
        return "-".join([str(self.image_size)] + ["clahe"] * self.clahe + ["norm"] * self.normalize)

    def to_dict(self) -> dict:
        """Return the parameters, with the constants and code version that also shape the image."""
        return {**dataclasses.asdict(self), "version": PREPROCESS_VERSION, "clahe_clip_limit": CLAHE_CLIP_LIMIT,
                "clahe_tiles": CLAHE_TILES, "normalize_percentiles": list(NORMALIZE_PERCENTILES)}

    @classmethod
    def from_dict(cls, d: dict) -> "PreprocessParams":
        """Rebuild parameters saved with `to_dict`."""
        return cls(image_size=int(d["image_size"]), clahe=bool(d["clahe"]), normalize=bool(d["normalize"]))


def resize_longest(image: np.ndarray, size: int) -> np.ndarray:
    """Scale an image so that its longer side is `size` pixels, keeping its aspect ratio.

    Shrinking uses area averaging, which low-pass filters the image as it goes and so
    avoids the aliasing (jagged edges, moire on fine trabecular bone) that plain
    sampling of a 2000-pixel radiograph would give.
    """
    h, w = image.shape
    scale = size / max(h, w)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(np.asarray(image, np.float32), (new_w, new_h), interpolation=interpolation)


def pad_square(image: np.ndarray, size: int) -> np.ndarray:
    """Centre an image on a black `size` x `size` square, so that every input has the same shape."""
    h, w = image.shape
    top, left = (size - h) // 2, (size - w) // 2
    square = np.zeros((size, size), np.float32)
    square[top:top + h, left:left + w] = image
    return square


def resize_pad(image: np.ndarray, size: int) -> np.ndarray:
    """Resize an image to fit `size` x `size` without distorting it, padding the short side with black."""
    return pad_square(resize_longest(image, size), size)  # our choice (preprocessing): fit, then pad


def percentile_normalize(image: np.ndarray, low: float = NORMALIZE_PERCENTILES[0],
                         high: float = NORMALIZE_PERCENTILES[1]) -> np.ndarray:
    """Stretch contrast so that the `low` percentile becomes 0 and the `high` percentile 1.

    Radiographs from different machines use different parts of the grey range: one is
    washed out, another dark. Mapping the same percentiles to 0 and 1 puts them on a
    common scale; clipping the extreme 1 % keeps a few burned-in labels or dead pixels
    from deciding the scale.
    """
    lo, hi = np.percentile(image, [low, high])
    if hi <= lo:
        return np.zeros_like(image, dtype=np.float32)
    return np.clip((image - lo) / (hi - lo), 0, 1).astype(np.float32)


def clahe(image: np.ndarray, clip_limit: float = CLAHE_CLIP_LIMIT, tiles: int = CLAHE_TILES) -> np.ndarray:
    """Equalize contrast locally with CLAHE (contrast-limited adaptive histogram equalization).

    The image is cut into `tiles` x `tiles` tiles and each tile's histogram is flattened,
    so that faint growth plates in a dark wrist become as visible as bright finger bones;
    the clip limit stops the flattening from amplifying noise in flat regions.
    """
    equalizer = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(tiles, tiles))
    as_uint16 = np.round(np.clip(image, 0, 1) * 65535).astype(np.uint16)
    return equalizer.apply(as_uint16).astype(np.float32) / 65535


def preprocess(image: np.ndarray, params: PreprocessParams) -> np.ndarray:
    """Turn a decoded radiograph (float32 in [0, 1], any size) into the float32 (S, S) network input."""
    image = resize_longest(image, params.image_size)
    if params.normalize:
        image = percentile_normalize(image)
    if params.clahe:
        image = clahe(image)
    return np.clip(pad_square(image, params.image_size), 0, 1)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Quantize a [0, 1] image to 256 grey levels for the cache (error at most 1/510)."""
    return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)


def to_float(images: np.ndarray) -> np.ndarray:
    """Return images as float32 in [0, 1]: uint8 (a cache's) divided by 255, float images as they are."""
    images = np.asarray(images)
    return images.astype(np.float32) / 255 if images.dtype == np.uint8 else images.astype(np.float32)
