"""Settings for the test suite: the development settings, in folders of their own.

Plain `pytest` works without exporting anything, and a `make run` in the same checkout (whose
filesystem broker, SQLite file and beat schedule live in var/) never shares a queue with the
tests: they use TEST_VAR_DIR, by default the folder test/ inside VAR_DIR. Subprocesses the tests
start (a Celery worker) inherit the same folders through the environment.
"""

import os
from pathlib import Path

_BASE = Path(__file__).resolve().parent.parent
os.environ.setdefault("DEBUG", "true")
os.environ.setdefault(
    "TEST_VAR_DIR", str(Path(os.environ.get("VAR_DIR") or _BASE / "var") / "test")
)
os.environ["VAR_DIR"] = os.environ["TEST_VAR_DIR"]

from .settings import *  # noqa: E402, F403

# Tests hash many passwords (personas, login throttling): a fast hasher keeps them quick.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
