"""The README's results table is the one computed from the shipped real-data results."""

from __future__ import annotations

from pathlib import Path

from aebonet_lib import paper
from aebonet_lib._engine import rsna_results

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_results_table_is_computed_from_the_shipped_results():
    shown = rsna_results.readme_section(README.read_text())
    assert shown == rsna_results.readme_table(rsna_results.load()), (
        "README.md's results table is stale: run `python -m aebonet_lib._engine.rsna_results`")


def test_readme_table_cites_the_paper_and_rsna_results():
    results = rsna_results.load()
    table = rsna_results.readme_table(results)
    assert "Sirati-Amsheh" in table and "Halabi" in table
    rows = {line.split(" | ")[0].lstrip("| "): line for line in table.splitlines()}
    assert f"| {paper.TEST_MAE:g} |" in rows["AE-BoNet, the paper (256 px, full width, GPU)"]
    assert f"| {paper.TABLE5[256]['MobileNet'][0]:g} |" in rows["MobileNet (ImageNet), the paper, 256 px"]
    ours = next(line for name, line in rows.items() if name.startswith("AE-BoNet as in the paper"))
    for split in ("test", "val"):
        assert rsna_results.format_mae(rsna_results.run_metrics(results, rsna_results.main_run("pretrained"), split)) in ours
