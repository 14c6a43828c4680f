"""The project's settings, with what the tests of server processes vary
taken from the environment."""

import json
import os

from config.settings import *  # noqa: F403
from config.settings import DATABASES

DATABASES["default"]["ATOMIC_REQUESTS"] = bool(os.environ.get("STARTER_TEST_ATOMIC"))
# e.g. "1000,1": posts per seconds.
if os.environ.get("STARTER_TEST_CHAT_RATE_LIMIT"):
    limit, period = os.environ["STARTER_TEST_CHAT_RATE_LIMIT"].split(",")
    CHAT_RATE_LIMIT = CHAT_ADDRESS_RATE_LIMIT = (int(limit), float(period))
# SQL run on every new SQLite connection, e.g. "PRAGMA query_only=ON".
if os.environ.get("STARTER_TEST_SQLITE_INIT"):
    options = DATABASES["default"]["OPTIONS"]
    options["init_command"] += os.environ["STARTER_TEST_SQLITE_INIT"]
# The site's routes plus the test views (tests/urls.py).
if os.environ.get("STARTER_TEST_URLS"):
    ROOT_URLCONF = "tests.urls"
# LIVESEARCH_* settings as a JSON object, e.g. pointing the sources at a
# stand-in (tests/search_api.py).
if os.environ.get("STARTER_TEST_LIVESEARCH"):
    globals().update(json.loads(os.environ["STARTER_TEST_LIVESEARCH"]))
