"""Real radiographs in: reading datasets in every layout (Kaggle, official RSNA, CSV, folder) and checking every row (chapter 2)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from aebonet_lib._engine.files import atomic_write
from aebonet_lib._engine.imagefiles import IMAGE_SUFFIXES, list_images
from aebonet_lib.errors import AebonetError

MAX_AGE_MONTHS = 240
REPORT_NAME = "bad_inputs_report.csv"
MAX_LISTED_PROBLEMS = 20
LAYOUTS = ("auto", "kaggle", "official", "csv", "folder")
SEX_VALUES = {"true": 1.0, "false": 0.0, "1": 1.0, "0": 0.0, "1.0": 1.0, "0.0": 0.0,
              "m": 1.0, "f": 0.0, "male": 1.0, "female": 0.0, "boy": 1.0, "girl": 0.0}


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
    refuse_outside(rows, csv)
    return rows.assign(id=[strip_image_suffix(name) for name in rows["id"]])


def refuse_outside(rows: pd.DataFrame, csv: Path, shown: int = 5) -> None:
    """Refuse image paths that lead outside the CSV's folder (by '..', an absolute path or a symbolic link)."""
    folder = csv.parent.resolve()
    outside = [(r, p) for r, p in zip(rows["row"], rows["path"]) if p and not Path(p).resolve().is_relative_to(folder)]
    if not outside:
        return
    listed = "; ".join(f"row {r}: {relative(Path(p), csv.parent)}" for r, p in outside[:shown])
    more = f"; ... and {len(outside) - shown} more" if len(outside) > shown else ""
    raise AebonetError(f"{csv}: {len(outside)} image path(s) lead outside the CSV's folder {folder} ({listed}{more}); "
                       "put the images (not links to them) in that folder, or the CSV beside them")


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
