"""Operations end to end with a real Celery worker (and its embedded beat: poller and reconciler)
on the configured broker, against devcluster over HTTP; and the reliability promises of the
issue: worker SIGKILLed mid-apply, Redis restarted with tasks queued, cluster faults."""

from __future__ import annotations

import json
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.db.models import Sum

from devcluster.testing import DevCluster, run_devcluster
from gpus.inventory.clusters import gateway_for
from gpus.inventory.models import Cluster
from gpus.kube import apps
from gpus.kube.apps import release_name
from gpus.provisioning import presenters, services
from gpus.provisioning.choices import ACTIVE_OPERATION_STATES, OperationKind, OperationState
from gpus.provisioning.models import Operation
from gpus.testing_live import Worker
from gpus.testing_ports import free_port
from gpus.web import queue

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("seeded_catalog"),
]
H100 = "nvidia.com/H100_94GB"
L40S = "nvidia.com/AD102GL_L40S"


def vm(cluster: Cluster, name: str, gpu: str = H100, count: int = 1, **extra):
    legacy = cluster.vm_kind == "VirtualMachine"
    return apps.VmRequest(
        name=name,
        gpu_resource=gpu,
        gpu_count=count,
        instance_type="u1.2xlarge",
        instance_profile="ubuntu",
        image="ubuntu" if legacy else "ubuntu-2404",
        disk_size_gi=20,
        storage_class="replicated",
        **extra,
    )


def wait_for(ops: list[Operation], states: set[str], seconds: float, worker: Worker) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        current = {o.pk: o.state for o in Operation.objects.filter(pk__in=[o.pk for o in ops])}
        if all(s in states for s in current.values()):
            return
        time.sleep(0.25)
    left = list(
        Operation.objects.filter(pk__in=[o.pk for o in ops])
        .exclude(state__in=states)
        .values("name", "state", "reason", "message", "error", "attempts")
    )
    raise AssertionError(f"not converged: {left}\n{worker.logs()}")


def objects_by_name(dc: DevCluster, namespace: str, plural: str) -> dict[str, int]:
    """How many objects of each name the cluster holds (a duplicate would show as 2)."""
    path = f"/apis/apps.cozystack.io/v1alpha1/namespaces/{namespace}/{plural}"
    status, _, body = dc.request("GET", path)
    assert status == 200, body
    counts: dict[str, int] = {}
    for item in json.loads(body)["items"]:
        counts[item["metadata"]["name"]] = counts.get(item["metadata"]["name"], 0) + 1
    return counts


@pytest.mark.parametrize("flavour", ["current", "legacy"])
def test_vm_lifecycle_with_a_real_worker(
    flavour, tmp_path, alice, acme, worker_factory, register, fresh_snapshot
):
    """Create -> Running; over capacity -> unschedulable -> runs once capacity frees (queued);
    a spec the cluster refuses -> failed with the field named."""
    with run_devcluster(tmp_path / "dc", flavour=flavour, speed=200.0) as dc:
        cluster = register(dc)
        worker = worker_factory()
        worker.start()
        ok = services.submit_vm(alice, acme, cluster, vm(cluster, "runs", count=4))
        wait_for([ok], {OperationState.SUCCEEDED}, 90, worker)
        ok.refresh_from_db()
        assert ok.applied_at and ok.scheduled_at and ok.running_at

        fresh_snapshot(cluster)
        # 4 H100 held on one server: 12 free, at most 8 on one; 9 only when queued.
        with pytest.raises(services.OperationRefused):
            services.submit_vm(alice, acme, cluster, vm(cluster, "big", count=9))
        # 8 fit on the other server; then 8 more must wait for the first 4 to go.
        filler = services.submit_vm(alice, acme, cluster, vm(cluster, "filler", count=8))
        wait_for([filler], {OperationState.SUCCEEDED}, 60, worker)
        fresh_snapshot(cluster)
        queued = services.submit_vm(
            alice, acme, cluster, vm(cluster, "queued", count=8, queue_until_capacity=True)
        )
        wait_for([queued], {OperationState.QUEUED}, 60, worker)
        queued.refresh_from_db()
        assert "H100" in presenters.describe(queued).explanation
        gone = services.record(
            user=alice,
            tenant=acme,
            cluster=cluster,
            kind=OperationKind.DELETE,
            app_kind=ok.app_kind,
            name=ok.name,
            docs=ok.manifests,
        )
        wait_for([gone, queued], {OperationState.SUCCEEDED}, 90, worker)

        docs = apps.vm_manifests(vm(cluster, "refused"), acme.namespace, cluster.vm_kind)
        docs[-1]["spec"]["externalMethod"] = "Everything"
        bad = services.record(
            user=alice,
            tenant=acme,
            cluster=cluster,
            kind=OperationKind.CREATE,
            app_kind=cluster.vm_kind,
            name="refused",
            docs=docs,
        )
        wait_for([bad], {OperationState.FAILED}, 60, worker)
        bad.refresh_from_db()
        assert any(c["field"].endswith("externalMethod") for c in bad.causes), bad.causes


def total_attempts() -> int:
    return Operation.objects.aggregate(n=Sum("attempts"))["n"] or 0


def unapplied() -> bool:
    return Operation.objects.filter(
        state__in=[OperationState.PENDING, OperationState.APPLYING]
    ).exists()


@pytest.mark.once
def test_worker_killed_20_times_mid_apply(tmp_path, alice, acme, worker_factory, register):
    """SIGKILL the worker (and its beat) at random moments while applies run slowly: every
    operation still ends done, with exactly one object in the cluster."""
    faults = {"rules": [{"verb": ["create", "patch", "get"], "latency_ms": 150}]}
    with run_devcluster(tmp_path / "dc", fleet="scale:40", speed=200.0, faults=faults) as dc:
        cluster = register(dc)
        ops = [
            services.submit_vm(alice, acme, cluster, vm(cluster, f"k{i:02d}", gpu=L40S))
            for i in range(30)
        ]
        worker = worker_factory()
        rng = random.Random(7)
        for _ in range(20):
            claims = total_attempts()
            worker.start()
            worker.wait_ready()
            # Until this worker has claimed an apply (or none is left to claim), then a random
            # moment within the apply (each of its calls to the cluster takes 150 ms).
            deadline = time.monotonic() + 60
            while total_attempts() == claims and unapplied():
                assert time.monotonic() < deadline, f"no apply claimed:\n{worker.logs()}"
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 1.0))
            worker.kill()
        worker.start()
        wait_for(ops, {OperationState.SUCCEEDED}, 120, worker)
        counts = objects_by_name(dc, acme.namespace, "vminstances")
        assert {f"k{i:02d}": 1 for i in range(30)}.items() <= counts.items()
        assert counts == {name: 1 for name in counts}
        assert not Operation.objects.filter(state__in=ACTIVE_OPERATION_STATES).exists()
        assert max(Operation.objects.values_list("attempts", flat=True)) >= 1


@contextmanager
def private_redis(tmp: Path) -> Iterator[dict]:
    """A redis-server of our own (no persistence: a restart loses the queue)."""
    port = free_port()
    state = {"port": port, "proc": None}

    def start() -> None:
        state["proc"] = subprocess.Popen(
            [
                shutil.which("redis-server") or "redis-server",
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(tmp),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("private redis-server did not start")

    def stop() -> None:
        if state["proc"] is not None:
            state["proc"].kill()
            state["proc"].wait(10)

    state["start"], state["stop"] = start, stop
    start()
    try:
        yield state
    finally:
        stop()


def test_redis_restart_with_tasks_queued(
    tmp_path, alice, acme, worker_factory, register, monkeypatch
):
    """Tasks are queued, then Redis restarts empty: the reconciler finds the operations in the
    database and every one is done within 60 s of Redis' return."""
    from hikube_portal.celery import app

    with private_redis(tmp_path) as redis, run_devcluster(tmp_path / "dc", speed=200.0) as dc:
        url = f"redis://127.0.0.1:{redis['port']}/0"

        def enqueue(task_name: str, *args: object) -> None:
            with app.connection_for_write(url) as conn:
                app.send_task(task_name, args=args, connection=conn)

        monkeypatch.setattr(queue, "enqueue", enqueue)
        cluster = register(dc)
        ops = [
            services.submit_vm(alice, acme, cluster, vm(cluster, f"r{i}", gpu=L40S))
            for i in range(6)
        ]
        redis["stop"]()  # the queued tasks are lost
        redis["start"]()
        back = time.monotonic()
        worker = worker_factory({"CELERY_BROKER_URL": url, "CELERY_RESULT_BACKEND": url})
        worker.start()
        wait_for(ops, {OperationState.SUCCEEDED}, 60, worker)
        assert time.monotonic() - back < 60
        assert all(v == 1 for v in objects_by_name(dc, acme.namespace, "vminstances").values())


def test_cluster_faults_converge_without_duplicate_writes(
    tmp_path, alice, acme, worker_factory, register
):
    """429 with Retry-After, 500s, latency and dropped connections on every verb."""
    faults = {
        "rules": [
            {
                "verb": "*",
                "resource": ["vminstances", "vmdisks", "virtualmachines"],
                "error_429": 0.1,
                "error_500": 0.1,
                "drop": 0.05,
                "latency_ms": 50,
                "retry_after": 1,
            }
        ]
    }
    with run_devcluster(tmp_path / "dc", speed=200.0) as dc:
        cluster = register(dc)
        dc.set_faults(faults)
        ops = [
            services.submit_vm(alice, acme, cluster, vm(cluster, f"f{i}", gpu=H100))
            for i in range(6)
        ]
        worker = worker_factory()
        worker.start()
        wait_for(ops, {OperationState.SUCCEEDED}, 120, worker)
        assert dc.get_faults()["injected"] > 0
        dc.clear_faults()
        counts = objects_by_name(dc, acme.namespace, "vminstances")
        assert all(counts.get(f"f{i}") == 1 for i in range(6)), counts
        disks = objects_by_name(dc, acme.namespace, "vmdisks")
        assert all(disks.get(f"f{i}-system") == 1 for i in range(6)), disks


def test_node_group_resize_with_a_real_worker(
    tmp_path, alice, acme, worker_factory, register, fresh_snapshot
):
    """Resize the demo cluster's GPU group: the workers change, the operation says so."""
    with run_devcluster(tmp_path / "dc", speed=200.0) as dc:
        cluster = register(dc)
        worker = worker_factory()
        worker.start()
        request = apps.NodeGroupRequest(
            cluster_name="ml",
            group="gpu",
            min_replicas=3,
            max_replicas=3,
            instance_type="u1.2xlarge",
            disk_size_gi=100,
            gpu_resource="nvidia.com/GA100_A100_PCIE_80GB",
            gpus_per_node=1,
        )
        op = services.submit_node_group(alice, acme, cluster, request, resize=True)
        wait_for([op], {OperationState.SUCCEEDED}, 90, worker)
        op.refresh_from_db()
        assert op.observed["available"] == 3
        fresh_snapshot(cluster)
        from gpus.inventory.models import GpuWorkload

        group = GpuWorkload.objects.get(tenant=acme, name="ml", node_group="gpu")
        assert group.gpus_held == 3


@pytest.mark.parametrize("flavour", ["current", "legacy"])
def test_restart_applies_a_pending_change_with_a_real_worker(
    flavour, tmp_path, alice, acme, worker_factory, register, fresh_snapshot
):
    """More GPUs on a running VM wait for a restart (RestartRequired); the VM page offers the
    restart, an operation that stops then starts it through the app's spec, done once Running
    without RestartRequired."""
    from django.test import Client
    from django.urls import reverse

    from gpus.inventory.models import GpuWorkload
    from gpus.provisioning.models import AuditEvent

    with run_devcluster(tmp_path / "dc", flavour=flavour, speed=200.0) as dc:
        cluster = register(dc)
        worker = worker_factory()
        worker.start()
        made = services.submit_vm(alice, acme, cluster, vm(cluster, "grow", count=1))
        wait_for([made], {OperationState.SUCCEEDED}, 90, worker)
        plural = "virtualmachines" if cluster.vm_kind == "VirtualMachine" else "vminstances"
        dc.kubectl(
            "patch", f"{plural}.apps.cozystack.io", "grow", "-n", acme.namespace, "--type=merge",
            "-p", json.dumps({"spec": {"gpus": [{"name": H100}, {"name": H100}]}}),
            context=acme.namespace,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            fresh_snapshot(cluster)  # the worker's beat syncs; a sync of our own would race it
            row = GpuWorkload.objects.get(tenant=acme, name="grow")
            if row.reason == "RestartRequired":
                break
        assert row.reason == "RestartRequired" and row.state == "running"

        client = Client()
        client.force_login(alice)
        page = client.get(reverse("gpus:workload", args=[acme.namespace, row.pk]))
        restart_url = reverse("gpus:vm_action", args=[acme.namespace, "grow", "restart"])
        assert restart_url in page.content.decode()
        response = client.post(restart_url)
        assert response.status_code == 302
        op = Operation.objects.get(name="grow", kind=OperationKind.RESTART)
        assert [d["spec"]["runStrategy"] for d in op.manifests] == ["Halted", "Always"]
        wait_for([op], {OperationState.SUCCEEDED}, 120, worker)

        kubevirt = gateway_for(cluster)
        try:
            kv = kubevirt.get(
                "virtualmachines",
                acme.namespace,
                release_name(cluster.vm_kind, "grow"),
                group="kubevirt.io",
                version="v1",
            )
        finally:
            kubevirt.close()
        assert kv["status"]["printableStatus"] == "Running"
        assert not [c for c in kv["status"].get("conditions", []) if c["type"] == "RestartRequired"]
        actions = list(AuditEvent.objects.filter(operation=op).values_list("action", flat=True))
        assert "operation.restart" in actions and "operation.stopped" in actions
        assert actions.count("operation.applied") == 2 and "operation.succeeded" in actions
        fresh_snapshot(cluster)
        row.refresh_from_db()
        assert (row.state, row.gpus_per_instance) == ("running", 2)
        assert row.reason != "RestartRequired"
        assert (
            restart_url
            not in client.get(
                reverse("gpus:workload", args=[acme.namespace, row.pk])
            ).content.decode()
        )
