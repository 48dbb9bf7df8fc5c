"""The maturity timeline: when each ossification centre appears, widens, caps and fuses (data, with a source per row)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from aebonet_lib.errors import AebonetError

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
    ("radius", "fusion_begins", 180, 198, "GP"),  # girls: GP's plates show the radius fusing at about 16-17 years
    ("radius", "fused", 204, 216, "GP"),  # girls 17 y, boys 18 y (GP; was 183 / 213 months, too early for girls)
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


GROWTH_CURVES = {sex: GROWTH[sex].to_numpy(float) for sex in ("months", "girls", "boys")}  # for speed


def hand_scale(age: float, male: bool) -> float:
    """Return the hand's length as a fraction of an adult man's, from the `GROWTH` table."""
    return float(np.interp(age, GROWTH_CURVES["months"], GROWTH_CURVES["boys" if male else "girls"]))


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


# Each bone group matures on its own clock in a real child (see children.TEMPO_SD_MONTHS);
# a child's offsets shift these groups' ages away from the bone age on the label.
TEMPO_GROUPS = {
    "carpals": CARPALS,
    "metacarpals": ("metacarpals", "thumb_metacarpal", "sesamoid"),
    "phalanges": ("proximal_phalanges", "middle_phalanges", "distal_phalanges"),
    "radius_ulna": ("radius", "ulna"),
}
GROUP_OF = {bone: group for group, bones in TEMPO_GROUPS.items() for bone in bones}


def group_ages(age: float, offsets: dict[str, float] | None) -> dict[str, float]:
    """Return the age each bone matures at: the bone age plus its group's offset, kept within 0-240 months."""
    offsets = offsets or {}
    return {bone: min(MAX_AGE, max(0.0, age + offsets.get(group, 0.0))) for bone, group in GROUP_OF.items()}


def maturity_state(bone_age_months: float, male: bool, offsets: dict[str, float] | None = None) -> dict:
    """Return the interpretable maturity state the phantom draws for this bone age and sex (chapter 1).

    Keys: `hand_scale` (hand length / an adult man's); `carpals`: per bone `visible`, `size` and
    `shape` (0 round centre, 1 adult form); `carpals_visible` (count); `epiphyses`: per group
    (`EPIPHYSES`) `visible`, `width_ratio` (epiphysis / metaphysis width), `capping`, `fusion`
    (0 open, 1 closed), `physis_gap` (1 - fusion), `fused`, `scar`; `sesamoid`: `visible`, `size`.
    `offsets` (months per `TEMPO_GROUPS` name) move a group's maturity off the bone age, as in a real child.
    """
    age, male = check_age(bone_age_months), bool(male)
    ages = group_ages(age, offsets)
    carpals = {bone: carpal_state(bone, ages[bone], male) for bone in CARPALS}
    return {
        "bone_age_months": age,
        "male": male,
        "hand_scale": hand_scale(age, male),
        "carpals": carpals,
        "carpals_visible": sum(c["visible"] for c in carpals.values()),
        "epiphyses": {group: epiphysis_state(group, ages[group], male) for group in EPIPHYSES},
        "sesamoid": sesamoid_state(ages["sesamoid"], male),
    }
