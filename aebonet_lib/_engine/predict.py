"""Using a trained regressor: measure it on a split (`evaluate`) and estimate bone age for new images.

Chapter 4 evaluates the models it trains; chapter 6 reads the errors closely.
A model file (RUN/model.keras) carries its preprocessing in model.json beside it,
so new images are prepared exactly like the images it was trained on, and its
calibration in model.trust.json, so every prediction comes with the flags of `trust`.
A shipped model (aebonet_lib/pretrained/NAME/model.keras) is named by NAME alone.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Iterator

import keras
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from aebonet_lib._engine import imagefiles, readers, trust
from aebonet_lib._engine.files import atomic_write, write_json
from aebonet_lib._engine.modelfiles import (
    ModelMeta,
    check_input_size,
    load_model,
    quiet_input_structure,
    read_model_meta,
    saved_image_shapes,
)
from aebonet_lib._engine.records import read_record
from aebonet_lib.data import loading
from aebonet_lib.data.loading import BoneAgeData
from aebonet_lib.data.preprocess import PreprocessParams, to_float, to_uint8
from aebonet_lib.errors import AebonetError
from aebonet_lib.evaluation import metrics

SPLITS = ("train", "val", "test", "all")
PRETRAINED_DIR = Path(__file__).resolve().parents[1] / "pretrained"  # shipped models: pretrained/NAME/model.keras
BATCH_SIZE = 64  # images decoded, preprocessed and predicted at a time: memory stays flat however many there are
DISCLAIMER = ("for research and education only, not for clinical use: not a medical device, "
              "not validated for diagnosis or treatment")
# The columns of a --sex-from file (any case): Kaggle's (id, male), the official RSNA validation (Image ID, male)
# and test (Case ID, Sex) files, or any CSV with an id or image column and a sex or male column.
SEX_ID_COLUMNS = tuple(dict.fromkeys(f.id_col.lower() for f in (readers.KAGGLE_TRAIN, readers.OFFICIAL_VAL,
                                                                   readers.OFFICIAL_TEST))) + ("image",)
SEX_COLUMNS = ("male", "sex")


def shipped_models() -> list[str]:
    """Return the sorted names of the shipped models: the folders of PRETRAINED_DIR that hold model.keras."""
    if not PRETRAINED_DIR.is_dir():
        return []
    return sorted(folder.name for folder in PRETRAINED_DIR.iterdir() if (folder / "model.keras").is_file())


def resolve_model(name_or_path: str | Path) -> Path:
    """Return the model file a --model argument names: an existing path, else a shipped model's name."""
    path = Path(name_or_path)
    if path.exists():
        return path
    if str(name_or_path) in shipped_models():
        return PRETRAINED_DIR / str(name_or_path) / "model.keras"
    shipped = ", ".join(shipped_models()) or "no shipped models"
    raise AebonetError(f"--model {name_or_path}: file not found, and not the name of a shipped model ({shipped}); "
                       "give RUN/model.keras written by `aebonet train` or a shipped name")


def is_shipped(model_path: Path) -> bool:
    """Return True when the model file lives among the package's shipped models."""
    return PRETRAINED_DIR.resolve() in Path(model_path).resolve().parents


def load_regressor(model_path: str | Path) -> tuple[keras.Model, ModelMeta]:
    """Load a regressor written by `training.train` (RUN/model.keras) with its model.json."""
    check_regressor(model_path)
    return load_model(model_path)


def check_regressor(model_path: str | Path) -> ModelMeta:
    """Return the model's sidecar, refusing an encoder or an autoencoder where a regressor is needed."""
    meta = read_model_meta(model_path)
    if meta.kind != "regressor":
        raise AebonetError(f"{model_path}: holds a model of kind {meta.kind!r}, not a bone age regressor; "
                           "give RUN/model.keras written by `aebonet train`")
    check_input_size(model_path, meta, saved_image_shapes(model_path))  # before any image is prepared at that size
    return meta


def load_data_for_model(model_path: str | Path, source: str | None = None, skip_bad: bool = False, cache_root=None,
                        progress: bool = True) -> BoneAgeData:
    """Load a dataset (by default the model's training data) as the model was trained: size, preprocessing, split.

    The split is made like the model's (kind, fractions and data seed); `split_index`
    then prefers the split saved in the model's run folder, when there is one.
    """
    model_path = resolve_model(model_path)
    meta = check_regressor(model_path)
    config, params = meta.config, meta.params
    seed = config.seed if meta.seed is None else meta.seed  # the data's seed, which experiments keep fixed across runs
    return loading.load_data(source or training_data(model_path), params.image_size, seed=seed, split=config.split,
                              split_kind=config.split_kind, skip_bad=skip_bad, cache_root=cache_root,
                              clahe=params.clahe, normalize=params.normalize, phantom_n=config.phantom_n,
                              progress=progress)


def recorded_data(model_path: str | Path) -> str | None:
    """Return the data source recorded with a model: its run's config.json, else its model.json; None without one."""
    record = read_record(Path(model_path).parent)
    if record is not None:
        return record.data
    return read_model_meta(model_path).source


def training_data(model_path: str | Path) -> str:
    """Return the data a model was trained on, the default to evaluate it on; refuse one unknown or not here."""
    source = recorded_data(model_path)
    if source is None:
        raise AebonetError(f"{model_path}: records no training data; pass --data with the data to evaluate it on")
    if not loading.is_phantom(source) and not Path(source).exists():
        raise AebonetError(f"{model_path}: trained on {source}, which is not on this machine; "
                           "pass --data with that dataset (or a copy of it)")
    return source


def check_same_preprocessing(data: BoneAgeData, meta: ModelMeta, model_path) -> None:
    """Refuse data prepared differently from the model's training images."""
    expected = meta.params
    if data.params != expected:
        raise AebonetError(f"{model_path}: trained on images prepared as {expected} but the data are {data.params}; "
                           "load them with predict.load_data_for_model")


def split_index(model_path: str | Path, data: BoneAgeData, split: str) -> np.ndarray:
    """Return the indices of `split`: from the run folder's saved splits when it has them, else the data's own."""
    if split not in SPLITS:
        raise AebonetError(f"split {split!r}: choose one of {', '.join(SPLITS)}")
    folder = Path(model_path).parent / "splits"
    if split == "all" or not (folder / f"{split}.txt").is_file():  # a shipped model has no saved splits
        return data.indices(split)
    check_trained_on(model_path, data)
    return loading.load_splits(folder.parent, data.ids)[split]


def saved_split_ids(folder: Path) -> set[str]:
    """Return every image id listed in a run's saved split files (folder/*.txt)."""
    return {line.strip() for path in folder.glob("*.txt") for line in path.read_text().splitlines() if line.strip()}


def check_trained_on(model_path: str | Path, data: BoneAgeData) -> None:
    """Refuse data other than the model's training data: ids missing from its run's saved splits, or another phantom."""
    listed = saved_split_ids(Path(model_path).parent / "splits")
    missing = sorted(listed - set(np.asarray(data.ids, dtype=str)))
    source = recorded_data(model_path)
    if missing:
        why = (f"{len(missing)} of the {len(listed)} images in its run's splits/ are not in it, "
               f"for example id {missing[0]}")
    elif other_phantom(model_path, source, data):
        why = "another phantom draw, whose ids 1..N name other images"
    else:
        return
    hint = f" ({source})" if source else ""
    raise AebonetError(f"{model_path}: trained on other data than {data.source}: {why}; "
                       f"pass --data with the data it was trained on{hint}")


def other_phantom(model_path: str | Path, source: str | None, data: BoneAgeData) -> bool:
    """Tell whether the data are a phantom other than the one the model was trained on (another count or seed)."""
    if not (loading.is_phantom(source) and loading.is_phantom(data.source)):
        return False
    meta = read_model_meta(model_path)
    n = loading.phantom_count(source, meta.config.phantom_n)
    return len(data) != n or (meta.seed is not None and data.seed != meta.seed)


def predict_arrays(model: keras.Model, X: np.ndarray, male: np.ndarray | None = None, batch_size: int = 64,
                   progress: bool = False) -> np.ndarray:
    """Return predicted bone ages (months) for uint8 images (N, S, S), with sex (N,) for a model that takes it."""
    y_hat = []
    for start in tqdm(range(0, len(X), batch_size), desc="predict", unit="batch", disable=not progress):
        x = to_float(X[start:start + batch_size])[..., None]
        inputs = x if male is None else {"image": x, "sex": male[start:start + batch_size, None].astype(np.float32)}
        with quiet_input_structure():
            y_hat.append(np.asarray(model(inputs, training=False)).reshape(-1))
    return np.concatenate(y_hat) if y_hat else np.zeros(0, np.float32)


def prediction_table(ids, y: np.ndarray, y_hat: np.ndarray, male: np.ndarray,
                     flags: pd.DataFrame | None = None) -> pd.DataFrame:
    """Return one row per image: id, true and predicted age in months, sex (M, F or empty), then the `trust` flags.

    With `flags` (from `trust.flag`), `predicted` is the clamped age and `predicted_raw` the network's output.
    """
    sex = np.where(np.isnan(male), "", np.where(male > 0.5, "M", "F"))
    predicted = y_hat if flags is None else flags["predicted"].to_numpy()
    table = pd.DataFrame({"id": ids, "true": y, "predicted": np.round(predicted, 2), "sex": sex})
    return table if flags is None else add_flags(table, flags)


def add_flags(table: pd.DataFrame, flags: pd.DataFrame) -> pd.DataFrame:
    """Return `table` with the flag columns of `trust.flag` appended (the raw prediction rounded to 0.01 month)."""
    table = table.assign(**{column: flags[column].to_numpy() for column in trust.FLAG_COLUMNS})
    table["predicted_raw"] = table["predicted_raw"].round(2)
    table.attrs = dict(flags.attrs)
    return table


def evaluate(model_path: str | Path, data: BoneAgeData, split: str = "test", out_dir: str | Path | None = None,
             n_boot: int = 2000, seed: int = 0, progress: bool = True) -> dict:
    """Measure a model's MAE and MSE in months, with 95 % bootstrap intervals, on one split (chapter 4).

    Writes metrics.json (mae, mse, rmse, bias, mae_ci95, mse_ci95, n, split, model, the
    `trust` counts: flagged, out_of_range, unlike_training, flag_rate, and ci95_note: why
    the intervals mean nothing below metrics.MIN_N_FOR_INTERVAL images, else null) and predictions.csv
    (id, true, predicted, sex and the flag columns) to `out_dir`, by default the model's
    folder. Errors are measured on the prediction clamped to 0-240 months. The split comes
    from the run folder's saved splits; data that lacks their images is refused.
    """
    model_path = resolve_model(model_path)
    if out_dir is None and is_shipped(model_path):
        raise AebonetError(f"{model_path}: a shipped model; give an output folder (--out) for metrics.json "
                           "and predictions.csv")
    model, meta = load_regressor(model_path)
    check_same_preprocessing(data, meta, model_path)
    index = split_index(model_path, data, split)
    y, male = data.y[index], data.male[index]
    if len(index) == 0 or np.isnan(y).any():
        raise AebonetError(f"split {split!r} of {data.source}: {len(index)} images, {int(np.isnan(y).sum())} without a "
                           "bone age; evaluation needs labelled images")
    X = data.X[index]
    y_hat = predict_arrays(model, X, male if meta.sex_input else None, progress=progress)
    flags = trust.flag(model_path, X, y_hat, male, model=model)
    result = (metrics.summarize(y, flags["predicted"].to_numpy(), n_boot=n_boot, seed=seed)
              | {"split": split, "model": str(model_path), "data": data.source} | trust.flag_counts(flags)
              | {"ci95_note": metrics.interval_note(len(index))})
    write_evaluation(Path(out_dir or Path(model_path).parent), result,
                     prediction_table(data.ids[index], y, y_hat, male, flags))
    return result


def write_evaluation(out_dir: Path, result: dict, predictions: pd.DataFrame) -> None:
    """Write metrics.json and predictions.csv into `out_dir`."""
    write_json(out_dir / "metrics.json", result)
    with atomic_write(out_dir / "predictions.csv") as f:
        predictions.to_csv(f, index=False)


def format_metrics(result: dict) -> str:
    """Return MAE and MSE with their 95 % intervals (none below metrics.MIN_N_FOR_INTERVAL images) as a few lines."""
    shown = result["n"] >= metrics.MIN_N_FOR_INTERVAL
    mae_ci = " (95% CI {:.2f}-{:.2f})".format(*result["mae_ci95"]) if shown else ""
    mse_ci = " (95% CI {:.1f}-{:.1f})".format(*result["mse_ci95"]) if shown else ""
    return (f"{result['split']} split, n = {result['n']} images\n"
            f"MAE {result['mae']:.2f} months{mae_ci}\nMSE {result['mse']:.1f} months^2{mse_ci}")


def sex_array(sex: str | None, n: int, meta: dict, model_path) -> np.ndarray | None:
    """Return the sex input (1.0 boy, 0.0 girl) for `n` images, or None for a model without one."""
    if not meta.sex_input:
        return None
    if sex is None:
        raise AebonetError(f"{model_path}: this model was trained with the child's sex as an input; give --sex M or "
                           "--sex F (the same for every image), or --sex-from CSV (an id and a sex column)")
    if str(sex).upper() not in ("M", "F"):
        raise AebonetError(f"sex {sex!r}: give M (boy) or F (girl)")
    return np.full(n, 1.0 if str(sex).upper() == "M" else 0.0, np.float32)


def format_age(months: float) -> str:
    """Return an age in months as whole years and months, such as '10 y 4 m'."""
    years, rest = divmod(int(round(months)), 12)
    return f"{years} y {rest} m"


def ignored_sex_note(model_path: str | Path, sex: str | None, sex_from: str | Path | None) -> str | None:
    """Return the line saying that --sex or --sex-from is ignored by a model without a sex input, else None."""
    if (sex is None and sex_from is None) or check_regressor(resolve_model(model_path)).sex_input:
        return None
    option = "--sex" if sex is not None else "--sex-from"
    return f"note: {option} is ignored: {model_path} takes no sex input (it reads the image alone)"


def column_named(table: pd.DataFrame, names: tuple[str, ...], path: Path) -> str:
    """Return the table's first column whose name, in any case, is one of `names`."""
    lower = {str(column).strip().lower(): column for column in table.columns}
    found = next((lower[name] for name in names if name in lower), None)
    if found is None:
        raise AebonetError(f"{path}: no column named {' or '.join(names)} (found {', '.join(map(str, table.columns))}); "
                           "give a file with an image id column and a sex (M/F) or male (True/False) column")
    return found


def read_sex_file(path: str | Path) -> dict[str, float]:
    """Read image ids (file names without suffix) and sexes (1.0 boy, 0.0 girl) from a CSV or Excel label file."""
    path = Path(path)
    if not path.is_file():
        raise AebonetError(f"--sex-from {path}: no such file; give a CSV with an image id column and a sex column")
    table = readers.read_label_file(path)
    id_col, sex_col = column_named(table, SEX_ID_COLUMNS, path), column_named(table, SEX_COLUMNS, path)
    sexes = {}
    for row, image_id, text in zip(itertools.count(2), table[id_col], table[sex_col]):
        value, problem = readers.parse_sex(text)
        image_id = readers.strip_image_suffix(str(image_id).strip())
        if problem or sexes.get(image_id, value) != value:
            raise AebonetError(f"{path} row {row}: {problem or f'image id {image_id!r} has rows of both sexes; keep one'}")
        sexes[image_id] = value
    return sexes


def sexes_from_file(files: list[Path], path: str | Path, skip_bad: bool) -> tuple[list[Path], np.ndarray, list]:
    """Return the files with a row in the --sex-from file, their sexes, and the problems of those without one."""
    sexes = read_sex_file(path)
    missing = [f for f in files if f.stem not in sexes]
    if missing and not skip_bad:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise AebonetError(f"{path}: no row for image id {missing[0].stem!r} ({missing[0]}){more}; add the rows, "
                           "or pass --skip-bad to skip the images without a sex")
    kept = [f for f in files if f.stem in sexes]
    problems = [readers.Problem(str(f), None, f"no row for image id {f.stem!r} in {path}") for f in missing]
    return kept, np.array([sexes[f.stem] for f in kept], np.float32), problems


def input_sexes(files: list[Path], meta: ModelMeta, model_path, sex: str | None, sex_from, skip_bad: bool) -> tuple:
    """Return the files to predict, their sex input (None for a model without one) and the files skipped for want of it."""
    if sex is not None and sex_from is not None:
        raise AebonetError("--sex and --sex-from: give one (the same sex for every image, or each image's from a file)")
    if meta.sex_input and sex_from is not None:
        return sexes_from_file(files, sex_from, skip_bad)
    return files, sex_array(sex, len(files), meta, model_path), []


def read_input(path: Path, params: PreprocessParams, max_pixels: int, skip_bad: bool, problems: list) -> np.ndarray | None:
    """Read and preprocess one image as the training cache did (uint8 (S, S)); a bad one joins `problems` with skip_bad."""
    try:
        return to_uint8(imagefiles.load_image(path, params, max_pixels))
    except AebonetError as e:
        reason = str(e).removeprefix(f"{path}: ").removeprefix(f"{path.name}: ")
        if not skip_bad:
            raise AebonetError(f"{path}: {reason}, or pass --skip-bad to predict the other images") from None
        problems.append(readers.Problem(str(path), None, reason))
        return None


def image_batches(files: list[Path], male: np.ndarray | None, params: PreprocessParams, batch_size: int,
                  max_pixels: int, skip_bad: bool, problems: list) -> Iterator[tuple[int, list[Path], np.ndarray, np.ndarray | None]]:
    """Yield (files read, good files, their uint8 images (B, S, S), their sexes) one batch at a time."""
    for start in range(0, len(files), batch_size):
        images = [read_input(path, params, max_pixels, skip_bad, problems) for path in files[start:start + batch_size]]
        good = [start + i for i, image in enumerate(images) if image is not None]
        X = np.stack([image for image in images if image is not None]) if good else None
        yield len(images), [files[i] for i in good], X, None if male is None else male[good]


def batch_table(model_path: Path, model: keras.Model, scorer: tuple, files: list[Path], X: np.ndarray,
                male: np.ndarray | None) -> pd.DataFrame:
    """Return one batch's rows: file, age in months and in years and months, sex (for a model that takes it), flags."""
    flags = trust.flag(model_path, X, predict_arrays(model, X, male), male, model=model, scorer=scorer)
    y_hat = flags["predicted"].to_numpy()
    table = pd.DataFrame({"file": [str(f) for f in files], "bone_age_months": np.round(y_hat, 1),
                          "bone_age": [format_age(m) for m in y_hat]})
    if male is not None:
        table["sex"] = np.where(male > 0.5, "M", "F")
    return add_flags(table, flags)


def joined_tables(tables: list[pd.DataFrame], problems: list, n: int) -> pd.DataFrame:
    """Return the batches' rows as one table, its attrs["skipped"] the problems; refuse when no image was usable."""
    if not tables:
        raise AebonetError(f"none of the {n} images could be used; the first: {problems[0].line()}")
    table = pd.concat(tables, ignore_index=True)
    table.attrs = {**tables[0].attrs, "skipped": problems}
    return table


def predict_images(model_path: str | Path, paths: list, sex: str | None = None, progress: bool = True,
                   sex_from: str | Path | None = None, skip_bad: bool = False,
                   max_pixels: int = imagefiles.MAX_PIXELS, batch_size: int = BATCH_SIZE) -> pd.DataFrame:
    """Estimate bone age for image files and folders of images, prepared as the model's training images (chapter 6).

    `model_path` is a model file or the name of a shipped model. A model trained with the
    sex input needs `sex` ("M" or "F", for every image) or `sex_from` (a label file of
    image ids, the file names without suffix, and sexes). Images are read and predicted
    `batch_size` at a time, so memory does not grow with their number. With `skip_bad`,
    unusable images (and images without a sex) are left out and listed, as
    `readers.Problem`s, in the table's attrs["skipped"]. Returns one row per image:
    file, bone age in months (clamped to 0-240) and the same as years and months, sex
    (a sex-input model), then the `trust` flag columns (predicted_raw, out_of_range,
    ood_score, unlike_training, flagged).
    """
    model_path = resolve_model(model_path)
    model, meta = load_regressor(model_path)
    found = imagefiles.list_images(paths)
    files, male, problems = input_sexes(found, meta, model_path, sex, sex_from, skip_bad)
    scorer, tables = trust.load_scorer(model_path, model), []
    with tqdm(total=len(files), desc="predict", unit="image", disable=None if progress else True) as bar:
        for n, batch, X, batch_male in image_batches(files, male, meta.params, batch_size, max_pixels, skip_bad, problems):
            if batch:
                tables.append(batch_table(model_path, model, scorer, batch, X, batch_male))
            bar.update(n)
    return joined_tables(tables, problems, len(found))


def csv_header(model_path: str | Path) -> str:
    """Return the comment lines (#) that open a predictions CSV: the disclaimer, the model and what it learned from."""
    model_path = resolve_model(model_path)
    meta = read_model_meta(model_path)
    lines = [f"aebonet predict: {DISCLAIMER}", f"model: {model_path} (trained on {meta.source or 'unrecorded data'})"]
    lines += [meta.notes["attribution"]] if meta.notes.get("attribution") else []
    return "".join(f"# {line}\n" for line in lines)


def write_predictions(f, table: pd.DataFrame, model_path: str | Path) -> None:
    """Write a predict_images table as CSV to an open text file, after the `csv_header` lines (read it with comment="#")."""
    f.write(csv_header(model_path))
    table.to_csv(f, index=False)


def report_skipped(table: pd.DataFrame, out: Path | None) -> str | None:
    """List the images predict_images skipped, with why, in bad_inputs_report.csv beside `out` (else here); say where.

    Returns the one-line warning, or None when no image was skipped.
    """
    skipped = table.attrs.get("skipped")
    if not skipped:
        return None
    report = readers.write_report(Path(out).parent if out else Path.cwd(), skipped)
    return (f"warning: skipped {len(skipped)} of {len(skipped) + len(table)} images that could not be used; "
            f"the list with reasons is in {report}")
