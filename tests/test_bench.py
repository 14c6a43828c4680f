"""The benchmark's report: a figure that was not measured reads "–"."""

from __future__ import annotations

from bench.run import summary


def _row(figures: dict[str, object]) -> list[str]:
    lines = summary({"this project": figures})
    return [cell.strip() for cell in lines[-1].strip("|").split("|")]


def test_a_scenario_that_did_not_run_reads_as_not_measured():
    assert _row({}) == ["this project", "–", "–", "–", "–", "–"]


def test_a_rate_search_that_found_no_sustainable_rate_says_so():
    row = _row({"max broadcast rate 1000": {"members": 1000, "max_rate": None}})
    assert row[-1] == "none sustainable"


def test_a_sustainable_rate_is_printed_per_second():
    row = _row({"max broadcast rate 1000": {"members": 1000, "max_rate": 200}})
    assert row[-1] == "200/s"
