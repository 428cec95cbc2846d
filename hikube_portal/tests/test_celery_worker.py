"""A real Celery worker process, on the configured broker (Redis in CI, filesystem embedded),
runs the inventory sync against devcluster and writes the snapshot the pages read."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from devcluster.testing import run_devcluster
from gpus.inventory import services
from gpus.inventory.models import Cluster, ModelInventory

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
def worker(tmp_path):
    """`celery worker` in its own process, pointed at the test database. Its output goes to a
    file, not a pipe nobody reads (a full pipe would block the worker mid-task)."""
    env = {**os.environ, "DATABASE_URL": database_url(), "DEBUG": "true"}
    log_path = tmp_path / "worker.log"
    log = log_path.open("w")
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
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    proc.log_path = log_path  # type: ignore[attr-defined]
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(15)
        log.close()


def test_the_configured_broker_carries_a_message():
    """A message published on the broker the settings name (Redis in CI, the filesystem broker
    embedded) comes back from it: the transport works, not just its URL."""
    from kombu import Exchange, Queue

    from hikube_portal.celery import app

    queue = Queue(f"test-roundtrip-{uuid.uuid4().hex}", Exchange("test-roundtrip"), "roundtrip")
    body = {"hello": uuid.uuid4().hex}
    with app.connection_for_write() as conn:
        assert conn.transport_cls == (
            "redis" if settings.CELERY_BROKER_URL.startswith("redis") else "filesystem"
        )
        with conn.Producer() as producer:
            producer.publish(
                body, exchange=queue.exchange, routing_key="roundtrip", declare=[queue]
            )
        simple = conn.SimpleQueue(queue)
        try:
            message = simple.get(timeout=10)
            message.ack()
            assert message.payload == body
        finally:
            simple.close()
            queue(conn.channel()).delete()


def test_sync_button_path_runs_in_a_real_worker(tmp_path, worker):
    with run_devcluster(tmp_path / "dc", fleet="demo", speed=50.0) as dc:
        cluster = Cluster.objects.create(name="dc", kubeconfig=str(dc.kubeconfig), context="admin")
        services.request_inventory_sync(cluster)  # enqueued on commit (autocommit here)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            cluster.refresh_from_db()
            if cluster.last_synced_at:
                break
            assert worker.poll() is None, worker.log_path.read_text()[-4000:]
            time.sleep(0.25)
        else:
            out = worker.log_path.read_text()
            raise AssertionError(f"the worker never synced the inventory:\n{out[-4000:]}")
    assert ModelInventory.objects.filter(cluster=cluster).count() == 3
    assert cluster.last_error == ""
