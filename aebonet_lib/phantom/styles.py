"""The two looks of a phantom radiograph: `registered` (black background, hand in a fixed frame) and `raw`.

`raw` imitates the RSNA training set as released: a plate that is mostly dark but sometimes
grey, the automatic window of a digital system (set from the anatomy's own histogram, with
levels and gamma that differ from site to site, so brightness says nothing about bone mass), a
collimated field that may not fill the image, a side marker with the technologist's initials,
the hand at a varying size and place, and the original's aspect ratio squashed to the output's.
`registered` imitates rsna_sample: the background removed (exact zeros) and the hand scaled into
a fixed frame. Everything here is drawn from the seed alone, in a fixed order, so one seed shows
the same pose in both styles.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from aebonet_lib.errors import AebonetError

STYLES = ("registered", "raw")
# raw is the default: the course's real results are on the RSNA training set, which looks raw
# (grey or dark plates, markers, hands at varying size); a model trained on registered phantoms
# meets all of that for the first time on real images. Measured (results/phantom/sim2real.csv):
# AE-BoNet trained on 3,000 raw phantoms (equalised, augmented) gets val MAE 31.1 on the real
# images, below the mean predictor's 32.9; on registered phantoms 44.2.
DEFAULT_STYLE = "raw"

# The field of view of the registered RSNA images on an adult hand (mm) and its centre.
WINDOW_MM = (267.0, 205.0)  # height, width
WINDOW_CENTRE = (8.0, 95.0)
REGISTERED_GROWTH = 0.12  # registration magnifies small hands: the displayed size is hand size ** 0.12
# In the RSNA training set the hand's share of the frame does not follow age (correlation 0.02 on
# 400 images, realism.image_measures); 0.1 gives the phantom 0.06 (0.35 gave 0.21: a shortcut).
RAW_GROWTH = 0.1
MARKER_LETTERS = "LR"


def check_style(style: str) -> str:
    """Return `style`, or raise AebonetError when it is not one of STYLES."""
    if style not in STYLES:
        raise AebonetError(f"style {style!r}: choose one of {', '.join(STYLES)}")
    return style


def draw_pose(rng: np.random.Generator) -> dict:
    """Draw the hand's pose: rotation, finger spread, each finger's turn and the thumb's."""
    return {"rotation": rng.uniform(-15, 15), "spread": rng.uniform(0.45, 1.25),
            "finger_jitter": rng.normal(0, 2.5, size=5), "thumb": rng.uniform(-15, 10)}


def draw_raw_frame(rng: np.random.Generator) -> dict:
    """Draw how a raw radiograph frames the hand: zoom, squash, shift, plate, collimation and marker."""
    grey_plate = rng.random() < 0.2
    return {
        "zoom": rng.uniform(0.78, 1.18) if rng.random() < 0.9 else rng.uniform(0.5, 0.9),
        "squash": rng.uniform(0.85, 1.15),  # the original's aspect ratio, lost in the square output
        "raw_shift": np.array([rng.uniform(-0.08, 0.08), rng.uniform(-0.02, 0.12)]),
        "raw_rotation": rng.normal(0, 6),
        "plate": rng.uniform(0.15, 0.5) if grey_plate else rng.uniform(0.0, 0.1),
        "contrast": rng.uniform(0.3, 1.0),
        "collimation": np.where(rng.random(4) < 0.12, rng.uniform(0.0, 0.1, 4), 0.0),  # top, bottom, left, right
        "outside": rng.uniform(0.2, 0.8),  # the unexposed border beyond the collimator
        "rim": rng.random() < 0.3,
        "marker": rng.random() < 0.85,
        "marker_letter": MARKER_LETTERS[int(rng.random() < 0.1)],
        "marker_place": np.array([rng.uniform(0.03, 0.2), rng.uniform(0.05, 0.85)]),  # x, y as fractions
        "marker_size": rng.uniform(0.06, 0.12),
        "marker_box": rng.uniform(0.0, 0.35),
        "initials": rng.random() < 0.7,
    }


def draw_registered_frame(rng: np.random.Generator) -> dict:
    """Draw how a registered radiograph frames the hand: a little shift and magnification, and the contrast."""
    return {"shift": rng.uniform(-0.05, 0.05, size=2), "magnification": rng.uniform(0.95, 1.1),
            "registered_contrast": rng.uniform(0.75, 1.0)}


def draw_exposure(rng: np.random.Generator) -> dict:
    """Draw the exposure: tissue and bone attenuation, the detector curve, blur and noise (in millimetres)."""
    return {
        "tissue": rng.uniform(0.8, 1.2),
        "hardness": rng.uniform(0.7, 1.4),  # higher: a softer beam, more contrast between tissue and bone
        "blur_mm": rng.uniform(0.2, 0.5),
        "quantum": rng.uniform(0.012, 0.07),  # noise SD at a 0.2 mm detector pixel
        "mottle": rng.uniform(0.004, 0.015),  # SD of the structured, correlated part
        "mottle_mm": rng.uniform(0.6, 1.3),
    }


def draw_processing(rng: np.random.Generator) -> dict:
    """Draw the beam quality and how the digital system processes and windows a raw image (drawn last: older draws keep)."""
    return {
        # Bone's attenuation falls faster than soft tissue's as the tube voltage rises (photoelectric
        # effect), so the bone-to-tissue contrast changes from one examination to the next.
        "bone_contrast": rng.uniform(0.65, 1.35),
        # Multiscale contrast equalisation (unsharp masking at a large scale) flattens broad contrast.
        "equalise": rng.uniform(0.0, 0.6),
        "equalise_mm": rng.uniform(4.0, 16.0),
        # The VOI LUT: the anatomy's dark and bright percentiles are shown at these grey levels, through a
        # gamma. Vendors and sites choose very different curves, so no grey level means "bone" by itself.
        "window_low": rng.uniform(0.03, 0.5),
        "window_span": rng.uniform(0.25, 0.7),
        "gamma": float(np.exp(rng.uniform(np.log(0.5), np.log(2.0)))),
    }


def draw_nuisance(seed: int) -> dict:
    """Draw everything one radiograph's seed changes (pose, framing, exposure, processing), never maturity."""
    rng = np.random.default_rng(seed)
    return {**draw_pose(rng), **draw_registered_frame(rng), **draw_raw_frame(rng), **draw_exposure(rng),
            **draw_processing(rng)}


def frame_pixels_per_mm(pose: dict, shape: tuple[int, int], style: str) -> float:
    """Return the frame's pixels per millimetre, from the seed and image size only (blur and noise are set with it)."""
    base = min(shape[0] / WINDOW_MM[0], shape[1] / WINDOW_MM[1])
    return base * (pose["magnification"] if style == "registered" else pose["zoom"])


def frame_transform(hand_size: float, pose: dict, shape: tuple[int, int], style: str) -> np.ndarray:
    """Return the 2x3 affine map from hand millimetres to image pixels (y down) for a hand `hand_size` times an adult's."""
    height, width = shape
    scale = frame_pixels_per_mm(pose, shape, style)
    if style == "registered":
        sx = sy = scale * hand_size**REGISTERED_GROWTH
        angle, shift = pose["rotation"], pose["shift"]
    else:
        sx = sy = scale * hand_size**RAW_GROWTH
        sx *= pose["squash"]
        angle, shift = pose["rotation"] + pose["raw_rotation"], pose["raw_shift"]
    a = math.radians(angle)
    linear = np.array([[sx * math.cos(a), sx * math.sin(a)], [sy * math.sin(a), -sy * math.cos(a)]])
    centre = np.array([width / 2, height / 2]) + shift * [width, height]
    return np.hstack([linear, (centre - linear @ np.array(WINDOW_CENTRE))[:, None]])


def field_mask(pose: dict, shape: tuple[int, int]) -> np.ndarray:
    """Return 1 inside the collimated (exposed) field and 0 outside, as float32."""
    height, width = shape
    top, bottom, left, right = pose["collimation"]
    mask = np.zeros(shape, np.float32)
    mask[round(top * height): height - round(bottom * height), round(left * width): width - round(right * width)] = 1
    return mask


def collimate(image: np.ndarray, pose: dict) -> np.ndarray:
    """Replace the image beyond the collimated field by the unexposed border's level, with a bright rim if drawn."""
    if not pose["collimation"].any():
        return image
    mask = field_mask(pose, image.shape)
    if mask.min() == 1:
        return image
    image = image * mask + np.float32(pose["outside"]) * (1 - mask)
    if pose["rim"]:
        edge = cv2.morphologyEx(mask, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
        image = np.maximum(image, edge * np.float32(min(0.9, pose["outside"] + 0.2)))
    return image


def put_text(mask: np.ndarray, text: str, corner: tuple[int, int], scale: float) -> None:
    """Write `text` on an 8-bit mask at `corner` (bottom left), as OpenCV does."""
    thickness = max(1, round(scale * 2.2))
    cv2.putText(mask, text, corner, cv2.FONT_HERSHEY_SIMPLEX, scale, 255, thickness, cv2.LINE_AA)


def draw_marker(image: np.ndarray, pose: dict) -> None:
    """Burn a side marker into the image: a tag, the letter L or R, and often the technologist's initials below."""
    height, width = image.shape
    scale = pose["marker_size"] * min(height, width) / 22
    (text_w, text_h), _ = cv2.getTextSize(pose["marker_letter"], cv2.FONT_HERSHEY_SIMPLEX, scale, max(1, round(scale * 2.2)))
    x, y = int(pose["marker_place"][0] * width), int(pose["marker_place"][1] * height) + text_h
    box = (slice(max(0, y - text_h - 2 * text_h // 3), min(height, y + text_h)), slice(max(0, x - text_w // 3), min(width, x + 4 * text_w // 3)))
    image[box] = np.float32(pose["marker_box"])
    mask = np.zeros(image.shape, np.uint8)  # OpenCV writes text on 8-bit images only
    put_text(mask, pose["marker_letter"], (x, y), scale)
    if pose["initials"]:
        put_text(mask, "JS", (x, y + text_h // 2 + 2), scale * 0.35)
    np.maximum(image, mask * np.float32(0.9 / 255), out=image)
