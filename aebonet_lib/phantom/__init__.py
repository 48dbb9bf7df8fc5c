"""The built-in dataset: synthetic hand radiographs whose skeletal maturity follows the bone age.

A left hand, palm down (PA view), fingers up, thumb on the image's right, forearm entering
from the bottom edge. Skeletal maturity is read from the table `MATURITY` (when each
ossification centre appears, widens, caps and fuses, for girls and for boys, with a source per
row). A seed draws a child (each bone group's tempo, proportions, build) and an image (pose,
framing, exposure), never the bone age. Chapter 0 generates the dataset; chapter 1 reads a hand.

    timeline   the maturity table and the state it gives at a bone age
    children   what makes one child differ from another of the same bone age
    anatomy    the bones' outlines in millimetres;  hand: the whole hand as a scene
    styles     registered and raw framing;  radiograph: the physics of the image, render, regions
    dataset    make_dataset, write_dataset (and its record of each image's regions: read_record)

Phantom against real radiographs is measured by the machinery (`_engine.realism`, chapter 2).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from aebonet_lib.phantom.children import (
    AVERAGE_CHILD,
    READER_SD_MONTHS,
    TEMPO_SD_MONTHS,
    Child,
    draw_child,
    label_floor,
)
from aebonet_lib.phantom.dataset import (
    AGE_CURVES,
    AGE_RANGE,
    BOY_FRACTION,
    IMAGE_DIR,
    LABELS_CSV,
    PARALLEL_MIN_PIXELS,
    RECORD_JSON,
    TRUE_AGES_CSV,
    add_label_noise,
    age_grid,
    choose_workers,
    dataset_plan,
    image_seed,
    make_dataset,
    read_record,
    sample_ages,
    write_dataset,
)
from aebonet_lib.phantom.radiograph import (
    check_seed,
    check_size,
    parse_size,
    regions,
    render,
    render_with_regions,
)
from aebonet_lib.phantom.styles import DEFAULT_STYLE, STYLES
from aebonet_lib.phantom.timeline import (
    CARPALS,
    EPIPHYSES,
    GROWTH,
    MATURITY,
    MAX_AGE,
    SOURCES,
    TEMPO_GROUPS,
    event_age,
    maturity_state,
)


def source_digest() -> str:
    """Return the first 8 hex digits of a SHA-256 over this subpackage's .py files (a cache key for datasets)."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:8]

