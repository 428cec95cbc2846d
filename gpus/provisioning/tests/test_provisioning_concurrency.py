"""Submissions at the same time, on PostgreSQL (issue 20, items 2c and 5): threads, each with its
own connection, as gunicorn's workers are. PostgreSQL's locks are what is tested, so these run in
CI's first pass only (`once`); the embedded mode (SQLite) writes one transaction at a time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from gpus.accounts.services import create_token
from gpus.inventory import sync as inventory_sync
from gpus.inventory.models import Cluster, GpuWorkload
from gpus.inventory.sync import store_snapshot
from gpus.kube.records import Condition, FleetReading, KubernetesApp, NodeGroup
from gpus.provisioning import services
from gpus.provisioning.models import Operation
from gpus.provisioning.tests.test_provisioning_quota_security import (
    H100,
    L40S,
    group_request,
    make_cluster,
    vm_request,
)
from gpus.testing import node_info
from gpus.testing_ports import free_port
from gpus.web import queue

pytestmark = [pytest.mark.once, pytest.mark.django_db(transaction=True)]

WAIT = 20  # seconds a thread waits for the other side before the test fails (never reached)


@pytest.fixture(autouse=True)
def _postgresql_and_no_broker(seeded_catalog, monkeypatch):
    assert connection.vendor == "postgresql", "these tests are about PostgreSQL's locks"
    sent: list[tuple[Any, ...]] = []
    monkeypatch.setattr(queue, "enqueue", lambda *args: sent.append(args))
    return sent


def in_threads(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Run ``work(i)`` in ``count`` threads started together; each result or exception."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(i: int) -> None:
        try:
            barrier.wait(WAIT)
            results[i] = work(i)
        except Exception as exc:  # the test looks at every outcome
            results[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT * 3)
    return results


# --- 2c: the capacity check counts what is in flight, one submission at a time ----------------


def test_twenty_creates_at_once_with_two_gpus_free_accept_exactly_two(alice, acme):
    cluster = make_cluster({H100: [2]})
    results = in_threads(
        20, lambda i: services.submit_vm(alice, acme, cluster, vm_request(f"vm{i}"))
    )
    accepted = [r for r in results if isinstance(r, Operation)]
    refused = [r for r in results if isinstance(r, services.OperationRefused)]
    assert (len(accepted), len(refused)) == (2, 18), results
    assert {r.field for r in refused} == {"gpu_count"}
    assert refused[0].message.startswith("1 × NVIDIA H100 NVL requested: only 0 free right now.")
    assert Operation.objects.count() == 2


def test_twenty_api_creates_through_gunicorn_accept_exactly_the_free_gpus(alice, acme, tmp_path):
    """The same race as the compose file runs the portal: gunicorn, 3 worker processes, each
    with its own connections, 20 scripts posting at once through the JSON API."""
    make_cluster({H100: [2]})
    token = create_token(alice, "race")[1]
    db = connection.settings_dict
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k != "CELERY_RESULT_BACKEND"},
        "DJANGO_SETTINGS_MODULE": "hikube_portal.test_settings",
        "DATABASE_URL": f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST']}:"
        f"{db['PORT'] or 5432}/{db['NAME']}",
        # Its tasks go to a queue of its own that nothing reads (no later test's worker).
        "TEST_VAR_DIR": str(tmp_path / "var"),
        "CELERY_BROKER_URL": "filesystem://",
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "GUNICORN_WORKERS": "3",
    }
    log = (tmp_path / "gunicorn.log").open("w")
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "gunicorn"),
            *("-c", "python:hikube_portal.gunicorn_conf", "hikube_portal.wsgi:application"),
        ],
        cwd=Path(__file__).resolve().parents[3],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"

    def post(i: int) -> int:
        body = json.dumps({"name": f"api{i}", "gpu_model": H100, "gpu_count": 1}).encode()
        request = urllib.request.Request(  # noqa: S310 (http to the gunicorn started here)
            f"{base}/api/v1/tenants/{acme.namespace}/vms",
            data=body,
            method="POST",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=WAIT) as response:  # noqa: S310
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    try:
        for _ in range(300):
            assert server.poll() is None, (tmp_path / "gunicorn.log").read_text()
            try:
                urllib.request.urlopen(f"{base}/livez", timeout=2)  # noqa: S310
                break
            except OSError:
                time.sleep(0.1)
        codes = in_threads(20, post)
    finally:
        server.terminate()
        server.wait(15)
        log.close()
    assert sorted(codes) == [202] * 2 + [422] * 18, (tmp_path / "gunicorn.log").read_text()[-3000:]
    assert Operation.objects.count() == 2


def test_concurrent_groups_and_vms_fill_each_cluster_exactly(alice, acme):
    """Node groups (2 workers of 1 GPU) and 2-GPU VMs of one model race on two clusters with 8
    free each: each cluster is filled exactly, never past what is free."""
    first = make_cluster({L40S: [4, 4]}, name="dc1")
    second = make_cluster({L40S: [8]}, name="dc2")

    def work(i: int) -> Operation:
        cluster = first if i % 2 else second
        if i % 3 == 0:
            return services.submit_node_group(
                alice, acme, cluster, group_request(f"k{i}", "gpu", 2, 2), resize=False
            )
        return services.submit_vm(alice, acme, cluster, vm_request(f"vm{i}", L40S, 2))

    results = in_threads(16, work)
    assert all(isinstance(r, Operation | services.OperationRefused) for r in results), results
    accepted = [r for r in results if isinstance(r, Operation)]
    for cluster in (first, second):
        assert sum(op.gpu_count for op in accepted if op.cluster_id == cluster.pk) == 8


# --- 5: a submission and the inventory sync at the same time never deadlock --------------------


def reading_with_group(namespace: str, app: str) -> FleetReading:
    """A sync that inserts a workload row of the tenant (its foreign key locks the tenant row
    at commit, as a real sync does when a tenant's cluster appears)."""
    group = NodeGroup(
        name="gpu", gpus=(L40S,), min_replicas=1, max_replicas=1, instance_type="u1.2xlarge",
        roles=(), monitor_name=f"kubernetes-{app}-gpu", worker_prefix=f"kubernetes-{app}-gpu-",
    )  # fmt: skip
    ready = Condition("Ready", "True", "ReconciliationSucceeded", "")
    return FleetReading(
        nodes=[node_info("n1", {H100: 8, L40S: 8})],
        pods=[],
        vm_kind="VMInstance",
        disk_field="ephemeralStorage",
        kubernetes_apps=[KubernetesApp(namespace, app, False, {"Ready": ready}, (group,))],
    )


def test_a_submission_and_a_sync_interleaved_do_not_deadlock(alice, acme, monkeypatch):
    """The interleaving that deadlocked, made certain: the submission holds its lock and waits
    while the sync takes the cluster row and writes a row of the tenant; then both commit."""
    cluster = make_cluster({H100: [8]})
    submit_locked, sync_wrote = threading.Event(), threading.Event()
    real_audit, real_issues = services.audit, inventory_sync._store_issues

    def audit_after_the_sync(*args: Any, **kwargs: Any) -> None:
        submit_locked.set()
        assert sync_wrote.wait(WAIT)
        real_audit(*args, **kwargs)

    def issues_then_let_the_submit_go(*args: Any, **kwargs: Any) -> None:
        real_issues(*args, **kwargs)
        sync_wrote.set()

    monkeypatch.setattr(services, "audit", audit_after_the_sync)
    monkeypatch.setattr(inventory_sync, "_store_issues", issues_then_let_the_submit_go)

    def work(i: int) -> Any:
        if i == 0:
            return services.submit_vm(alice, acme, cluster, vm_request("racer"))
        assert submit_locked.wait(WAIT)
        return store_snapshot(
            Cluster.objects.get(pk=cluster.pk), reading_with_group(acme.namespace, "ml"),
            timezone.now(),
        )  # fmt: skip

    submitted, synced = in_threads(2, work)
    assert isinstance(submitted, Operation), submitted
    assert not isinstance(synced, Exception), synced
    assert Operation.objects.filter(name="racer").exists()
    assert GpuWorkload.objects.filter(name="ml", node_group="gpu").exists()


def test_submissions_while_syncs_run_all_end_recorded(alice, acme):
    """8 submitters while a sync runs again and again (each inserting and deleting rows of
    the tenant): every submission is recorded or refused in words, every sync stores."""
    cluster = make_cluster({H100: [8, 8, 8, 8]})
    Cluster.objects.filter(pk=cluster.pk).update(last_synced_at=timezone.now() - timedelta(hours=1))

    def work(i: int) -> Any:
        if i == 0:
            stored = 0
            for n in range(6):
                store_snapshot(
                    Cluster.objects.get(pk=cluster.pk),
                    reading_with_group(acme.namespace, f"app{n % 2}"),
                    timezone.now(),
                )
                stored += 1
            return stored
        outcomes: list[Any] = []
        for n in range(3):
            try:
                outcomes.append(services.submit_vm(alice, acme, cluster, vm_request(f"s{i}-{n}")))
            except services.OperationRefused as exc:  # the sync may show fewer free GPUs
                outcomes.append(exc)
        return outcomes

    results = in_threads(9, work)
    assert results[0] == 6, results[0]
    outcomes = [o for made in results[1:] for o in made]
    assert len(outcomes) == 24, results
    recorded = [o for o in outcomes if isinstance(o, Operation)]
    assert len(recorded) + sum(isinstance(o, services.OperationRefused) for o in outcomes) == 24
    assert recorded and Operation.objects.count() == len(recorded)
