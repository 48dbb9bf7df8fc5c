"""What every chapter does at its top: one setting picks the data, the preset and the run folders.

    DATA = os.environ.get("AEBONET_DATA", "phantom")   # or the folder holding the RSNA data
    config = course.config_for(DATA)                    # `cpu` on the phantom, `paper` on real data
    RUNS = course.runs_dir(DATA, config)                # models trained by one chapter, reused by the next
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

from aebonet_lib.config import Config, get_config
from aebonet_lib.data.cache import cache_root
from aebonet_lib.data.loading import is_phantom


def preset_for(source: str) -> str:
    """Return the preset a chapter uses: 'cpu' on the phantom, 'paper' on real data."""
    return "cpu" if is_phantom(str(source)) else "paper"


def config_for(source: str, **overrides) -> Config:
    """Return the chapter's Config for a data source, with any fields overridden."""
    return get_config(preset_for(source), **overrides)


def data_tag(source: str) -> str:
    """Return a short folder name for a data source: 'phantom' or the dataset folder's name."""
    return str(source).replace(":", "-") if is_phantom(str(source)) else Path(source).resolve().name


def runs_dir(source: str, config: Config) -> Path:
    """Return the folder where the chapters keep trained runs for this data and preset."""
    root = Path(os.environ["AEBONET_RUNS"]) if os.environ.get("AEBONET_RUNS") else cache_root() / "runs"
    return root / f"{data_tag(source)}-{config.name}"


def print_wrapped(text, width: int = 78) -> None:
    """Print text with its long lines wrapped (continuations indented), so that long messages fit the page."""
    for line in str(text).splitlines():
        print(textwrap.fill(line, width, subsequent_indent="      "))
