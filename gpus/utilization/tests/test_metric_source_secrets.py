"""A metric source's credentials by reference: the row says ``env:NAME``, the secret comes from the
environment (a Kubernetes Secret in deploy/), and the database never holds it in clear."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gpus.inventory.models import Cluster
from gpus.utilization.collector import collect_cluster
from gpus.utilization.metrics.config import source_for
from gpus.utilization.metrics.errors import MetricsError
from gpus.utilization.models import MetricSource, SourceKind

pytestmark = pytest.mark.django_db
SECRET = "vm-read-token-5d1c"


@pytest.fixture
def query_api() -> Iterator[tuple[str, list[str]]]:
    """A Prometheus query API that answers only with the right bearer token (empty results)."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization", ""))
            if self.headers.get("Authorization") != f"Bearer {SECRET}":
                self.send_response(401)
                self.end_headers()
                return
            body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": []}})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def source_row(url: str, token: str) -> MetricSource:
    cluster = Cluster.objects.create(name="hikube")
    return MetricSource.objects.create(
        cluster=cluster, kind=SourceKind.PROMETHEUS, url=url, bearer_token=token, timeout_seconds=5
    )


def test_a_credential_named_by_reference_is_read_from_the_environment(query_api, monkeypatch):
    url, seen = query_api
    monkeypatch.setenv("HIKUBE_VM_TOKEN", SECRET)
    row = source_row(url, "env:HIKUBE_VM_TOKEN")
    collect_cluster(row.cluster_id)
    row.refresh_from_db()
    assert row.last_error == "" and row.last_collected_at is not None
    assert seen and set(seen) == {f"Bearer {SECRET}"}
    assert SECRET not in json.dumps(list(MetricSource.objects.values()), default=str)


def test_a_reference_to_a_missing_variable_is_the_sources_error(query_api, monkeypatch):
    url, seen = query_api
    monkeypatch.delenv("HIKUBE_VM_TOKEN", raising=False)
    row = source_row(url, "env:HIKUBE_VM_TOKEN")
    with pytest.raises(MetricsError):
        collect_cluster(row.cluster_id)
    row.refresh_from_db()
    assert "HIKUBE_VM_TOKEN" in row.last_error and "not set" in row.last_error
    assert seen == []  # nothing was sent without the credential


def test_a_plain_credential_is_used_as_it_is(query_api):
    url, _seen = query_api
    row = source_row(url, "env-is-not-a-reference: just a token")
    assert source_for(row.cluster_id).http.bearer_token == "env-is-not-a-reference: just a token"
