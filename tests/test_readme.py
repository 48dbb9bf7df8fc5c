"""The README's results table is the one computed from the shipped real-data results."""

from __future__ import annotations

from pathlib import Path

from aebonet_lib.experiments import rsna_results

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_results_table_is_computed_from_the_shipped_results():
    shown = rsna_results.readme_section(README.read_text())
    assert shown == rsna_results.readme_table(rsna_results.load()), (
        "README.md's results table is stale: run `python -m aebonet_lib.experiments.rsna_results`")


def test_readme_table_cites_the_paper_and_rsna_results():
    table = rsna_results.readme_table(rsna_results.load())
    assert "Sirati-Amsheh" in table and "Halabi" in table and "9.3" in table
