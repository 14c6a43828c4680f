"""A pytest plugin that runs each selected test N times, to hunt flakes.

    make repeat TESTS="django_websocket/tests/test_server.py::test_x" N=200

which is ``pytest -p tests.repeat --repeat 200 TESTS``: every run is its own
test item (``test_x[run-7]``), with its own fixtures, so a failure names the
run it happened in and the report counts the failures.
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--repeat", type=int, default=1, help="run each selected test N times"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    count = metafunc.config.getoption("repeat")
    if count > 1:
        metafunc.fixturenames.append("_repeat_run")
        metafunc.parametrize(
            "_repeat_run", range(1, count + 1), ids=lambda n: f"run-{n}"
        )
