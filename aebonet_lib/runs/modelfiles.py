"""Model files: save a Keras model with a JSON sidecar saying how to use it, and read both back (chapters 4, 6).

A model file RUN/NAME.keras always has RUN/NAME.json beside it (its kind, image size,
preprocessing, Config and, for a regressor, its output scale); `training`, `predict` and
`trust` read and write models only through these three functions.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import keras

from aebonet_lib.errors import AebonetError
from aebonet_lib.runs.files import atomic_path, read_json, write_json


def save_model(model: keras.Model, path: str | Path, meta: dict) -> Path:
    """Save a model in the .keras format, atomically, with a JSON sidecar (same name, .json) saying how to use it."""
    path = Path(path)
    if path.suffix != ".keras":
        raise AebonetError(f"{path}: a model file name must end in .keras")
    with atomic_path(path) as tmp:
        model.save(tmp)
    write_json(path.with_suffix(".json"), {**meta, "keras_version": keras.__version__})
    return path


def read_model_meta(path: str | Path) -> dict:
    """Return the JSON sidecar of a model file written by `save_model`."""
    path = Path(path)
    if not path.is_file():
        raise AebonetError(f"{path}: model file not found; give a .keras file written by aebonet "
                           "(such as RUN/model.keras)")
    if path.suffix != ".keras" or not zipfile.is_zipfile(path):
        raise AebonetError(f"{path}: not a Keras model file; expected a .keras archive written by aebonet "
                           "(such as RUN/model.keras)")
    if not path.with_suffix(".json").is_file():
        raise AebonetError(f"{path}: no {path.with_suffix('.json').name} beside it; "
                           "expected a model written by aebonet, which saves one")
    return read_json(path.with_suffix(".json"))


def load_model(path: str | Path) -> tuple[keras.Model, dict]:
    """Load a model saved by `save_model` in Keras's safe mode; return it with its sidecar."""
    meta = read_model_meta(path)
    try:
        model = keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as e:  # Keras raises many types for a damaged archive
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise AebonetError(f"{path}: could not load the model ({reason}); "
                           "the file is damaged or not an aebonet model") from None
    return model, meta
