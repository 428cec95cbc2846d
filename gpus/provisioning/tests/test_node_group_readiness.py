"""Issue 16 item 5: a node group is Ready only once its GPUs are, where the portal can see them.

Against devcluster over HTTP with the real client, driven as the Celery tasks do: "workers
booted (2 of 2)" then "GPUs ready (n of 4)" read from the tenant cluster's own nodes through its
admin kubeconfig Secret (the portal's credential, impersonating the asker); when that Secret
cannot be read, the operation says so and ends at the booted step."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from devcluster.testing import run_devcluster
from gpus.inventory.models import Cluster
from gpus.kube import apps
from gpus.provisioning import engine, services
from gpus.provisioning.choices import OperationState
from gpus.provisioning.models import Operation
from gpus.provisioning.tests.test_provisioning_devcluster import drive
from gpus.testing import seed_catalog

pytestmark = [pytest.mark.integration, pytest.mark.django_db, pytest.mark.usefixtures("catalog")]

L40S = "nvidia.com/AD102GL_L40S"
H100 = "nvidia.com/H100_94GB"
ENDED = {OperationState.SUCCEEDED, OperationState.FAILED}


@pytest.fixture
def catalog(db):
    seed_catalog()


@pytest.fixture(scope="module")
def dc(tmp_path_factory):
    with run_devcluster(tmp_path_factory.mktemp("dc"), flavour="current", speed=100.0) as cluster:
        yield cluster


@pytest.fixture
def cluster(dc, acme, register) -> Cluster:
    # The portal's own least-privilege account: it reads the Secret only by impersonation.
    return register(dc, f"dc{dc.port}", context="portal")


@pytest.fixture
def knobs(dc):
    def set_faults(rules: list[dict[str, Any]] | None = None, **values: Any) -> None:
        dc.set_faults({"rules": rules or [], "knobs": values})

    yield set_faults
    dc.clear_faults()


def add_group(alice, acme, cluster, group: str, gpu: str = L40S) -> Operation:
    request = apps.NodeGroupRequest("ml", group, 2, 3, "u1.2xlarge", 50, gpu, 2)
    return services.submit_node_group(alice, acme, cluster, request, resize=False)


def until_booted(op: Operation, seconds: float = 60) -> Operation:
    """Apply and poll until the workers booted (or the operation ended)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        op.refresh_from_db()
        if op.scheduled_at or op.state in ENDED:
            return op
        if op.state == OperationState.PENDING:
            claimed = engine.claim(op.pk)
            if claimed:
                engine.apply(claimed)
        else:
            engine.poll_cluster(op.cluster_id)
        time.sleep(0.1)
    raise AssertionError(f"workers never booted: {op.state} {op.observed}")


def steps_on_page(client: Client, op: Operation) -> list[str]:
    url = reverse("gpus:operation_status", args=[op.namespace, op.pk])
    page = client.get(url).content.decode()
    items = re.findall(r'<li class="[^"]*" data-step="([a-z_]+)">(.*?)</li>', page, re.S)
    return [f"{key}: {re.sub(r'<[^>]+>', '', text).strip()}" for key, text in items]


def test_a_gpu_group_is_ready_only_once_its_gpus_are_allocatable(
    cluster, dc, alice, alice_client, acme, knobs
):
    knobs(gpu_ready=1e7)  # the tenant cluster's GPU operator is still loading the driver
    op = until_booted(add_group(alice, acme, cluster, "infer"))
    assert op.state == OperationState.PROVISIONING, (op.state, op.reason, op.message)
    for _ in range(3):  # booted, read the tenant cluster: no GPU yet, so not done
        engine.poll_cluster(op.cluster_id)
    op.refresh_from_db()
    assert op.state == OperationState.PROVISIONING, (op.reason, op.message)
    assert op.observed["gpus_ready"] == 0 and op.observed["gpus_wanted"] == 4, op.observed
    steps = steps_on_page(alice_client, op)
    assert steps[-2].startswith("workers_booted: Workers booted (2 of 2)"), steps
    assert steps[-1].startswith("gpus_ready: GPUs ready (0 of 4)"), steps
    assert "in progress" in steps[-1]
    knobs(gpu_ready=0)  # the device plugin advertises nvidia.com/gpu
    op = drive(op, ENDED, seconds=60)
    assert op.state == OperationState.SUCCEEDED, (op.reason, op.message)
    assert op.observed["gpus_ready"] == 4
    steps = steps_on_page(alice_client, op)
    assert steps[-1].startswith("gpus_ready: GPUs ready (4 of 4)"), steps


def test_an_unreadable_admin_kubeconfig_is_said_and_the_booted_step_is_the_last(
    cluster, dc, alice, alice_client, acme, knobs
):
    unreadable = [{"verb": "get", "resource": "secrets", "error_500": 1.0}]
    knobs(unreadable, gpu_ready=1e7)
    op = drive(add_group(alice, acme, cluster, "blind"), ENDED, seconds=60)
    assert op.state == OperationState.SUCCEEDED, (op.reason, op.message)
    assert op.observed["gpus_unseen"] == "unreachable"
    steps = steps_on_page(alice_client, op)
    assert steps[-2].startswith("workers_booted: Workers booted (2 of 2)"), steps
    assert steps[-1].startswith("running: Running"), steps
    assert "could not read the cluster's admin kubeconfig" in steps[-1].replace("&#x27;", "'")


def test_only_node_groups_waiting_for_their_gpus_are_read(cluster, alice, acme):
    """The sweep stays constant-cost: no tenant-cluster read for VMs, deletes, or groups whose
    workers have not booted yet; one per cluster however many of its groups wait."""
    op = add_group(alice, acme, cluster, "later", H100)
    assert engine._awaiting_gpus([op]) == {}
    op.scheduled_at = op.created_at
    assert list(engine._awaiting_gpus([op, op])) == [("tenant-acme", "ml")]
    op.params = {**op.params, "retry_kind": "delete"}
    assert engine._awaiting_gpus([op]) == {}
