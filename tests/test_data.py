"""load_data: every layout and format in, BoneAgeData out, every bad input caught and reported."""


import cv2
import numpy as np
import pandas as pd
import pytest
from conftest import SHARED_SAMPLE, blob_image, write_kaggle

from aebonet_lib._engine import cache, imagefiles
from aebonet_lib.data import loading, preprocess
from aebonet_lib.errors import AebonetError

pytestmark = pytest.mark.usefixtures("tmp_cache")


def load(source, **kwargs):
    """Call load_data at 32 pixels, one process, no progress bar."""
    return loading.load_data(source, 32, progress=False, workers=1, **kwargs)


# ---------------------------------------------------------------- the Kaggle layout and the phantom

def test_kaggle_layout(kaggle_dir):
    labels = pd.read_csv(kaggle_dir / "boneage-training-dataset.csv")
    d = load(kaggle_dir)
    assert isinstance(d.X, np.memmap) and d.X.shape == (12, 32, 32) and d.X.dtype == np.uint8
    assert d.ids.tolist() == labels["id"].astype(str).tolist()
    assert np.array_equal(d.y, labels["boneage"].to_numpy(np.float32)) and d.y.dtype == np.float32
    assert np.array_equal(d.male, labels["male"].to_numpy(np.float32))
    assert {k: len(v) for k, v in d.splits.items()} == {"train": 8, "val": 2, "test": 2}
    assert d.image_size == 32 and d.cache_dir.parent.parent == cache.cache_root()
    assert d.images("test").shape == (2, 32, 32, 1)


def test_second_call_reuses_the_cache(kaggle_dir, monkeypatch):
    first = load(kaggle_dir)
    monkeypatch.setattr(cache, "prepare_file", lambda *a: pytest.fail("decoded an image again"))
    second = load(kaggle_dir)
    assert np.array_equal(first.X, second.X) and second.cache_dir == first.cache_dir
    assert not np.array_equal(load(kaggle_dir, seed=1).splits["test"], first.splits["test"])


def test_nested_kaggle_folder(tmp_path):
    write_kaggle(tmp_path / "k", n=5, nested=True)
    assert len(load(tmp_path / "k")) == 5


def test_phantom_source(tmp_cache):
    d = load("phantom:6")
    assert d.X.shape == (6, 32, 32) and not np.isnan(d.y).any() and set(d.male) <= {0.0, 1.0}
    folder = tmp_cache / "datasets" / f"phantom-n6-s32-seed0-v{loading.phantom_version()}"
    assert (folder / "boneage-training-dataset.csv").is_file()
    assert not [p for p in (tmp_cache / "datasets").iterdir() if p.name.startswith(".")]  # no half-made dataset left
    assert np.array_equal(load("phantom:6").X, d.X)
    assert len(load("phantom", phantom_n=4)) == 4
    with pytest.raises(AebonetError, match="phantom:N"):
        load("phantom:many")


def test_cache_folder_as_source(kaggle_dir, tmp_path):
    made = load(kaggle_dir, cache_dir=tmp_path / "prepared")
    again = loading.load_data(tmp_path / "prepared", None, progress=False)
    assert np.array_equal(again.X, made.X) and again.ids.tolist() == made.ids.tolist()
    with pytest.raises(AebonetError, match="holds 32-pixel images; 64 px would only upsample them"):
        loading.load_data(tmp_path / "prepared", 64, cache_root=tmp_path / "root")
    smaller = loading.load_data(tmp_path / "prepared", 16, cache_root=tmp_path / "root", progress=False)
    assert smaller.X.shape[1:] == (16, 16) and smaller.ids.tolist() == made.ids.tolist()


def test_cache_folder_with_problems_needs_skip_bad(kaggle_dir, tmp_path):
    (kaggle_dir / "boneage-training-dataset" / "1000.png").write_bytes(b"not a png")
    load(kaggle_dir, cache_dir=tmp_path / "prepared", skip_bad=True)
    with pytest.raises(AebonetError, match="1 bad input"):
        loading.load_data(tmp_path / "prepared", None, progress=False)
    assert len(loading.load_data(tmp_path / "prepared", None, skip_bad=True, progress=False)) == 11


# ---------------------------------------------------------------- image formats

def write_dicom(path, pixels: np.ndarray, photometric="MONOCHROME2", slope=1.0, intercept=0.0, window=None):
    """Write a 16-bit uncompressed DICOM radiograph with pydicom."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import (
        ExplicitVRLittleEndian,
        SecondaryCaptureImageStorage,
        generate_uid,
    )

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.Rows, ds.Columns = "CR", *pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


RAMP = np.tile(np.linspace(0, 4000, 40), (30, 1)).astype(np.uint16)  # 12-bit values, dark left to bright right


def test_dicom_monochrome2_uses_its_full_range(tmp_path):
    write_dicom(tmp_path / "a.dcm", RAMP)
    image = imagefiles.read_image(tmp_path / "a.dcm")
    assert image.shape == (30, 40) and image.dtype == np.float32
    assert image[0, 0] == 0 and image[0, -1] == 1 and np.all(np.diff(image[0]) > 0)


def test_dicom_monochrome1_is_inverted(tmp_path):
    write_dicom(tmp_path / "a.dcm", RAMP, photometric="MONOCHROME1")
    image = imagefiles.read_image(tmp_path / "a.dcm")
    assert image[0, 0] == 1 and image[0, -1] == 0


def test_dicom_rescale_then_window(tmp_path):
    # stored s -> value 2 s - 1000; window centre 1000, width 2001: values 0..2000 map to 0..1
    write_dicom(tmp_path / "a.dcm", RAMP, slope=2.0, intercept=-1000.0, window=(1000, 2001))
    image = imagefiles.read_image(tmp_path / "a.dcm")
    value = 2.0 * RAMP[0] - 1000
    assert np.allclose(image[0], np.clip((value - 999.5) / 2000 + 0.5, 0, 1), atol=1e-6)
    assert image[0, 0] == 0 and image[0, -1] == 1 and 0.2 < image[0, 8] < 0.5  # stored 820 -> 641


def test_sixteen_bit_png_is_scaled_by_its_bit_depth(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), RAMP)  # 12-bit data in a 16-bit PNG
    image = imagefiles.read_image(tmp_path / "a.png")
    assert np.allclose(image[0], RAMP[0] / 4095)
    cv2.imwrite(str(tmp_path / "b.png"), (RAMP.astype(np.uint32) * 16).astype(np.uint16))  # full 16 bits
    assert np.allclose(imagefiles.read_image(tmp_path / "b.png")[0], RAMP[0] * 16 / 65535)


@pytest.mark.parametrize("channels", [3, 4])
def test_colour_png_becomes_gray(tmp_path, channels):
    gray = blob_image(30, 20)
    colour = np.dstack([gray] * 3 + [np.full_like(gray, 255)] * (channels - 3))
    cv2.imwrite(str(tmp_path / "a.png"), colour)
    assert np.allclose(imagefiles.read_image(tmp_path / "a.png"), gray / 255, atol=1 / 255)


def test_jpeg_and_truncated_jpeg(tmp_path):
    cv2.imwrite(str(tmp_path / "a.jpg"), blob_image(60, 40), [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert np.abs(imagefiles.read_image(tmp_path / "a.jpg") - blob_image(60, 40) / 255).mean() < 0.05
    raw = (tmp_path / "a.jpg").read_bytes()
    (tmp_path / "b.jpg").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(AebonetError, match="b.jpg: truncated JPEG"):
        imagefiles.read_image(tmp_path / "b.jpg")


@pytest.mark.parametrize("content, message", [
    (b"", "empty file"), (b"hello, not an image", "cannot decode the image"), (b"\x89PNG\r\n\x1a\n" + b"x" * 100, "truncated PNG")])
def test_unreadable_files(tmp_path, content, message):
    (tmp_path / "a.png").write_bytes(content)
    with pytest.raises(AebonetError, match=message):
        imagefiles.read_image(tmp_path / "a.png")


def test_missing_file_and_empty_image():
    with pytest.raises(AebonetError, match="cannot read the file"):
        imagefiles.read_image("/nonexistent/a.png")
    assert "empty image" in imagefiles.image_problem(np.zeros((0, 5), np.float32))
    assert "constant image" in imagefiles.image_problem(np.full((5, 5), 0.5, np.float32))
    assert imagefiles.image_problem(blob_image(5, 5) / 255) is None


def test_load_image_and_list_images(tmp_path):
    cv2.imwrite(str(tmp_path / "b.png"), blob_image(60, 40))
    (tmp_path / "sub").mkdir()
    cv2.imwrite(str(tmp_path / "sub" / "a.jpg"), blob_image(60, 40))
    assert imagefiles.list_images([tmp_path]) == [tmp_path / "b.png", tmp_path / "sub" / "a.jpg"]
    image = imagefiles.load_image(tmp_path / "b.png", preprocess.PreprocessParams(32))
    assert image.shape == (32, 32) and image.dtype == np.float32
    (tmp_path / "empty").mkdir()
    with pytest.raises(AebonetError, match="no image files"):
        imagefiles.list_images([tmp_path / "empty"])


# ---------------------------------------------------------------- the other layouts

def write_images(folder, ids, size=(48, 36)):
    """Write one blob PNG per id into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    for k, i in enumerate(ids):
        cv2.imwrite(str(folder / f"{i}.png"), blob_image(*size, seed=k))


def write_official(root, truth="xlsx"):
    """Write a tiny official RSNA release: training, validation (two image folders) and test with ground truth."""
    write_kaggle(root / "Bone Age Training Set", n=6)
    val = root / "Bone Age Validation Set"
    write_images(val / "boneage-validation-dataset-1", ["2001", "2002"])
    write_images(val / "boneage-validation-dataset-2", ["2003"])
    pd.DataFrame({"Image ID": [2001, 2002, 2003], "male": ["True", "False", "True"],
                  "Bone Age (months)": [30, 60, 90]}).to_csv(val / "Validation Dataset.csv", index=False)
    test = root / "Bone Age Test Set"
    write_images(test / "boneage-test-dataset", ["4360", "4361"])
    truth_table = pd.DataFrame({"Case ID": [4360, 4361], "Sex": ["M", "F"], "Ground truth bone age (months)": [168.93, 169.65]})
    if truth == "xlsx":
        truth_table.to_excel(test / "Bone age ground truth.xlsx", index=False)
    else:
        truth_table.to_csv(test / "test_truth.csv", index=False)


@pytest.mark.parametrize("truth", ["xlsx", "csv"])
def test_official_layout_gives_the_official_split_when_asked(tmp_path, truth):
    write_official(tmp_path / "rsna", truth)
    d = load(tmp_path / "rsna", split_kind="official")
    assert {k: d.ids[v].tolist() for k, v in d.splits.items()} == {
        "train": [str(1000 + i) for i in range(6)], "val": ["2001", "2002", "2003"], "test": ["4360", "4361"]}
    assert d.y[d.splits["test"]].tolist() == pytest.approx([168.93, 169.65])  # decimal months kept
    assert d.male[d.splits["val"]].tolist() == [1, 0, 1] and d.male[d.splits["test"]].tolist() == [1, 0]
    assert d.split_kind == "official"


def test_official_layout_gets_the_paper_split_by_default(tmp_path):
    write_official(tmp_path / "rsna")
    d = load(tmp_path / "rsna", seed=3)
    expected = loading.random_split(11, (0.7, 0.15, 0.15), seed=3)
    assert d.split_kind == "paper" and all(np.array_equal(d.splits[k], expected[k]) for k in expected)
    stratified = load(tmp_path / "rsna", seed=3, split_kind="stratified")
    expected = loading.stratified_split(d.y, (0.7, 0.15, 0.15), seed=3)
    assert stratified.split_kind == "stratified"
    assert all(np.array_equal(stratified.splits[k], expected[k]) for k in expected)


def test_official_split_is_refused_without_the_official_layout(kaggle_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "prepare_file", lambda *a: pytest.fail("decoded an image before refusing"))
    with pytest.raises(AebonetError, match=r"12 of 12 images belong to no official RSNA set.*--split paper") as e:
        load(kaggle_dir, split_kind="official")
    assert str(kaggle_dir) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(AebonetError, match="split kind 'random': choose one of paper, stratified, official"):
        load(kaggle_dir, split_kind="random")


def test_cache_of_the_official_layout_keeps_the_official_sets(tmp_path):
    write_official(tmp_path / "rsna")
    made = load(tmp_path / "rsna", cache_dir=tmp_path / "prepared")
    official = loading.load_data(tmp_path / "prepared", None, split_kind="official", progress=False)
    assert made.split_kind == "paper" and official.ids[official.splits["test"]].tolist() == ["4360", "4361"]


def test_two_ground_truth_files_are_refused(tmp_path):
    write_official(tmp_path / "rsna")
    pd.read_excel(tmp_path / "rsna/Bone Age Test Set/Bone age ground truth.xlsx").to_csv(
        tmp_path / "rsna/Bone Age Test Set/other truth.csv", index=False)
    with pytest.raises(AebonetError, match="several RSNA test ground truth files"):
        load(tmp_path / "rsna")


def test_official_validation_file_with_a_wrong_header(tmp_path):
    write_official(tmp_path / "rsna")
    val = tmp_path / "rsna" / "Bone Age Validation Set" / "Validation Dataset.csv"
    pd.read_csv(val).rename(columns={"Bone Age (months)": "Bone age"}).to_csv(val, index=False)
    with pytest.raises(AebonetError, match=r"missing column\(s\) 'Bone Age \(months\)'; expected Image ID, "
                                           r"Bone Age \(months\), male; found Image ID, male, Bone age"):
        load(tmp_path / "rsna")


def test_kaggle_test_set_has_no_labels(tmp_path):
    write_images(tmp_path / "k" / "boneage-test-dataset" / "boneage-test-dataset", ["4360", "4361", "4362"])
    pd.DataFrame({"Case ID": [4360, 4361, 4362], "Sex": ["M", "F", "M"]}).to_csv(
        tmp_path / "k" / "boneage-test-dataset.csv", index=False)
    d = load(tmp_path / "k", split_kind="official")
    assert np.isnan(d.y).all() and d.male.tolist() == [1, 0, 1] and d.splits["test"].tolist() == [0, 1, 2]


def test_generic_csv_with_named_columns(tmp_path):
    write_images(tmp_path / "g" / "scans", ["a", "b", "c", "d"])
    pd.DataFrame({"file": ["scans/a.png", "scans/b.png", "c", "d"], "age": [12.5, 100, 200, 7],
                  "sex": ["F", "M", "female", "male"]}).to_csv(tmp_path / "g" / "labels.csv", index=False)
    d = load(tmp_path / "g", layout="csv", image_col="file", age_col="age", sex_col="sex")
    assert d.ids.tolist() == ["scans/a", "scans/b", "c", "d"]
    assert d.y.tolist() == [12.5, 100, 200, 7] and d.male.tolist() == [0, 1, 0, 1]
    with pytest.raises(AebonetError, match="missing column.*'age_months'.*found file, age, sex"):
        load(tmp_path / "g", layout="csv", image_col="file", age_col="age_months")


def test_unlabeled_folder(tmp_path):
    write_images(tmp_path / "f", ["x", "y"])
    d = load(tmp_path / "f")
    assert d.ids.tolist() == ["x", "y"] and np.isnan(d.y).all() and np.isnan(d.male).all()


def test_folder_with_unknown_csv_says_what_to_do(tmp_path):
    write_images(tmp_path / "u", ["x"])
    pd.DataFrame({"name": ["x"], "months": [3]}).to_csv(tmp_path / "u" / "mine.csv", index=False)
    with pytest.raises(AebonetError, match="no known label file among mine.csv.*--layout csv"):
        load(tmp_path / "u")


def test_missing_columns_name_expected_and_found(kaggle_dir):
    table = pd.read_csv(kaggle_dir / "boneage-training-dataset.csv").rename(columns={"boneage": "age"})
    table.to_csv(kaggle_dir / "boneage-training-dataset.csv", index=False)
    with pytest.raises(AebonetError, match=r"boneage-training-dataset.csv: missing column\(s\) 'boneage'; "
                                           r"expected id, boneage, male; found id, age, male"):
        load(kaggle_dir)


def test_missing_folder_and_bad_layout(tmp_path):
    with pytest.raises(AebonetError, match="no such dataset folder"):
        load(tmp_path / "nowhere")
    with pytest.raises(AebonetError, match="layout 'dicom'"):
        load(tmp_path, layout="dicom")


# ---------------------------------------------------------------- bad input: one error, or skip and report

def spoil(folder):
    """Put one of every kind of bad input into a 20-image Kaggle folder; return the ids that stay good."""
    csv, images = folder / "boneage-training-dataset.csv", folder / "boneage-training-dataset"
    table = pd.read_csv(csv, dtype=str)
    table.loc[1, "boneage"] = "abc"  # line 3 of the file
    table.loc[2, "boneage"] = "-3"
    table.loc[3, "boneage"] = "300"
    table.loc[4, "male"] = "X"
    table = pd.concat([table, table.iloc[[5]], pd.DataFrame({"id": ["9999"], "boneage": ["10"], "male": ["True"]})])
    table.to_csv(csv, index=False)  # id 1005 twice (lines 7 and 22); id 9999 without an image (line 23)
    cv2.imwrite(str(images / "8888.png"), blob_image(48, 36))  # an image without a row
    (images / "1006.png").write_bytes(b"garbage")
    raw = (images / "1007.png").read_bytes()
    (images / "1007.png").write_bytes(raw[: len(raw) // 2])
    (images / "1008.png").write_bytes(b"")
    cv2.imwrite(str(images / "1009.png"), np.full((48, 36), 77, np.uint8))
    return [str(1000 + i) for i in (0, *range(10, 20))]


EXPECTED = [
    "boneage-training-dataset.csv row 3: bone age 'abc' is not a number of months",
    "boneage-training-dataset.csv row 4: bone age -3 months is outside 0-240",
    "boneage-training-dataset.csv row 5: bone age 300 months is outside 0-240",
    "boneage-training-dataset.csv row 6: sex value 'X' not recognized; use True/False, 1/0 or M/F",
    "boneage-training-dataset.csv row 7: id '1005' appears 2 times (boneage-training-dataset.csv row 7; "
    "boneage-training-dataset.csv row 22)",
    "boneage-training-dataset.csv row 23: no image file for id '9999' in boneage-training-dataset/",
    "boneage-training-dataset/8888.png: image file has no row in the label file",
    "boneage-training-dataset/1006.png row 8: cannot decode the image",
    "boneage-training-dataset/1007.png row 9: truncated PNG",
    "boneage-training-dataset/1008.png row 10: empty file",
    "boneage-training-dataset/1009.png row 11: constant image (every pixel is 0.302)",
]


def test_every_bad_input_in_one_error(tmp_path):
    write_kaggle(tmp_path / "k", n=20)
    spoil(tmp_path / "k")
    with pytest.raises(AebonetError) as caught:
        load(tmp_path / "k")
    message = str(caught.value)
    assert message.startswith(f"12 bad input(s) in {tmp_path / 'k'} (full list in ")
    assert "pass skip_bad=True (--skip-bad)" in message.splitlines()[0]
    for expected in EXPECTED:
        assert expected in message
    assert "row 22: id '1005' appears 2 times" in message


def test_skip_bad_goes_on_and_writes_the_report(tmp_path):
    write_kaggle(tmp_path / "k", n=20)
    good = spoil(tmp_path / "k")
    d = load(tmp_path / "k", skip_bad=True)
    assert d.ids.tolist() == good and len(d.problems) == 12 and not np.isnan(d.y).any()
    report = pd.read_csv(d.cache_dir / "bad_inputs_report.csv", dtype=str, keep_default_na=False)
    assert report.columns.tolist() == ["file", "row", "reason"] and len(report) == 12
    assert set(report["file"]) == {"boneage-training-dataset.csv", *(f"boneage-training-dataset/{i}.png" for i in
                                                                     (8888, 1006, 1007, 1008, 1009))}


def test_long_lists_are_cut_to_twenty_lines_and_a_count(tmp_path):
    write_kaggle(tmp_path / "k", n=30)
    table = pd.read_csv(tmp_path / "k" / "boneage-training-dataset.csv").assign(male="unknown")
    table.to_csv(tmp_path / "k" / "boneage-training-dataset.csv", index=False)
    with pytest.raises(AebonetError) as caught:
        load(tmp_path / "k")
    lines = str(caught.value).splitlines()
    assert len(lines) == 22 and lines[-1].strip() == "... and 10 more" and lines[0].startswith("30 bad input(s)")
    with pytest.raises(AebonetError, match="no usable image"):
        load(tmp_path / "k", skip_bad=True)


def test_fixing_the_inputs_clears_the_report(tmp_path):
    write_kaggle(tmp_path / "k", n=6)
    (tmp_path / "k" / "boneage-training-dataset" / "1002.png").write_bytes(b"garbage")
    assert len(load(tmp_path / "k", skip_bad=True)) == 5
    cv2.imwrite(str(tmp_path / "k" / "boneage-training-dataset" / "1002.png"), blob_image(48, 36))
    fixed = load(tmp_path / "k")
    assert len(fixed) == 6 and not (fixed.cache_dir / "bad_inputs_report.csv").exists()


# ---------------------------------------------------------------- real radiographs

@pytest.mark.skipif(not SHARED_SAMPLE.is_dir(), reason="../shared/rsna_sample is absent")
def test_eight_real_radiographs():
    labels = pd.read_csv(SHARED_SAMPLE / "boneage-training-dataset.csv")
    d = loading.load_data(SHARED_SAMPLE, 64, progress=False, workers=1)
    order = labels.set_index(labels["id"].astype(str)).loc[d.ids]
    assert len(d) == 8 and set(d.ids) == set(labels["id"].astype(str))  # 2110.png is RGBA: read as gray
    assert np.array_equal(d.y, order["boneage"].to_numpy(np.float32))
    assert np.array_equal(d.male, order["male"].to_numpy(np.float32))
    for image in d.images():
        hand = image[..., 0] > 0.1
        rows, cols = np.flatnonzero(hand.any(axis=1)), np.flatnonzero(hand.any(axis=0))
        assert rows[-1] - rows[0] >= 0.85 * 64  # the hand fills the frame top to bottom
        assert cols[-1] - cols[0] >= 0.45 * 64  # and more than half the width of the 49-pixel-wide radiograph
        assert 0.15 < hand.mean() < 0.6 and 0.6 < image.max() <= 1 and image.min() == 0


# ---------------------------------------------------------------- the command

def test_prepare_command(kaggle_dir, tmp_path, capsys):
    from aebonet_lib._engine import cli

    out = tmp_path / "cache"
    assert cli.main(["prepare", "--data", str(kaggle_dir), "--size", "32", "--out", str(out), "--workers", "1"]) == 0
    summary = capsys.readouterr().out
    labels = pd.read_csv(kaggle_dir / "boneage-training-dataset.csv")
    assert f"12 images of 32x32 pixels from {kaggle_dir}" in summary
    assert "splits (paper): train 8, val 2, test 2" in summary
    assert f"sex: {labels['male'].sum()} boys, {(~labels['male']).sum()} girls" in summary
    assert "bone age (years):" in summary and "problems: none" in summary and cache.is_cache(out)
    (kaggle_dir / "boneage-training-dataset" / "1004.png").write_bytes(b"")
    assert cli.main(["prepare", "--data", str(kaggle_dir), "--size", "32", "--out", str(out), "--workers", "1"]) == 2
    assert "aebonet prepare: error: 1 bad input(s)" in capsys.readouterr().err
    assert cli.main(["prepare", "--data", str(kaggle_dir), "--size", "32", "--out", str(out), "--skip-bad"]) == 0
    assert "problems: 1 input(s) left out, listed in" in capsys.readouterr().out
    assert cli.main(["prepare", "--data", str(kaggle_dir), "--split", "official", "--out", str(tmp_path / "c2")]) == 2
    assert "belong to no official RSNA set" in capsys.readouterr().err
