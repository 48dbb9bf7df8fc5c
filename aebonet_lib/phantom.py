"""The built-in dataset: synthetic hand radiographs whose skeletal maturity follows the bone age.

A left hand, palm down (PA view), fingers up, thumb on the image's right, forearm entering
from the bottom edge, as in the registered RSNA images. Skeletal maturity is read from the
table `MATURITY` (when each ossification centre appears, widens, caps and fuses, for girls
and for boys); everything a seed changes is nuisance (pose, exposure, blur, noise, a side
marker), never maturity. Chapter 0 generates the dataset; chapter 1 reads a hand with it.
"""

from __future__ import annotations

import functools
import math
import multiprocessing
import os
import signal
import warnings
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from aebonet_lib.errors import AebonetError
from aebonet_lib.runs import files, hardware

# ---------------------------------------------------------------------------------------
# The maturity timeline: data, not code
# ---------------------------------------------------------------------------------------

SOURCES = {
    "GP": "Greulich WW, Pyle SI. Radiographic Atlas of Skeletal Development of the Hand and Wrist, 2nd ed. Stanford University Press, 1959.",
    "TW3": "Tanner JM, Healy MJR, Goldstein H, Cameron N. Assessment of Skeletal Maturity and Prediction of Adult Height (TW3 Method), 3rd ed. Saunders, 2001.",
    "GR": "Gilsanz V, Ratib O. Hand Bone Age: A Digital Atlas of Skeletal Maturity. Springer, 2005.",
    "texts": "Standard paediatric radiology texts (ossification-centre and physeal-closure tables).",
}

# (bone, event, girls' age in months, boys' age in months, source). Approximate, rounded teaching
# figures in line with the cited atlases (not transcribed from their plates); girls reach every
# event before boys. A reader's atlas gives ranges of a year or more around each of them.
# Carpal events: "appears" (the ossification centre is first seen), "adult_shape" (full size and form).
# Epiphysis events: "appears", "as_wide" (as wide as its metaphysis), "caps" (begins to cap it),
# "fusion_begins", "fused" (physis closed), "scar_fades" (the epiphyseal line is gone).
_MATURITY_ROWS = [
    ("capitate", "appears", 2, 3, "GP"),
    ("hamate", "appears", 3, 4, "GP"),
    ("triquetrum", "appears", 24, 30, "GP"),
    ("lunate", "appears", 36, 48, "GP"),
    ("trapezium", "appears", 48, 66, "GR"),
    ("trapezoid", "appears", 50, 70, "GR"),
    ("scaphoid", "appears", 54, 72, "GR"),
    ("pisiform", "appears", 108, 138, "GP"),
    *[(bone, "adult_shape", 168, 192, "TW3") for bone in
      ("capitate", "hamate", "triquetrum", "lunate", "trapezium", "trapezoid", "scaphoid", "pisiform")],
    ("radius", "appears", 10, 14, "GP"),
    ("radius", "as_wide", 108, 132, "TW3"),
    ("radius", "caps", 132, 162, "GP"),
    ("radius", "fusion_begins", 168, 195, "GP"),
    ("radius", "fused", 183, 213, "GP"),
    ("radius", "scar_fades", 228, 240, "texts"),
    ("ulna", "appears", 66, 78, "GR"),
    ("ulna", "as_wide", 120, 144, "TW3"),
    ("ulna", "caps", 138, 162, "GP"),
    ("ulna", "fusion_begins", 162, 189, "GP"),
    ("ulna", "fused", 177, 204, "GP"),
    ("ulna", "scar_fades", 222, 240, "texts"),
    ("metacarpals", "appears", 14, 20, "GP"),
    ("metacarpals", "as_wide", 84, 108, "TW3"),
    ("metacarpals", "caps", 120, 144, "GP"),
    ("metacarpals", "fusion_begins", 159, 183, "GP"),
    ("metacarpals", "fused", 171, 195, "GP"),
    ("metacarpals", "scar_fades", 207, 231, "texts"),
    ("thumb_metacarpal", "appears", 16, 26, "GP"),
    ("thumb_metacarpal", "as_wide", 90, 114, "TW3"),
    ("thumb_metacarpal", "caps", 120, 144, "GP"),
    ("thumb_metacarpal", "fusion_begins", 159, 183, "GP"),
    ("thumb_metacarpal", "fused", 171, 195, "GP"),
    ("thumb_metacarpal", "scar_fades", 207, 231, "texts"),
    ("proximal_phalanges", "appears", 12, 18, "GP"),
    ("proximal_phalanges", "as_wide", 78, 102, "TW3"),
    ("proximal_phalanges", "caps", 120, 144, "GP"),
    ("proximal_phalanges", "fusion_begins", 156, 180, "GP"),
    ("proximal_phalanges", "fused", 168, 192, "GP"),
    ("proximal_phalanges", "scar_fades", 204, 228, "texts"),
    ("middle_phalanges", "appears", 16, 26, "GP"),
    ("middle_phalanges", "as_wide", 84, 108, "TW3"),
    ("middle_phalanges", "caps", 120, 144, "GP"),
    ("middle_phalanges", "fusion_begins", 156, 180, "GP"),
    ("middle_phalanges", "fused", 168, 192, "GP"),
    ("middle_phalanges", "scar_fades", 204, 228, "texts"),
    ("distal_phalanges", "appears", 15, 24, "GP"),
    ("distal_phalanges", "as_wide", 84, 108, "TW3"),
    ("distal_phalanges", "caps", 114, 138, "GP"),
    ("distal_phalanges", "fusion_begins", 150, 174, "GP"),
    ("distal_phalanges", "fused", 162, 186, "GP"),
    ("distal_phalanges", "scar_fades", 198, 222, "texts"),
    ("sesamoid", "appears", 132, 156, "GP"),
    ("sesamoid", "adult_shape", 156, 180, "GP"),
]
MATURITY = pd.DataFrame(_MATURITY_ROWS, columns=["bone", "event", "girls", "boys", "source"])

# Hand length as a fraction of the adult male hand, by (bone) age in months: (months, girls, boys).
# Approximate teaching values: a newborn's hand is about a third of an adult's, a woman's about 8 % shorter than a man's.
GROWTH = pd.DataFrame(
    [(0, 0.32, 0.32), (12, 0.42, 0.43), (24, 0.49, 0.50), (48, 0.56, 0.57), (72, 0.63, 0.63),
     (96, 0.70, 0.69), (120, 0.78, 0.75), (144, 0.86, 0.82), (168, 0.90, 0.91), (192, 0.92, 0.98),
     (216, 0.92, 1.00), (240, 0.92, 1.00)],
    columns=["months", "girls", "boys"],
)

CARPALS = ("capitate", "hamate", "triquetrum", "lunate", "trapezium", "trapezoid", "scaphoid", "pisiform")
EPIPHYSES = ("radius", "ulna", "metacarpals", "thumb_metacarpal", "proximal_phalanges", "middle_phalanges", "distal_phalanges")
MAX_AGE = 240  # months: the oldest bone age the phantom draws (and the RSNA labels reach)

_EVENT_AGES = {(bone, event): (float(girls), float(boys)) for bone, event, girls, boys, _ in _MATURITY_ROWS}


def event_age(bone: str, event: str, male: bool) -> float:
    """Return the age in months at which `bone` reaches `event` for a girl or a boy, from `MATURITY`."""
    girls, boys = _EVENT_AGES[(bone, event)]
    return boys if male else girls


def ramp(x: float, start: float, end: float) -> float:
    """Return 0 before `start`, 1 after `end`, and a straight line between."""
    return min(1.0, max(0.0, (x - start) / (end - start)))


def smoothstep(u: float) -> float:
    """Return 3u^2 - 2u^3: a ramp from 0 to 1 that starts and ends gently."""
    return u * u * (3.0 - 2.0 * u)


# ---------------------------------------------------------------------------------------
# Maturity state: what a reader sees at a given bone age
# ---------------------------------------------------------------------------------------

def check_age(bone_age_months: float) -> float:
    """Return the bone age as a float, or raise AebonetError when it is outside 0-240 months."""
    try:
        age = float(bone_age_months)
    except (TypeError, ValueError):
        raise AebonetError(f"bone age {bone_age_months!r}: expected a number of months") from None
    if not 0 <= age <= MAX_AGE:
        raise AebonetError(f"bone age {bone_age_months}: must be between 0 and {MAX_AGE} months")
    return age


def hand_scale(age: float, male: bool) -> float:
    """Return the hand's length as a fraction of an adult man's, from the `GROWTH` table."""
    return float(np.interp(age, GROWTH["months"], GROWTH["boys" if male else "girls"]))


def carpal_state(bone: str, age: float, male: bool) -> dict:
    """Return whether a carpal centre is visible, its size (fraction of adult) and its shape (0 round, 1 adult)."""
    appears, adult = event_age(bone, "appears", male), event_age(bone, "adult_shape", male)
    if age < appears:
        return {"visible": False, "size": 0.0, "shape": 0.0}
    u = ramp(age, appears, adult)
    return {"visible": True, "size": 0.15 + 0.85 * u**0.35, "shape": smoothstep(u)}


def width_ratio(group: str, age: float, male: bool) -> float:
    """Return the epiphysis-to-metaphysis width ratio: 0 unseen, 0.25 at appearance, 1 when as wide, 1.05 at fusion."""
    appears, as_wide = event_age(group, "appears", male), event_age(group, "as_wide", male)
    if age < appears:
        return 0.0
    if age < as_wide:
        return 0.25 + 0.75 * math.sqrt(ramp(age, appears, as_wide))
    return 1.0 + 0.05 * ramp(age, as_wide, event_age(group, "fusion_begins", male))


def epiphysis_state(group: str, age: float, male: bool) -> dict:
    """Return an epiphysis group's state: visible, width ratio, capping, fusion progress, physis gap, scar."""
    fusion = smoothstep(ramp(age, event_age(group, "fusion_begins", male), event_age(group, "fused", male)))
    fused_at = event_age(group, "fused", male)
    return {
        "visible": age >= event_age(group, "appears", male),
        "width_ratio": width_ratio(group, age, male),
        "capping": smoothstep(ramp(age, event_age(group, "caps", male), event_age(group, "fusion_begins", male))),
        "fusion": fusion,
        "physis_gap": 1.0 - fusion,
        "fused": age >= fused_at,
        "scar": 1.0 - ramp(age, fused_at, event_age(group, "scar_fades", male)) if age >= fused_at else 0.0,
    }


def sesamoid_state(age: float, male: bool) -> dict:
    """Return whether the thumb's adductor sesamoid is visible and its size (fraction of adult)."""
    appears = event_age("sesamoid", "appears", male)
    if age < appears:
        return {"visible": False, "size": 0.0}
    return {"visible": True, "size": 0.3 + 0.7 * ramp(age, appears, event_age("sesamoid", "adult_shape", male))}


def maturity_state(bone_age_months: float, male: bool) -> dict:
    """Return the interpretable maturity state the phantom draws for this bone age and sex (chapter 1).

    Keys: `hand_scale` (hand length / an adult man's); `carpals`: per bone `visible`, `size` and
    `shape` (0 round centre, 1 adult form); `carpals_visible` (count); `epiphyses`: per group
    (`EPIPHYSES`) `visible`, `width_ratio` (epiphysis / metaphysis width), `capping`, `fusion`
    (0 open, 1 closed), `physis_gap` (1 - fusion), `fused`, `scar`; `sesamoid`: `visible`, `size`.
    """
    age, male = check_age(bone_age_months), bool(male)
    carpals = {bone: carpal_state(bone, age, male) for bone in CARPALS}
    return {
        "bone_age_months": age,
        "male": male,
        "hand_scale": hand_scale(age, male),
        "carpals": carpals,
        "carpals_visible": sum(c["visible"] for c in carpals.values()),
        "epiphyses": {group: epiphysis_state(group, age, male) for group in EPIPHYSES},
        "sesamoid": sesamoid_state(age, male),
    }


# ---------------------------------------------------------------------------------------
# Anatomy of an adult hand, in millimetres
# ---------------------------------------------------------------------------------------
# Coordinates: origin at the middle of the wrist (radiocarpal joint), x towards the thumb,
# y towards the fingers. Angles in degrees from the forearm's axis, positive towards the thumb.
# Positions and lengths were measured on a registered adult RSNA radiograph (third metacarpal = 64 mm).

@dataclass(frozen=True)
class Ray:
    """Hold one finger ray: metacarpal base, direction, segment lengths and width."""

    name: str
    base: tuple[float, float]  # carpometacarpal joint
    angle: float  # metacarpal direction
    spread: float  # extra turn of the finger at its knuckle
    lengths: tuple[float, ...]  # metacarpal, then phalanges from proximal to distal
    width: float  # shaft width of the metacarpal


RAYS = (
    Ray("thumb", (32.0, 24.0), 48.0, -12.0, (46.0, 32.0, 25.0), 9.5),
    Ray("index", (21.0, 41.0), 15.0, 2.0, (68.0, 41.0, 25.0, 18.0), 8.6),
    Ray("middle", (11.0, 41.0), 1.0, 0.0, (65.0, 47.0, 31.0, 19.0), 9.0),
    Ray("ring", (1.0, 40.0), -10.0, -3.0, (58.0, 44.0, 29.0, 19.0), 8.0),
    Ray("little", (-10.0, 38.0), -22.0, -10.0, (53.0, 35.0, 21.0, 18.0), 7.6),
)
PHALANX_KINDS = ("proximal_phalanx", "middle_phalanx", "distal_phalanx")
PHALANX_WIDTH = (1.12, 0.98, 0.7)  # shaft width of the proximal, middle and distal phalanx / the metacarpal's

# Tubular bones: width profile along the ossified shaft (fraction of its length, width / shaft
# width), bulge of the proximal and distal ends (fraction of the end's width; the physeal end is
# flat), which end carries the epiphysis, and the epiphysis zone's height (fraction of the segment).
TUBULAR = {
    "metacarpal": ([(0, 1.45), (0.1, 1.15), (0.3, 1.0), (0.6, 0.98), (0.85, 1.2), (1, 1.6)], (0.08, 0.0), "distal", 0.17),
    "thumb_metacarpal": ([(0, 1.5), (0.15, 1.15), (0.5, 1.0), (0.85, 1.25), (1, 1.6)], (0.0, 0.3), "proximal", 0.12),
    "proximal_phalanx": ([(0, 1.5), (0.15, 1.15), (0.5, 1.0), (0.85, 1.08), (1, 1.3)], (0.0, 0.2), "proximal", 0.12),
    "middle_phalanx": ([(0, 1.5), (0.15, 1.15), (0.5, 1.0), (0.85, 1.08), (1, 1.3)], (0.0, 0.2), "proximal", 0.14),
    "distal_phalanx": ([(0, 1.6), (0.2, 1.1), (0.6, 0.82), (0.85, 1.0), (1, 1.45)], (0.0, 0.35), "proximal", 0.2),
    "radius": ([(0, 0.62), (0.9, 0.63), (0.95, 0.72), (0.98, 0.88), (1, 1.0)], (0.0, 0.0), "distal", 0.016),
    "ulna": ([(0, 0.68), (0.93, 0.7), (0.975, 0.8), (0.99, 0.95), (1, 1.0)], (0.0, 0.0), "distal", 0.011),
}
EPIPHYSIS_FORM = {  # the shape each epiphysis takes as it matures (see epiphysis_outline)
    "metacarpal": "dome", "thumb_metacarpal": "disc", "proximal_phalanx": "disc",
    "middle_phalanx": "disc", "distal_phalanx": "disc", "radius": "wedge", "ulna": "styloid",
}
CORTEX = (0.08, 0.25)  # cortical thickness / shaft width at a bone's ends and along its middle
EPIPHYSIS_CORTEX_MM = 0.8  # the thin shell of epiphyses and carpal bones
JOINT_MM = 0.9  # half the joint space at each end of a segment
PHYSIS_MM = 1.3  # width of an open physis (growth plate)
SOFT_TISSUE_MM = 4.3  # skin and fat beside a finger's bones on an adult hand; more on a child's
HYPOTHENAR = (-40.0, 28.0)  # the fleshy ulnar border of the palm
THENAR = (38.0, 12.0)  # the base of the thumb's fleshy ball
WRIST_TISSUE_MM = 9.0  # soft tissue beside the radius and ulna at the wrist

# The forearm bones: (centre x, end of the segment y, metaphysis width); they run FOREARM_MM out of the picture.
FOREARM = {"radius": (6.5, 3.5, 31.0), "ulna": (-21.0, 1.5, 14.0)}
FOREARM_MM = 700.0

# Carpal bones at adult size: centre (x, y), width, height, angle, superellipse exponent, taper.
CARPAL_SHAPES = {
    "capitate": ((4.5, 25.5), 18.5, 28.0, -5.0, 3.6, 0.15),
    "hamate": ((-10.0, 28.5), 18.0, 23.0, -18.0, 3.4, 0.35),
    "triquetrum": ((-17.0, 15.5), 16.0, 14.5, 40.0, 3.0, 0.3),
    "lunate": ((6.0, 10.5), 19.0, 16.5, 0.0, 3.2, -0.25),
    "trapezium": ((32.0, 24.0), 18.0, 16.5, 30.0, 3.6, 0.0),
    "trapezoid": ((20.5, 28.5), 14.5, 15.5, 10.0, 3.6, 0.3),
    "scaphoid": ((23.5, 14.0), 15.0, 29.0, -55.0, 2.7, 0.15),
    "pisiform": ((-21.5, 18.5), 11.0, 12.0, 0.0, 2.0, 0.0),
}
SESAMOID_MM = 5.0  # diameter of the adult adductor sesamoid
OVERLAY_BONES = ("pisiform",)  # lie over a neighbour, so the overlap shows brighter
OVERLAY_DENSITY = 0.55  # an overlying bone adds this fraction of a bone's density

# The field of view of the registered RSNA images on an adult hand (mm) and its centre.
WINDOW_MM = (267.0, 205.0)  # height, width
WINDOW_CENTRE = (8.0, 95.0)
DISPLAY_GROWTH = 0.12  # registration magnifies small hands: the displayed size is hand_scale ** 0.12

# Densities (arbitrary units) that the exposure turns into grey levels.
CORTICAL, TRABECULAR = 1.0, 0.45
TISSUE_FOREARM, TISSUE_PALM, TISSUE_FINGER = 1.0, 0.95, 0.85


# ---------------------------------------------------------------------------------------
# Nuisance: everything the seed changes
# ---------------------------------------------------------------------------------------

def draw_nuisance(seed: int) -> dict:
    """Draw the pose and imaging variation for one radiograph from `seed`; never maturity."""
    rng = np.random.default_rng(seed)
    return {
        "rotation": rng.uniform(-15, 15),
        "spread": rng.uniform(0.45, 1.25),
        "finger_jitter": rng.normal(0, 2.5, size=5),
        "thumb": rng.uniform(-15, 10),
        "shift": rng.uniform(-0.05, 0.05, size=2),
        "magnification": rng.uniform(0.9, 1.1),
        "tissue": rng.uniform(0.8, 1.2),
        "gain": rng.uniform(0.8, 1.15),
        "offset": rng.uniform(0.0, 0.06),
        "gamma": rng.uniform(0.75, 1.35),
        "blur": rng.uniform(0.3, 1.1),
        "noise": rng.uniform(0.004, 0.025),
        "marker": rng.random() < 0.3,
        "marker_letter": "LR"[int(rng.random() < 0.2)],
        "marker_corner": int(rng.integers(4)),
        "marker_size": rng.uniform(0.05, 0.08),
        "rng": rng,  # textures and pixel noise are drawn from here, after the numbers above
    }


# ---------------------------------------------------------------------------------------
# Geometry: the hand as a list of polygons in millimetres
# ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Shape:
    """Hold one filled polygon (or thick line) to draw: its layer, points in mm and density."""

    layer: str  # "bone", "overlay" or "tissue"
    points: np.ndarray
    density: float
    line_mm: float = 0.0  # > 0: draw an open line this wide through the points instead of a polygon


def direction(angle: float) -> np.ndarray:
    """Return the unit vector at `angle` degrees from the y axis, positive towards +x."""
    a = math.radians(angle)
    return np.array([math.sin(a), math.cos(a)])


def place(local: np.ndarray, start: np.ndarray, angle: float) -> np.ndarray:
    """Map points (u across, v along) of a bone's own frame to hand coordinates."""
    a = math.radians(angle)
    across_and_along = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return start + local @ across_and_along


def shell(layer: str, outer: np.ndarray, inner: np.ndarray, start: np.ndarray, angle: float, density: float = 1.0) -> list[Shape]:
    """Return a bone placed in the hand: its outline filled with cortical density, its inside with trabecular."""
    placed = place(np.concatenate([outer, inner]), start, angle)
    return [Shape(layer, placed[: len(outer)], density * CORTICAL), Shape(layer, placed[len(outer) :], density * TRABECULAR)]


CAP_U = np.linspace(-1, 1, 7)  # across a bone end
CAP_ROUND = np.sqrt(1 - CAP_U**2)


def shaft_outline(v: np.ndarray, widths: np.ndarray, bulges: tuple[float, float]) -> np.ndarray:
    """Return tubular bone outlines, one per row of `v` and `widths` (positions and widths along the shaft), ends domed by `bulges`."""
    w0, w1 = widths[:, :1], widths[:, -1:]
    x = np.concatenate([CAP_U * w0 / 2, widths[:, 1:-1] / 2, -CAP_U * w1 / 2, -widths[:, -2:0:-1] / 2], axis=1)
    y = np.concatenate([v[:, :1] - bulges[0] * w0 * CAP_ROUND, v[:, 1:-1], v[:, -1:] + bulges[1] * w1 * CAP_ROUND, v[:, -2:0:-1]], axis=1)
    return np.stack([x, y], axis=2)


def shaft_samples(kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Return positions along a shaft (0 to 1) and the width factors there, from the kind's profile."""
    fractions, factors = np.array(TUBULAR[kind][0], dtype=float).T
    t = np.union1d(fractions, np.linspace(0, 1, 9))
    return t, np.interp(t, fractions, factors)


SHAFT_SAMPLES = {kind: shaft_samples(kind) for kind in TUBULAR}


@functools.lru_cache(maxsize=None)
def shaft_shapes(kind: str, length: float, shaft: float) -> tuple[np.ndarray, np.ndarray]:
    """Return the outer and inner outline of a shaft in its own frame: cortex thin at the ends, thick along the middle.

    Cached: a bone's shaft never changes shape from image to image, only its place in the hand.
    """
    v0, v1, _ = bone_ends(kind, length)
    t, factors = SHAFT_SAMPLES[kind]
    bulges, end_cortex = TUBULAR[kind][1], CORTEX[0] * shaft
    v, widths = v0 + t * (v1 - v0), factors * shaft
    from_end = np.minimum(v - v0, v1 - v) / (1.5 * shaft)
    cortex = shaft * (CORTEX[0] + (CORTEX[1] - CORTEX[0]) * np.minimum(from_end, 1) ** 2)
    inner_v = v0 + end_cortex + t * (v1 - v0 - 2 * end_cortex)
    inner_widths = np.maximum(widths - 2 * cortex, 0.1 * shaft)
    outer, inner = shaft_outline(np.stack([v, inner_v]), np.stack([widths, inner_widths]), bulges)
    return read_only(outer), read_only(inner)


def read_only(array: np.ndarray) -> np.ndarray:
    """Return `array` marked read-only, as every cached outline must stay."""
    array.setflags(write=False)
    return array


EPI_U = np.linspace(-1, 1, 11)  # across an epiphysis
EPI_ROUND = np.sqrt(1 - EPI_U**2)
EPI_TOPS = {  # the far edge of a mature epiphysis, as a fraction of its height
    "dome": EPI_ROUND,
    "disc": 0.55 + 0.45 * EPI_ROUND,
    "wedge": (0.3 + 0.7 * ((EPI_U + 1) / 2) ** 1.5) * np.sqrt(1 - EPI_U**8),
    "styloid": 0.75 * EPI_ROUND + 0.6 * np.exp(-(((EPI_U + 0.65) / 0.22) ** 2)),
}
CAPPING_BEND = 0.35 * EPI_U**6  # how far a capping epiphysis's edges reach down beside the metaphysis


def epiphysis_outline(width_ratio: float, capping: float, form: str) -> np.ndarray:
    """Return an epiphysis of width 2 and height 1 (v away from the physis): an oval that takes `form` as it widens."""
    grown = smoothstep(ramp(width_ratio, 0.25, 1.0))
    top = 0.5 + 0.5 * EPI_ROUND + grown * (EPI_TOPS[form] - 0.5 - 0.5 * EPI_ROUND)
    bottom = 0.5 - 0.5 * EPI_ROUND - grown * (0.5 - 0.5 * EPI_ROUND + capping * CAPPING_BEND)
    return np.stack([np.concatenate([EPI_U, EPI_U[::-1]]), np.concatenate([bottom, top[::-1]])], axis=1)


def bone_ends(kind: str, length: float) -> tuple[float, float, float]:
    """Return where a segment's ossified shaft starts and ends (v0, v1) and its epiphysis zone's height."""
    zone = TUBULAR[kind][3] * length
    if TUBULAR[kind][2] == "proximal":
        return JOINT_MM + zone, length - JOINT_MM, zone
    return JOINT_MM, length - JOINT_MM - zone, zone


@functools.lru_cache(maxsize=16384)  # about 21 bones x 229 months x 2 sexes in a dataset
def epiphysis_local(kind: str, length: float, shaft: float, width_ratio: float, capping: float,
                    physis_gap: float, fused: bool, scar: float) -> tuple:
    """Return an epiphysis in its bone's frame: outer and inner outline, and the bridge over a fused physis (or None).

    Cached: it depends on the bone and its maturity only, and datasets repeat whole months.
    """
    profile, _, end, _ = TUBULAR[kind]
    v0, v1, zone = bone_ends(kind, length)
    metaphysis = (profile[0][1] if end == "proximal" else profile[-1][1]) * shaft
    full_height = zone - PHYSIS_MM
    width, height = width_ratio * metaphysis, full_height * min(1.0, width_ratio) ** 0.7
    cortex = min(EPIPHYSIS_CORTEX_MM, 0.2 * height)
    unit = epiphysis_outline(width_ratio, capping, EPIPHYSIS_FORM[kind])
    outer = unit * [width / 2, height]
    inner = unit * [width / 2 - cortex, height - 2 * cortex] + [0, cortex]
    sign, physis = (-1.0, v0) if end == "proximal" else (1.0, v1)
    offset = PHYSIS_MM * physis_gap + 0.5 * (full_height - height)
    for outline in (outer, inner):
        outline[:, 1] = physis + sign * (offset + outline[:, 1])
    bridge = None
    if fused:
        bridge = read_only(np.array([[-0.45, -1], [0.45, -1], [0.45, 1], [-0.45, 1]]) * [metaphysis, 1.5 * cortex] + [0, physis])
    return read_only(outer), read_only(inner), bridge


def epiphysis_shapes(kind: str, epiphysis: dict, start: np.ndarray, angle: float, length: float, shaft: float) -> list[Shape]:
    """Return the epiphysis of one tubular bone beyond its physis, and the bridge over the physis once fused."""
    outer, inner, bridge = epiphysis_local(
        kind, length, shaft, epiphysis["width_ratio"], epiphysis["capping"],
        epiphysis["physis_gap"], epiphysis["fused"], epiphysis["scar"],
    )
    shapes = shell("bone", outer, inner, start, angle)
    if bridge is not None:  # the epiphyseal scar, fading over the years after fusion
        density = TRABECULAR + (CORTICAL - TRABECULAR) * 0.7 * epiphysis["scar"]
        shapes.append(Shape("bone", place(bridge, start, angle), density))
    return shapes


def tubular_shapes(kind: str, epiphysis: dict, start: np.ndarray, angle: float, length: float, shaft: float) -> list[Shape]:
    """Return a tubular bone along one segment: its shaft, and its epiphysis once it has appeared."""
    outer, inner = shaft_shapes(kind, length, shaft)
    shapes = shell("bone", outer, inner, start, angle)
    if epiphysis["visible"]:
        shapes += epiphysis_shapes(kind, epiphysis, start, angle, length, shaft)
    return shapes


def ray_joints(ray: Ray, pose: dict, index: int) -> tuple[list[np.ndarray], list[float]]:
    """Return the joint positions of one finger ray (base to tip) and each segment's direction."""
    if ray.name == "thumb":
        mc_angle = ray.angle + pose["thumb"]
        finger_angle = mc_angle + ray.spread + pose["finger_jitter"][index]
    else:
        mc_angle = ray.angle
        finger_angle = pose["spread"] * (ray.angle + ray.spread) + pose["finger_jitter"][index]
    angles = [mc_angle] + [finger_angle] * (len(ray.lengths) - 1)
    joints = [np.array(ray.base)]
    for length, angle in zip(ray.lengths, angles):
        joints.append(joints[-1] + length * direction(angle))
    return joints, angles


def segment_kinds(ray: Ray) -> list[tuple[str, str, float]]:
    """Return (bone kind, epiphysis group, shaft width) for each segment of a ray, metacarpal first."""
    if ray.name == "thumb":
        return [("thumb_metacarpal", "thumb_metacarpal", ray.width),
                ("proximal_phalanx", "proximal_phalanges", ray.width * PHALANX_WIDTH[0]),
                ("distal_phalanx", "distal_phalanges", ray.width * PHALANX_WIDTH[2])]
    phalanges = [(kind, kind.replace("phalanx", "phalanges"), ray.width * w) for kind, w in zip(PHALANX_KINDS, PHALANX_WIDTH)]
    return [("metacarpal", "metacarpals", ray.width)] + phalanges


def ray_shapes(ray: Ray, joints: list, angles: list, state: dict) -> tuple[list[Shape], list[Shape]]:
    """Return a ray's metacarpal and its phalanges as two lists of shapes."""
    metacarpal, phalanges = [], []
    for i, (kind, group, shaft) in enumerate(segment_kinds(ray)):
        shapes = tubular_shapes(kind, state["epiphyses"][group], joints[i], angles[i], ray.lengths[i], shaft)
        (metacarpal if i == 0 else phalanges).extend(shapes)
    return metacarpal, phalanges


def forearm_shapes(state: dict) -> list[Shape]:
    """Return the distal radius and ulna, with their epiphyses."""
    shapes = []
    for bone, (x, end_y, metaphysis) in FOREARM.items():
        start = np.array([x, end_y - FOREARM_MM])
        shapes += tubular_shapes(bone, state["epiphyses"][bone], start, 0.0, FOREARM_MM, metaphysis)
    return shapes


SUPER_COS = np.cos(np.linspace(0, 2 * math.pi, 25)[:-1])  # around a rounded outline
SUPER_SIN = np.sin(np.linspace(0, 2 * math.pi, 25)[:-1])


def superellipse(width: float, height: float, exponent: float = 2.0, taper: float = 0.0) -> np.ndarray:
    """Return a rounded-rectangle outline (exponent 2 is an ellipse), wider at the top when taper > 0."""
    x = np.sign(SUPER_COS) * np.abs(SUPER_COS) ** (2 / exponent)
    y = np.sign(SUPER_SIN) * np.abs(SUPER_SIN) ** (2 / exponent)
    return np.stack([x * (1 + taper * y) * width / 2, y * height / 2], 1)


def carpal_size(bone: str, size: float, shape: float) -> tuple[float, float]:
    """Return a carpal centre's width and height: a small oval that grows into the adult bone's proportions."""
    _, width, height, _, _, _ = CARPAL_SHAPES[bone]
    elongation = 0.5 + 0.5 * shape  # young centres are ovals half as elongated as the adult bone
    round_size = math.sqrt(width * height)
    return (size * ((1 - elongation) * round_size + elongation * width),
            size * ((1 - elongation) * round_size + elongation * height))


def carpal_outline(bone: str, shape: float) -> np.ndarray:
    """Return a carpal bone's outline of width and height 1, rounder while young (shape 0), in its own frame."""
    _, _, _, _, exponent, taper = CARPAL_SHAPES[bone]
    return superellipse(1.0, 1.0, 2 + shape * (exponent - 2), shape * taper)


def adult_carpal(bone: str) -> np.ndarray:
    """Return the outline of a carpal bone at adult size and shape, in hand millimetres."""
    centre, width, height, angle, _, _ = CARPAL_SHAPES[bone]
    return place(carpal_outline(bone, 1.0) * [width, height], np.array(centre), angle)


@functools.lru_cache(maxsize=4096)
def carpal_bone(bone: str, size: float, shape: float) -> tuple[Shape, ...]:
    """Return one carpal bone in the hand, cortex and inside; cached, since carpals depend on maturity only."""
    centre, _, _, angle, _, _ = CARPAL_SHAPES[bone]
    width, height = carpal_size(bone, size, shape)
    inset = min(EPIPHYSIS_CORTEX_MM, 0.15 * width)
    unit = carpal_outline(bone, shape)
    layer, density = ("overlay", OVERLAY_DENSITY) if bone in OVERLAY_BONES else ("bone", 1.0)
    return tuple(shell(layer, unit * [width, height], unit * [width - 2 * inset, height - 2 * inset], np.array(centre), angle, density))


def hamate_hook(shape: float) -> list[Shape]:
    """Return the hook of the hamate, a ring seen end-on, fading in as the hamate takes its adult shape."""
    hook = ramp(shape, 0.3, 1.0)
    if hook == 0:
        return []
    centre = np.array(CARPAL_SHAPES["hamate"][0]) + [-1.0, -2.0]
    return [Shape("overlay", superellipse(5.0, 6.0) + centre, 0.4 * hook), Shape("overlay", superellipse(3.2, 4.2) + centre, 0.0)]


def carpal_shapes(state: dict) -> list[Shape]:
    """Return the visible carpal centres, and the hook of the hamate once the hamate has its shape."""
    shapes = []
    for bone in CARPALS:
        carpal = state["carpals"][bone]
        if carpal["visible"]:
            shapes += carpal_bone(bone, carpal["size"], carpal["shape"])
    return shapes + hamate_hook(state["carpals"]["hamate"]["shape"])


def sesamoid_shapes(state: dict, joints: list, angle: float) -> list[Shape]:
    """Return the thumb's adductor sesamoid beside the metacarpal head, once it has appeared."""
    sesamoid = state["sesamoid"]
    if not sesamoid["visible"]:
        return []
    diameter = SESAMOID_MM * sesamoid["size"]
    centre = place(np.array([[-3.5, -5.0]]), joints[1], angle)[0]  # ulnar side of the metacarpal head
    return shell("overlay", superellipse(diameter, diameter), superellipse(0.6 * diameter, 0.6 * diameter), centre, 0.0, OVERLAY_DENSITY)


def soft_tissue_mm(state: dict) -> float:
    """Return the soft tissue beside a finger's bones: thicker, relative to the bones, on a small child."""
    return SOFT_TISSUE_MM * (1.0 + 1.6 * (1.0 - state["hand_scale"]))


def finger_tissue(ray: Ray, joints: list, margin: float) -> list[Shape]:
    """Return a finger's soft tissue as thick lines along its segments, tapering to a padded tip."""
    kinds = segment_kinds(ray)
    first = 0 if ray.name == "thumb" else 1
    shapes = []
    for i in range(first, len(kinds)):
        end = joints[i + 1]
        if i == len(kinds) - 1:
            end = end + 0.5 * margin * (end - joints[i]) / np.hypot(*(end - joints[i]))
        width = 1.25 * kinds[i][2] + 2 * margin
        shapes.append(Shape("tissue", np.stack([joints[i], end]), TISSUE_FINGER, line_mm=width))
    return shapes


def palm_outline(rays_joints: list, margin: float) -> np.ndarray:
    """Return the convex outline of palm and wrist around the metacarpals, the thumb's base and the wrist."""
    points = []
    for ray, (joints, angles) in zip(RAYS, rays_joints):
        across = direction(angles[0] + 90)  # perpendicular to the metacarpal, towards the thumb
        reach = 0.6 * ray.width + margin
        if ray.name == "thumb":
            for t in (0.0, 0.5, 0.9):
                centre = joints[0] + t * (joints[1] - joints[0])
                points += [centre + across * (reach + 4), centre - across * reach]
        else:
            points += [joints[1] + across * reach, joints[1] - across * reach, joints[0] - across * reach]
    points += [np.array(HYPOTHENAR) - [margin, 0.0], np.array(THENAR) + [margin, 0.0], *forearm_outline(margin)[:2]]
    return np.array(points)


def forearm_outline(margin: float) -> np.ndarray:
    """Return the distal forearm's soft tissue, widening slowly as it leaves the picture."""
    (rx, _, rw), (ux, _, uw) = FOREARM["radius"], FOREARM["ulna"]
    extra = WRIST_TISSUE_MM + margin - SOFT_TISSUE_MM
    right, left = rx + rw / 2 + extra, ux - uw / 2 - extra
    widening = 0.05 * FOREARM_MM
    return np.array([[left, 0.0], [right, 0.0], [right + widening, -FOREARM_MM], [left - widening, -FOREARM_MM]])


def tissue_shapes(state: dict, rays_joints: list) -> list[Shape]:
    """Return the soft tissue: fingers first, then palm and forearm over their bases."""
    margin = soft_tissue_mm(state)
    shapes = []
    for ray, (joints, _) in zip(RAYS, rays_joints):
        shapes += finger_tissue(ray, joints, margin)
    hull = cv2.convexHull(palm_outline(rays_joints, margin).astype(np.float32))[:, 0].astype(float)
    shapes.append(Shape("tissue", hull, TISSUE_PALM))
    shapes.append(Shape("tissue", forearm_outline(margin), TISSUE_FOREARM))
    return shapes


def hand_scene(state: dict, pose: dict) -> tuple[list[Shape], dict[str, list[np.ndarray]]]:
    """Return every shape of the hand in millimetres (drawing order) and the points behind each reader's region."""
    rays_joints = [ray_joints(ray, pose, i) for i, ray in enumerate(RAYS)]
    metacarpals, phalanges = [], []
    for ray, (joints, angles) in zip(RAYS, rays_joints):
        mc, ph = ray_shapes(ray, joints, angles, state)
        metacarpals += mc
        phalanges += ph
    forearm, carpals = forearm_shapes(state), carpal_shapes(state)
    thumb_joints, thumb_angles = rays_joints[0]
    sesamoid = sesamoid_shapes(state, thumb_joints, thumb_angles[0])
    shapes = tissue_shapes(state, rays_joints) + forearm + carpals + metacarpals + phalanges + sesamoid
    areas = {
        "phalanges": [s.points for s in phalanges],
        "metacarpals": [s.points for s in metacarpals],
        "carpals": ADULT_CARPALS,
        "radius_ulna": [DISTAL_FOREARM],
    }
    return shapes, areas


def distal_forearm_box() -> np.ndarray:
    """Return the corners of the distal radius and ulna, the part of the forearm a reader looks at."""
    (rx, ry, rw), (ux, _, uw) = FOREARM["radius"], FOREARM["ulna"]
    return np.array([[ux - uw / 2, ry - 40.0], [rx + rw / 2, ry - 40.0], [rx + rw / 2, ry + 4.0], [ux - uw / 2, ry + 4.0]])


# The regions a reader looks at are fixed in the hand, whatever has ossified yet.
ADULT_CARPALS = [adult_carpal(bone) for bone in CARPALS]
DISTAL_FOREARM = distal_forearm_box()


# ---------------------------------------------------------------------------------------
# From millimetres to pixels
# ---------------------------------------------------------------------------------------

def frame_transform(state: dict, pose: dict, shape: tuple[int, int]) -> np.ndarray:
    """Return the 2x3 affine map from hand millimetres to image pixels (y down), with the pose's rotation, shift and scale."""
    height, width = shape
    scale = min(height / WINDOW_MM[0], width / WINDOW_MM[1]) * pose["magnification"]
    scale *= state["hand_scale"] ** DISPLAY_GROWTH
    a = math.radians(pose["rotation"])
    linear = scale * np.array([[math.cos(a), math.sin(a)], [math.sin(a), -math.cos(a)]])
    centre = np.array([width / 2, height / 2]) + pose["shift"] * [width, height]
    return np.hstack([linear, (centre - linear @ np.array(WINDOW_CENTRE))[:, None]])


def to_pixels(points: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine map to an (N, 2) array of points."""
    return points @ transform[:, :2].T + transform[:, 2]


def mm_to_pixels(transform: np.ndarray) -> float:
    """Return how many pixels one millimetre spans under `transform`."""
    return float(np.hypot(*transform[:, 0]))


# ---------------------------------------------------------------------------------------
# Drawing and exposure
# ---------------------------------------------------------------------------------------

SUPERSAMPLE_PX = 384  # bones are drawn on a canvas at least this large (1.5x at 256), then averaged down
TISSUE_WEIGHT, BONE_WEIGHT = 0.56, 0.5  # how much soft tissue and bone brighten the image: they stop X-rays
TEXTURE = 0.18  # depth of the trabecular texture inside bone
MARKER_BRIGHTNESS = 0.95


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
    """Return the bone density at image size, drawn supersampled and averaged down (overlaps add up)."""
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


def trabecular_texture(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Return a faint mottled field around 1 that gives bone its spongy look."""
    grain = max(2, min(shape) // 90)  # pixels per texture cell: the same look at every image size
    coarse = rng.random((shape[0] // grain + 1, shape[1] // grain + 1), dtype=np.float32) - 0.5
    return 1 + 2 * TEXTURE * cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


def draw_marker(image: np.ndarray, pose: dict) -> None:
    """Burn a side-marker letter ('L' or 'R') into one corner, as radiographers do."""
    height, width = image.shape
    scale = pose["marker_size"] * min(height, width) / 22
    thickness = max(1, round(scale * 2))
    (text_w, text_h), _ = cv2.getTextSize(pose["marker_letter"], cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    margin = int(0.04 * min(height, width))
    right, bottom = pose["marker_corner"] % 2, pose["marker_corner"] // 2
    x = width - margin - text_w if right else margin
    y = height - margin if bottom else margin + text_h
    mask = np.zeros(image.shape, np.uint8)  # OpenCV writes text on 8-bit images only
    cv2.putText(mask, pose["marker_letter"], (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, 255, thickness, cv2.LINE_AA)
    np.maximum(image, mask * np.float32(MARKER_BRIGHTNESS / 255), out=image)


def gamma_curve(density: np.ndarray, gamma: float) -> np.ndarray:
    """Return density ** gamma, computed as exp(gamma * log) because that is several times faster."""
    curved = density + np.float32(1e-4)
    np.log(curved, out=curved)
    curved *= np.float32(gamma)
    return np.exp(curved, out=curved)


def expose(tissue: np.ndarray, bone: np.ndarray, pose: dict) -> np.ndarray:
    """Turn tissue and bone density into a radiograph: exposure, gamma, marker, blur and noise, in [0, 1]."""
    rng, shape = pose["rng"], tissue.shape
    density = TISSUE_WEIGHT * pose["tissue"] * tissue + BONE_WEIGHT * bone * trabecular_texture(rng, shape)
    image = pose["offset"] + pose["gain"] * gamma_curve(density, pose["gamma"])
    if pose["marker"]:
        draw_marker(image, pose)
    image = cv2.GaussianBlur(image, (0, 0), pose["blur"] * min(shape) / 256)
    image += (pose["noise"] * math.sqrt(12)) * (rng.random(shape, dtype=np.float32) - 0.5)  # uniform, SD = noise
    return np.clip(image, 0, 1, out=image)


# ---------------------------------------------------------------------------------------
# The public API
# ---------------------------------------------------------------------------------------

MIN_SIZE, MAX_SIZE = 32, 8192


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


def render(bone_age_months: float, male: bool, size: int | tuple[int, int] = 256, seed: int = 0) -> np.ndarray:
    """Return one synthetic hand radiograph, float32 in [0, 1]; `seed` changes the pose and imaging, never maturity."""
    shape = check_size(size)
    state = maturity_state(bone_age_months, male)
    pose = draw_nuisance(check_seed(seed))
    shapes, _ = hand_scene(state, pose)
    transform = frame_transform(state, pose, shape)
    return expose(draw_tissue(shapes, transform, shape), draw_bones(shapes, transform, shape), pose)


def regions(bone_age_months: float, male: bool, size: int | tuple[int, int] = 256, seed: int = 0) -> dict[str, tuple[int, int, int, int]]:
    """Return pixel boxes (x0, y0, x1, y1) of the regions a reader looks at, for the image `render` draws (chapter 1)."""
    shape = check_size(size)
    state = maturity_state(bone_age_months, male)
    pose = draw_nuisance(check_seed(seed))
    _, areas = hand_scene(state, pose)
    transform = frame_transform(state, pose, shape)
    return {name: pixel_box(np.concatenate(parts), transform, shape) for name, parts in areas.items()}


def pixel_box(points: np.ndarray, transform: np.ndarray, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """Return the bounding box in pixels of points in millimetres, clipped to the image."""
    pixels = to_pixels(points, transform)
    x0, y0 = np.floor(pixels.min(axis=0)).astype(int)
    x1, y1 = np.ceil(pixels.max(axis=0)).astype(int)
    height, width = shape
    return (int(np.clip(x0, 0, width)), int(np.clip(y0, 0, height)), int(np.clip(x1, 0, width)), int(np.clip(y1, 0, height)))


# ---------------------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------------------

# The RSNA training set (Halabi et al., Radiology 2019): bone age mean 127.3 months, SD 41.2,
# 54 % boys, whole months from 1 to 228. Boys' labels run older than girls'; these rounded
# per-sex normal curves, cut to the age range, reproduce those totals.
AGE_CURVES = {True: (135.0, 42.0), False: (118.0, 38.0)}  # male -> (mean, SD) in months
BOY_FRACTION = 0.54
AGE_RANGE = (1, 228)
LABELS_CSV, IMAGE_DIR, TRUE_AGES_CSV = "boneage-training-dataset.csv", "boneage-training-dataset", "true_boneage.csv"
PARALLEL_MIN_PIXELS = 200 * 256 * 256  # smaller jobs render in this process: starting workers costs about a second
PROGRESS_MIN = 100  # fewer images than this get no progress bar


def age_grid(age_range: tuple[float, float]) -> np.ndarray:
    """Return the whole months inside `age_range`, or raise AebonetError when the range is empty or outside 0-240."""
    low, high = age_range
    if not 0 <= low <= high <= MAX_AGE:
        raise AebonetError(f"age_range {tuple(age_range)}: need 0 <= low <= high <= {MAX_AGE} months")
    months = np.arange(math.ceil(low), math.floor(high) + 1, dtype=float)
    if len(months) == 0:
        raise AebonetError(f"age_range {tuple(age_range)}: contains no whole month; widen it")
    return months


def sample_ages(n: int, rng: np.random.Generator, age_range: tuple[float, float] = AGE_RANGE) -> tuple[np.ndarray, np.ndarray]:
    """Return `n` bone ages (whole months, float32) and sexes (bool, True = boy) distributed like RSNA's."""
    months = age_grid(age_range)
    males = rng.random(n) < BOY_FRACTION
    ages = np.empty(n, np.float32)
    for male in (True, False):
        mean, sd = AGE_CURVES[male]
        weights = np.exp(-0.5 * ((months - mean) / sd) ** 2)
        ages[males == male] = rng.choice(months, size=int(np.sum(males == male)), p=weights / weights.sum())
    return ages, males


def add_label_noise(ages: np.ndarray, sd: float, rng: np.random.Generator) -> np.ndarray:
    """Return the labels a reader with error SD `sd` months would give, to 0.1 month, within 0-240."""
    if sd == 0:
        return ages.astype(np.float32)
    noisy = np.round(ages + rng.normal(0.0, sd, len(ages)), 1)
    return np.clip(noisy, 0, MAX_AGE).astype(np.float32)


def image_seed(seed: int, index: int) -> int:
    """Return the nuisance seed of image `index` of a dataset made with `seed`; the same for any number of workers."""
    return int(np.random.SeedSequence(seed, spawn_key=(2, index)).generate_state(1)[0])


def stream(seed: int, key: int) -> np.random.Generator:
    """Return the random generator a dataset made with `seed` uses for one purpose (0: ages, 1: label noise)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(key,)))


def is_count(value) -> bool:
    """Return whether `value` is a whole number greater than 0 (and not a bool)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value > 0


def check_dataset_args(n: int, size, seed: int, label_noise_sd: float, workers: int | None) -> tuple[int, int]:
    """Raise AebonetError for a bad image count, size, seed, label noise or worker count; return (height, width)."""
    if not is_count(n):
        raise AebonetError(f"n {n!r}: the number of images must be a whole number greater than 0")
    if workers is not None and not is_count(workers):
        raise AebonetError(f"workers {workers!r}: give a whole number of processes >= 1, or None for all cores")
    if not (isinstance(label_noise_sd, (int, float)) and 0 <= label_noise_sd <= 120):
        raise AebonetError(f"label noise {label_noise_sd!r}: give a standard deviation in months between 0 and 120")
    check_seed(seed)
    return check_size(size)


def dataset_plan(n: int, seed: int, age_range: tuple[float, float], label_noise_sd: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the true ages, sexes and labels of a dataset of `n` images made with `seed`."""
    ages, males = sample_ages(n, stream(seed, 0), age_range)
    return ages, males, add_label_noise(ages, label_noise_sd, stream(seed, 1))


def start_worker() -> None:
    """Set up a worker process: one OpenCV thread (the workers already use every core), Ctrl-C left to the parent."""
    cv2.setNumThreads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def choose_workers(workers: int | None, n: int, shape: tuple[int, int]) -> int:
    """Return how many processes to render with: `workers` (None: all cores), or 1 for a small job."""
    if n * shape[0] * shape[1] < PARALLEL_MIN_PIXELS:
        return 1
    return hardware.available_cpus() if workers is None else int(workers)


def run_jobs(function, jobs: list, workers: int, progress: bool) -> Iterator:
    """Yield function(job) for each job in order, in `workers` processes if more than one; results never depend on it."""
    done = 0
    with tqdm(total=len(jobs), desc="phantom", unit="img", disable=not progress or len(jobs) < PROGRESS_MIN) as bar:
        if workers > 1:
            try:
                for result in run_in_processes(function, jobs, workers):
                    yield result
                    done += 1
                    bar.update()
            except BrokenProcessPool:
                warnings.warn("phantom: worker processes failed to start; rendering the rest in this process", stacklevel=2)
        for job in jobs[done:]:
            yield function(job)
            bar.update()


def run_in_processes(function, jobs: list, workers: int) -> Iterator:
    """Yield function(job) for each job in order, computed by `workers` fresh ("spawn") processes."""
    chunk = max(1, min(64, len(jobs) // (8 * workers)))
    context = multiprocessing.get_context("spawn")  # safe after threads (TensorFlow, OpenCV) and on every OS
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=start_worker)
    try:
        yield from pool.map(function, jobs, chunksize=chunk)
    finally:  # also on Ctrl-C: drop the queued work instead of finishing it
        pool.shutdown(wait=True, cancel_futures=True)


def render_job(job: tuple) -> np.ndarray:
    """Render one image from a (bone age, male, size, seed) job; run in a worker process."""
    return render(*job)


def make_dataset(
    n: int, size: int | tuple[int, int] = 256, seed: int = 0, age_range: tuple[float, float] = AGE_RANGE,
    label_noise_sd: float = 0.0, workers: int | None = None, progress: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return `n` phantom radiographs (float32, (n, H, W)), their bone-age labels (float32) and sexes (bool) (chapter 0)."""
    height, width = check_dataset_args(n, size, seed, label_noise_sd, workers)
    ages, males, labels = dataset_plan(n, seed, age_range, label_noise_sd)
    jobs = [(float(a), bool(m), (height, width), image_seed(seed, i)) for i, (a, m) in enumerate(zip(ages, males))]
    images = np.empty((n, height, width), np.float32)
    for i, image in enumerate(run_jobs(render_job, jobs, choose_workers(workers, n, (height, width)), progress)):
        images[i] = image
    return images, labels, males


def write_png_job(job: tuple) -> None:
    """Render one image and write it as an 8-bit PNG that appears only when complete; run in a worker process."""
    *render_args, path = job
    pixels = (render(*render_args) * 255 + 0.5).astype(np.uint8)
    with files.atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), pixels):
            raise OSError(f"{path}: OpenCV could not write the PNG")


def write_labels(path: Path, ids: np.ndarray, ages: np.ndarray, males: np.ndarray, whole_months: bool) -> None:
    """Write a label file with header `id,boneage,male` (male as True/False), atomically."""
    boneage = ages.astype(np.int64) if whole_months else ages.astype(np.float64).round(1)
    table = pd.DataFrame({"id": ids, "boneage": boneage, "male": males.astype(bool)})
    with files.atomic_write(path) as f:
        table.to_csv(f, index=False, lineterminator="\n")


def write_dataset(
    out_dir: str | os.PathLike, n: int, size: int | tuple[int, int] = 256, seed: int = 0,
    label_noise_sd: float = 0.0, progress: bool = True, workers: int | None = None,
) -> Path:
    """Write `n` phantom radiographs in the Kaggle RSNA layout under `out_dir` and return it (chapter 0).

    The label file is written last, so a folder without it is an interrupted run. With label
    noise, `true_boneage.csv` beside it holds the noise-free ages, to show the reachable MAE.
    """
    shape = check_dataset_args(n, size, seed, label_noise_sd, workers)
    out_dir = files.require_empty_dir(out_dir)
    ages, males, labels = dataset_plan(n, seed, AGE_RANGE, label_noise_sd)
    ids = np.arange(1, n + 1)
    image_dir = out_dir / IMAGE_DIR
    image_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(float(ages[i]), bool(males[i]), shape, image_seed(seed, i), image_dir / f"{ids[i]}.png") for i in range(n)]
    for _ in run_jobs(write_png_job, jobs, choose_workers(workers, n, shape), progress):
        pass
    if label_noise_sd > 0:
        write_labels(out_dir / TRUE_AGES_CSV, ids, ages, males, whole_months=True)
    write_labels(out_dir / LABELS_CSV, ids, labels, males, whole_months=label_noise_sd == 0)
    return out_dir
