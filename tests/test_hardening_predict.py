"""Tests of predicting on files as users have them: rotated JPEGs, decompression bombs, edited sidecars, few
images, bad files among good ones, many images, the disclaimer and each image's sex."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import cv2
import keras
import numpy as np
import pandas as pd
import pytest
from conftest import blob_image, write_kaggle
from PIL import Image, ImageOps

from aebonet_lib import paper
from aebonet_lib._engine import imagefiles, modelfiles, predict, trust
from aebonet_lib._engine.cli import main
from aebonet_lib.config import get_config
from aebonet_lib.data import loading
from aebonet_lib.data.preprocess import PreprocessParams
from aebonet_lib.errors import AebonetError
from aebonet_lib.evaluation import metrics

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """Return two untrained 32 px regressors saved with their sidecars: "plain" and "sex" (with the sex input)."""
    folder = tmp_path_factory.mktemp("models")
    config = get_config("cpu", image_size=32, width=0.125)
    paths = {}
    for name, sex_input in (("plain", False), ("sex", True)):
        keras.utils.set_random_seed(0)
        model = paper.build_scratch_regressor(config, sex_input=sex_input, y_mean=100.0, y_std=40.0)
        meta = modelfiles.ModelMeta("regressor", PreprocessParams(32), config, source="phantom:60", seed=0,
                                    backbone="scratch", sex_input=sex_input, y_mean=100.0, y_std=40.0)
        paths[name] = modelfiles.save_model(model, folder / name / "model.keras", meta)
    return paths


@pytest.fixture
def hands(tmp_path) -> list[Path]:
    """Return three small radiograph-like PNGs, ids 101, 102 and 103."""
    folder = tmp_path / "hands"
    folder.mkdir()
    for k in range(3):
        cv2.imwrite(str(folder / f"{101 + k}.png"), blob_image(48, 40, seed=k))
    return sorted(folder.glob("*.png"))


def encoded(image: np.ndarray, fmt: str, orientation: int = 1) -> bytes:
    """Return the bytes of a gray image saved by Pillow in `fmt` with an EXIF orientation tag."""
    exif = Image.Exif()
    exif[imagefiles.ORIENTATION_TAG] = orientation
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt, exif=exif.tobytes(), **({"quality": 100} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """Return a few hundred bytes of PNG whose header claims width x height 8-bit gray pixels."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    rows = zlib.compress(b"\0" * (width + 1) * 4)  # four rows of the claimed width: the rest is missing
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


def no_decoding(*args, **kwargs):
    """Stand in for a decoder that must not be reached."""
    raise AssertionError("decoded an image that should have been refused from its header")


# 1. EXIF orientation


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "TIFF"])
def test_every_exif_orientation_is_turned_upright(fmt):
    stored = blob_image(24, 40, seed=1)
    for orientation in range(1, 9):
        data = encoded(stored, fmt, orientation)
        expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))), np.float32) / 255
        got = imagefiles.decode_image(data, f"hand.{fmt.lower()}")
        assert got.shape == expected.shape and np.abs(got - expected).max() < 1e-6, orientation


def test_a_jpeg_stored_rotated_with_tag_6_reads_like_the_upright_file(tmp_path):
    upright = cv2.GaussianBlur(blob_image(64, 48, seed=2), (9, 9), 3)  # smooth: JPEG keeps it nearly exact
    (tmp_path / "upright.jpg").write_bytes(encoded(upright, "JPEG"))
    (tmp_path / "rotated.jpg").write_bytes(encoded(np.rot90(upright).copy(), "JPEG", 6))  # stored turned left
    a, b = imagefiles.read_image(tmp_path / "upright.jpg"), imagefiles.read_image(tmp_path / "rotated.jpg")
    assert a.shape == b.shape == (64, 48) and np.abs(a - b).mean() < 0.01


# 2. Decompression bombs


def test_a_png_claiming_20000_by_20000_pixels_is_refused_from_its_header(tmp_path, monkeypatch):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_claiming(20000, 20000))
    assert bomb.stat().st_size < 1000
    monkeypatch.setattr(imagefiles.cv2, "imdecode", no_decoding)
    with pytest.raises(AebonetError, match=r"^bomb.png: 20000x20000 pixels \(400 megapixels\) is over the limit of "
                                           r"50 megapixels .*pass --max-pixels 400000000$"):
        imagefiles.read_image(bomb)
    with pytest.raises(AssertionError, match="should have been refused"):  # a raised limit lets it through
        imagefiles.read_image(bomb, max_pixels=400_000_000)


def test_a_dicom_claiming_too_many_pixels_is_refused_from_its_header(tmp_path):
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 20000, 20000, 16, 16, 15
    ds.SamplesPerPixel, ds.PixelRepresentation, ds.PhotometricInterpretation = 1, 0, "MONOCHROME2"
    ds.PixelData = b"\0" * 64
    ds.save_as(tmp_path / "bomb.dcm", enforce_file_format=True)
    with pytest.raises(AebonetError, match=r"^bomb.dcm: 20000x20000 pixels .*--max-pixels 400000000$"):
        imagefiles.read_image(tmp_path / "bomb.dcm")


def test_cli_predict_refuses_a_bomb_in_one_line(models, tmp_path, capsys):
    (tmp_path / "bomb.png").write_bytes(png_claiming(20000, 20000))
    assert main(["predict", "--model", str(models["plain"]), str(tmp_path / "bomb.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"aebonet predict: error: {tmp_path / 'bomb.png'}: 20000x20000 pixels")
    assert "--max-pixels 400000000" in err[0] and "--skip-bad" in err[0]


# 3. Sidecars


def test_a_calibration_naming_an_autoencoder_outside_the_model_folder_is_refused(models, tmp_path, hands):
    folder = tmp_path / "model"
    folder.mkdir()
    for path in models["plain"].parent.glob("model.*"):
        (folder / path.name).write_bytes(path.read_bytes())
    trust.calibrate(folder / "model.keras", np.stack([blob_image(32, 32, seed=k) for k in range(4)]))
    record = json.loads((folder / "model.trust.json").read_text())
    for name in ("../elsewhere.keras", str(tmp_path / "elsewhere.keras")):
        record["reconstruction"] = {"autoencoder": name, "threshold": 1.0, "low_threshold": 0.0}
        (folder / "model.trust.json").write_text(json.dumps(record))
        with pytest.raises(AebonetError, match=r"model.trust.json: names the autoencoder .*, which is not a file in "
                                               r"the model's folder"):
            predict.predict_images(folder / "model.keras", hands, progress=False)


def edited_size_model(models: dict, folder: Path, image_size) -> Path:
    """Return a copy of the plain model whose model.json claims another image size."""
    folder.mkdir()
    (folder / "model.keras").write_bytes(models["plain"].read_bytes())
    meta = json.loads(models["plain"].with_suffix(".json").read_text())
    meta["image_size"] = meta["params"]["image_size"] = image_size
    (folder / "model.json").write_text(json.dumps(meta))
    return folder / "model.keras"


def test_a_sidecar_image_size_unlike_the_model_is_refused_before_reading_images(models, tmp_path, hands,
                                                                               monkeypatch, capsys):
    edited = edited_size_model(models, tmp_path / "edited", 4096)
    monkeypatch.setattr(imagefiles, "load_image", no_decoding)
    monkeypatch.setattr(loading, "load_data", no_decoding)
    message = r"model.json: says image_size 4096 but model.keras reads 32x32 images; restore the sidecar"
    with pytest.raises(AebonetError, match=message):
        predict.predict_images(edited, hands, progress=False)
    with pytest.raises(AebonetError, match=message):
        modelfiles.load_model(edited)
    assert main(["predict", "--model", str(edited), str(hands[0])]) == 2
    assert main(["evaluate", "--model", str(edited), "--data", "phantom:20", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(": error: " in line and "says image_size 4096" in line for line in err)


# 4. Intervals over few images


def test_evaluate_on_few_images_leaves_the_interval_out_and_warns(models, tmp_path, capsys, tmp_cache):
    write_kaggle(tmp_path / "kaggle", n=12)
    model = edited_size_model(models, tmp_path / "model", 32)  # the plain model, in a folder of its own
    assert main(["evaluate", "--model", str(model), "--data", str(tmp_path / "kaggle"), "--split", "all",
                 "--out", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "MAE " in captured.out and "CI" not in captured.out
    assert captured.err.strip().splitlines()[-1] == (
        "warning: n = 12 images, below 20: a bootstrap interval over so few means nothing, so none is shown; "
        "evaluate on more images")
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["n"] == 12 and saved["ci95_note"].startswith("n = 12 images, below 20")
    assert metrics.interval_note(metrics.MIN_N_FOR_INTERVAL) is None
    assert "95% CI" in predict.format_metrics({**saved, "n": 20, "ci95_note": None})


# 5. Bad files among good ones


def test_skip_bad_predicts_the_rest_and_reports_the_others(models, hands, tmp_path, capsys):
    truncated = hands[0].with_name("201.png")
    truncated.write_bytes(hands[0].read_bytes()[:-30])
    (hands[0].parent / "202.png").write_text("not an image")
    with pytest.raises(AebonetError, match=r"201.png: truncated PNG .*, or pass --skip-bad to predict the other"):
        predict.predict_images(models["plain"], [hands[0].parent], progress=False)
    table = predict.predict_images(models["plain"], [hands[0].parent], skip_bad=True, progress=False)
    assert [Path(f).name for f in table["file"]] == ["101.png", "102.png", "103.png"]
    assert [Path(p.file).name for p in table.attrs["skipped"]] == ["201.png", "202.png"]
    out = tmp_path / "out" / "ages.csv"
    out.parent.mkdir()
    assert main(["predict", "--model", str(models["plain"]), str(hands[0].parent), "--skip-bad", "--out", str(out)]) == 0
    report = pd.read_csv(out.parent / "bad_inputs_report.csv")
    assert list(report["file"].map(lambda f: Path(f).name)) == ["201.png", "202.png"]
    assert "truncated PNG" in report["reason"][0] and "not a PNG/JPEG/TIFF" in report["reason"][1]
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"warning: skipped 2 of 5 images that could not be used; the list with reasons is in "
                   f"{out.parent / 'bad_inputs_report.csv'}"]


# 6. and 7. Progress, and memory that does not grow with the number of images


def test_predict_streams_batches_with_a_progress_bar(models, hands, monkeypatch):
    events, bars = [], []
    read, predicted = imagefiles.load_image, predict.predict_arrays
    monkeypatch.setattr(imagefiles, "load_image", lambda *a, **k: events.append("read") or read(*a, **k))
    monkeypatch.setattr(predict, "predict_arrays", lambda model, X, *a: events.append(len(X)) or predicted(model, X, *a))
    real_tqdm = predict.tqdm
    monkeypatch.setattr(predict, "tqdm", lambda *a, **k: bars.append(k) or real_tqdm(*a, **k))
    table = predict.predict_images(models["plain"], hands * 2, batch_size=4, progress=True)
    assert events == ["read"] * 4 + [4] + ["read"] * 2 + [2]  # read a batch, predict it, then the next
    assert len(table) == 6 and bars[0]["total"] == 6 and bars[0]["disable"] is None  # None: off when not a terminal
    predict.predict_images(models["plain"], hands, progress=False)
    assert bars[1]["disable"] is True


# 8. Licence and intended use


def test_the_csv_names_the_model_and_says_not_for_clinical_use(models, hands, tmp_path, capsys):
    assert main(["predict", "--model", str(models["plain"]), *map(str, hands), "--out", str(tmp_path / "a.csv")]) == 0
    text = (tmp_path / "a.csv").read_text()
    comments = [line for line in text.splitlines() if line.startswith("#")]
    assert text.startswith("# aebonet predict: ") and "not for clinical use" in comments[0]
    assert f"model: {models['plain']} (trained on phantom:60)" in comments[1]
    assert len(pd.read_csv(tmp_path / "a.csv", comment="#")) == 3
    capsys.readouterr()
    assert main(["predict", "--model", str(models["plain"]), str(hands[0])]) == 0
    assert capsys.readouterr().out.startswith("# aebonet predict: ")
    shipped = predict.csv_header(predict.shipped_models()[0])
    assert "Halabi" in shipped and "RSNA" in shipped


def test_help_and_notice_separate_the_code_licence_from_the_rsna_terms(capsys):
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    assert "not for clinical use" in capsys.readouterr().out.lower()
    notice = (REPO / "NOTICE").read_text()
    assert "MIT" in notice and "Halabi" in notice and "non-commercial" in notice
    for listed in ("aebonet_lib/pretrained/rsna-cpu/", "aebonet_lib/pretrained/rsna-cpu-paper/",
                   "aebonet_lib/results/rsna-cpu/", "aebonet_lib/results/best-cpu/"):
        assert listed in notice and (REPO / listed).is_dir()
    assert "not for clinical use" in (REPO / "README.md").read_text().lower()


# 9. Each image's sex


@pytest.mark.parametrize("header, boy, girl", [("id,boneage,male", "True", "False"), ("Image ID,male", "1", "0"),
                                              ("Case ID,Sex", "M", "F")])
def test_sex_from_reads_the_rsna_label_files(models, hands, tmp_path, header, boy, girl):
    rows = [f"{Path(hands[0]).stem}{',120' if 'boneage' in header else ''},{boy}",
            f"{Path(hands[1]).stem}.png{',80' if 'boneage' in header else ''},{girl}"]
    (tmp_path / "sexes.csv").write_text("\n".join([header, *rows]) + "\n")
    table = predict.predict_images(models["sex"], hands[:2], sex_from=tmp_path / "sexes.csv", progress=False)
    boys = predict.predict_images(models["sex"], hands[:2], sex="M", progress=False)
    girls = predict.predict_images(models["sex"], hands[:2], sex="F", progress=False)
    assert table["sex"].tolist() == ["M", "F"]
    assert table["bone_age_months"].tolist() == [boys["bone_age_months"][0], girls["bone_age_months"][1]]
    assert boys["bone_age_months"][0] != girls["bone_age_months"][0]


def test_an_image_missing_from_the_sex_file_is_named_or_skipped(models, hands, tmp_path):
    (tmp_path / "sexes.csv").write_text(f"id,sex\n{hands[0].stem},F\n")
    with pytest.raises(AebonetError, match=r"sexes.csv: no row for image id '102' \(.*102.png\) and 1 more; add "
                                           r"the rows, or pass --skip-bad"):
        predict.predict_images(models["sex"], hands, sex_from=tmp_path / "sexes.csv", progress=False)
    table = predict.predict_images(models["sex"], hands, sex_from=tmp_path / "sexes.csv", skip_bad=True, progress=False)
    assert len(table) == 1 and [p.reason for p in table.attrs["skipped"]][0].startswith("no row for image id '102'")
    (tmp_path / "twice.csv").write_text("id,sex\n101,F\n101.png,M\n")
    with pytest.raises(AebonetError, match=r"twice.csv row 3: image id '101' has rows of both sexes; keep one"):
        predict.read_sex_file(tmp_path / "twice.csv")
    (tmp_path / "bad.csv").write_text("name,gender\n101,F\n")
    with pytest.raises(AebonetError, match=r"bad.csv: no column named id or image id or case id or image"):
        predict.read_sex_file(tmp_path / "bad.csv")


def test_cli_sex_needs_a_flag_for_a_sex_model_and_is_ignored_without_one(models, hands, capsys):
    assert main(["predict", "--model", str(models["sex"]), str(hands[0])]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "give --sex M or --sex F" in err[0] and "--sex-from CSV" in err[0]
    assert main(["predict", "--model", str(models["plain"]), str(hands[0]), "--sex", "F"]) == 0
    captured = capsys.readouterr()
    assert captured.err.strip() == f"note: --sex is ignored: {models['plain']} takes no sex input (it reads the image alone)"
    assert "bone_age_months" in captured.out


def test_prepare_takes_max_pixels_and_a_raised_limit_reads_the_refused_image_again(tmp_path, capsys):
    write_kaggle(tmp_path / "kaggle", n=4, size=(48, 36))
    args = ["prepare", "--data", str(tmp_path / "kaggle"), "--size", "32", "--out", str(tmp_path / "cache")]
    assert main([*args, "--max-pixels", "1000", "--workers", "1"]) == 2
    err = capsys.readouterr().err
    assert "4 bad input(s)" in err and "36x48 pixels (0.00173 megapixels)" in err and "pass --max-pixels 1728" in err
    data = loading.load_data(tmp_path / "kaggle", 32, cache_dir=tmp_path / "cache", workers=1, progress=False,
                             max_pixels=1728)
    assert len(data) == 4
