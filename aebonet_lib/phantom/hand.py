"""The whole hand as a scene: bones placed along the rays, soft tissue around them, and the reader's regions."""

from __future__ import annotations

import cv2
import numpy as np

from aebonet_lib.phantom.anatomy import (
    CARPALS,
    FOREARM,
    FOREARM_MM,
    HYPOTHENAR,
    RAYS,
    SOFT_TISSUE_MM,
    THENAR,
    WRIST_TISSUE_MM,
    Ray,
    Shape,
    adult_carpal,
    carpal_shapes,
    child_rays,
    direction,
    forearm_shapes,
    ray_joints,
    ray_shapes,
    segment_kinds,
    sesamoid_shapes,
)
from aebonet_lib.phantom.children import Child

TISSUE_FOREARM, TISSUE_PALM, TISSUE_FINGER = 1.0, 0.95, 0.85  # relative soft-tissue thickness
TISSUE_FACTOR = 1.5  # the average child's soft tissue beside a finger's bones, in units of SOFT_TISSUE_MM


def soft_tissue_mm(child: Child) -> float:
    """Return the soft tissue beside a finger's bones (mm at adult scale), set by the child's build, not by age."""
    return SOFT_TISSUE_MM * TISSUE_FACTOR * child.build


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


def palm_outline(rays: tuple[Ray, ...], rays_joints: list, margin: float) -> np.ndarray:
    """Return the convex outline of palm and wrist around the metacarpals, the thumb's base and the wrist."""
    points = []
    for ray, (joints, angles) in zip(rays, rays_joints):
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


def tissue_shapes(child: Child, rays: tuple[Ray, ...], rays_joints: list) -> list[Shape]:
    """Return the soft tissue: fingers first, then palm and forearm over their bases."""
    margin = soft_tissue_mm(child)
    shapes = []
    for ray, (joints, _) in zip(rays, rays_joints):
        shapes += finger_tissue(ray, joints, margin)
    hull = cv2.convexHull(palm_outline(rays, rays_joints, margin).astype(np.float32))[:, 0].astype(float)
    shapes.append(Shape("tissue", hull, TISSUE_PALM))
    shapes.append(Shape("tissue", forearm_outline(margin), TISSUE_FOREARM))
    return shapes


def hand_scene(state: dict, pose: dict, child: Child) -> tuple[list[Shape], dict[str, list[np.ndarray]]]:
    """Return every shape of one child's hand in millimetres (drawing order) and the points behind each reader's region."""
    rays = child_rays(child)
    rays_joints = [ray_joints(ray, pose, i) for i, ray in enumerate(rays)]
    metacarpals, phalanges = [], []
    for average, length, (joints, angles) in zip(RAYS, child.ray_lengths, rays_joints):
        mc, ph = ray_shapes(average, joints, angles, state, (child.bone_width, length))
        metacarpals += mc
        phalanges += ph
    forearm, carpals = forearm_shapes(state, child.bone_width), carpal_shapes(state)
    thumb_joints, thumb_angles = rays_joints[0]
    sesamoid = sesamoid_shapes(state, thumb_joints, thumb_angles[0])
    shapes = tissue_shapes(child, rays, rays_joints) + forearm + carpals + metacarpals + phalanges + sesamoid
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

