"""Config validates itself: a preset, `replace` and `from_dict` cannot build an invalid recipe."""

from __future__ import annotations

import pytest

from aebonet_lib import paper
from aebonet_lib.config import PRESETS, Config
from aebonet_lib.errors import AebonetError

BAD_FIELDS = [
    {"image_size": 16}, {"width": 0}, {"decoder": "bilinear"}, {"objective": "denoise"}, {"lr_schedule": "step"},
    {"keep": "median"}, {"precision": "fp8"}, {"split_kind": "by-site"}, {"split": (0.5, 0.5, 0.5)},
    {"reg_batch_size": 0}, {"ae_batch_size": 2.5}, {"phantom_n": 0}, {"ae_stages": ()}, {"reg_num_epochs": -1},
    {"reduce_lr_factor": 1.5},
]


@pytest.mark.parametrize("bad", BAD_FIELDS, ids=lambda bad: next(iter(bad)))
def test_every_way_of_building_a_config_refuses_a_bad_field(bad):
    with pytest.raises(AebonetError):
        Config(name="x", **bad)
    with pytest.raises(AebonetError):
        PRESETS["cpu"].replace(**bad)
    saved = PRESETS["cpu"].to_dict() | {k: list(v) if isinstance(v, tuple) else v for k, v in bad.items()}
    with pytest.raises(AebonetError):
        Config.from_dict(saved)


def test_every_preset_survives_a_round_trip_through_its_dict():
    for preset in PRESETS.values():
        assert Config.from_dict(preset.to_dict()) == preset


def test_an_old_config_json_with_sex_input_still_loads():
    assert Config.from_dict(PRESETS["paper"].to_dict() | {"sex_input": True}) == PRESETS["paper"]
    assert "sex_input" not in PRESETS["paper"].to_dict()  # a model's sex input is in model.json, not in the recipe


def test_the_paper_preset_is_the_papers_numbers():
    paper_preset = PRESETS["paper"]
    assert (paper_preset.image_size, paper_preset.ae_stages, paper_preset.ae_batch_size, paper_preset.reg_batch_size) == (
        paper.IMAGE_SIZE, paper.AE_STAGES, paper.AE_BATCH_SIZE, paper.REG_BATCH_SIZE)
    assert (paper_preset.ae_lr, paper_preset.reg_lr, paper_preset.l2) == (paper.AE_LR, paper.REG_LR, paper.L2)
