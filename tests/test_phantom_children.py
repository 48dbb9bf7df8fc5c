"""Tests of the phantom's children who differ, its physics and its two styles."""

import numpy as np
import pytest

from aebonet_lib import phantom
from aebonet_lib._engine import realism
from aebonet_lib.errors import AebonetError
from aebonet_lib.phantom import children

CHILDREN = [phantom.draw_child(seed) for seed in range(400)]


# --- children --------------------------------------------------------------------------

def test_children_differ_but_a_seed_draws_the_same_child():
    assert phantom.draw_child(3) == phantom.draw_child(3)
    assert len({child.hand_length for child in CHILDREN}) > 5 and len({child.build for child in CHILDREN}) > 100
    offsets = np.array([[child.offsets[g] for g in phantom.TEMPO_GROUPS] for child in CHILDREN])
    assert abs(offsets.mean()) < 1.0 and 4.5 < offsets.std() < 7.0  # TEMPO_SD_MONTHS = 6
    assert np.all(offsets == np.round(offsets))
    assert np.corrcoef(offsets[:, 0], offsets[:, 3])[0, 1] < 0.2  # carpals and radius/ulna dissociate


def test_offsets_move_a_bone_group_along_the_timeline():
    shifted = phantom.maturity_state(60, False, {"carpals": 12.0})
    assert shifted["carpals"] == phantom.maturity_state(72, False)["carpals"]
    assert shifted["epiphyses"] == phantom.maturity_state(60, False)["epiphyses"]
    assert phantom.maturity_state(235, True, {"radius_ulna": 12.0})["epiphyses"]["radius"]["fused"]


def test_variation_off_draws_the_average_child_for_every_seed():
    a = phantom.render(100, True, 64, seed=1, variation=False)
    b = phantom.render(100, True, 64, seed=1, variation=True)
    assert not np.array_equal(a, b)
    assert np.array_equal(a, phantom.render(100, True, 64, seed=1, variation=False))


def mean_state(age: float, male: bool, key) -> float:
    """Return the mean over 400 children of one maturity number at a bone age."""
    return float(np.mean([key(phantom.maturity_state(age, male, c.offsets)) for c in CHILDREN]))


@pytest.mark.parametrize("male", [False, True])
def test_maturity_still_rises_with_age_on_average_with_variation(male):
    carpals = [mean_state(age, male, lambda s: s["carpals_visible"]) for age in range(0, 241, 12)]
    fusion = [mean_state(age, male, lambda s: s["epiphyses"]["radius"]["fusion"]) for age in range(120, 241, 12)]
    assert np.all(np.diff(carpals) >= 0) and np.all(np.diff(fusion) >= 0)
    assert carpals[0] < 1 and carpals[-1] == 8


def test_girls_are_ahead_of_boys_on_average_with_variation():
    for age in (36, 60, 96, 168):
        girls = mean_state(age, False, lambda s: s["carpals_visible"] + s["epiphyses"]["radius"]["width_ratio"])
        boys = mean_state(age, True, lambda s: s["carpals_visible"] + s["epiphyses"]["radius"]["width_ratio"])
        assert girls > boys


def test_fusion_order_holds_on_average_with_variation():
    for male in (False, True):
        fused_share = {g: mean_state(190 if not male else 205, male, lambda s, g=g: s["epiphyses"][g]["fusion"])
                       for g in phantom.EPIPHYSES}
        assert fused_share["distal_phalanges"] >= fused_share["radius"]


def test_label_floor_and_default_reader():
    assert phantom.READER_SD_MONTHS == pytest.approx(5.32, abs=0.01)
    assert children.label_floor(phantom.READER_SD_MONTHS) == pytest.approx(4.24, abs=0.01)


def test_make_dataset_prints_the_mae_floor(capsys):
    phantom.make_dataset(2, size=32, seed=0, progress=True)
    assert "no model can beat MAE 4.2 months" in capsys.readouterr().out


# --- physics and styles ----------------------------------------------------------------

def test_dense_bone_never_clips():
    for seed in range(4):
        image = phantom.render(220, True, 128, seed=seed, style="registered")
        assert (image >= 1.0).mean() < 0.001


def test_registered_background_is_black_and_raw_is_not():
    registered = phantom.render(120, False, 128, seed=2, style="registered")
    assert (registered == 0).mean() > 0.3
    raws = [phantom.render(120, False, 128, seed=s, style="raw") for s in range(10)]
    assert np.mean([(r == 0).mean() for r in raws]) < 0.2


def test_unknown_style_is_refused():
    with pytest.raises(AebonetError, match="style"):
        phantom.render(100, True, 64, style="glossy")
    with pytest.raises(AebonetError, match="style"):
        phantom.make_dataset(2, size=32, style="glossy", progress=False)


def test_a_1024_render_has_finer_detail_than_a_blown_up_256_one():
    import cv2

    big = phantom.render(120, False, (1024, 788), seed=1, style="registered")
    small = phantom.render(120, False, (256, 197), seed=1, style="registered")
    blown_up = cv2.resize(small, (788, 1024), interpolation=cv2.INTER_LINEAR)
    mask = big > 0.2
    assert realism.fine_residual(big)[mask].std() > 1.5 * realism.fine_residual(blown_up)[mask].std()


def test_source_digest_is_a_short_hex_string():
    digest = phantom.source_digest()
    assert len(digest) == 8 and int(digest, 16) >= 0


def test_label_noise_none_means_one_reader():
    _, labels_none, _ = phantom.make_dataset(3, size=32, seed=4, label_noise_sd=None, progress=False)
    _, labels_reader, _ = phantom.make_dataset(3, size=32, seed=4, progress=False)
    assert np.array_equal(labels_none, labels_reader)


def test_older_carpus_is_brighter_in_most_raw_images_with_variation():
    brighter = []
    for seed in range(30):
        means = {}
        for age in (12, 150):
            x0, y0, x1, y1 = phantom.regions(age, True, 64, seed)["carpals"]
            means[age] = phantom.render(age, True, 64, seed)[y0:y1, x0:x1].mean()
        brighter.append(means[150] > means[12])
    assert np.mean(brighter) >= 0.8


def test_the_automatic_window_undoes_the_exposure():
    from aebonet_lib.phantom import radiograph
    from aebonet_lib.phantom.styles import draw_nuisance

    pose = draw_nuisance(5)
    tissue = np.zeros((256, 256), np.float32)
    tissue[32:224, 32:224] = 1.0  # the anatomy; the rest is the plate
    signal = np.where(tissue > 0, np.linspace(0.2, 0.6, 256, dtype=np.float32)[None, :], np.float32(0.02))
    shown = radiograph.voi_window(signal, tissue, pose)
    harder = radiograph.voi_window(0.7 * signal, tissue, pose)  # the same hand, less exposure
    inside = tissue > 0
    assert np.abs(shown - harder)[inside].max() < 0.01
    dark, bright = np.percentile(shown[inside], radiograph.WINDOW_PERCENTILES)
    span = min(pose["window_span"], 0.99 - pose["window_low"])
    assert dark == pytest.approx(pose["window_low"], abs=0.02) and bright == pytest.approx(pose["window_low"] + span, abs=0.02)
    assert shown[~inside].max() <= pose["window_low"]  # the plate stays darker than the hand

