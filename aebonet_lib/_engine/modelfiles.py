"""Model files: save a Keras model with a JSON sidecar saying how to use it, and read both back (chapters 4, 6).

A model file RUN/NAME.keras always has RUN/NAME.json beside it: a `ModelMeta` (its kind,
image size, preprocessing, Config, the data it was trained on and, for a regressor, its
output scale and kept epoch). The sidecar is written and read here only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import tempfile
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import keras

from aebonet_lib.config import Config
from aebonet_lib.data.preprocess import PreprocessParams

# Keras 3.10 (Colab's) loads a one-input model with its input as a one-item list, then warns at every
# call with the image tensor; the call is right, so the calls of a loaded model hide that one warning.
INPUT_STRUCTURE_WARNING = r"The structure of `inputs` doesn't match the expected structure\.\nExpected: \['image'\]\n"


@contextlib.contextmanager
def quiet_input_structure():
    """Hide, inside the block, Keras 3.10's warning that a loaded model's one image input was given as a tensor."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, message=INPUT_STRUCTURE_WARNING)
        yield
from aebonet_lib.errors import AebonetError
from aebonet_lib._engine.files import atomic_path, read_json, write_json

KINDS = ("autoencoder", "encoder", "regressor")


@dataclass
class ModelMeta:
    """Hold what a saved model needs to be used: kind, preprocessing, recipe, training data; a regressor's scale."""

    kind: str  # autoencoder, encoder or regressor
    params: PreprocessParams  # how an image becomes an input (its size included)
    config: Config  # the recipe it was trained with
    source: str | None = None  # the data it was trained on: phantom[:N] or a folder
    seed: int | None = None  # the data's seed (the phantom draw and the split)
    backbone: str | None = None  # regressor: aebonet, scratch or a baseline
    sex_input: bool = False  # regressor: takes the child's sex as a second input
    y_mean: float = 0.0  # regressor: the training ages' mean and SD (months) the output is scaled by
    y_std: float = 1.0
    keep: str | None = None  # regressor: which epoch was kept, "best" or "last"
    best_epoch: int | None = None  # regressor: the epoch with the best validation MAE, and that MAE
    best_val_mae: float | None = None
    epochs_done: int | None = None
    keras_version: str = keras.__version__
    notes: dict = field(default_factory=dict)  # anything else, such as a shipped model's attribution

    @property
    def image_size(self) -> int:
        """Return the input size in pixels."""
        return self.params.image_size

    def to_dict(self) -> dict:
        """Return the sidecar as NAME.json holds it."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        notes, data = fields.pop("notes"), {"source": fields.pop("source"), "seed": fields.pop("seed")}
        return {**notes, **fields, "image_size": self.image_size, "params": self.params.to_dict(),
                "config": self.config.to_dict(), "data": data}

    @classmethod
    def from_dict(cls, d: dict) -> "ModelMeta":
        """Rebuild a sidecar from NAME.json's dict; keys this version does not know are kept in `notes`."""
        if d.get("kind") not in KINDS:
            raise AebonetError(f"model sidecar of kind {d.get('kind')!r}: expected one of {', '.join(KINDS)}")
        known = {f.name for f in dataclasses.fields(cls)} - {"notes", "source", "seed"}
        derived = {"image_size", "data", "params", "config"}
        data = d.get("data") or {}
        return cls(**{k: v for k, v in d.items() if k in known - {"params", "config"}},
                   params=PreprocessParams.from_dict(d["params"]), config=Config.from_dict(d["config"]),
                   source=data.get("source"), seed=data.get("seed"),
                   notes={k: v for k, v in d.items() if k not in known | derived})


def save_model(model: keras.Model, path: str | Path, meta: ModelMeta) -> Path:
    """Save a model in the .keras format, atomically, with its sidecar (same name, .json)."""
    path = Path(path)
    if path.suffix != ".keras":
        raise AebonetError(f"{path}: a model file name must end in .keras")
    with atomic_path(path) as tmp:
        model.save(tmp)
    write_model_meta(path, meta)
    return path


def write_model_meta(path: str | Path, meta: ModelMeta) -> None:
    """Write the sidecar of the model file `path` (NAME.json beside NAME.keras), atomically."""
    write_json(Path(path).with_suffix(".json"), dataclasses.replace(meta, keras_version=keras.__version__).to_dict())


def read_model_meta(path: str | Path) -> ModelMeta:
    """Return the sidecar of a model file written by `save_model`."""
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
    return read_sidecar(path.with_suffix(".json"))


def read_sidecar(path: str | Path) -> ModelMeta:
    """Return the ModelMeta held in a sidecar file (NAME.json), refusing one that is not aebonet's."""
    try:
        return ModelMeta.from_dict(read_json(path))
    except AebonetError as e:
        raise AebonetError(f"{path}: {e}") from None
    except (KeyError, TypeError, ValueError) as e:
        raise AebonetError(f"{path}: not a model sidecar written by aebonet (missing or bad {e}); "
                           "save the model again with aebonet") from None


# Config keys that newer Keras (3.15) writes and older Keras (Colab's 3.10) rejects, each with the value
# at which leaving it out changes nothing; a model saved on the newer Keras loads on the older without them.
NEWER_KERAS_DEFAULTS = {"input_axes": None, "output_axes": None, "quantization_config": None,
                        "renorm": False, "renorm_clipping": None, "renorm_momentum": 0.99}


def _without_newer_keras_defaults(config):
    """Return a model config without the NEWER_KERAS_DEFAULTS keys that hold their default value."""
    if isinstance(config, dict):
        return {k: _without_newer_keras_defaults(v) for k, v in config.items()
                if not (k in NEWER_KERAS_DEFAULTS and v == NEWER_KERAS_DEFAULTS[k])}
    if isinstance(config, list):
        return [_without_newer_keras_defaults(v) for v in config]
    return config


def _load_for_older_keras(path: Path) -> keras.Model:
    """Load a .keras archive from a copy whose config.json leaves out what only newer Keras reads."""
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(path) as archive:
        copy = Path(tmp) / path.name
        with zipfile.ZipFile(copy, "w") as out:
            for item in archive.infolist():
                data = archive.read(item.filename)
                if item.filename == "config.json":
                    data = json.dumps(_without_newer_keras_defaults(json.loads(data))).encode()
                out.writestr(item, data)
        return keras.saving.load_model(copy, safe_mode=True, compile=False)


def load_model(path: str | Path) -> tuple[keras.Model, ModelMeta]:
    """Load a model saved by `save_model` in Keras's safe mode; return it with its sidecar.

    A model saved with a newer Keras than this one (the shipped models on Colab's older Keras) is
    loaded again without the config keys only newer Keras knows, when they hold their defaults.
    """
    meta = read_model_meta(path)
    try:
        model = keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as e:  # Keras raises many types for a damaged archive
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if meta.keras_version != keras.__version__:
            try:
                return _load_for_older_keras(Path(path)), meta
            except Exception:
                pass
            raise AebonetError(f"{path}: could not load the model ({reason}); it was saved with Keras "
                               f"{meta.keras_version} and this is Keras {keras.__version__}: "
                               f"install Keras {meta.keras_version} or newer") from None
        raise AebonetError(f"{path}: could not load the model ({reason}); "
                           "the file is damaged or not an aebonet model") from None
    check_input_size(path, meta, [tuple(t.shape[1:3]) for t in model.inputs if len(t.shape) == 4])
    return model, meta


def saved_image_shapes(path: str | Path) -> list[tuple]:
    """Return the (H, W) of a .keras archive's image inputs, read from its config.json without building the model."""
    try:
        with zipfile.ZipFile(path) as archive:
            layers = json.loads(archive.read("config.json"))["config"]["layers"]
        shapes = [layer["config"].get("batch_shape") for layer in layers if layer["class_name"] == "InputLayer"]
    except (KeyError, TypeError, ValueError, OSError, zipfile.BadZipFile):  # another layout: the loaded model is checked
        return []
    return [tuple(shape[1:3]) for shape in shapes if shape and len(shape) == 4]


def check_input_size(path: str | Path, meta: ModelMeta, shapes: list[tuple]) -> None:
    """Refuse a sidecar whose image_size is not the size of the model's image input."""
    for height, width in shapes:
        if None not in (height, width) and (height, width) != (meta.image_size, meta.image_size):
            raise AebonetError(f"{Path(path).with_suffix('.json')}: says image_size {meta.image_size!r} but "
                               f"{Path(path).name} reads {height}x{width} images; restore the sidecar saved "
                               "with the model (edited, or another model's)")
