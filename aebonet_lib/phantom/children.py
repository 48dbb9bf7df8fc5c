"""Children who differ: each phantom child has its own skeletal tempo, proportions and build.

A seed draws one child. What it draws is independent of the bone age and of the sex on the
label, so that none of it is a shortcut to the label: only the maturity of the bones is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from aebonet_lib.phantom.timeline import TEMPO_GROUPS

# Bone-group dissociation: the SD (months) of each group's offset from the child's bone age.
# TW3 scores the carpals apart from the radius, ulna and short bones (RUS) because they often
# disagree: a year or more between a child's carpal and RUS bone ages is common (Tanner et al.,
# TW3, 2001; Greulich and Pyle 1959 also read each bone on its own for the same reason). Two
# independent offsets of SD 6 months differ by SD 8.5 months, a year or more in about 16 % of
# children. A rounded teaching figure in line with those sources, not transcribed from them.
TEMPO_SD_MONTHS = 6.0

# Size and build, drawn independently of age (fractions of the average child of that age).
# Adult hand length has an SD of about 5 % of its mean (about 10 mm on 189 mm in men:
# Pheasant and Haslegrave, Bodyspace, 3rd ed., 2006); children of one bone age vary a little more.
HAND_LENGTH_SD = 0.06  # the whole hand's length
RAY_LENGTH_SD = 0.025  # each finger ray on its own (finger-length ratios differ between people)
BONE_WIDTH_SD = 0.07  # robust or gracile bones, relative to their length
PALM_WIDTH_SD = 0.05  # the breadth of the palm (spacing of the metacarpals)
BUILD_SD = 0.3  # soft tissue: the log of its thickness factor (thin to plump hands, x0.55 to x1.8 at 2 SD)

# One reader's error (SD, months). Two GP readers of one film differ by about half a year
# (chapter 1, "Readers disagree"; Halabi et al., Radiology 2019;290:498-503, took the mean of
# six readers for that reason): a mean difference of 6 months means sigma = 6 sqrt(pi) / 2.
READER_SD_MONTHS = 6.0 * math.sqrt(math.pi) / 2  # 5.3 months


@dataclass(frozen=True)
class Child:
    """Hold what makes one child differ from another of the same bone age and sex."""

    offsets: dict = field(default_factory=dict)  # months per TEMPO_GROUPS name
    hand_length: float = 1.0
    ray_lengths: tuple = (1.0, 1.0, 1.0, 1.0, 1.0)  # thumb to little finger
    bone_width: float = 1.0
    palm_width: float = 1.0
    build: float = 1.0


AVERAGE_CHILD = Child()  # the child every image shows when variation is off


def child_rng(seed: int) -> np.random.Generator:
    """Return the random generator of the child that image seed `seed` draws (apart from its pose and exposure)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(7,)))


def clipped_factor(rng: np.random.Generator, sd: float, size: int | None = None) -> np.ndarray | float:
    """Return 1 + a normal deviation of SD `sd`, kept within 2.5 SD."""
    return 1.0 + np.clip(rng.normal(0.0, sd, size), -2.5 * sd, 2.5 * sd)


def quantise(factor: float) -> float:
    """Return a size factor rounded to 1 % steps, so that outlines repeat and the caches in anatomy stay useful."""
    return float(np.round(factor, 2))


def draw_child(seed: int) -> Child:
    """Draw one child from `seed`: group offsets (whole months), size, proportions and build; never its bone age or sex."""
    rng = child_rng(seed)
    offsets = {group: float(np.round(np.clip(rng.normal(0.0, TEMPO_SD_MONTHS), -15, 15))) + 0.0  # never -0.0
               for group in TEMPO_GROUPS}
    return Child(
        offsets=offsets,
        hand_length=quantise(clipped_factor(rng, HAND_LENGTH_SD)),
        ray_lengths=tuple(quantise(f) for f in clipped_factor(rng, RAY_LENGTH_SD, 5)),
        bone_width=quantise(clipped_factor(rng, BONE_WIDTH_SD)),
        palm_width=quantise(clipped_factor(rng, PALM_WIDTH_SD)),
        build=float(np.exp(np.clip(rng.normal(0.0, BUILD_SD), -2.5 * BUILD_SD, 2.5 * BUILD_SD))),
    )


def label_floor(reader_sd: float) -> float:
    """Return the MAE of a perfect model against labels with a reader error of SD `reader_sd`: sd * sqrt(2 / pi)."""
    return reader_sd * math.sqrt(2 / math.pi)
