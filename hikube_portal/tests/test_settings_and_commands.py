"""Production settings, migrations and the demo data command."""

import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError

from gpus.tenancy.models import Membership, Tenant

ROOT = Path(__file__).resolve().parents[2]


def run_manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    # A production environment: none of the development or test switches.
    dropped = {"DEBUG", "SECRET_KEY", "DJANGO_ALLOW_ASYNC_UNSAFE", "DJANGO_SETTINGS_MODULE"}
    clean = {k: v for k, v in os.environ.items() if k not in dropped}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_is_clean_with_production_settings(tmp_path):
    result = run_manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        env={
            "DEBUG": "false",
            "SECRET_KEY": "x7Jq2v9LmP4rT8wZ1nB6cY3kH5dF0gS-aE_uR9tQ2pLo7Vi3Xb",
            "ALLOWED_HOSTS": "portal.example.com",
            "CSRF_TRUSTED_ORIGINS": "https://portal.example.com",
            "VAR_DIR": str(tmp_path),
        },
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_settings_refuse_to_start_without_a_secret_key(tmp_path):
    result = run_manage("check", env={"DEBUG": "false", "VAR_DIR": str(tmp_path)})
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


@pytest.mark.django_db
def test_no_missing_migrations():
    call_command("makemigrations", "--check", "--dry-run", stdout=StringIO())


@pytest.mark.django_db
def test_seed_demo_is_idempotent(settings):
    settings.DEBUG = True
    call_command("seed_demo", stdout=StringIO())
    call_command("seed_demo", stdout=StringIO())
    User = get_user_model()
    assert set(User.objects.values_list("username", flat=True)) == {"admin", "alice", "bob"}
    assert Tenant.objects.filter(namespace__in=["tenant-acme", "tenant-globex"]).count() == 2
    assert Membership.objects.get(user__username="alice").tenant.namespace == "tenant-acme"
    assert Membership.objects.get(user__username="bob").tenant.namespace == "tenant-globex"
    assert User.objects.get(username="admin").is_staff
    assert User.objects.get(username="alice").check_password("hikube-demo")


@pytest.mark.django_db
def test_seed_demo_refuses_when_debug_is_off(settings):
    settings.DEBUG = False
    with pytest.raises(CommandError, match="DEBUG is off"):
        call_command("seed_demo", stdout=StringIO())
    assert not get_user_model().objects.filter(username="alice").exists()
    call_command("seed_demo", "--force", stdout=StringIO())
    assert get_user_model().objects.filter(username="alice").exists()
