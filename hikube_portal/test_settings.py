"""Settings for the test suite: the development settings, in folders of their own.

Plain `pytest` works without exporting anything, and a `make run` in the same checkout (whose
filesystem broker, SQLite file and beat schedule live in var/) never shares a queue with the
tests: they use TEST_VAR_DIR, by default the folder test/ inside VAR_DIR. Subprocesses the tests
start (a Celery worker) inherit the same folders through the environment.

Under pytest-xdist (`make test` runs `pytest -n`), each worker (gw0, gw1, ...) gets a folder of
its own (TEST_VAR_DIR/gw0) and Redis databases of its own: the databases of REDIS_URL,
CELERY_BROKER_URL, CELERY_RESULT_BACKEND and CACHE_URL, moved up by the worker's number times the
span they cover (with /0, /1 and /3: gw0 keeps 0-3, gw1 gets 4-7, ...). The result is written back
to the environment once, marked by TEST_WORKER, so the Celery workers a test starts (which
inherit the environment and import these settings again) land on the same ones.
"""

import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REDIS_VARIABLES = ("REDIS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "CACHE_URL")


def _redis_db(url: str) -> int | None:
    """The database number of a redis:// URL (0 when the path names none), None otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in {"redis", "rediss"}:
        return None
    path = parts.path.strip("/")
    return int(path) if path.isdigit() else 0


def redis_databases(environ) -> dict[str, int]:
    """The Redis database each variable of REDIS_VARIABLES names, for those that name one."""
    found = {name: _redis_db(environ.get(name, "")) for name in REDIS_VARIABLES}
    return {name: db for name, db in found.items() if db is not None}


def redis_span(environ) -> int:
    """How many databases one test process uses (lowest to highest named): a worker's stride."""
    dbs = redis_databases(environ).values()
    return max(dbs) - min(dbs) + 1 if dbs else 0


def worker_redis_urls(environ, index: int) -> dict[str, str]:
    """The Redis URLs of xdist worker `index`: each database moved up by index x span."""
    span = redis_span(environ)
    urls = {}
    for name, db in redis_databases(environ).items():
        parts = urlsplit(environ[name])
        urls[name] = urlunsplit(parts._replace(path=f"/{db + index * span}"))
    return urls


_BASE = Path(__file__).resolve().parent.parent
os.environ.setdefault("DEBUG", "true")
os.environ.setdefault(
    "TEST_VAR_DIR", str(Path(os.environ.get("VAR_DIR") or _BASE / "var") / "test")
)


def xdist_worker_index() -> int:
    """This pytest-xdist worker's number (gw3 -> 3); 0 outside xdist."""
    return int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))


_worker = os.environ.get("PYTEST_XDIST_WORKER", "")
if _worker and os.environ.get("TEST_WORKER") != _worker:
    os.environ["TEST_WORKER"] = _worker
    os.environ["TEST_VAR_DIR"] = str(Path(os.environ["TEST_VAR_DIR"]) / _worker)
    os.environ.update(worker_redis_urls(os.environ, xdist_worker_index()))
os.environ["VAR_DIR"] = os.environ["TEST_VAR_DIR"]

from .settings import *  # noqa: E402, F403

# Tests hash many passwords (personas, login throttling): a fast hasher keeps them quick.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
