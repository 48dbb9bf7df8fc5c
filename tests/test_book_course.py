"""The chapter settings (course.py): data, preset and run folders, and the exercises' check."""

from __future__ import annotations

import pytest

from aebonet_lib import course
from aebonet_lib.errors import AebonetError


def test_preset_defaults_to_cpu_on_phantom_and_paper_on_real_data(monkeypatch):
    monkeypatch.delenv("AEBONET_PRESET", raising=False)
    assert course.preset_for("phantom") == "cpu"
    assert course.preset_for("phantom:200") == "cpu"
    assert course.preset_for("/data/rsna") == "paper"


def test_aebonet_preset_picks_any_preset(monkeypatch):
    monkeypatch.setenv("AEBONET_PRESET", "rsna-cpu")
    assert course.preset_for("/data/rsna") == "rsna-cpu"
    assert course.config_for("/data/rsna").name == "rsna-cpu"
    monkeypatch.setenv("AEBONET_PRESET", "paper")
    assert course.config_for("phantom").name == "paper"


def test_unknown_preset_is_one_clear_line(monkeypatch):
    monkeypatch.setenv("AEBONET_PRESET", "gpu-fast")
    with pytest.raises(AebonetError) as err:
        course.config_for("phantom")
    message = str(err.value)
    assert "\n" not in message and "AEBONET_PRESET='gpu-fast'" in message and "rsna-cpu" in message


def test_runs_dir_follows_aebonet_runs(monkeypatch, tmp_path):
    monkeypatch.delenv("AEBONET_PRESET", raising=False)
    monkeypatch.setenv("AEBONET_RUNS", str(tmp_path / "drive"))
    config = course.config_for("phantom")
    assert course.runs_dir("phantom", config) == tmp_path / "drive" / "phantom-cpu"


def test_check_says_right_not_done_or_wrong(capsys):
    course.check("1.1", lambda: None)
    assert "Exercise 1.1: correct" in capsys.readouterr().out

    def stub():
        raise NotImplementedError("Student exercise: do it")
    course.check("1.2", stub)
    assert "not done yet" in capsys.readouterr().out

    def wrong():
        assert 1 + 1 == 3, "expected 3"
    with pytest.raises(AssertionError, match="Exercise 1.3: not right yet: expected 3"):
        course.check("1.3", wrong)


def test_elapsed_says_seconds_then_minutes():
    import time

    assert course.elapsed(time.perf_counter() - 17.2) == "17 seconds"
    assert course.elapsed(time.perf_counter() - 300) == "5 minutes"
