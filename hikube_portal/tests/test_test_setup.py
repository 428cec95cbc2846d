"""The suite runs with plain `pytest` and keeps to its own folders, apart from `make run`'s var/;
under pytest-xdist each worker keeps to its own folder and Redis databases."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

from django.conf import settings

ROOT = Path(__file__).resolve().parents[2]


def folders(settings_module: str) -> tuple[Path, Path]:
    """VAR_DIR and filesystem-broker queue of a settings module, with nothing exported but
    DEBUG=true (what `make run` exports)."""
    dropped = {"VAR_DIR", "TEST_VAR_DIR", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"}
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env.update(DEBUG="true", DJANGO_SETTINGS_MODULE=settings_module)
    code = (
        "import django; django.setup(); from django.conf import settings as s;"
        "print(s.VAR_DIR); print(s.CELERY_BROKER_TRANSPORT_OPTIONS['data_folder_in'])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    var_dir, queue = out.stdout.split()
    return Path(var_dir).resolve(), Path(queue).resolve()


def test_tests_use_folders_of_their_own():
    pytest_settings = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"][
        "ini_options"
    ]["DJANGO_SETTINGS_MODULE"]
    run_var, run_queue = folders("hikube_portal.settings")
    test_var, test_queue = folders(pytest_settings)
    assert test_var != run_var
    assert run_queue != test_queue and not run_queue.is_relative_to(test_var)
    assert test_queue.is_relative_to(test_var)
    # A worker the tests start inherits this run's folder through the environment.
    assert os.environ["VAR_DIR"] == str(settings.VAR_DIR)


TARGET = "gpus/tenancy/tests/test_tenancy.py"


def test_plain_pytest_collects_without_debug_exported():
    env = {k: v for k, v in os.environ.items() if k not in {"DEBUG", "DJANGO_SETTINGS_MODULE"}}
    env = {k: v for k, v in env.items() if not k.startswith(("PYTEST_", "TEST_"))}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", TARGET],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "test_alice_sees_her_tenant" in result.stdout


def worker_settings(env: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """What a process with this environment sees under the test settings, and the environment it
    hands on to the processes it starts (a Celery worker)."""
    code = (
        "import json, os, django; django.setup(); from django.conf import settings as s;"
        "print(json.dumps([{'var': str(s.VAR_DIR), 'broker': s.CELERY_BROKER_URL,"
        " 'results': s.CELERY_RESULT_BACKEND, 'cache': s.CACHES['default']['LOCATION']},"
        " dict(os.environ)]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    seen, handed_on = json.loads(out.stdout)
    return seen, handed_on


def test_each_xdist_worker_has_its_own_folder_and_redis_databases(tmp_path):
    """pytest-xdist's gw2 moves every Redis database up by 2 x the span the URLs cover (0-3: 4)
    and works in its own folder; a Celery worker it starts, inheriting its environment, lands on
    the same ones (not moved twice)."""
    redis = "redis://127.0.0.1:6399"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "TEST_"))}
    base.update(
        DEBUG="true",
        DJANGO_SETTINGS_MODULE="hikube_portal.test_settings",
        VAR_DIR=str(tmp_path),
        REDIS_URL=f"{redis}/0",
        CELERY_BROKER_URL=f"{redis}/0",
        CELERY_RESULT_BACKEND=f"{redis}/1",
        CACHE_URL=f"{redis}/3",
        PYTEST_XDIST_WORKER="gw2",
    )
    expected = {
        "var": str(tmp_path / "test" / "gw2"),
        "broker": f"{redis}/8",
        "results": f"{redis}/9",
        "cache": f"{redis}/11",
    }
    seen, handed_on = worker_settings(base)
    assert seen == expected
    again, _ = worker_settings(handed_on)  # a Celery worker started by a test of gw2
    assert again == expected
    # Another worker, another folder and other databases; without xdist, none moved.
    assert worker_settings({**base, "PYTEST_XDIST_WORKER": "gw1"})[0]["broker"] == f"{redis}/4"
    plain = {k: v for k, v in base.items() if k != "PYTEST_XDIST_WORKER"}
    assert worker_settings(plain)[0] == {
        "var": str(tmp_path / "test"),
        "broker": f"{redis}/0",
        "results": f"{redis}/1",
        "cache": f"{redis}/3",
    }
