"""A GPU VM on v1.1: the disk first, the VM once the disk app is Ready; Helm failures that clear
by themselves are "retrying" for a grace period, deterministic ones fail at once (#16 item 1).
devcluster over HTTP, whose vm-instance chart fails at render time while the disk's DataVolume
does not exist, and whose Helm remediation retries."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
import yaml
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone

from devcluster.testing import run_devcluster
from gpus.inventory.clusters import gateway_for
from gpus.inventory.models import Cluster
from gpus.kube import apps
from gpus.kube.operations import Target, observe, vm_progress
from gpus.provisioning import engine, services
from gpus.provisioning.choices import OperationState
from gpus.provisioning.models import Operation
from gpus.testing import seed_catalog

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

H100 = "nvidia.com/H100_94GB"
DISK = """
apiVersion: apps.cozystack.io/v1alpha1
kind: VMDisk
metadata: {name: %(name)s-system, namespace: tenant-acme}
spec: {source: {image: {name: ubuntu-2404}}, storage: 20Gi}
"""
VM = """
apiVersion: apps.cozystack.io/v1alpha1
kind: VMInstance
metadata: {name: %(name)s, namespace: tenant-acme}
spec: {runStrategy: %(run)s, instanceType: u1.2xlarge, disks: [{name: %(name)s-system}]}
"""


@pytest.fixture(scope="module")
def dc(tmp_path_factory):
    """Slow enough that a Helm install takes longer than two API requests, as on v1.1."""
    with run_devcluster(tmp_path_factory.mktemp("dc"), speed=10.0) as cluster:
        yield cluster


@pytest.fixture
def cluster(dc, acme, register) -> Cluster:
    seed_catalog()
    return register(dc, f"dc{dc.port}")


def _ready(dc, plural: str, name: str) -> dict:
    proc = dc.kubectl("get", plural, name, "-n", "tenant-acme", "-o", "json", check=False)
    if proc.returncode != 0:
        return {}  # reads lag writes (cozystack-api reads through its cache)
    conds = (json.loads(proc.stdout).get("status") or {}).get("conditions") or []
    return next((c for c in conds if c["type"] == "Ready"), {})


def _wait(check, what: str, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, what
        time.sleep(0.1)
    return found


def _drive(op: Operation, until: set[str], seconds: float = 60) -> Operation:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        op.refresh_from_db()
        if op.state in until:
            return op
        if op.state == OperationState.PENDING:
            if claimed := engine.claim(op.pk):
                engine.apply(claimed)
        else:
            engine.poll_cluster(op.cluster_id)
        time.sleep(0.05)
    raise AssertionError(f"stayed {op.state}: {op.reason} {op.message}")


def test_devcluster_fails_a_vm_before_its_disk_then_helm_retries(dc) -> None:
    """Back to back, as kubectl or the old portal sent them: the VM's release fails at render
    time ("Specified disk not exists in cluster"), and a later Helm retry installs it."""
    dc.kubectl("apply", "-f", "-", input=DISK % {"name": "b2b"} + "---" + VM % {
        "name": "b2b", "run": "Halted"})  # fmt: skip
    _wait(lambda: _ready(dc, "vminstance", "b2b").get("status") == "True", "Helm's retry")
    failures = _install_failures(dc, "vm-instance-b2b")
    assert failures and failures[0].endswith("Specified disk not exists in cluster: b2b-system")


def _install_failures(dc, release: str) -> list[str]:
    """The HelmRelease's InstallFailed Warning events (they outlive the condition)."""
    events = json.loads(dc.kubectl("get", "events", "-n", "tenant-acme", "-o", "json").stdout)
    return [
        e["message"]
        for e in events["items"]
        if e.get("reason") == "InstallFailed" and e["involvedObject"]["name"] == release
    ]


def test_the_portal_sends_the_vm_once_the_disk_is_ready(dc, cluster, alice, acme) -> None:
    request = apps.VmRequest(
        name="ordered", gpu_resource=H100, gpu_count=1, instance_type="u1.2xlarge",
        instance_profile="ubuntu", image="ubuntu-2404", disk_size_gi=20,
        storage_class="replicated",
    )  # fmt: skip
    op = services.submit_vm(alice, acme, cluster, request)
    op = _drive(op, {OperationState.SUCCEEDED, OperationState.FAILED})
    assert op.state == OperationState.SUCCEEDED, (op.reason, op.message)
    creates = [
        (a["resource"].split(".")[0], a["name"])
        for a in dc.audit()
        if a["verb"] == "create" and a["name"] in ("ordered", "ordered-system")
    ]
    assert creates == [("vmdisks", "ordered-system"), ("vminstances", "ordered")]
    assert _install_failures(dc, "vm-instance-ordered") == []  # its release never failed


def test_a_vm_held_back_for_its_disk_asks_for_a_poll_soon(
    dc, cluster, alice, acme, monkeypatch, django_capture_on_commit_callbacks
) -> None:
    """The apply that sends only the disk asks for one poll OPERATION_DISK_RECHECK_SECONDS
    later (by name, after the commit), so the VM goes out once the disk is Ready rather than
    a whole poll interval later; an apply that sends everything asks for none."""
    sent: list[tuple[str, tuple, float | None]] = []
    monkeypatch.setattr(
        "gpus.web.queue.enqueue",
        lambda name, *args, countdown=None: sent.append((name, args, countdown)),
    )
    request = apps.VmRequest(
        name="nudged", gpu_resource=H100, gpu_count=1, instance_type="u1.2xlarge",
        instance_profile="ubuntu", image="ubuntu-2404", disk_size_gi=20,
        storage_class="replicated",
    )  # fmt: skip
    with override_settings(OPERATION_DISK_RECHECK_SECONDS=0.25):
        with django_capture_on_commit_callbacks(execute=True):
            op = services.submit_vm(alice, acme, cluster, request)
        sent.clear()
        with django_capture_on_commit_callbacks(execute=True):
            engine.apply(engine.claim(op.pk))
    op.refresh_from_db()
    assert op.params.get("awaiting_disk") is True
    assert sent == [("provisioning.poll_operations", (), 0.25)]
    sent.clear()
    op = _drive(op, {OperationState.SUCCEEDED, OperationState.FAILED})
    assert op.state == OperationState.SUCCEEDED, (op.reason, op.message)
    assert ("provisioning.poll_operations", (), 0.25) not in sent  # the VM's apply: no nudge


def test_a_failure_that_clears_is_retrying_and_a_schema_error_fails_at_once(
    dc, cluster, alice, acme, alice_client
) -> None:
    # An operation whose VM reached the cluster before its disk (as the old order did).
    request = apps.VmRequest(
        name="early", gpu_resource=H100, gpu_count=1, instance_type="u1.2xlarge",
        instance_profile="ubuntu", image="ubuntu-2404", disk_size_gi=20,
        storage_class="replicated",
    )  # fmt: skip
    op = services.submit_vm(alice, acme, cluster, request)
    disk, vm = op.manifests
    dc.kubectl("apply", "-f", "-", input=yaml.safe_dump(vm))
    Operation.objects.filter(pk=op.pk).update(
        state=OperationState.PROVISIONING, applied_at=timezone.now(), baseline={"before": {}}
    )
    _wait(lambda: _ready(dc, "vminstance", "early").get("reason") == "InstallFailed", "failing")
    engine.poll_cluster(cluster.pk)
    op.refresh_from_db()
    assert op.state == OperationState.PROVISIONING  # not Failed: Helm retries
    assert op.reason == "InstallFailed" and "The cluster is retrying" in op.message
    assert "Specified disk not exists in cluster: early-system" in op.message
    # The operation's page says what the cluster is retrying.
    page = alice_client.get(reverse("gpus:operation", args=["tenant-acme", op.pk]))
    assert "The cluster is retrying" in page.content.decode()
    # Past the grace period, the same failure ends it.
    with override_settings(OPERATION_HELM_RETRY_GRACE_SECONDS=0):
        since = (timezone.now() - timedelta(seconds=5)).isoformat()
        Operation.objects.filter(pk=op.pk).update(
            params={**op.params, "helm_retrying_since": since}
        )
        engine.poll_cluster(cluster.pk)
    op.refresh_from_db()
    assert op.state == OperationState.FAILED and op.reason == "InstallFailed"
    # A schema error is deterministic: failed on the first observation.
    bad = VM % {"name": "bad", "run": "Sometimes"}
    dc.kubectl("apply", "-f", "-", input=DISK % {"name": "bad"} + "---" + bad)
    _wait(lambda: "schema" in _ready(dc, "vminstance", "bad").get("message", ""), "schema failure")
    gateway = gateway_for(cluster)
    try:
        wanted = [
            Target("tenant-acme", "VMInstance", "bad", labelled=False),
            Target("tenant-acme", "VMDisk", "bad-system", labelled=False),
        ]
        view = observe(gateway, wanted)["tenant-acme"]
    finally:
        gateway.close()
    progress = vm_progress("VMInstance", "bad", view, "bad-system", {})
    assert progress.failed and not progress.retrying
    assert disk["kind"] == "VMDisk"
