"""The portal's own health and metrics through Django's test client, on the configured database
and broker (PostgreSQL + Redis in CI's first pass)."""

from __future__ import annotations

import json
import logging
import math
import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from gpus.inventory.models import Cluster, SyncIssue
from gpus.ops import health
from gpus.provisioning.choices import OperationState
from gpus.provisioning.models import Operation
from gpus.testing_ports import free_port
from gpus.utilization.models import Bucket, GroupRollup, MetricSource, Scope
from gpus.web.logs import ContextFilter, JsonFormatter, log_context

TOKEN = "scrape-me-9f8e7d6c5b4a"
# What the kubelet sends: the pod's address, plain HTTP, no session.
PROBE = {"HTTP_HOST": "10.244.3.17:8000"}


@pytest.fixture
def production_like(settings):
    """Host checks and the HTTPS redirect on, as with DEBUG off behind the Ingress."""
    settings.ALLOWED_HOSTS = ["portal.example.com"]
    settings.SECURE_SSL_REDIRECT = True
    settings.PORTAL_METRICS_TOKEN = TOKEN
    return settings


def scrape(client: Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}", **PROBE)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    out = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


@pytest.mark.django_db
def test_probes_answer_the_pods_address_over_plain_http(client, production_like):
    live = client.get("/livez", **PROBE)
    assert live.status_code == 200 and live.content == b"ok\n"
    ready = client.get("/readyz", **PROBE)
    assert ready.status_code == 200, ready.content
    assert ready.content.decode().splitlines() == ["database: ok", "broker: ok"]
    # The same host elsewhere is refused (400), and the allowed host is sent to HTTPS: the
    # probes are answered before those checks, not because the checks are off.
    assert client.get("/accounts/login/", **PROBE).status_code == 400
    assert client.get("/accounts/login/", HTTP_HOST="portal.example.com").status_code == 301


@pytest.mark.django_db
def test_readiness_fails_fast_when_the_broker_does_not_answer(client, settings, monkeypatch):
    from celery import current_app

    settings.HEALTH_CHECK_TIMEOUT_SECONDS = 1.0
    nobody = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    # broker_write_url first: unset, it reads broker_url, and monkeypatch must save the real one.
    monkeypatch.setattr(current_app.conf, "broker_write_url", nobody)
    monkeypatch.setattr(current_app.conf, "broker_url", nobody)
    # Embedded mode names the filesystem transport, which would win over the URL's scheme.
    monkeypatch.setitem(current_app.conf, "broker_transport", None)
    response = client.get("/readyz")
    assert response.status_code == 503
    lines = response.content.decode().splitlines()
    assert lines[0] == "database: ok"
    assert lines[1].startswith("broker: ") and lines[1] != "broker: ok"
    # Liveness does not depend on it: Kubernetes must not restart every pod for a broker outage.
    assert client.get("/livez").status_code == 200


@pytest.mark.django_db
def test_readiness_says_which_check_failed(client, monkeypatch):
    def down() -> None:
        raise OSError("connection refused")

    monkeypatch.setitem(health.CHECKS, "database", down)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert "database: OSError: connection refused" in response.content.decode()


@pytest.mark.django_db
def test_metrics_need_the_bearer_token(client, settings):
    settings.PORTAL_METRICS_TOKEN = ""
    assert client.get("/metrics").status_code == 404
    settings.PORTAL_METRICS_TOKEN = TOKEN
    missing = client.get("/metrics")
    assert missing.status_code == 401
    assert missing["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Basic {TOKEN}").status_code == 401
    assert b"hikube_portal_operations" not in missing.content


@pytest.mark.django_db
def test_metrics_report_sync_operations_queue_and_collection(client, production_like, acme):
    now = timezone.now()
    prod = Cluster.objects.create(
        name="prod",
        last_synced_at=now - timedelta(seconds=95),
        last_sync_seconds=4.5,
        last_error="HTTP 503 from the API server",
        consecutive_failures=2,
    )
    Cluster.objects.create(name="edge")  # never synced
    SyncIssue.objects.create(
        cluster=prod, kind="Node", name="odd-1", problem="unreadable", first_seen_at=now
    )
    SyncIssue.objects.create(
        cluster=prod, kind="Node", name="odd-2", problem="unreadable", first_seen_at=now
    )
    MetricSource.objects.create(
        cluster=prod, last_collected_at=now - timedelta(seconds=300), last_seconds=1.25
    )
    GroupRollup.objects.create(
        bucket=Bucket.FIVE_MINUTES, scope=Scope.CLUSTER, key="prod", ts=now - timedelta(minutes=10)
    )
    for state in (OperationState.PENDING, OperationState.FAILED, OperationState.FAILED):
        Operation.objects.create(
            cluster=prod,
            tenant=acme,
            actor_name="alice",
            kind="create",
            namespace=acme.namespace,
            app_kind="VMInstance",
            name="x",
            manifests=[],
            state=state,
        )
    Operation.objects.filter(state=OperationState.PENDING).update(
        created_at=now - timedelta(seconds=600)
    )
    client.get("/livez", **PROBE)  # at least one timed request in this process

    with CaptureQueriesContext(connection) as queries:
        figures = scrape(client)
    # Cheap at scrape time: five queries, plus one indexed MAX per cluster for the rollup.
    assert len(queries) == 5 + Cluster.objects.count(), [q["sql"] for q in queries]

    def value(name: str, **labels: str) -> float:
        return figures[(f"hikube_portal_{name}", tuple(sorted(labels.items())))]

    assert 95 <= value("cluster_sync_age_seconds", cluster="prod") < 95 + 60
    assert math.isnan(value("cluster_sync_age_seconds", cluster="edge"))
    assert value("cluster_sync_duration_seconds", cluster="prod") == 4.5
    assert value("cluster_sync_failing", cluster="prod") == 1
    assert value("cluster_sync_failing", cluster="edge") == 0
    assert value("cluster_sync_consecutive_failures", cluster="prod") == 2
    assert value("cluster_sync_skipped_objects", cluster="prod") == 2
    assert value("cluster_sync_skipped_objects", cluster="edge") == 0
    assert 300 <= value("metrics_collection_lag_seconds", cluster="prod") < 360
    assert math.isnan(value("metrics_collection_lag_seconds", cluster="edge"))
    assert value("metrics_collection_duration_seconds", cluster="prod") == 1.25
    assert 600 <= value("metrics_rollup_lag_seconds", cluster="prod") < 660
    assert value("operations", state="pending") == 1
    assert value("operations", state="failed") == 2
    assert value("operations", state="succeeded") == 0  # every state, zero included
    assert 600 <= value("operation_oldest_active_age_seconds") < 660
    assert value("scrape_source_up", source="database") == 1
    assert value("scrape_source_up", source="broker") == 1
    assert ("hikube_portal_celery_queue_length", (("queue", "celery"),)) in figures
    assert value("http_request_duration_seconds_count", view="livez", method="GET", status="2xx")


@pytest.mark.django_db
def test_queue_length_counts_waiting_messages(client, production_like):
    from celery import current_app

    name = "hikube-portal-metrics-test"
    before = scrape(client)
    assert ("hikube_portal_celery_queue_length", (("queue", name),)) not in before
    current_app.amqp.queues.select_add(name)
    try:
        with current_app.connection_for_write() as conn:
            queue = conn.SimpleQueue(name)
            for n in range(3):
                queue.put({"n": n})
            figures = scrape(client)
            queue.clear()
            queue.close()
    finally:
        current_app.amqp.queues.pop(name, None)
    assert figures[("hikube_portal_celery_queue_length", (("queue", name),))] == 3


@pytest.mark.django_db
def test_request_latency_is_labelled_by_view(client, alice_client, production_like):
    def count(figures: dict, view: str, status: str) -> float:
        key = ("hikube_portal_http_request_duration_seconds_count",)
        labels = (("method", "GET"), ("status", status), ("view", view))
        return figures.get((key[0], labels), 0.0)

    before = scrape(client)
    secure = {"HTTP_HOST": "portal.example.com", "secure": True}
    assert alice_client.get("/compare/", **secure).status_code == 200
    assert alice_client.get("/no-such-page/", **secure).status_code == 404
    after = scrape(client)
    assert count(after, "gpus:compare", "2xx") == count(before, "gpus:compare", "2xx") + 1
    assert count(after, "<unresolved>", "4xx") == count(before, "<unresolved>", "4xx") + 1


@pytest.mark.django_db
def test_each_response_carries_its_request_id(client):
    mine = client.get("/livez", HTTP_X_REQUEST_ID="abc-123")
    assert mine["X-Request-ID"] == "abc-123"
    # A header that could forge log lines is replaced by a fresh id.
    forged = client.get("/livez", HTTP_X_REQUEST_ID='x"\n{"level": "ERROR"}')
    assert re.fullmatch(r"[0-9a-f]{32}", forged["X-Request-ID"])


def test_json_log_lines_carry_the_request_and_operation_ids():
    record = logging.LogRecord("gpus.provisioning", logging.WARNING, "", 0, "retry %s", (3,), None)
    with log_context(request_id="req-1"), log_context(operation_id=42):
        ContextFilter().filter(record)
        line = JsonFormatter().format(record)
    data = json.loads(line)
    assert data["message"] == "retry 3"
    assert data["level"] == "WARNING"
    assert data["request_id"] == "req-1"
    assert data["operation_id"] == "42"
    assert "task_id" not in data
    assert data["time"].endswith("+00:00")
    # Outside the block the ids are gone again.
    later = logging.LogRecord("x", logging.INFO, "", 0, "done", (), None)
    ContextFilter().filter(later)
    assert later.request_id is None and later.operation_id is None


def test_an_operation_tasks_log_lines_carry_its_id(caplog):
    from gpus.provisioning.tasks import apply_operation
    from gpus.web.logs import current, logs_operation

    seen = []

    @logs_operation
    def task(self: object, operation_id: int) -> None:
        seen.append(current("operation_id"))
        logging.getLogger("gpus.provisioning").warning("applying")

    with caplog.at_level(logging.WARNING):
        task(None, 17)
    assert seen == ["17"] and current("operation_id") is None
    # The real task is wrapped the same way.
    assert apply_operation.run.__wrapped__.__name__ == "apply_operation"
