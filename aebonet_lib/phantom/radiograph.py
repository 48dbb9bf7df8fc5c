"""From millimetres to pixels: the physics of the image, and the public `render` and `regions`.

Soft tissue and bone are drawn as maps of attenuation (overlapping bones add up), summed along
the beam and exposed in the log domain: the grey level is 1 - exp(-attenuation), so dense bone
and overlaps are bright but never clip. Blur, texture and noise are set in millimetres, so a
render at 1024 pixels holds finer detail than one at 256, as a real radiograph would.
"""

from __future__ import annotations

import cv2
import numpy as np

from aebonet_lib.errors import AebonetError
from aebonet_lib.phantom.anatomy import Shape
from aebonet_lib.phantom.children import AVERAGE_CHILD, Child, draw_child
from aebonet_lib.phantom.hand import hand_scene
from aebonet_lib.phantom.styles import (
    DEFAULT_STYLE,
    check_style,
    collimate,
    draw_marker,
    draw_nuisance,
    field_mask,
    frame_pixels_per_mm,
    frame_transform,
)
from aebonet_lib.phantom.timeline import maturity_state

SUPERSAMPLE_PX = 384  # bones are drawn on a canvas at least this large (1.5x at 256), then averaged down
TISSUE_MU, BONE_MU = 0.6, 1.3  # attenuation of the full soft tissue and of a cortex seen edge-on
TEXTURE = 0.22  # depth of the trabecular texture inside bone
TRABECULA_MM = (1.6, 0.6)  # the texture's grain along and across the bone (mm)
DETECTOR_MM = 0.2  # the detector's pixel: quantum noise is drawn white at this scale
UNSHARPNESS_MM = 0.18  # the detector's own blur, which correlates its noise (neighbour correlation 0.5 at 1024 px, as real)
MIN_SIGMA_PX = 0.3  # blur narrower than this is left out
ANATOMY_MIN = 0.1  # soft-tissue thickness above which the system counts a pixel as anatomy when it sets its window
WINDOW_PERCENTILES = (2.0, 99.5)  # the anatomy's percentiles the window maps to its dark and bright grey levels
LUT_LEVELS = 4096  # the detector's digital levels (12 bits), on which the window's lookup table acts
WINDOW_STEP = 4  # the window reads its histogram on every 4th pixel of every 4th row, as a system reads a coarse one
UNIFORM_TO_SD1 = float(np.sqrt(12))  # uniform noise on (-0.5, 0.5) times this has SD 1


def to_pixels(points: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine map to an (N, 2) array of points."""
    return points @ transform[:, :2].T + transform[:, 2]


def mm_to_pixels(transform: np.ndarray) -> float:
    """Return how many pixels one millimetre spans under `transform` (the mean of its two axes)."""
    return float(np.sqrt(abs(np.linalg.det(transform[:, :2]))))


def fixed_point(points: np.ndarray) -> np.ndarray:
    """Return pixel coordinates as int32 with 4 fractional bits, as OpenCV's `shift=4` expects."""
    return np.round(points * 16).astype(np.int32)


def pixel_polygons(shapes: list[Shape], transform: np.ndarray) -> list[np.ndarray]:
    """Return each shape's points as OpenCV fixed-point pixels, all mapped in one batch."""
    pixels = fixed_point(to_pixels(np.concatenate([s.points for s in shapes]), transform))
    ends = np.cumsum([len(s.points) for s in shapes]).tolist()
    return [pixels[start:end] for start, end in zip([0] + ends[:-1], ends)]


def draw_layer(shapes: list[Shape], layer: str, transform: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Draw every shape of one layer, in order, each over what is there, on a new float32 canvas."""
    canvas = np.zeros(shape, np.float32)
    chosen = [s for s in shapes if s.layer == layer]
    if not chosen:
        return canvas
    px_per_mm = mm_to_pixels(transform)
    for s, points in zip(chosen, pixel_polygons(chosen, transform)):
        if s.line_mm:
            cv2.polylines(canvas, [points], False, s.density, max(1, round(s.line_mm * px_per_mm)), cv2.LINE_8, shift=4)
        else:
            cv2.fillPoly(canvas, [points], s.density, cv2.LINE_8, shift=4)
    return canvas


def draw_bones(shapes: list[Shape], transform: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Return the bone density at image size, drawn supersampled and averaged down; the two layers add where they overlap."""
    factor = max(1.0, SUPERSAMPLE_PX / min(shape))
    big = (round(shape[0] * factor), round(shape[1] * factor))
    canvas = draw_layer(shapes, "bone", transform * factor, big) + draw_layer(shapes, "overlay", transform * factor, big)
    return cv2.resize(canvas, (shape[1], shape[0]), interpolation=cv2.INTER_AREA) if factor > 1 else canvas


def draw_tissue(shapes: list[Shape], transform: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Return the soft-tissue thickness at image size: rounded outline, thin at the edges and in the fingers."""
    canvas = draw_layer(shapes, "tissue", transform, shape)
    quarter = cv2.resize(canvas, (max(8, shape[1] // 4), max(8, shape[0] // 4)), interpolation=cv2.INTER_AREA)
    rounded = cv2.resize(cv2.GaussianBlur(quarter, (0, 0), 0.6), (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    outline = np.clip((rounded - 0.3) * 2.5, 0, 1)  # blurred then cut again: corners round, edges stay sharp
    bulk = cv2.resize(cv2.GaussianBlur(quarter, (0, 0), 3.0), (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    return outline * (0.35 + 0.65 * bulk)


def streams(seed: int) -> dict[str, np.random.Generator]:
    """Return one random generator per use (texture, noise), so that one never shifts another's draws."""
    return {name: np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(3, k)))
            for k, name in enumerate(("texture", "quantum", "mottle"))}


def coarse_field(rng: np.random.Generator, shape: tuple[int, int], cell_px: tuple[float, float]) -> np.ndarray:
    """Return uniform noise (-0.5 to 0.5) drawn on cells of `cell_px` (rows, columns) and interpolated to `shape`."""
    rows, cols = (max(2, int(side / max(1.0, cell)) + 1) for side, cell in zip(shape, cell_px))
    coarse = rng.random((rows, cols), dtype=np.float32) - np.float32(0.5)
    return cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


def trabecular_texture(rng: np.random.Generator, shape: tuple[int, int], px_per_mm: float) -> np.ndarray:
    """Return a mottled field around 1, grained along the bones (mm), that gives bone its spongy look."""
    cells = (TRABECULA_MM[0] * px_per_mm, TRABECULA_MM[1] * px_per_mm)
    return 1 + np.float32(2 * TEXTURE) * coarse_field(rng, shape, cells)


def blur_mm(image: np.ndarray, sigma_mm: float, px_per_mm: float) -> np.ndarray:
    """Return `image` blurred by a Gaussian of `sigma_mm` millimetres (left as it is below MIN_SIGMA_PX)."""
    sigma = sigma_mm * px_per_mm
    return cv2.GaussianBlur(image, (0, 0), sigma) if sigma >= MIN_SIGMA_PX else image


def correlated(rng: np.random.Generator, shape: tuple[int, int], sd: float, sigma_px: float) -> np.ndarray:
    """Return noise of SD `sd`, correlated by a Gaussian of `sigma_px` pixels (white below MIN_SIGMA_PX)."""
    # Uniform noise of SD 1 (faster to draw than normal; blurred, it is close to normal anyway).
    noise = rng.random(shape, dtype=np.float32) - np.float32(0.5)
    gain = UNIFORM_TO_SD1 * sd
    if sigma_px >= MIN_SIGMA_PX:
        noise = cv2.GaussianBlur(noise, (0, 0), sigma_px)
        gain *= 2 * np.sqrt(np.pi) * sigma_px  # a Gaussian of sigma s keeps 1 / (2 sqrt(pi) s) of the SD
    return noise * np.float32(gain)


def noise_field(rngs: dict, shape: tuple[int, int], pose: dict, px_per_mm: float) -> np.ndarray:
    """Return the noise: quantum noise (correlated by the detector's blur, averaged by larger pixels) plus mottle."""
    quantum_sd = pose["quantum"] * min(1.0, DETECTOR_MM * px_per_mm)
    quantum = correlated(rngs["quantum"], shape, quantum_sd, UNSHARPNESS_MM * px_per_mm)
    return quantum + correlated(rngs["mottle"], shape, pose["mottle"], pose["mottle_mm"] * px_per_mm)


def attenuation(tissue: np.ndarray, bone: np.ndarray, pose: dict, texture: np.ndarray) -> np.ndarray:
    """Return the attenuation summed along the beam: soft tissue plus textured bone, scaled by the beam's hardness."""
    total = np.float32(TISSUE_MU * pose["tissue"]) * tissue + np.float32(BONE_MU * pose["bone_contrast"]) * bone * texture
    return total * np.float32(pose["hardness"])


def exposed(total: np.ndarray) -> np.ndarray:
    """Return the grey level in the log domain, 1 - exp(-attenuation): 0 where nothing stops the beam, below 1 always."""
    return -np.expm1(-total)


def equalise(signal: np.ndarray, pose: dict, px_per_mm: float) -> np.ndarray:
    """Return the signal with its broad contrast flattened: minus a share of its large-scale blur (multiscale processing)."""
    if pose["equalise"] <= 0:
        return signal
    small = cv2.resize(signal, (max(8, signal.shape[1] // 4), max(8, signal.shape[0] // 4)), interpolation=cv2.INTER_AREA)
    broad = cv2.GaussianBlur(small, (0, 0), max(0.5, pose["equalise_mm"] * px_per_mm / 4))
    broad = cv2.resize(broad, (signal.shape[1], signal.shape[0]), interpolation=cv2.INTER_LINEAR)
    return signal + np.float32(pose["equalise"]) * (signal - broad)


def window_points(signal: np.ndarray, tissue: np.ndarray, pose: dict) -> tuple[float, float] | None:
    """Return the anatomy's dark and bright percentiles of `signal`, read on every WINDOW_STEP-th pixel; None without anatomy."""
    step = WINDOW_STEP
    anatomy = (tissue[::step, ::step] > ANATOMY_MIN) & (field_mask(pose, tissue.shape)[::step, ::step] > 0)
    values = signal[::step, ::step][anatomy]
    if values.size < 16:
        return None
    low, high = np.percentile(values, WINDOW_PERCENTILES)
    return float(low), float(max(high, low + 1e-3))


def window_curve(low: float, high: float, pose: dict) -> np.ndarray:
    """Return the VOI LUT: the grey level of each of LUT_LEVELS signal levels from 0 to 1, for the window (low, high)."""
    signal = np.linspace(0, 1, LUT_LEVELS)
    dark = pose["window_low"]
    plate = min(pose["plate"], 0.8 * dark)
    span = min(pose["window_span"], 0.99 - dark)
    shown = dark + span * np.clip((signal - low) / (high - low), 0, None) ** pose["gamma"]
    below = plate + (dark - plate) * np.clip(signal / max(low, 1e-3), 0, 1)  # beyond the hand, down to the plate
    return np.where(signal < low, below, shown).astype(np.float32)


def voi_window(signal: np.ndarray, tissue: np.ndarray, pose: dict) -> np.ndarray:
    """Return grey levels after the system's automatic window (VOI LUT) set from the anatomy's own histogram.

    A digital radiography system finds the anatomy, reads its histogram and maps a dark and a
    bright percentile of it to fixed grey levels through a lookup table on its digital levels, so
    that every image is shown alike whatever the exposure: how much bone the hand holds no longer
    sets how bright it looks.
    """
    points = window_points(signal, tissue, pose)
    if points is None:
        return np.float32(pose["plate"]) + np.float32(pose["contrast"] * (0.97 - pose["plate"])) * signal
    levels = signal * np.float32(LUT_LEVELS - 1)
    np.clip(levels, 0, LUT_LEVELS - 1, out=levels)
    return window_curve(*points, pose)[(levels + np.float32(0.5)).astype(np.int32)]


def expose(tissue: np.ndarray, bone: np.ndarray, pose: dict, seed: int, px_per_mm: float, style: str) -> np.ndarray:
    """Turn tissue and bone into a radiograph of `style`: attenuation, detector, blur, noise, plate and marker, in [0, 1]."""
    rngs = streams(seed)
    shape = tissue.shape
    signal = exposed(attenuation(tissue, bone, pose, trabecular_texture(rngs["texture"], shape, px_per_mm)))
    signal = blur_mm(signal, pose["blur_mm"], px_per_mm)
    if style == "registered":
        image = np.float32(pose["registered_contrast"]) * signal
    else:
        image = voi_window(equalise(signal, pose, px_per_mm), tissue, pose)
    image += noise_field(rngs, shape, pose, px_per_mm) * (np.float32(0.5) + image)  # more noise where fewer photons
    if style == "registered":
        image[tissue < 0.02] = 0  # the background removed, as in the registered RSNA images
    else:
        image = collimate(image, pose)
        if pose["marker"]:
            draw_marker(image, pose)
    return np.clip(image, 0, 1, out=image)


# ---------------------------------------------------------------------------------------
# The public API
# ---------------------------------------------------------------------------------------

MIN_SIZE, MAX_SIZE = 32, 8192


def is_count(value) -> bool:
    """Return whether `value` is a whole number greater than 0 (and not a bool)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value > 0


def check_size(size: int | tuple[int, int]) -> tuple[int, int]:
    """Return (height, width) for a size N (square) or (height, width), or raise AebonetError."""
    dims = (size, size) if isinstance(size, (int, np.integer)) else size
    if not isinstance(dims, (tuple, list)) or len(dims) != 2 or not all(is_count(d) for d in dims):
        raise AebonetError(f"size {size!r}: give a whole number N or a (height, width) pair")
    if not all(MIN_SIZE <= d <= MAX_SIZE for d in dims):
        raise AebonetError(f"size {size!r}: each side must be between {MIN_SIZE} and {MAX_SIZE} pixels")
    return int(dims[0]), int(dims[1])


def parse_size(text: str) -> int | tuple[int, int]:
    """Return the size written as "N" (square) or "WxH" (width x height) as N or (height, width)."""
    parts = str(text).lower().split("x")
    if len(parts) not in (1, 2) or not all(p.strip().isdigit() for p in parts):
        raise AebonetError(f"size {text!r}: write N for an NxN image or WxH such as 1600x2080")
    numbers = [int(p) for p in parts]
    size = numbers[0] if len(numbers) == 1 else (numbers[1], numbers[0])
    check_size(size)
    return size


def check_seed(seed: int) -> int:
    """Return the seed as an int, or raise AebonetError when it is not a whole number >= 0."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise AebonetError(f"seed {seed!r}: must be a whole number >= 0")
    return int(seed)


def scene(bone_age_months: float, male: bool, size, seed: int, style: str, variation: bool) -> tuple:
    """Return the shapes, reader's areas, transform, pose and frame scale of one image; shared by render and regions."""
    shape, seed, style = check_size(size), check_seed(seed), check_style(style)
    child: Child = draw_child(seed) if variation else AVERAGE_CHILD
    state = maturity_state(bone_age_months, male, child.offsets)
    pose = draw_nuisance(seed)
    shapes, areas = hand_scene(state, pose, child)
    transform = frame_transform(state["hand_scale"] * child.hand_length, pose, shape, style)
    return shapes, areas, transform, pose, frame_pixels_per_mm(pose, shape, style), shape, seed


def render(bone_age_months: float, male: bool, size: int | tuple[int, int] = 256, seed: int = 0,
           style: str = DEFAULT_STYLE, variation: bool = True) -> np.ndarray:
    """Return one synthetic hand radiograph, float32 in [0, 1] (chapter 0).

    `seed` draws the child (tempo of each bone group, proportions, build; with `variation`)
    and the image (pose, framing, exposure); the bone age and sex set the maturity. `style`
    is "raw" (like the RSNA training set) or "registered" (like rsna_sample).
    """
    return render_with_regions(bone_age_months, male, size, seed, style, variation)[0]


def render_with_regions(bone_age_months: float, male: bool, size: int | tuple[int, int] = 256, seed: int = 0,
                        style: str = DEFAULT_STYLE, variation: bool = True) -> tuple[np.ndarray, dict]:
    """Return the image `render` draws and the boxes of its reader's regions, both from one scene (chapter 6)."""
    shapes, areas, transform, pose, px_per_mm, shape, seed = scene(bone_age_months, male, size, seed, style, variation)
    tissue, bone = draw_tissue(shapes, transform, shape), draw_bones(shapes, transform, shape)
    return expose(tissue, bone, pose, seed, px_per_mm, style), area_boxes(areas, transform, shape)


def regions(bone_age_months: float, male: bool, size: int | tuple[int, int] = 256, seed: int = 0,
            style: str = DEFAULT_STYLE, variation: bool = True) -> dict[str, tuple[int, int, int, int]]:
    """Return pixel boxes (x0, y0, x1, y1) of the regions a reader looks at, for the image `render` draws (chapter 1)."""
    _, areas, transform, _, _, shape, _ = scene(bone_age_months, male, size, seed, style, variation)
    return area_boxes(areas, transform, shape)


def area_boxes(areas: dict, transform: np.ndarray, shape: tuple[int, int]) -> dict[str, tuple[int, int, int, int]]:
    """Return the pixel box of each reader's area (its outlines' points in millimetres)."""
    return {name: pixel_box(np.concatenate(parts), transform, shape) for name, parts in areas.items()}


def pixel_box(points: np.ndarray, transform: np.ndarray, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """Return the bounding box in pixels of points in millimetres, clipped to the image."""
    pixels = to_pixels(points, transform)
    x0, y0 = np.floor(pixels.min(axis=0)).astype(int)
    x1, y1 = np.ceil(pixels.max(axis=0)).astype(int)
    height, width = shape
    return (int(np.clip(x0, 0, width)), int(np.clip(y0, 0, height)), int(np.clip(x1, 0, width)), int(np.clip(y1, 0, height)))
