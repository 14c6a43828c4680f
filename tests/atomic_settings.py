"""The project's settings with ATOMIC_REQUESTS on, as many sites run."""

from config.settings import *  # noqa: F403
from config.settings import DATABASES

DATABASES["default"]["ATOMIC_REQUESTS"] = True
