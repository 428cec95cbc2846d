"""A real Celery worker process, on the configured broker (Redis in CI, filesystem embedded),
runs the inventory sync against devcluster and writes the snapshot the pages read."""

from __future__ import annotations

import time
import uuid

import pytest
from django.conf import settings

from devcluster.testing import run_devcluster
from gpus.inventory import services
from gpus.inventory.models import Cluster, ModelInventory

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("seeded_catalog"),
]


def test_the_configured_broker_carries_a_message():
    """A message published on the broker the settings name (Redis in CI, the filesystem broker
    embedded) comes back from it: the transport works, not just its URL."""
    from kombu import Exchange, Queue

    from hikube_portal.celery import app

    queue = Queue(f"test-roundtrip-{uuid.uuid4().hex}", Exchange("test-roundtrip"), "roundtrip")
    body = {"hello": uuid.uuid4().hex}
    with app.connection_for_write() as conn:
        assert conn.transport_cls == (
            "redis"
            if settings.CELERY_BROKER_URL.startswith("redis")
            else "hikube_portal.broker:Transport"  # the filesystem broker, written atomically
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
            assert worker.alive(), worker.logs()
            time.sleep(0.25)
        else:
            raise AssertionError(f"the worker never synced the inventory:\n{worker.logs()}")
    assert ModelInventory.objects.filter(cluster=cluster).count() == 3
    assert cluster.last_error == ""
