"""Tables: the published figures with sources, nothing invented, ours beside them."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aebonet_lib import results
from aebonet_lib._engine.modelfiles import ModelMeta
from aebonet_lib.config import get_config
from aebonet_lib.data.preprocess import PreprocessParams
from aebonet_lib.errors import AebonetError

# Every published number the module may hold, with the publication it comes from.
PUBLISHED_NUMBERS = {14.78, 9.997, 9.3, 4.2, 4.5, 3.87, 0.45, 4.8, 7.0, 12.9, 16.1, 19.1,
                     14.7, 352.8, 413.6, 15.8, 427.6, 661.2, 13.6, 295.5, 416.3, 12.5, 268.8, 296.8, 9.9, 161.1, 144.6,
                     0.000206, 0.000172, 0.000166, 0.000156, 0.000148, 0.4866, 0.6169, 0.6819, 0.6830, 0.6839}
PAPER_SUMMARY = Path(__file__).resolve().parents[2] / "shared" / "PAPER.md"


def our_runs() -> pd.DataFrame:
    """Return a runs_table for two tiny phantom runs."""
    return results.runs_table([
        {"run": "ae", "method": "aebonet", "data": "phantom", "image_size": 256, "n": 200, "mae": 7.94, "mae_ci95": [7.12, 8.81]},
        {"run": "scratch", "method": "scratch", "data": "phantom", "image_size": 256, "n": 200, "mae": 11.2, "mae_ci95": [10.1, 12.4]},
    ])


def numbers_in(table: pd.DataFrame, columns) -> set:
    """Return the non-NaN numbers found in `columns`."""
    values = pd.to_numeric(table[columns].stack(), errors="coerce").dropna()
    return set(values.round(6))


def test_table4_holds_the_published_rows_with_sources():
    table = results.table4()
    assert table.loc["Wibisono et al. 2019", "value"] == 14.78
    assert table.loc["Gao et al. 2020", "value"] == 9.997
    assert table.loc["AE-BoNet (Sirati-Amsheh et al. 2025)", "value"] == 9.3
    challenge = table.loc["RSNA 2017 challenge, top five"]
    assert (challenge.metric, challenge.value_low, challenge.value_high) == ("MAD", 4.2, 4.5)
    assert "Halabi" in challenge.source and "Radiology 2019" in challenge.source
    assert table.loc["Deeplasia", "value"] == 3.87 and "Rassmann" in table.loc["Deeplasia", "source"]
    bonexpert = table.loc["BoneXpert v3"]
    assert (bonexpert.metric, bonexpert.value, bonexpert.unit) == ("RMS error", 0.45, "years")
    assert bonexpert.value_months == pytest.approx(5.4) and "Martin" in bonexpert.source
    assert (table.measured_by == "paper").all()
    assert table.source.str.len().gt(10).all()


def test_no_invented_numbers():
    published = numbers_in(results.table4(), ["value", "value_low", "value_high"])
    paper = numbers_in(results.table5(), ["paper_mae", "paper_mse"]) | numbers_in(results.table2(), ["paper_loss",
                                                                                                   "paper_accuracy"])
    assert published | paper <= PUBLISHED_NUMBERS


@pytest.mark.skipif(not PAPER_SUMMARY.is_file(), reason="../shared/PAPER.md is absent")
def test_every_paper_table_number_is_in_the_papers_summary():
    text = PAPER_SUMMARY.read_text()
    paper = numbers_in(results.table5(), ["paper_mae", "paper_mse"]) | numbers_in(results.table2(), ["paper_loss",
                                                                                                   "paper_accuracy"])
    missing = [x for x in paper if f"{x:g}" not in text and f"{x:.4f}" not in text]
    assert not missing, f"not in PAPER.md: {missing}"


def test_table4_appends_our_rows_marked_as_ours():
    table = results.table4(our_runs())
    ours = table[table.measured_by == "this project"]
    assert list(ours.index) == ["AE-BoNet, this project", "from scratch (control), this project"]
    assert ours.iloc[0].value == 7.94 and ours.iloc[0].value_low == 7.12 and ours.iloc[0].data == "phantom"
    assert len(table) == len(results.table4()) + 2
    with pytest.raises(AebonetError, match="missing column"):
        results.table4(pd.DataFrame({"mae": [1.0]}))


def test_table5_puts_ours_beside_the_paper():
    table = results.table5(our_runs())
    assert table.loc[(256, "MobileNet"), "paper_mae"] == 12.9
    assert table.loc[(256, "VGG16"), "paper_mae"] == 19.1
    assert table.loc[(256, "AE-BoNet"), "ours_mae_ci"] == "7.9 (7.1-8.8)"
    assert table.loc[(256, "from scratch (control)"), "ours_mae"] == 11.2
    assert np.isnan(table.loc[(256, "from scratch (control)"), "paper_mae"])
    assert table.loc[(450, "MobileNet"), "paper_mae"] == 12.5 and table.loc[(450, "AE-BoNet"), "paper_mse"] == 161.1
    for name in ("Xception", "VGG16", "InceptionV3", "MobileNet"):  # every baseline improves at 450 px
        assert table.loc[(450, name), "paper_mae"] < table.loc[(256, name), "paper_mae"]
    assert table.loc[(450, "AE-BoNet"), "paper_mae"] > table.loc[(256, "AE-BoNet"), "paper_mae"]  # AE-BoNet does not
    for size in (256, 450):
        assert np.isnan(table.loc[(size, "ResNet50"), "paper_mae"]) and "no row" in table.loc[(size, "ResNet50"), "note"]
    assert list(table.index.get_level_values(0).unique()) == [256, 450]


def test_table2_paper_stages_beside_ours(tmp_path):
    stages = pd.DataFrame({"stage": [1, 2, 3, 4, 5], "epochs": [2, 2, 1, 1, 1], "loss": [0.05, 0.03, 0.02, 0.02, 0.01]})
    stages.to_csv(tmp_path / "stages.csv", index=False)
    table = results.table2(tmp_path / "stages.csv")
    assert list(table.paper_epochs) == [300, 200, 100, 150, 150]
    assert list(table.ours_loss) == [0.05, 0.03, 0.02, 0.02, 0.01]
    assert list(table.paper_loss) == [0.000206, 0.000172, 0.000166, 0.000156, 0.000148]
    assert list(table.paper_accuracy) == [0.4866, 0.6169, 0.6819, 0.6830, 0.6839]
    with pytest.raises(AebonetError, match="not found"):
        results.table2(tmp_path / "missing.csv")


def test_runs_table_reads_metrics_files(tmp_path):
    run = tmp_path / "aebonet_run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"mae": 8.0, "mae_ci95": [7.25, 8.84], "n": 150, "rmse": 10.1, "bias": -0.4}))
    meta = ModelMeta("regressor", PreprocessParams(64), get_config("cpu", image_size=64), backbone="aebonet")
    (run / "model.json").write_text(json.dumps(meta.to_dict()))
    table = results.runs_table([run, {"mae": 9.0, "mae_ci95": [8.0, 10.0], "n": 50}])
    assert list(table.index) == ["aebonet_run", "run 2"]
    assert table.loc["aebonet_run", "MAE (95% CI)"] == "8.0 (7.2-8.8)"
    assert table.loc["aebonet_run", "method"] == "aebonet" and table.loc["aebonet_run", "image_size"] == 64
    (run / "metrics.json").write_text(json.dumps({"mse": 1.0}))
    with pytest.raises(AebonetError, match="rerun `aebonet evaluate`"):
        results.runs_table([run])
    with pytest.raises(AebonetError, match="no runs"):
        results.runs_table([])


def test_format_ci():
    assert results.format_ci(7.94, 7.12, 8.81) == "7.9 (7.1-8.8)"
    assert results.format_ci(-0.4, -1.2, 0.3) == "-0.4 (-1.2 to 0.3)"
    assert results.format_ci(5.0, np.nan, np.nan) == "5.0"


def test_save_table_writes_csv_and_markdown(tmp_path):
    csv_path, md_path = results.save_table(results.table4(our_runs()), tmp_path / "table4")
    assert pd.read_csv(csv_path, index_col=0).loc["Deeplasia", "value"] == 3.87
    markdown = md_path.read_text()
    assert markdown.startswith("| method") and "Halabi" in markdown
    assert not list(tmp_path.glob(".*tmp*"))


def test_experiment_table_says_each_arm_in_words():
    table = pd.DataFrame({"fraction": [0.25, 0.25], "arm": ["pretrained", "scratch"], "n_labels": [50, 50],
                          "mae": [20.04, 30.0], "ci_low": [18.0, 27.5], "ci_high": [22.0, 32.5],
                          "difference": [-9.96, np.nan], "difference_ci_low": [-12.0, np.nan],
                          "difference_ci_high": [-7.5, np.nan], "p_value": [0.0004, np.nan],
                          "beats_median_predictor": [True, False]}).set_index(["fraction", "arm"])
    shown = results.experiment_table(table, "scratch")
    assert shown.index.names == ["labels used", "arm"]
    assert shown.loc[("25%", "pretrained"), "MAE, months (95% CI)"] == "20.0 (18.0-22.0)"
    assert shown.loc[("25%", "pretrained"), "minus scratch (95% CI)"] == "-10.0 (-12.0 to -7.5)"
    assert shown.loc[("25%", "pretrained"), "p"] == "<0.001"
    assert shown.loc[("25%", "scratch"), "p"] == "" and shown.loc[("25%", "scratch"), "beats the median"] == "no"


RUN_TABLES = ["rsna-cpu/runs.csv", "phantom/sim2real.csv", "phantom/sim2real_v1.csv", "phantom/label_efficiency.csv",
              "phantom/label_efficiency_v1.csv", "label_efficiency/runs.csv"]


@pytest.mark.parametrize("name", RUN_TABLES)
def test_every_shipped_results_row_names_the_code_that_made_it(name):
    table = pd.read_csv(Path(__file__).resolve().parents[1] / "aebonet_lib" / "results" / name, dtype=str)
    assert "commit" in table.columns
    named = table.commit.fillna("").str.fullmatch(r"[0-9a-f]{40}")
    notes = table.commit_note.fillna("") if "commit_note" in table.columns else pd.Series("", index=table.index)
    assert (named | notes.str.startswith("not recorded")).all(), f"{name}: rows with neither a commit nor a note"
