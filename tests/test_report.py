"""`aebonet report`: tables and figures for finished runs, and one-line errors for folders without any."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from aebonet_lib._engine import predict, report
from aebonet_lib._engine import runner as training
from aebonet_lib._engine.cli import main
from aebonet_lib._engine.files import read_json
from aebonet_lib.config import get_config
from aebonet_lib.data.loading import load_data
from aebonet_lib.errors import AebonetError
from aebonet_lib.evaluation import metrics


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """Return a folder with a tiny pretraining run (ae) and two evaluated regressors (aebonet, scratch) on 60 images."""
    cache, root = tmp_path_factory.mktemp("cache"), tmp_path_factory.mktemp("runs")
    config = get_config("cpu", image_size=32, width=0.125, ae_stages=(1, 1), phantom_n=60)
    data = load_data("phantom:60", 32, split=config.split, cache_root=cache, progress=False)
    training.pretrain(data, config, root / "ae", progress=False)
    training.train(data, config, root / "aebonet", encoder=root / "ae" / "encoder.keras", num_epochs=1, progress=False)
    training.train(data, config, root / "scratch", backbone="scratch", num_epochs=2, progress=False)
    for name in ("aebonet", "scratch"):
        predict.evaluate(root / name / "model.keras", data, n_boot=200, progress=False)
    return root


@pytest.fixture(scope="module")
def written(runs, tmp_path_factory) -> tuple[list[Path], Path]:
    """Return the files `report` wrote for the three runs, and their folder."""
    out = tmp_path_factory.mktemp("report") / "out"
    return report.report([runs / "ae", runs / "aebonet", runs / "scratch"], out, n_boot=300), out


def test_report_writes_every_table_and_figure(written):
    files, out = written
    names = {path.name for path in files}
    tables = ["runs", "table4", "table5", "paired", "table2_ae", "age_bands_aebonet", "age_bands_scratch"]
    for table in tables:
        assert {f"{table}.csv", f"{table}.md"} <= names, table
    figures = [f"curves_{run}.png" for run in ("ae", "aebonet", "scratch")]
    figures += [f"{kind}_{run}.png" for kind in ("scatter", "bland_altman", "error_by_band") for run in ("aebonet", "scratch")]
    assert set(figures) <= names
    assert len(names) == len(files) == 2 * len(tables) + len(figures)
    for path in files:
        assert path.parent == out and path.is_file() and path.stat().st_size > 0, path
    assert all((out / f).read_bytes()[:4] == b"\x89PNG" for f in figures)


def test_runs_table_holds_our_measured_runs(written, runs):
    _, out = written
    table = pd.read_csv(out / "runs.csv").set_index("run")
    assert list(table.index) == ["aebonet", "scratch"]
    for name in ("aebonet", "scratch"):
        measured = read_json(runs / name / "metrics.json")
        assert table.loc[name, "mae"] == pytest.approx(measured["mae"])
        assert [table.loc[name, "mae_ci_low"], table.loc[name, "mae_ci_high"]] == pytest.approx(measured["mae_ci95"])
        assert table.loc[name, "data"] == "phantom:60, test split" and table.loc[name, "image_size"] == 32
    assert table.loc["aebonet", "method"] == "aebonet" and table.loc["scratch", "method"] == "scratch"


def test_tables_4_and_5_mark_our_rows(written):
    _, out = written
    table4 = pd.read_csv(out / "table4.csv")
    ours = table4[table4.measured_by == "this project"]
    assert len(ours) == 2 and (table4.measured_by == "paper").sum() >= 7
    assert ours.method.str.contains("this project").all() and (ours.data == "phantom:60, test split").all()
    table5 = pd.read_csv(out / "table5.csv")
    assert set(table5[table5.image_size == 32].method) == {"AE-BoNet", "from scratch (control)"}
    assert table5[table5.method == "AE-BoNet"].paper_mae.dropna().tolist() == [9.3, 9.9]  # 256 and 450 px


def test_table2_puts_our_stages_beside_the_paper(written, runs):
    _, out = written
    table2 = pd.read_csv(out / "table2_ae.csv").set_index("stage")
    stages = pd.read_csv(runs / "ae" / "stages.csv").set_index("stage")
    assert list(table2.index) == [1, 2, 3, 4, 5] and table2.paper_epochs.tolist() == [300, 200, 100, 150, 150]
    np.testing.assert_allclose(table2.loc[[1, 2], "ours_loss"], stages.loss)
    assert table2.loc[[3, 4, 5], "ours_loss"].isna().all()


def test_paired_comparison_on_the_same_images(written, runs):
    _, out = written
    paired = pd.read_csv(out / "paired.csv")
    assert len(paired) == 1 and (paired.run_a[0], paired.run_b[0]) == ("aebonet", "scratch")
    a, b = (pd.read_csv(runs / name / "predictions.csv").sort_values("id") for name in ("aebonet", "scratch"))
    expected = metrics.mae(a.true, a.predicted) - metrics.mae(b.true, b.predicted)
    assert paired.difference[0] == pytest.approx(expected)
    assert paired.ci_low[0] <= paired.difference[0] <= paired.ci_high[0] and 0 < paired.p_value[0] <= 1


def test_runs_on_other_images_are_not_paired(runs, tmp_path):
    predictions = pd.read_csv(runs / "scratch" / "predictions.csv", dtype={"id": str})
    other = tmp_path / "other"
    other.mkdir()
    predictions.assign(id=predictions.id + "x").to_csv(other / "predictions.csv", index=False)
    tables = {"scratch": report.read_predictions(runs / "scratch"), "other": report.read_predictions(other)}
    assert report.paired_table(tables).empty


def test_run_labels_stay_unique():
    assert report.run_labels([Path("a/ae"), Path("b/reg")]) == ["ae", "reg"]
    assert report.run_labels([Path("x/seed-0/scratch"), Path("x/seed-1/scratch")]) == ["seed-0-scratch", "seed-1-scratch"]
    assert report.run_labels([Path("x/r"), Path("x/r")]) == ["x-r-1", "x-r-2"]


def test_missing_or_empty_run_folders_are_refused(tmp_path, runs):
    with pytest.raises(AebonetError, match=r"missing.*not found"):
        report.report([tmp_path / "missing"], tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AebonetError, match=r"empty: nothing to report"):
        report.report([runs / "ae", tmp_path / "empty"], tmp_path / "out")
    assert not (tmp_path / "out").exists()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(AebonetError, match="not empty"):
        report.report([runs / "ae"], tmp_path / "full")


def test_cli_report_lists_the_files_it_wrote(runs, tmp_path, capsys):
    assert main(["report", "--runs", str(runs / "ae"), str(runs / "scratch"), "--out", str(tmp_path / "rep")]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert f"wrote {tmp_path / 'rep' / 'runs.csv'}" in printed and f"wrote {tmp_path / 'rep' / 'curves_ae.png'}" in printed
    assert all(line.startswith("wrote ") and Path(line[6:]).is_file() for line in printed)


def test_cli_report_errors_are_one_line(tmp_path, capsys):
    assert main(["report", "--runs", str(tmp_path / "nope"), "--out", str(tmp_path / "rep")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("aebonet report: error: run folder") and "nope" in err and err.count("\n") == 1
    with pytest.raises(SystemExit) as exit_info:
        main(["report", "--out", str(tmp_path / "rep")])
    assert exit_info.value.code == 2
