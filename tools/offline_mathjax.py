"""Sphinx extension: serve MathJax from the built book itself, so formulas render offline.

Sphinx loads MathJax from a CDN by default; a reader without internet (or behind a
hospital firewall) then sees raw TeX. The pip package `django-static-mathjax` carries
MathJax 3 as plain files (it needs no Django); this extension copies the parts a page
uses into the HTML output and points Sphinx at them. Without the package, nothing changes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

TARGET = "_static/mathjax"
PARTS = ("tex-chtml.js", "output/chtml", "input/tex/extensions", "ui", "a11y")  # the rest is speech support


def es5_folder() -> Path | None:
    """Return the folder of MathJax's browser build, or None where the package is not installed."""
    try:
        import mathjax
    except ImportError:
        return None
    folder = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"
    return folder if (folder / "tex-chtml.js").is_file() else None


def use_local_mathjax(app, config) -> None:
    """Point Sphinx at the local copy of MathJax."""
    if es5_folder() is not None:
        config.mathjax_path = f"{TARGET.removeprefix('_static/')}/tex-chtml.js"


def copy_mathjax(app, exception) -> None:
    """Copy MathJax's browser build into the HTML output once the build has succeeded."""
    es5 = es5_folder()
    if exception is not None or es5 is None or app.builder.format != "html":
        return
    target = Path(app.outdir) / TARGET
    for part in PARTS:
        source = es5 / part
        if source.is_dir():
            shutil.copytree(source, target / part, dirs_exist_ok=True)
        else:
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / part)


def setup(app) -> dict:
    """Register the two steps with Sphinx."""
    app.connect("config-inited", use_local_mathjax)
    app.connect("build-finished", copy_mathjax)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
