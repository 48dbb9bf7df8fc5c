"""Real radiographs in: reading datasets, decoding images, checking every input (chapter 2).

`load_data` is the one call a chapter makes. It reads a dataset in whichever layout
users download (Kaggle RSNA, the official RSNA challenge release, any CSV, a folder
of images, or the synthetic phantom), checks every row and every image, builds the
preprocessing cache once, and returns a `BoneAgeData` with the arrays and the splits.

Bad input never reaches training: by default `load_data` stops with one error that
lists every problem found; with `skip_bad=True` it leaves those rows out and writes
the full list to `bad_inputs_report.csv` in the cache folder.

About the RSNA test labels: RSNA published two versions of the test ground truth
(they differ by about 2.8 months on average). The loader reads whichever file it is
given; keep only the version you mean to compare against in the dataset folder.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import pandas as pd

from . import splits as splits_lib
from .errors import AebonetError
from .files import atomic_write
from .preprocess import PreprocessParams, preprocess

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm", ".dicom")
DICOM_SUFFIXES = (".dcm", ".dicom")
MAX_AGE_MONTHS = 240
REPORT_NAME = "bad_inputs_report.csv"
MAX_LISTED_PROBLEMS = 20
LAYOUTS = ("auto", "kaggle", "official", "csv", "folder")
SEX_VALUES = {"true": 1.0, "false": 0.0, "1": 1.0, "0": 0.0, "1.0": 1.0, "0.0": 0.0,
              "m": 1.0, "f": 0.0, "male": 1.0, "female": 0.0, "boy": 1.0, "girl": 0.0}


# ---------------------------------------------------------------- decoding one image

def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read a PNG, JPEG, TIFF or DICOM radiograph as float32 (H, W) in [0, 1], bright bone on dark."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise AebonetError(f"{path}: cannot read the file ({e.strerror}); check that it exists and is readable") from None
    return decode_image(data, path.name)


def decode_image(data: bytes, name: str) -> np.ndarray:
    """Decode the bytes of an image file, choosing DICOM or picture decoding by content and name."""
    if not data:
        raise AebonetError(f"{name}: empty file (0 bytes); re-export or remove it")
    if data[128:132] == b"DICM" or name.lower().endswith(DICOM_SUFFIXES):
        return decode_dicom(data, name)
    return decode_picture(data, name)


def decode_picture(data: bytes, name: str) -> np.ndarray:
    """Decode a PNG, JPEG or TIFF (8- or 16-bit, gray, RGB or RGBA) to float32 gray in [0, 1]."""
    check_complete(data, name)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise AebonetError(f"{name}: cannot decode the image (damaged, or not a PNG/JPEG/TIFF); re-export or remove it")
    return scale_to_unit(to_gray(image), name)


def check_complete(data: bytes, name: str) -> None:
    """Raise AebonetError when a PNG or JPEG file stops before its end marker (a truncated download)."""
    if data.startswith(b"\x89PNG") and b"IEND" not in data[-64:]:
        raise AebonetError(f"{name}: truncated PNG (no end marker); download or copy the file again")
    if data.startswith(b"\xff\xd8") and b"\xff\xd9" not in data[-1024:]:
        raise AebonetError(f"{name}: truncated JPEG (no end marker); download or copy the file again")


def to_gray(image: np.ndarray) -> np.ndarray:
    """Turn an OpenCV BGR or BGRA image into one gray channel (a transparency channel is ignored)."""
    if image.ndim == 2:
        return image
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
    if image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return image[:, :, 0]


def scale_to_unit(image: np.ndarray, name: str) -> np.ndarray:
    """Scale 8-bit or 16-bit grey levels to float32 in [0, 1].

    A 16-bit file often holds 10-, 12- or 14-bit detector data; dividing by 65535 would
    leave such an image almost black, so it is divided by the largest value of the
    smallest bit depth (at least 8 bits) that holds its brightest pixel.
    """
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255
    if image.dtype == np.uint16:
        bits = max(8, int(image.max()).bit_length())
        return image.astype(np.float32) / (2 ** bits - 1)
    raise AebonetError(f"{name}: pixel type {image.dtype} not supported; save it as an 8- or 16-bit PNG")


def decode_dicom(data: bytes, name: str) -> np.ndarray:
    """Decode a DICOM radiograph: rescale slope and intercept, VOI window, MONOCHROME1 inverted."""
    import pydicom

    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        pixels = ds.pixel_array.astype(np.float64)
    except Exception as e:  # pydicom raises many types; any of them means the file cannot be used
        raise AebonetError(f"{name}: cannot decode DICOM pixel data ({type(e).__name__}: {e}); compressed files need "
                           "`pip install pylibjpeg pylibjpeg-libjpeg`, or export the image uncompressed") from None
    pixels = dicom_gray(pixels, ds, name)
    pixels = pixels * float(ds.get("RescaleSlope", 1) or 1) + float(ds.get("RescaleIntercept", 0) or 0)
    image = apply_window(pixels, ds)
    if ds.get("PhotometricInterpretation", "") == "MONOCHROME1":  # 0 means white: flip to bright bone
        image = 1 - image
    return image.astype(np.float32)


def dicom_gray(pixels: np.ndarray, ds, name: str) -> np.ndarray:
    """Return a DICOM's pixels as one 2-D gray image, averaging colour channels."""
    if pixels.ndim == 3 and int(ds.get("SamplesPerPixel", 1)) == 3:
        return pixels.mean(axis=2)
    if pixels.ndim != 2:
        raise AebonetError(f"{name}: DICOM holds an array of shape {pixels.shape} (several frames?); give one 2-D image per file")
    return pixels


def first_value(value) -> float:
    """Return a DICOM number, or the first of several (window tags may hold a list)."""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0]
    return float(value)


def apply_window(pixels: np.ndarray, ds) -> np.ndarray:
    """Map pixel values to [0, 1] through the DICOM VOI window, or the image's own range without one.

    The window (centre c, width w) is the grey range the radiographer chose to show;
    values below it become 0 and above it 1, linearly between, as in DICOM PS3.3 C.11.2.1.2.
    """
    if "WindowCenter" in ds and "WindowWidth" in ds and first_value(ds.WindowWidth) > 1:
        c, w = first_value(ds.WindowCenter), first_value(ds.WindowWidth)
        return np.clip((pixels - (c - 0.5)) / (w - 1) + 0.5, 0, 1)
    lo, hi = float(pixels.min()), float(pixels.max())
    return (pixels - lo) / (hi - lo) if hi > lo else np.zeros_like(pixels)


def image_problem(image: np.ndarray) -> str | None:
    """Return why a decoded image cannot be a radiograph (empty or one flat grey), or None when it can."""
    if image.size == 0:
        return "empty image (0 pixels); re-export or remove it"
    if image.max() == image.min():
        return f"constant image (every pixel is {float(image.min()):.3g}): blank or failed export; re-export or remove it"
    return None


def load_image(path: str | os.PathLike, params: PreprocessParams) -> np.ndarray:
    """Read one radiograph and preprocess it like the cache does: float32 (S, S) in [0, 1]."""
    image = read_image(path)
    problem = image_problem(image)
    if problem:
        raise AebonetError(f"{path}: {problem}")
    return preprocess(image, params)


def list_images(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Expand files and folders into the sorted list of image files they name."""
    found = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if is_image_file(p))
        elif path.is_file():
            found.append(path)
        else:
            raise AebonetError(f"{path}: no such file or folder")
    if not found:
        raise AebonetError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {', '.join(map(str, paths))}")
    return found


def is_image_file(path: Path) -> bool:
    """Tell whether a path is a visible image file this library reads."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".") and path.is_file()


# ---------------------------------------------------------------- label files

@dataclass(frozen=True)
class LabelFormat:
    """Describe one kind of label file: its columns, the set it belongs to and where its images lie."""

    name: str
    id_col: str
    age_col: str | None
    sex_col: str | None
    split: str
    image_dirs: tuple[str, ...]

    @property
    def columns(self) -> list[str]:
        """Return the columns this kind of file must have."""
        return [c for c in (self.id_col, self.age_col, self.sex_col) if c]


KAGGLE_TRAIN = LabelFormat("Kaggle/RSNA training", "id", "boneage", "male", "train", ("boneage-training-dataset",))
KAGGLE_TEST = LabelFormat("Kaggle test (no labels)", "Case ID", None, "Sex", "test", ("boneage-test-dataset",))
OFFICIAL_VAL = LabelFormat("RSNA validation", "Image ID", "Bone Age (months)", "male", "val", ("boneage-validation-dataset*",))
OFFICIAL_TEST = LabelFormat("RSNA test ground truth", "Case ID", "Ground truth bone age (months)", "Sex", "test",
                            ("boneage-test-dataset",))


def cell_text(value) -> str:
    """Return a spreadsheet cell as text: '' when empty, whole-number floats without '.0'."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def read_label_file(path: Path) -> pd.DataFrame:
    """Read a CSV or Excel label file with every cell as text and tidy column names."""
    try:
        if path.suffix.lower() in (".xlsx", ".xls"):
            table = pd.read_excel(path, dtype=object).map(cell_text)
        else:
            table = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except Exception as e:  # pandas raises many types for a broken file
        raise AebonetError(f"{path}: cannot read the label file ({type(e).__name__}: {e}); save it as CSV with a header row") from None
    table.columns = [str(c).strip() for c in table.columns]
    return table


def require_columns(table: pd.DataFrame, columns: Sequence[str], path: Path) -> None:
    """Raise AebonetError naming the expected and the found headers when a column is missing."""
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise AebonetError(f"{path}: missing column(s) {', '.join(map(repr, missing))}; expected {', '.join(columns)}; "
                           f"found {', '.join(map(str, table.columns)) or 'no header'}; fix the header row")


def label_format(path: Path) -> LabelFormat | None:
    """Tell which kind of label file `path` is: Kaggle files by name, official RSNA files by header; None if none."""
    name = path.name.lower()
    if name == "boneage-training-dataset.csv":
        return KAGGLE_TRAIN
    if name == "boneage-test-dataset.csv":
        return KAGGLE_TEST
    if "ground truth" in name:
        return OFFICIAL_TEST
    header = set(read_label_file(path).columns)  # official file names vary between downloads: known by header
    if OFFICIAL_TEST.age_col in header:
        return OFFICIAL_TEST
    if OFFICIAL_VAL.id_col in header:
        return OFFICIAL_VAL  # its other columns are checked when it is read
    return None


def label_files(root: Path) -> list[Path]:
    """Return the CSV and Excel files in a dataset folder and its sub-folders (two levels)."""
    found = [p for pattern in ("*", "*/*") for suffix in (".csv", ".xlsx")
             for p in root.glob(pattern + suffix) if not p.name.startswith((".", "~$"))]
    return sorted(p for p in found if p.name != REPORT_NAME)


# ---------------------------------------------------------------- finding images

def index_images(folders: Sequence[Path]) -> dict[str, list[Path]]:
    """Map each image file name without its suffix (the id) to the files that have it."""
    index: dict[str, list[Path]] = {}
    for folder in folders:
        for parent, dirs, files in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for f in sorted(files):
                if f.lower().endswith(IMAGE_SUFFIXES) and not f.startswith("."):
                    index.setdefault(os.path.splitext(f)[0], []).append(Path(parent, f))
    return index


def image_folders(label_path: Path, fmt: LabelFormat) -> list[Path]:
    """Return the folders that hold the images of a label file: its named folders, else its own folder."""
    folders = sorted(p for pattern in fmt.image_dirs for p in label_path.parent.glob(pattern) if p.is_dir())
    return folders or [label_path.parent]


def relative(path: Path, root: Path) -> str:
    """Return `path` relative to `root` when it lies inside, for short messages."""
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)


# ---------------------------------------------------------------- one table of rows

def labeled_rows(table: pd.DataFrame, fmt: LabelFormat, file: str) -> pd.DataFrame:
    """Return the standard row table of a label file: id, age and sex as text, set, file, row."""
    return pd.DataFrame({
        "id": table[fmt.id_col].astype(str).str.strip(),
        "age_text": table[fmt.age_col] if fmt.age_col else None,
        "sex_text": table[fmt.sex_col] if fmt.sex_col else None,
        "split": fmt.split,
        "file": file,
        "row": np.arange(len(table)) + 2,  # line 1 is the header
        "path": "",
        "problem": "",
    })


def attach_images(rows: pd.DataFrame, index: dict[str, list[Path]], where: str) -> pd.DataFrame:
    """Fill each row's image path from the index, noting ids with no image or several images."""
    rows = rows.copy()
    found = [index.get(i, []) for i in rows["id"]]
    rows["path"] = [str(paths[0]) if len(paths) == 1 else "" for paths in found]
    rows["problem"] = [match_problem(i, paths, where) for i, paths in zip(rows["id"], found)]
    return rows


def match_problem(image_id: str, paths: list[Path], where: str) -> str:
    """Return why an id's image cannot be used: no file found, or several; '' when there is exactly one."""
    if not paths:
        return f"no image file for id {image_id!r} in {where}"
    if len(paths) > 1:
        return f"{len(paths)} image files for id {image_id!r} ({', '.join(p.name for p in paths)}); keep one"
    return ""


def orphan_images(index: dict[str, list[Path]], ids: set[str], root: Path) -> list[Problem]:
    """Return a problem for every image file whose id has no row in the label file."""
    return [Problem(relative(p, root), None, "image file has no row in the label file; add a row or remove the file")
            for i in sorted(set(index) - ids) for p in index[i]]


def rows_from_label_file(path: Path, fmt: LabelFormat, root: Path) -> tuple[pd.DataFrame, list[Problem]]:
    """Read one label file, match its ids to image files, and list images that have no row."""
    table = read_label_file(path)
    require_columns(table, fmt.columns, path)
    folders = image_folders(path, fmt)
    index = index_images(folders)
    rows = labeled_rows(table, fmt, relative(path, root))
    rows = attach_images(rows, index, ", ".join(relative(f, root) + "/" for f in folders))
    return rows, orphan_images(index, set(rows["id"]), root)


def rows_from_csv(csv: Path, image_col: str, age_col: str, sex_col: str | None, root: Path) -> pd.DataFrame:
    """Read a generic label CSV whose image column holds file paths (relative to the CSV) or ids."""
    fmt = LabelFormat("CSV", image_col, age_col, sex_col, "", ())
    table = read_label_file(csv)
    require_columns(table, fmt.columns, csv)
    rows = labeled_rows(table, fmt, relative(csv, root))
    rows = attach_images(rows, csv_image_index(csv.parent, rows["id"]), relative(csv.parent, root) + "/")
    return rows.assign(id=[strip_image_suffix(name) for name in rows["id"]])


def csv_image_index(folder: Path, names: Sequence[str]) -> dict[str, list[Path]]:
    """Map each name in a CSV's image column to its file: a path relative to `folder`, or an id found under it."""
    paths = {n: [folder / n] for n in names if n.lower().endswith(IMAGE_SUFFIXES) and (folder / n).is_file()}
    if all(n.lower().endswith(IMAGE_SUFFIXES) for n in names):
        return paths
    return {**index_images([folder]), **paths}


def strip_image_suffix(name: str) -> str:
    """Return an image name without its file suffix ('12.png' -> '12'), other names unchanged."""
    return os.path.splitext(name)[0] if name.lower().endswith(IMAGE_SUFFIXES) else name


def rows_from_folder(folder: Path) -> pd.DataFrame:
    """Return rows without labels for every image in a folder (for prediction)."""
    paths = list_images([folder])
    return pd.DataFrame({
        "id": [str(p.relative_to(folder).with_suffix("").as_posix()) for p in paths],
        "age_text": None, "sex_text": None, "split": "test", "file": "", "row": 0,
        "path": [str(p) for p in paths], "problem": "",
    })


# ---------------------------------------------------------------- checking labels

@dataclass(frozen=True)
class Problem:
    """One bad input: the file it is in, the row of the label file (if any), and why it is bad."""

    file: str
    row: int | None
    reason: str

    def line(self) -> str:
        """Return the problem as one line: 'file row N: reason'."""
        where = f"{self.file} row {self.row}" if self.row else self.file
        return f"{where}: {self.reason}"


def parse_age(text) -> tuple[float, str]:
    """Return (bone age in months, problem); NaN and no problem when the file has no age column."""
    if text is None:
        return np.nan, ""
    text = str(text).strip()
    try:
        months = float(text)
    except ValueError:
        return np.nan, f"bone age {text!r} is not a number of months" if text else "bone age missing"
    if not 0 <= months <= MAX_AGE_MONTHS:
        return np.nan, f"bone age {months:g} months is outside 0-{MAX_AGE_MONTHS}; check the unit (months) and the value"
    return months, ""


def parse_sex(text) -> tuple[float, str]:
    """Return (1.0 boy / 0.0 girl, problem); NaN and no problem when the file has no sex column."""
    if text is None:
        return np.nan, ""
    value = SEX_VALUES.get(str(text).strip().lower())
    if value is None:
        return np.nan, f"sex value {str(text)!r} not recognized; use True/False, 1/0 or M/F"
    return value, ""


def duplicate_problems(rows: pd.DataFrame) -> list[str]:
    """Return, for each row, a problem when its id appears in more than one row."""
    where = rows["file"] + " row " + rows["row"].astype(str)
    places = where.groupby(rows["id"]).agg(list)
    return [f"id {i!r} appears {len(places[i])} times ({'; '.join(places[i])}); keep one row"
            if len(places[i]) > 1 else "" for i in rows["id"]]


def check_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """Parse ages and sexes and note every row problem: bad label, unknown sex, duplicate id."""
    rows = rows.reset_index(drop=True)
    ages = [parse_age(t) for t in rows["age_text"]]
    sexes = [parse_sex(t) for t in rows["sex_text"]]
    found = zip(rows["problem"], [p for _, p in ages], [p for _, p in sexes], duplicate_problems(rows))
    return rows.assign(
        boneage=np.array([a for a, _ in ages], dtype=np.float32),
        male=np.array([s for s, _ in sexes], dtype=np.float32),
        problem=["; ".join(p for p in reasons if p) for reasons in found],
    )


def row_problems(rows: pd.DataFrame) -> list[Problem]:
    """Return the problems noted in the rows' problem column."""
    bad = rows[rows["problem"] != ""]
    return [Problem(f, int(r) or None, p) for f, r, p in zip(bad["file"], bad["row"], bad["problem"])]


# ---------------------------------------------------------------- a whole dataset folder

@dataclass
class RawDataset:
    """Hold a dataset folder as read: one checked row per image, and the problems found."""

    root: Path
    layout: str
    rows: pd.DataFrame
    problems: list[Problem] = field(default_factory=list)

    @property
    def good_rows(self) -> pd.DataFrame:
        """Return the rows without a problem, ready for the cache."""
        return self.rows[self.rows["problem"] == ""].reset_index(drop=True)


def find_label_files(root: Path) -> dict[LabelFormat, list[Path]]:
    """Group the label files of a dataset folder by kind, ignoring CSVs of other kinds."""
    found: dict[LabelFormat, list[Path]] = {}
    for path in label_files(root):
        fmt = label_format(path)
        if fmt:
            found.setdefault(fmt, []).append(path)
    return found


def choose_layout(found: dict[LabelFormat, list[Path]], root: Path) -> str:
    """Pick the layout of a dataset folder from the label files in it."""
    if OFFICIAL_VAL in found or OFFICIAL_TEST in found:
        return "official"
    if KAGGLE_TRAIN in found or KAGGLE_TEST in found:
        return "kaggle"
    others = label_files(root)
    if others:
        raise AebonetError(f"{root}: no known label file among {', '.join(p.name for p in others[:5])}; expected Kaggle "
                           "(id, boneage, male) or official RSNA headers, or use layout='csv' (--layout csv) with column names")
    return "folder"


def layout_formats(layout: str, found: dict[LabelFormat, list[Path]], root: Path) -> list[LabelFormat]:
    """Return the kinds of label file a layout reads, checking that the folder has them."""
    if layout == "kaggle":
        wanted = [KAGGLE_TRAIN] if KAGGLE_TRAIN in found else [KAGGLE_TEST]
    else:
        wanted = [f for f in (KAGGLE_TRAIN, OFFICIAL_VAL, OFFICIAL_TEST) if f in found]
    wanted = [f for f in wanted if f in found]
    if not wanted:
        expected = "boneage-training-dataset.csv" if layout == "kaggle" else "the RSNA validation CSV or test ground truth"
        raise AebonetError(f"{root}: layout {layout!r} needs {expected}; none found (pass --layout auto, or check the folder)")
    for fmt in wanted:
        if len(found[fmt]) > 1:
            raise AebonetError(f"{root}: several {fmt.name} files ({', '.join(relative(p, root) for p in found[fmt])}); "
                               "keep only the one you mean (RSNA published two test ground truths)")
    return wanted


def read_layout(root: Path, layout: str) -> RawDataset:
    """Read a Kaggle or official RSNA dataset folder into checked rows and problems."""
    found = find_label_files(root)
    if layout == "auto":
        layout = choose_layout(found, root)
    if layout == "folder":
        return RawDataset(root, layout, check_rows(rows_from_folder(root)))
    tables, problems = [], []
    for fmt in layout_formats(layout, found, root):
        rows, orphans = rows_from_label_file(found[fmt][0], fmt, root)
        tables.append(rows.assign(split="") if layout == "kaggle" and fmt is KAGGLE_TRAIN else rows)
        problems += orphans
    rows = check_rows(pd.concat(tables, ignore_index=True))
    return RawDataset(root, layout, rows, row_problems(rows) + problems)


def read_dataset(source: str | os.PathLike, layout: str = "auto", csv: str | os.PathLike | None = None,
                 image_col: str = "image", age_col: str = "boneage", sex_col: str | None = None) -> RawDataset:
    """Read and check a dataset folder (or a CSV file) without decoding images."""
    source = Path(source).expanduser()
    if layout not in LAYOUTS:
        raise AebonetError(f"layout {layout!r}: choose one of {', '.join(LAYOUTS)}")
    if not source.exists():
        raise AebonetError(f"{source}: no such dataset folder; give a folder, a cache folder or phantom[:N]")
    if layout == "csv" or source.is_file():
        return read_csv_dataset(source, csv, image_col, age_col, sex_col)
    return read_layout(source, layout)


def read_csv_dataset(source: Path, csv, image_col: str, age_col: str, sex_col: str | None) -> RawDataset:
    """Read a generic CSV dataset: the CSV is `csv`, `source` itself, or the only CSV in `source`."""
    csv = Path(csv) if csv else source if source.is_file() else only_csv(source)
    root = csv.parent
    rows = check_rows(rows_from_csv(csv, image_col, age_col, sex_col, root))
    return RawDataset(root, "csv", rows, row_problems(rows))


def only_csv(folder: Path) -> Path:
    """Return the one CSV file in a folder, or say which to choose."""
    found = sorted(folder.glob("*.csv"))
    if len(found) != 1:
        raise AebonetError(f"{folder}: layout csv needs one label file, found {len(found)}; name it with csv=... (--csv FILE)")
    return found[0]


# ---------------------------------------------------------------- reporting problems

def problems_message(problems: Sequence[Problem], where: str, report: Path | None) -> str:
    """Return one error listing every problem (at most MAX_LISTED_PROBLEMS lines, then a count)."""
    lines = [p.line() for p in problems[:MAX_LISTED_PROBLEMS]]
    if len(problems) > MAX_LISTED_PROBLEMS:
        lines.append(f"... and {len(problems) - MAX_LISTED_PROBLEMS} more")
    full = f" (full list in {report})" if report else ""
    head = (f"{len(problems)} bad input(s) in {where}{full}: fix them, or pass skip_bad=True (--skip-bad) "
            "to leave those rows out")
    return "\n  ".join([head, *lines])


def write_report(folder: Path, problems: Sequence[Problem]) -> Path | None:
    """Write every problem to bad_inputs_report.csv in `folder` (removing an old one when there are none)."""
    path = folder / REPORT_NAME
    if not problems:
        path.unlink(missing_ok=True)
        return None
    table = pd.DataFrame([(p.file, p.row or "", p.reason) for p in problems], columns=["file", "row", "reason"])
    with atomic_write(path) as f:
        table.to_csv(f, index=False)
    return path


def read_report(folder: Path) -> list[Problem]:
    """Read the problems a cache folder's bad_inputs_report.csv lists (none when it is absent)."""
    path = folder / REPORT_NAME
    if not path.is_file():
        return []
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    return [Problem(f, int(r) if r else None, reason) for f, r, reason in table.itertuples(index=False)]


# ---------------------------------------------------------------- the data a chapter trains on

@dataclass
class BoneAgeData:
    """Hold a prepared dataset: images, labels, ids and the train / val / test split."""

    X: np.ndarray  # uint8 (N, S, S) memmap from the cache
    y: np.ndarray  # float32 (N,) bone age in months; NaN where unknown
    male: np.ndarray  # float32 (N,) 1.0 boy, 0.0 girl, NaN unknown
    ids: np.ndarray  # str (N,)
    splits: dict[str, np.ndarray]  # "train" / "val" / "test" -> indices into the arrays
    params: PreprocessParams
    source: str
    cache_dir: Path | None = None
    problems: list[Problem] = field(default_factory=list)  # inputs left out (skip_bad)
    seed: int = 0  # the seed that drew the split (and, for the phantom, the images)
    split_kind: str = "paper"  # how the split was made: "paper", "stratified" or "official"

    def __len__(self) -> int:
        """Return the number of images."""
        return len(self.ids)

    @property
    def image_size(self) -> int:
        """Return the side of the square images, in pixels."""
        return self.params.image_size

    def images(self, split: str = "all") -> np.ndarray:
        """Return a split's images as float32 (n, S, S, 1) in [0, 1] (loaded into memory)."""
        index = self.indices(split)
        return (np.asarray(self.X[index], dtype=np.float32) / 255)[..., None]

    def indices(self, split: str) -> np.ndarray:
        """Return the indices of a split ('train', 'val', 'test' or 'all')."""
        if split == "all":
            return np.arange(len(self))
        if split not in self.splits:
            raise AebonetError(f"split {split!r}: choose one of {', '.join([*self.splits, 'all'])}")
        return self.splits[split]


def age_histogram(y: np.ndarray, band_years: int = 2, width: int = 40) -> list[str]:
    """Return text bars counting bone ages in bands of `band_years` years."""
    known = y[~np.isnan(y)] / 12
    if not len(known):
        return ["bone age: unknown (unlabeled images)"]
    edges = np.arange(0, 20 + band_years, band_years)
    counts = np.histogram(np.clip(known, 0, 19.99), edges)[0]
    return ["bone age (years):"] + [f"  {a:>2}-{a + band_years:<2} {c:>6} {'#' * round(width * c / counts.max())}"
                                    for a, c in zip(edges[:-1], counts)]


def sex_line(male: np.ndarray) -> str:
    """Return the numbers of boys and girls, and of children of unknown sex."""
    boys, girls = int(np.sum(male == 1)), int(np.sum(male == 0))
    unknown = len(male) - boys - girls
    share = f" ({100 * boys / (boys + girls):.0f}% boys)" if boys + girls else ""
    return f"sex: {boys} boys, {girls} girls{share}" + (f", {unknown} unknown" if unknown else "")


def describe(data: BoneAgeData) -> str:
    """Return a short summary of a prepared dataset: sizes, splits, sexes, ages and problems."""
    report = f", listed in {data.cache_dir / REPORT_NAME}" if data.cache_dir else ""
    return "\n".join([
        f"{len(data)} images of {data.image_size}x{data.image_size} pixels from {data.source}"
        + (f" (cache: {data.cache_dir})" if data.cache_dir else ""),
        f"splits ({data.split_kind}): " + ", ".join(f"{name} {len(index)}" for name, index in data.splits.items()),
        sex_line(data.male),
        *age_histogram(data.y),
        f"problems: {len(data.problems)} input(s) left out{report}" if data.problems else "problems: none",
    ])


def is_phantom(source) -> bool:
    """Tell whether a data source names the phantom ('phantom' or 'phantom:N')."""
    return isinstance(source, str) and (source == "phantom" or source.startswith("phantom:"))


def phantom_count(source: str, default: int) -> int:
    """Return N from 'phantom:N' (or the default for 'phantom')."""
    text = source.partition(":")[2] or str(default)
    if not text.isdigit() or int(text) < 1:
        raise AebonetError(f"data source {source!r}: write phantom or phantom:N with N a whole number above 0")
    return int(text)


def phantom_version() -> str:
    """Return a short hash of the phantom's code, so a changed phantom never reuses old images."""
    from . import phantom

    return hashlib.sha256(Path(phantom.__file__).read_bytes()).hexdigest()[:8]


def phantom_dataset(n: int, image_size: int, seed: int, root: Path, progress: bool = True) -> Path:
    """Write N phantom radiographs once in the Kaggle layout under the cache root; return the folder."""
    from . import phantom

    folder = root / "datasets" / f"phantom-n{n}-s{image_size}-seed{seed}-v{phantom_version()}"
    if (folder / KAGGLE_TRAIN.image_dirs[0]).is_dir() and (folder / "boneage-training-dataset.csv").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        phantom.write_dataset(tmp, n, size=image_size, seed=seed, progress=progress)
        os.replace(tmp, folder)  # whole dataset or nothing: a killed run leaves only a hidden temporary folder
    except OSError:
        if not folder.is_dir():  # another process finishing the same dataset first is fine
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def default_cache_dir(raw: RawDataset, params: PreprocessParams, root: Path) -> Path:
    """Return the cache folder for a dataset and preprocessing: named after both, under the cache root."""
    key = hashlib.sha256(f"{raw.root.resolve()}|{raw.layout}".encode()).hexdigest()[:8]
    return root / "prepared" / f"{raw.root.name}-{key}-{params.tag()}"


def chosen_split_kind(split_kind: str, stratify: bool) -> str:
    """Return the split kind asked for, `stratify=True` being the older way to ask for 'stratified'."""
    splits_lib.check_split_kind(split_kind)
    if stratify and split_kind == "official":
        raise AebonetError("stratify=True and split_kind='official' contradict each other; give split_kind alone")
    return "stratified" if stratify else split_kind


def make_splits(table: pd.DataFrame, ages: np.ndarray, fractions, seed: int, split_kind: str,
                source: str) -> dict[str, np.ndarray]:
    """Return the split asked for: the paper's seeded random one, stratified by age, or the official RSNA sets."""
    return splits_lib.make_split(split_kind, len(table), fractions, seed, ages=ages, split_names=table["split"],
                                 where=source)


def check_official_sets(rows: pd.DataFrame, split_kind: str, source: str) -> None:
    """Refuse an official split of rows that carry no official RSNA set, before any image is decoded."""
    if split_kind == "official":
        splits_lib.official_split(rows["split"], where=source)


def data_from_cache(cache, source: str, fractions, seed: int, split_kind: str, problems) -> BoneAgeData:
    """Return the BoneAgeData of an opened cache, with its splits checked to be disjoint."""
    y = cache.table["boneage"].to_numpy(np.float32)
    ids = cache.table["id"].to_numpy(str)
    splits = make_splits(cache.table, y, fractions, seed, split_kind, source)
    splits_lib.check_disjoint(splits, ids)
    return BoneAgeData(X=cache.X, y=y, male=cache.table["male"].to_numpy(np.float32), ids=ids, splits=splits,
                       params=cache.params, source=source, cache_dir=cache.path, problems=list(problems), seed=seed,
                       split_kind=split_kind)


def image_problems(raw: RawDataset, bad: pd.DataFrame) -> list[Problem]:
    """Return a problem, with its label file row, for each image the cache could not use."""
    row_of = dict(zip(raw.good_rows["path"], raw.good_rows["row"]))
    return [Problem(relative(Path(p), raw.root), int(row_of[p]) or None, reason) for p, reason in zip(bad["path"], bad["problem"])]


def stop_on_problems(problems: list[Problem], where: str, report: Path | None, skip_bad: bool, n_good: int) -> None:
    """Raise one AebonetError listing the problems, unless skip_bad; and always when nothing usable is left."""
    if problems and not skip_bad:
        raise AebonetError(problems_message(problems, where, report))
    if n_good == 0:
        raise AebonetError(f"{where}: no usable image (problems listed in {report}); check the dataset folder")


def load_raw(raw: RawDataset, params: PreprocessParams, cache_dir: Path, skip_bad: bool, workers: int | None,
             progress: bool):
    """Build (or reuse) the cache of a checked dataset and stop on problems unless skip_bad; return cache, problems."""
    from . import cache as cache_lib  # the cache decodes images with this module's read functions

    cache = cache_lib.build_cache(raw.good_rows, params, cache_dir, source=str(raw.root), workers=workers, progress=progress)
    problems = raw.problems + image_problems(raw, cache.bad)
    report = write_report(cache_dir, problems)
    stop_on_problems(problems, str(raw.root), report, skip_bad, len(cache.table))
    return cache, problems


def open_prepared(source: Path, image_size: int | None, skip_bad: bool):
    """Open a cache folder made by `aebonet prepare`, checking its image size and its problems."""
    from . import cache as cache_lib

    cache = cache_lib.open_cache(source)
    if image_size is not None and cache.params.image_size != image_size:
        raise AebonetError(f"{source}: the cache holds {cache.params.image_size}-pixel images but {image_size} were asked; "
                           f"pass --size {cache.params.image_size}, or prepare a new cache with --size {image_size}")
    problems = read_report(source)
    stop_on_problems(problems, str(source), source / REPORT_NAME, skip_bad, len(cache.table))
    return cache, problems


def load_data(source: str | os.PathLike, image_size: int | None = 256, seed: int = 0,
              split: Sequence[float] = (0.7, 0.15, 0.15), split_kind: str = "paper", skip_bad: bool = False,
              cache_root: str | os.PathLike | None = None, clahe: bool = False, normalize: bool = False,
              layout: str = "auto", phantom_n: int = 1500, progress: bool = True, stratify: bool = False,
              csv: str | os.PathLike | None = None, image_col: str = "image", age_col: str = "boneage",
              sex_col: str | None = None, cache_dir: str | os.PathLike | None = None,
              workers: int | None = None) -> BoneAgeData:
    """Read, check and cache a dataset, then return its arrays and splits (chapter 2).

    `source` is 'phantom' or 'phantom:N', a dataset folder (Kaggle, official RSNA, a CSV
    with `layout='csv'`, or a folder of unlabeled images), or a cache folder made by
    `aebonet prepare` (which brings its own preprocessing; `image_size=None` accepts
    any size). The cache goes to `cache_dir`, or under `cache_root` (default
    `$AEBONET_CACHE` or ~/.cache/aebonet); a second call with the same arguments only
    checks that nothing changed and opens it.

    `split_kind` says how to split: "paper" (the default, whatever the layout: a random
    split seeded by `seed` with the fractions `split`), "stratified" (the same sizes,
    stratified by age; `stratify=True` says the same) or "official" (the RSNA
    challenge's own sets, for a dataset in the official RSNA layout only).
    """
    from . import cache as cache_lib

    root = cache_lib.cache_root(cache_root)
    split_kind = chosen_split_kind(split_kind, stratify)
    splits_lib.check_fractions(split)
    if not is_phantom(source) and cache_lib.is_cache(source):
        cache, problems = open_prepared(Path(source), image_size, skip_bad)
        return data_from_cache(cache, str(source), split, seed, split_kind, problems)
    params = PreprocessParams(256 if image_size is None else image_size, clahe, normalize)
    params.check()
    folder = source
    if is_phantom(source):
        folder = phantom_dataset(phantom_count(source, phantom_n), params.image_size, seed, root, progress)
    raw = read_dataset(folder, layout, csv, image_col, age_col, sex_col)
    check_official_sets(raw.good_rows, split_kind, str(source))
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir(raw, params, root)
    cache, problems = load_raw(raw, params, cache_dir, skip_bad, workers, progress)
    return data_from_cache(cache, str(source), split, seed, split_kind, problems)
