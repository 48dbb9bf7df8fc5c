"""Tests of the synthetic hand radiograph phantom: images, maturity, datasets on disk, the CLI."""

import subprocess
import sys

import cv2
import numpy as np
import pandas as pd
import pytest

from aebonet_lib import phantom
from aebonet_lib._engine import cli
from aebonet_lib.errors import AebonetError

AGES = np.arange(0, 241, 1.0)


def states(male):
    """Return the maturity state at every month from 0 to 240."""
    return [phantom.maturity_state(a, male) for a in AGES]


def maturity_numbers(state):
    """Return the numbers that must never decrease with age, as a flat vector."""
    carpals = [v for c in state["carpals"].values() for v in (c["size"], c["shape"])]
    epiphyses = [v for e in state["epiphyses"].values() for v in (e["width_ratio"], e["capping"], e["fusion"], e["fused"])]
    return np.array([state["carpals_visible"], state["hand_scale"], state["sesamoid"]["size"], *carpals, *epiphyses], float)


# --- render ----------------------------------------------------------------------------

def test_render_is_deterministic_and_seed_changes_only_nuisance():
    a = phantom.render(100, True, 64, seed=3)
    assert np.array_equal(a, phantom.render(100, True, 64, seed=3))
    assert not np.array_equal(a, phantom.render(100, True, 64, seed=4))


def test_render_shape_dtype_and_range():
    square = phantom.render(150, False, 48, seed=1)
    tall = phantom.render(150, False, (80, 56), seed=1)
    assert square.shape == (48, 48) and tall.shape == (80, 56)
    for image in (square, tall):
        assert image.dtype == np.float32
        assert 0.0 <= image.min() and image.max() <= 1.0
        assert image.std() > 0.05  # a hand, not a blank frame


def test_render_accepts_every_age_from_0_to_240_and_rejects_others():
    for age in (0, 240, 0.5):
        assert phantom.render(age, True, 32).shape == (32, 32)
    for age in (-1, 240.5, float("nan"), "ten"):
        with pytest.raises(AebonetError):
            phantom.render(age, True, 32)


@pytest.mark.parametrize("bad", [16, 0, (64,), (64, 20), 64.0, "64"])
def test_render_rejects_bad_size(bad):
    with pytest.raises(AebonetError):
        phantom.render(100, True, bad)


def test_parse_size_reads_n_and_width_x_height():
    assert phantom.parse_size("256") == 256
    assert phantom.parse_size("1600x2080") == (2080, 1600)
    for bad in ("", "abc", "16", "1600x", "x2080", "-64", "64x64x64", "1600x20"):
        with pytest.raises(AebonetError):
            phantom.parse_size(bad)


def test_fixed_seed_and_changed_age_change_only_the_hand():
    young, old = phantom.render(12, True, 64, seed=0), phantom.render(200, True, 64, seed=0)
    assert not np.array_equal(young, old)
    assert np.array_equal(young[:4, :4], old[:4, :4])  # background noise comes from the seed alone


# --- maturity ----------------------------------------------------------------------------

@pytest.mark.parametrize("male", [False, True])
def test_maturity_never_decreases_with_age(male):
    numbers = np.array([maturity_numbers(s) for s in states(male)])
    assert np.all(np.diff(numbers, axis=0) >= 0)
    assert numbers[0, 0] == 0 and numbers[-1, 0] == 8  # no carpal centre at birth, all eight at 20 years


@pytest.mark.parametrize("male, first_fusion", [(False, 150), (True, 174)])
def test_physes_fuse_only_at_the_oldest_ages(male, first_fusion):
    for age, state in zip(AGES, states(male)):
        fused = [e["fused"] for e in state["epiphyses"].values()]
        closing = [e["fusion"] > 0 for e in state["epiphyses"].values()]
        assert not any(closing) or age > first_fusion
        assert all(fused) == (age >= phantom.event_age("radius", "fused", male))
    assert not states(male)[144]["epiphyses"]["distal_phalanges"]["fused"]


def test_distal_phalanges_fuse_first_and_radius_last():
    for male in (False, True):
        fused = {g: phantom.event_age(g, "fused", male) for g in phantom.EPIPHYSES}
        assert min(fused, key=fused.get) == "distal_phalanges"
        assert max(fused, key=fused.get) == "radius"


def test_girls_are_ahead_of_boys_at_the_same_age():
    girls, boys = np.array([maturity_numbers(s) for s in states(False)]), np.array([maturity_numbers(s) for s in states(True)])
    maturity = slice(2, None)  # every maturity number; hand_scale (column 1) is size: women end smaller
    assert np.all(girls[:, maturity] >= boys[:, maturity])
    assert np.all(girls[:, 0] >= boys[:, 0])
    assert phantom.maturity_state(60, False)["carpals_visible"] > phantom.maturity_state(60, True)["carpals_visible"]


def test_carpal_centres_appear_in_the_published_order():
    order = ["capitate", "hamate", "triquetrum", "lunate", "trapezium", "trapezoid", "scaphoid", "pisiform"]
    for male in (False, True):
        appear = [phantom.event_age(bone, "appears", male) for bone in order]
        assert appear == sorted(appear)
        assert appear[1] <= 6 and 7 * 12 <= appear[-1] <= 13 * 12  # first months ... pisiform at 9-12 years


def test_maturity_table_is_consistent_and_sourced():
    table = phantom.MATURITY
    assert (table["girls"] <= table["boys"]).all()
    assert table["source"].isin(phantom.SOURCES.keys()).all()
    events = ["appears", "as_wide", "caps", "fusion_begins", "fused", "scar_fades"]
    for group in phantom.EPIPHYSES:
        for sex in ("girls", "boys"):
            ages = table[table["bone"] == group].set_index("event").loc[events, sex]
            assert ages.is_monotonic_increasing, (group, sex)


def test_older_hand_has_a_brighter_carpus_in_the_image():
    fixed = dict(style="registered", variation=False)  # one frame and one child: only maturity differs
    for seed in range(3):
        means = {}
        for age in (12, 150):
            x0, y0, x1, y1 = phantom.regions(age, True, 64, seed, **fixed)["carpals"]
            means[age] = phantom.render(age, True, 64, seed, **fixed)[y0:y1, x0:x1].mean()
        assert means[150] > means[12] + 0.05
        x0, y0, x1, y1 = phantom.regions(96, True, 64, seed, **fixed)["carpals"]
        girl, boy = phantom.render(96, False, 64, seed, **fixed), phantom.render(96, True, 64, seed, **fixed)
        assert girl[y0:y1, x0:x1].mean() > boy[y0:y1, x0:x1].mean()


def test_regions_are_boxes_inside_the_image_in_anatomical_order():
    for seed in range(4):
        boxes = phantom.regions(120, False, (80, 64), seed)
        assert set(boxes) >= {"phalanges", "metacarpals", "carpals", "radius_ulna"}
        for x0, y0, x1, y1 in boxes.values():
            assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 80
        centre_y = [(boxes[k][1] + boxes[k][3]) / 2 for k in ("phalanges", "metacarpals", "carpals", "radius_ulna")]
        assert centre_y == sorted(centre_y)  # fingers on top, forearm at the bottom


# --- datasets ----------------------------------------------------------------------------

def test_sample_ages_follow_rsna():
    ages, males = phantom.sample_ages(5000, np.random.default_rng(0))
    assert ages.dtype == np.float32 and males.dtype == bool
    assert np.all(ages == np.round(ages)) and ages.min() >= 1 and ages.max() <= 228
    assert abs(ages.mean() - 127) < 4 and abs(ages.std() - 41) < 4
    assert abs(males.mean() - 0.54) < 0.03
    assert ages[males].mean() > ages[~males].mean()
    narrow, _ = phantom.sample_ages(500, np.random.default_rng(0), age_range=(24, 36))
    assert narrow.min() >= 24 and narrow.max() <= 36
    with pytest.raises(AebonetError):
        phantom.sample_ages(5, np.random.default_rng(0), age_range=(100, 300))


def test_make_dataset_shapes_labels_and_label_noise():
    images, ages, males = phantom.make_dataset(6, size=(40, 32), seed=2, progress=False)
    assert images.shape == (6, 40, 32) and images.dtype == np.float32
    assert ages.shape == (6,) and ages.dtype == np.float32 and males.dtype == bool
    true_ages, _, labels = phantom.dataset_plan(6, 2, phantom.AGE_RANGE, phantom.READER_SD_MONTHS)
    assert np.array_equal(ages, labels)  # one reader's labels by default
    assert np.array_equal(images[3], phantom.render(true_ages[3], males[3], (40, 32), phantom.image_seed(2, 3)))
    true_ages, _, labels = phantom.dataset_plan(3000, 2, phantom.AGE_RANGE, 10.0)
    assert 9 < np.std(labels - true_ages) < 11 and labels.min() >= 0 and labels.max() <= 240


def test_make_dataset_does_not_depend_on_the_number_of_workers(monkeypatch):
    monkeypatch.setattr(phantom.dataset, "PARALLEL_MIN_PIXELS", 1)
    one, ages1, _ = phantom.make_dataset(4, size=32, seed=5, workers=1, progress=False)
    two, ages2, _ = phantom.make_dataset(4, size=32, seed=5, workers=2, progress=False)
    assert np.array_equal(one, two) and np.array_equal(ages1, ages2)


def test_write_dataset_round_trips_the_kaggle_layout(tmp_path):
    out = phantom.write_dataset(tmp_path / "data", 5, size=(48, 32), seed=7, label_noise_sd=0.0, progress=False)
    text = (out / "boneage-training-dataset.csv").read_text()
    assert text.splitlines()[0] == "id,boneage,male"
    table = pd.read_csv(out / "boneage-training-dataset.csv")
    assert {line.split(",")[2] for line in text.splitlines()[1:]} <= {"True", "False"}
    images, ages, males = phantom.make_dataset(5, size=(48, 32), seed=7, label_noise_sd=0.0, progress=False)
    assert np.array_equal(table["boneage"], ages) and np.array_equal(table["male"], males)
    for i, image_id in enumerate(table["id"]):
        png = cv2.imread(str(out / "boneage-training-dataset" / f"{image_id}.png"), cv2.IMREAD_UNCHANGED)
        assert png.dtype == np.uint8 and png.shape == (48, 32)
        assert np.array_equal(png, (images[i] * 255 + 0.5).astype(np.uint8))
    assert not [p for p in out.rglob(".*")]  # no temporary files left behind


def test_write_dataset_is_byte_identical_for_the_same_seed(tmp_path):
    first = phantom.write_dataset(tmp_path / "a", 4, size=32, seed=1, label_noise_sd=5.0, progress=False)
    second = phantom.write_dataset(tmp_path / "b", 4, size=32, seed=1, label_noise_sd=5.0, progress=False)
    names = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert len(names) == 4 + 3   # the images, both label files and the record
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes()
    truth, labels = pd.read_csv(first / "true_boneage.csv"), pd.read_csv(first / "boneage-training-dataset.csv")
    assert (truth["boneage"] == truth["boneage"].round()).all()
    assert not np.allclose(truth["boneage"], labels["boneage"])


@pytest.mark.parametrize("kwargs", [dict(n=0), dict(n=-3), dict(n=2, size=16), dict(n=2, seed=-1),
                                    dict(n=2, label_noise_sd=-1.0), dict(n=2, workers=0)])
def test_write_dataset_rejects_bad_arguments_before_writing(tmp_path, kwargs):
    with pytest.raises(AebonetError):
        phantom.write_dataset(tmp_path / "out", progress=False, **kwargs)
    assert not (tmp_path / "out").exists()


def test_write_dataset_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(AebonetError, match="not empty"):
        phantom.write_dataset(tmp_path, 2, size=32, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


# --- command line ------------------------------------------------------------------------

def test_cli_writes_a_dataset(tmp_path, capsys):
    assert cli.main(["phantom", "--out", str(tmp_path / "d"), "--n", "3", "--size", "32x40", "--seed", "1"]) == 0
    assert "wrote 3 images" in capsys.readouterr().out
    assert cv2.imread(str(tmp_path / "d" / "boneage-training-dataset" / "1.png"), cv2.IMREAD_UNCHANGED).shape == (40, 32)


@pytest.mark.parametrize("args", [["--n", "0"], ["--n", "-1"], ["--n", "2", "--size", "16"],
                                  ["--n", "2", "--size", "big"], ["--n", "2", "--label-noise", "-2"]])
def test_cli_bad_arguments_give_one_line_and_exit_2(tmp_path, capsys, args):
    assert cli.main(["phantom", "--out", str(tmp_path / "d"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("aebonet phantom: error:") and err.count("\n") == 1 and "Traceback" not in err


def test_cli_refuses_a_non_empty_out_in_a_real_process(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    done = subprocess.run([sys.executable, "-m", "aebonet_lib.cli", "phantom", "--out", str(tmp_path), "--n", "2"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.startswith("aebonet phantom: error: --out") and done.stderr.count("\n") == 1
