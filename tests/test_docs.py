"""The documentation describes the code that runs."""

from __future__ import annotations

import re
from pathlib import Path

import django_websocket
from django_websocket.conf import DEFAULTS

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_api_reference_lists_exactly_the_public_names():
    text = (DOCS / "reference" / "api.md").read_text()
    documented = set(re.findall(r"^#{2,3} `(\w+)", text, flags=re.MULTILINE))
    assert documented == set(django_websocket.__all__)


def test_every_public_name_is_importable():
    for name in django_websocket.__all__:
        assert getattr(django_websocket, name) is not None


def test_every_library_setting_is_documented_with_its_default():
    text = (DOCS / "reference" / "settings.md").read_text()
    rows = dict(
        re.findall(r"^\| `(WEBSOCKET_\w+)` \| `([^`]+)`", text, flags=re.MULTILINE)
    )
    assert set(rows) == set(DEFAULTS)
    for name, default in DEFAULTS.items():
        assert rows[name] == repr(default), name
