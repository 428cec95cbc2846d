"""A real Celery worker process, on the configured broker (Redis in CI, filesystem embedded),
runs the inventory sync against devcluster and writes the snapshot the pages read."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from devcluster.testing import run_devcluster
from gpus import services
from gpus.models import Cluster, ModelInventory

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("seeded_catalog"),
]
ROOT = Path(__file__).resolve().parents[2]


def database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.fixture
def worker():
    """`celery worker` in its own process, pointed at the test database."""
    env = {**os.environ, "DATABASE_URL": database_url(), "DEBUG": "true"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "hikube_portal",
            "worker",
            "--pool=solo",
            "--loglevel=INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_broker_is_the_configured_one():
    if os.environ.get("CELERY_BROKER_URL", "").startswith("redis://"):
        import redis

        client = redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_timeout=5)
        assert client.ping() is True
    else:
        assert settings.CELERY_BROKER_URL.startswith("filesystem://")


def test_sync_button_path_runs_in_a_real_worker(tmp_path, worker):
    with run_devcluster(tmp_path / "dc", fleet="demo", speed=50.0) as dc:
        cluster = Cluster.objects.create(name="dc", kubeconfig=str(dc.kubeconfig), context="admin")
        services.request_inventory_sync(cluster)  # enqueued on commit (autocommit here)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            cluster.refresh_from_db()
            if cluster.last_synced_at:
                break
            assert worker.poll() is None, worker.stdout.read() if worker.stdout else ""
            time.sleep(0.25)
        else:
            worker.terminate()
            out = worker.communicate(timeout=15)[0]
            raise AssertionError(f"the worker never synced the inventory:\n{out[-4000:]}")
    assert ModelInventory.objects.filter(cluster=cluster).count() == 3
    assert cluster.last_error == ""
