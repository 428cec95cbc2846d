"""The suite runs with plain `pytest` and keeps to its own folders, apart from `make run`'s var/."""

from __future__ import annotations

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
