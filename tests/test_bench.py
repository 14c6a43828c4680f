"""The benchmark's report: a figure that was not measured reads "–"."""

from __future__ import annotations

from bench.run import (
    HOSTILE_BOUND_MIB,
    _burst_repeated,
    _churn_cells,
    _hostile_cells,
    summary,
)


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


def _hostile(during: float, alone: float, attacked: float, publish=None) -> dict:
    return {
        "rss_growth_during_mib": during,
        "rss_growth_after_mib": 1.0,
        "echo_p99_alone_ms": alone,
        "echo_p99_attacked_ms": attacked,
        "publish_p99_ms": publish,
        "attacker": {"connections": 3, "closes": {"1008": 2}},
    }


def test_a_hostile_case_within_its_goals_reads_met():
    cells = _hostile_cells(_hostile(5.0, 20.0, 30.0, publish=12.0))
    assert cells == [
        "5.0 / 1.0",
        "met",
        "20.0 → 30.0",
        "1.5× met",
        "12.0 met",
        "3, 2× 1008",
    ]


def test_a_hostile_case_past_its_goals_reads_missed():
    cells = _hostile_cells(_hostile(HOSTILE_BOUND_MIB + 1, 20.0, 50.0, publish=60.0))
    assert cells[1] == "**missed**"
    assert cells[3] == "2.5× **missed**"
    assert cells[4] == "60.0 **missed**"


def test_a_presence_churn_row_gives_bytes_per_change_and_per_member():
    cells = _churn_cells(
        {
            "members": 500,
            "churners": 8,
            "churn_seconds": 20.04,
            "leaves": 1200,
            "presence_changes_per_member": [39, 40.0, 41],
            "bytes_per_change": 41000,
            "bytes_per_member_per_change": 82.0,
            "bytes_per_cycle": 82000,
            "bytes_while_joining": 2500000,
        }
    )
    assert cells == [
        "500",
        "1,200 by 8 clients in 20.0 s",
        "39 / 40.0 / 41",
        "41,000",
        "82.00",
        "82,000",
        "2,500,000",
    ]


def _burst_run(answered: int, seconds: float | None) -> dict:
    return {"opened": 5000, "answered": answered, "seconds_to_all": seconds}


def test_repeated_bursts_count_the_runs_that_met_the_goal_and_give_the_spread():
    runs = [_burst_run(5000, 0.4), _burst_run(5000, 1.9), _burst_run(5000, 3.5)]
    runs.append(_burst_run(300, None))
    cells = _burst_repeated({"burst_runs": runs, "burst_repeat": 5})
    assert cells == "2/5 runs; 0.40 / 3.50 / not all s (1 failed)"
