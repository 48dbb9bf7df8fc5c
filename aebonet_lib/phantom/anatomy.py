"""Anatomy of a hand in millimetres: the bones' outlines, from shaft and epiphysis to the carpal mosaic."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from aebonet_lib.phantom.timeline import CARPALS, ramp, smoothstep

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
    "distal_phalanx": ([(0, 1.6), (0.2, 1.05), (0.55, 0.72), (0.78, 0.78), (0.9, 1.2), (1, 1.35)], (0.0, 0.3), "proximal", 0.2),
    "radius": ([(0, 0.62), (0.9, 0.63), (0.95, 0.72), (0.98, 0.88), (1, 1.0)], (0.0, 0.0), "distal", 0.016),
    "ulna": ([(0, 0.68), (0.93, 0.7), (0.975, 0.8), (0.99, 0.95), (1, 1.0)], (0.0, 0.0), "distal", 0.011),
}
# The far (distal) end of each shaft, across its width (u from -1 to 1), in units of its half width:
# phalangeal heads are bicondylar (two condyles and a notch), the distal phalanx ends in a broad tuft.
END_U = np.linspace(-1, 1, 13)
END_FORMS = {
    "round": np.sqrt(1 - END_U**2),
    "bicondylar": np.sqrt(1 - END_U**2) ** 0.6 - 0.45 * np.exp(-((END_U / 0.28) ** 2)),
    "tuft": np.sqrt(np.clip(1 - END_U**4, 0, 1)) * (1 - 0.25 * np.exp(-((END_U / 0.35) ** 2))),
    "flat": np.sqrt(1 - END_U**2),
}
DISTAL_END = {"metacarpal": "flat", "thumb_metacarpal": "flat", "proximal_phalanx": "bicondylar",
              "middle_phalanx": "bicondylar", "distal_phalanx": "tuft", "radius": "flat", "ulna": "flat"}
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
# They are drawn CARPAL_PACKING times larger, so that neighbours overlap as in a radiograph of a packed carpus.
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
CARPAL_PACKING = 1.07
# A waist (scaphoid), a crescent (lunate), a wedge (hamate, triquetrum) bend the rounded outline:
# (waist depth, crescent bend, wedge) per bone; see carpal_outline.
CARPAL_FORMS = {
    "capitate": (0.12, 0.0, 0.0), "hamate": (0.0, 0.0, 0.35), "triquetrum": (0.0, 0.0, 0.25),
    "lunate": (0.0, 0.3, 0.0), "trapezium": (0.0, 0.0, 0.0), "trapezoid": (0.0, 0.0, 0.1),
    "scaphoid": (0.3, 0.08, 0.0), "pisiform": (0.0, 0.0, 0.0),
}
# Neighbouring carpals go to different layers, so that where they overlap their densities add.
CARPAL_LAYER = {"capitate": "bone", "triquetrum": "bone", "trapezium": "bone", "hamate": "overlay",
                "lunate": "overlay", "trapezoid": "overlay", "scaphoid": "overlay", "pisiform": "overlay"}
SESAMOID_MM = 5.0  # diameter of the adult adductor sesamoid
SESAMOID_DENSITY = 0.6  # seen through the metacarpal head
OVERLAY_DENSITY = {"pisiform": 0.6}  # a bone seen through a neighbour adds less than a full bone's density


# Densities (arbitrary units) that the exposure turns into grey levels.
CORTICAL, TRABECULAR = 1.0, 0.45


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


def place(local: np.ndarray, start: np.ndarray, angle: float, stretch: tuple[float, float] | None = None) -> np.ndarray:
    """Map points (u across, v along) of a bone's own frame to hand coordinates, stretched first by (across, along) if given."""
    if stretch is not None:
        local = local * stretch
    a = math.radians(angle)
    across_and_along = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return start + local @ across_and_along


def shell(layer: str, outer: np.ndarray, inner: np.ndarray, start: np.ndarray, angle: float, density: float = 1.0,
          stretch: tuple[float, float] | None = None) -> list[Shape]:
    """Return a bone placed in the hand: its outline filled with cortical density, its inside with trabecular."""
    placed = place(np.concatenate([outer, inner]), start, angle, stretch)
    return [Shape(layer, placed[: len(outer)], density * CORTICAL), Shape(layer, placed[len(outer) :], density * TRABECULAR)]


CAP_U = np.linspace(-1, 1, 7)  # across a bone end
CAP_ROUND = np.sqrt(1 - CAP_U**2)


def shaft_outline(v: np.ndarray, widths: np.ndarray, bulges: tuple[float, float], end: str) -> np.ndarray:
    """Return tubular bone outlines, one per row of `v` and `widths`, the base domed by `bulges[0]`, the far end shaped as `end`."""
    w0, w1 = widths[:, :1], widths[:, -1:]
    x = np.concatenate([CAP_U * w0 / 2, widths[:, 1:-1] / 2, -END_U * w1 / 2, -widths[:, -2:0:-1] / 2], axis=1)
    y = np.concatenate([v[:, :1] - bulges[0] * w0 * CAP_ROUND, v[:, 1:-1], v[:, -1:] + bulges[1] * w1 * END_FORMS[end],
                        v[:, -2:0:-1]], axis=1)
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
    outer, inner = shaft_outline(np.stack([v, inner_v]), np.stack([widths, inner_widths]), bulges, DISTAL_END[kind])
    return read_only(outer), read_only(inner)


def read_only(array: np.ndarray) -> np.ndarray:
    """Return `array` marked read-only, as every cached outline must stay."""
    array.setflags(write=False)
    return array


EPI_U = np.linspace(-1, 1, 15)  # across an epiphysis
EPI_ROUND = np.sqrt(1 - EPI_U**2)
EPI_TOPS = {  # the far edge of a mature epiphysis, as a fraction of its height
    "dome": EPI_ROUND,
    "disc": 0.55 + 0.45 * EPI_ROUND,
    "wedge": (0.3 + 0.7 * ((EPI_U + 1) / 2) ** 1.5) * np.sqrt(1 - EPI_U**8) + 0.45 * np.exp(-(((EPI_U - 0.82) / 0.14) ** 2)),
    "styloid": 0.75 * EPI_ROUND + 0.6 * np.exp(-(((EPI_U + 0.65) / 0.22) ** 2)),
}
CAPPING_BEND = 1.1 * np.abs(EPI_U) ** 5  # how far a capping epiphysis's edges reach down beside the metaphysis


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
                    physis_gap: float, fused: bool) -> tuple:
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


def epiphysis_shapes(kind: str, epiphysis: dict, start: np.ndarray, angle: float, length: float, shaft: float,
                     stretch: tuple[float, float] | None = None) -> list[Shape]:
    """Return the epiphysis of one tubular bone beyond its physis, and the bridge over the physis once fused."""
    outer, inner, bridge = epiphysis_local(
        kind, length, shaft, epiphysis["width_ratio"], epiphysis["capping"],
        epiphysis["physis_gap"], epiphysis["fused"],
    )
    shapes = shell("bone", outer, inner, start, angle, stretch=stretch)
    if bridge is not None:  # the epiphyseal scar, fading over the years after fusion
        density = TRABECULAR + (CORTICAL - TRABECULAR) * 0.7 * epiphysis["scar"]
        shapes.append(Shape("bone", place(bridge, start, angle, stretch), density))
    return shapes


def tubular_shapes(kind: str, epiphysis: dict, start: np.ndarray, angle: float, length: float, shaft: float,
                   stretch: tuple[float, float] | None = None) -> list[Shape]:
    """Return a tubular bone along one segment: its shaft, and its epiphysis once it has appeared.

    `length` and `shaft` are the average child's (so that outlines come from the caches); `stretch`
    (across, along) makes them one child's.
    """
    outer, inner = shaft_shapes(kind, length, shaft)
    shapes = shell("bone", outer, inner, start, angle, stretch=stretch)
    if epiphysis["visible"]:
        shapes += epiphysis_shapes(kind, epiphysis, start, angle, length, shaft, stretch)
    return shapes


def child_rays(child) -> tuple[Ray, ...]:
    """Return the finger rays of one child: each ray's length, the bones' width and the palm's breadth as drawn."""
    return tuple(
        Ray(ray.name, (ray.base[0] * child.palm_width, ray.base[1]), ray.angle, ray.spread,
            tuple(round(length * factor, 1) for length in ray.lengths), round(ray.width * child.bone_width, 2))
        for ray, factor in zip(RAYS, child.ray_lengths)
    )


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


def ray_shapes(ray: Ray, joints: list, angles: list, state: dict, stretch: tuple[float, float]) -> tuple[list[Shape], list[Shape]]:
    """Return a ray's metacarpal and its phalanges as two lists of shapes; `ray` is the average child's, `stretch` this child's."""
    metacarpal, phalanges = [], []
    for i, (kind, group, shaft) in enumerate(segment_kinds(ray)):
        shapes = tubular_shapes(kind, state["epiphyses"][group], joints[i], angles[i], ray.lengths[i], shaft, stretch)
        (metacarpal if i == 0 else phalanges).extend(shapes)
    return metacarpal, phalanges


def forearm_shapes(state: dict, bone_width: float = 1.0) -> list[Shape]:
    """Return the distal radius and ulna, with their epiphyses, `bone_width` times as wide as the average child's."""
    shapes = []
    for bone, (x, end_y, metaphysis) in FOREARM.items():
        start = np.array([x, end_y - FOREARM_MM])
        shapes += tubular_shapes(bone, state["epiphyses"][bone], start, 0.0, FOREARM_MM, metaphysis, (bone_width, 1.0))
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
    """Return a carpal bone's outline of width and height 1, rounder while young (shape 0): waist, crescent or wedge as it matures."""
    _, _, _, _, exponent, taper = CARPAL_SHAPES[bone]
    x, y = superellipse(1.0, 1.0, 2 + shape * (exponent - 2), shape * taper).T
    waist, crescent, wedge = (shape * form for form in CARPAL_FORMS[bone])
    x = x * (1 - waist * np.exp(-((y / 0.2) ** 2))) * (1 + 2 * wedge * y)  # scaphoid's waist; hamate's wedge
    y = y - crescent * (1 - 4 * x**2)  # lunate's crescent: concave towards the capitate
    return np.stack([x, y], axis=1)


def adult_carpal(bone: str) -> np.ndarray:
    """Return the outline of a carpal bone at adult size and shape, in hand millimetres."""
    centre, width, height, angle, _, _ = CARPAL_SHAPES[bone]
    return place(carpal_outline(bone, 1.0) * [width, height], np.array(centre), angle)


@functools.lru_cache(maxsize=4096)
def carpal_bone(bone: str, size: float, shape: float) -> tuple[Shape, ...]:
    """Return one carpal bone in the hand, cortex and inside; cached, since carpals depend on maturity only."""
    centre, _, _, angle, _, _ = CARPAL_SHAPES[bone]
    width, height = (CARPAL_PACKING * side for side in carpal_size(bone, size, shape))
    inset = min(EPIPHYSIS_CORTEX_MM, 0.15 * width)
    unit = carpal_outline(bone, shape)
    layer, density = CARPAL_LAYER[bone], OVERLAY_DENSITY.get(bone, 1.0)
    return tuple(shell(layer, unit * [width, height], unit * [width - 2 * inset, height - 2 * inset], np.array(centre), angle, density))


def hamate_hook(shape: float) -> list[Shape]:
    """Return the hook of the hamate, a ring seen end-on, fading in as the hamate takes its adult shape."""
    hook = ramp(shape, 0.3, 1.0)
    if hook == 0:
        return []
    centre = np.array(CARPAL_SHAPES["hamate"][0]) + [-1.0, -2.0]
    # On the layer without the hamate, so that the ring adds to it.
    return [Shape("bone", superellipse(5.0, 6.0) + centre, 0.5 * hook), Shape("bone", superellipse(3.2, 4.2) + centre, 0.0)]


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
    return shell("overlay", superellipse(diameter, diameter), superellipse(0.6 * diameter, 0.6 * diameter), centre, 0.0, SESAMOID_DENSITY)
