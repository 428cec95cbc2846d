"""Project-wide pytest setup: the `backends` mark, Redis databases enough for pytest-xdist's
workers, browser launch arguments, and the rule that CI skips nothing."""

from __future__ import annotations

import os
import shutil

import pytest

# The portal's shared fixtures, for every app: personas and a synced snapshot (gpus.testing);
# real Celery workers, a registered devcluster, real metric sources (gpus.testing_live).
pytest_plugins = ["gpus.testing", "gpus.testing_live"]

# Fixtures that reach the database, the Celery broker (a worker process) or Django's cache. A
# test that uses one (or is marked django_db) is marked `backends`: the parts the embedded pass
# (SQLite + filesystem broker + file cache) swaps, so `make test TEST_SELECT=backends` runs it
# again there. The others (pure units, gpus/kube, devcluster) run once. A test outside the mark
# that touches the cache fails (gpus.testing.NoCache), so the mark cannot miss one.
BACKEND_FIXTURES = {
    "db",
    "transactional_db",
    "django_db_reset_sequences",
    "django_db_serialized_rollback",
    "live_server",
    "worker",
    "worker_factory",
}

# Playwright's sync API runs an event loop in the test thread; Django's ORM must still be usable.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


# Long tests: their modules go first within their kind, so no xdist worker starts one when the
# others are done.
LONG_FIXTURES = {"worker", "worker_factory", "metric_history"}


def _cost_rank(item: pytest.Item) -> int:
    if item.get_closest_marker("once"):
        return 0
    if LONG_FIXTURES & set(item.fixturenames):
        return 1
    return 2 if item.get_closest_marker("browser") else 3


def _django_kind(item: pytest.Item) -> int:
    """pytest-django's order (Django's): database tests, then transactional ones (which flush
    the database, and with it the catalog the data migration seeded), then the others."""
    marker = item.get_closest_marker("django_db")
    names = set(item.fixturenames)
    marked_transaction = marker is not None and bool(
        marker.kwargs.get("transaction") or marker.kwargs.get("reset_sequences")
    )
    if marked_transaction or names & {"transactional_db", "live_server"}:
        return 1
    return 0 if marker is not None or "db" in names else 2


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("django_db") or BACKEND_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.backends)
        # A browser test checks what a person sees, not the database or broker flavour under it:
        # the first pass (PostgreSQL + Redis) runs it, the embedded pass does not repeat it.
        if item.get_closest_marker("browser"):
            item.add_marker(pytest.mark.once)
    # After pytest-django's sort (tryfirst): keep its order of kinds; within a kind, the modules
    # with long tests first, each module whole (its module-scoped fixtures set up once), in its
    # own order but for a `once` test, which goes first. Every xdist worker then runs its
    # database tests before its transactional ones, as under plain pytest (`--dist load` hands
    # each worker tests in this order).
    rank: dict[tuple[int, str], int] = {}
    first: dict[tuple[int, str], int] = {}
    for index, item in enumerate(items):
        key = (_django_kind(item), item.nodeid.split("::")[0])
        rank[key] = min(rank.get(key, 3), _cost_rank(item))
        first.setdefault(key, index)

    def order(item: pytest.Item) -> tuple[int, int, int, int]:
        key = (_django_kind(item), item.nodeid.split("::")[0])
        return (key[0], rank[key], first[key], int(item.get_closest_marker("once") is None))

    items.sort(key=order)


def pytest_configure(config: pytest.Config) -> None:
    """Under `pytest -n N`, stop at once unless Redis has the databases the N workers need (each
    takes the span of databases the Redis URLs name, moved up: see hikube_portal.test_settings)."""
    workers = getattr(config.option, "numprocesses", None)
    if hasattr(config, "workerinput") or not isinstance(workers, int) or workers < 2:
        return
    from hikube_portal.test_settings import redis_databases, redis_span

    named = redis_databases(os.environ)
    if not named:
        return
    import redis

    url = os.environ[next(iter(named))]
    try:
        available = int(redis.Redis.from_url(url).config_get("databases")["databases"])
    except (redis.RedisError, KeyError, ValueError):
        return  # no CONFIG here (a managed Redis): a worker out of range fails on its own
    needed = max(named.values()) + (workers - 1) * redis_span(os.environ) + 1
    if needed > available:
        raise pytest.UsageError(
            f"{workers} xdist workers need Redis databases up to {needed - 1} "
            f"({redis_span(os.environ)} each, from those named by {', '.join(sorted(named))}), "
            f"but the server at {url} has {available}: run fewer workers (-n), lower the "
            "database numbers, or start redis-server with --databases 64."
        )


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict) -> dict:
    if not shutil.which(CHROMIUM) and not os.path.exists(CHROMIUM):
        pytest.fail(f"Chromium not found at {CHROMIUM}: install Debian's chromium package.")
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": CHROMIUM_ARGS}


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args: dict) -> dict:
    """Playwright's wait_for_function evaluates its predicate with eval(), which the portal's
    Content-Security-Policy (script-src 'self') forbids: test pages bypass it. The policy itself
    is tried, without bypass, by gpus/web/tests/test_headers.py."""
    return {**browser_context_args, "bypass_csp": True}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    # In CI (CI=true) a skipped test counts as failed: every real part must be there.
    in_ci = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
    if in_ci and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"Skipped in CI (CI=true forbids skips): {report.longrepr}"
