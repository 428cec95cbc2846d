"""The guest-agent endpoint speaks only for its own VM's GPUs, and a sample never grants a tenant a
GPU page (#20 item 1); malformed agent posts are 400s, never 500s, and odd exporter labels do
not fail a collection pass (#20 item 15)."""

from __future__ import annotations

import datetime as dt

import pytest
from django.test import Client, override_settings
from django.urls import reverse
from django.utils import timezone

from gpus.catalog.models import GpuModel
from gpus.inventory.choices import ResourceState, WorkloadKind
from gpus.inventory.models import Cluster, GpuWorkload
from gpus.testing import L40S
from gpus.utilization.agent import issue_token
from gpus.utilization.collector import store
from gpus.utilization.metrics.parse import parse_exposition
from gpus.utilization.models import GpuDevice, GpuSample

pytestmark = [pytest.mark.django_db]

ALICE_UUID = "GPU-aaaaaaaa-1111-2222-3333-444444444444"
BOB_UUID = "GPU-bbbbbbbb-1111-2222-3333-444444444444"


def line(uuid: str, index: str = "0", name: str = "NVIDIA L40S") -> str:
    return f"{uuid}, {index}, {name}, 37, 1200, 46068, 41, 88.50, 350.00, 2520, 9001, 0x4\n"


@pytest.fixture
def vms(acme, globex) -> tuple[GpuWorkload, GpuWorkload]:
    cluster = Cluster.objects.create(name="prod", last_synced_at=timezone.now())
    l40s = GpuModel.objects.get(resource_name=L40S)

    def vm(tenant, name: str) -> GpuWorkload:
        return GpuWorkload.objects.create(
            cluster=cluster,
            tenant=tenant,
            kind=WorkloadKind.VM,
            app_kind="VMInstance",
            name=name,
            gpu_model=l40s,
            gpu_resource=L40S,
            gpus_per_instance=1,
            gpus_held=1,
            state=ResourceState.RUNNING,
        )

    return vm(acme, "ws"), vm(globex, "gw")


def post(token: str, body: str):
    return Client().post(
        reverse("gpus:agent_ingest"),
        body,
        content_type="text/csv",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )


@override_settings(METRICS_AGENT_MIN_INTERVAL=0)
def test_an_agent_cannot_take_over_another_tenants_gpu(vms, alice_client, bob_client) -> None:
    alice_vm, bob_vm = vms
    assert post(issue_token(bob_vm), line(BOB_UUID)).status_code == 202
    bob_gpu = GpuDevice.objects.get(uuid=BOB_UUID)
    assert bob_gpu.workload == bob_vm
    samples = GpuSample.objects.count()
    token = issue_token(alice_vm)

    refused = post(token, line(BOB_UUID))
    assert refused.status_code == 403
    assert refused.json()["error"] == f"GPU {BOB_UUID} is not passed through to VM ws"
    bob_gpu.refresh_from_db()
    assert bob_gpu.workload == bob_vm and bob_gpu.tenant == bob_vm.tenant
    assert GpuSample.objects.count() == samples  # nothing stored
    # Hidden among her own GPU, or as a second GPU her one-GPU VM does not have: refused whole.
    both = post(token, line(ALICE_UUID) + line(BOB_UUID, "1"))
    assert both.status_code == 403 and "holds 1 GPU(s)" in both.json()["error"]
    assert not GpuDevice.objects.filter(uuid=ALICE_UUID).exists()
    # Another model than the VM holds.
    other = post(token, line(ALICE_UUID, name="NVIDIA H100 NVL"))
    assert other.status_code == 403 and "not the model" in other.json()["error"]
    # Her own GPU is accepted.
    assert post(token, line(ALICE_UUID)).status_code == 202
    assert GpuDevice.objects.get(uuid=ALICE_UUID).workload == alice_vm

    # A sample never grants access: even one recorded for acme (an earlier takeover) shows
    # alice nothing of bob's GPU.
    GpuSample.objects.create(
        device=bob_gpu, ts=timezone.now() - dt.timedelta(minutes=5), tenant=alice_vm.tenant
    )
    for path in (
        reverse("gpus:util_tenant_gpu", args=["tenant-acme", BOB_UUID]),
        reverse("gpus:util_chart", args=["gpu"]) + f"?tenant=tenant-acme&uuid={BOB_UUID}",
    ):
        assert alice_client.get(path).status_code == 404, path
    page = alice_client.get(reverse("gpus:util_tenant", args=["tenant-acme"])).content.decode()
    assert ALICE_UUID in page and BOB_UUID not in page
    mine = reverse("gpus:util_tenant_gpu", args=["tenant-acme", ALICE_UUID])
    assert alice_client.get(mine).status_code == 200
    assert (
        bob_client.get(
            reverse("gpus:util_tenant_gpu", args=["tenant-globex", BOB_UUID])
        ).status_code
        == 200
    )

    # Once bob's VM no longer holds it (stopped, then the GPU passed to alice's VM), it is hers.
    GpuWorkload.objects.filter(pk=bob_vm.pk).update(gpus_held=0)
    GpuWorkload.objects.filter(pk=alice_vm.pk).update(gpus_held=2)
    assert post(token, line(ALICE_UUID) + line(BOB_UUID, "1")).status_code == 202
    assert GpuDevice.objects.get(uuid=BOB_UUID).workload == alice_vm


@override_settings(METRICS_AGENT_MIN_INTERVAL=0)
def test_a_vm_the_inventory_shows_without_gpus_may_not_report(vms) -> None:
    alice_vm, _ = vms
    GpuWorkload.objects.filter(pk=alice_vm.pk).update(gpus_held=0)
    refused = post(issue_token(alice_vm), line(ALICE_UUID))
    assert refused.status_code == 403 and "no GPU passed through" in refused.json()["error"]
    assert not GpuDevice.objects.exists()


@override_settings(METRICS_AGENT_MIN_INTERVAL=0)
@pytest.mark.parametrize(
    ("body", "error"),
    [
        (line(ALICE_UUID, index="²"), "the GPU index must be a number from 0 to 63"),
        (line(ALICE_UUID, index="1" * 25), "the GPU index must be a number from 0 to 63"),
        (line(ALICE_UUID, index="-1"), "the GPU index must be a number from 0 to 63"),
        (line("GPU-" + "a" * 80), "a GPU UUID has at most 80 characters"),
        (line(ALICE_UUID, name="NVIDIA " + "L" * 100), "a GPU name has at most 100 characters"),
    ],
)
def test_malformed_agent_posts_are_400_not_500(vms, body: str, error: str) -> None:
    """On PostgreSQL a value past its column was a DataError (500), "²" a ValueError."""
    alice_vm, _ = vms
    response = post(issue_token(alice_vm), body)
    assert response.status_code == 400
    assert response.json()["error"] == f"line 1: {error}"
    assert not GpuDevice.objects.exists() and not GpuSample.objects.exists()


def test_odd_exporter_labels_do_not_fail_a_collection_pass(acme) -> None:
    """Exporter labels come from a tenant's cluster: an index "²" (a ValueError) or past the
    column, a name past its column (a DataError on PostgreSQL) must not fail the whole pass."""
    long_uuid = "GPU-" + "f" * 90
    text = (
        f'DCGM_FI_DEV_GPU_UTIL{{gpu="²",UUID="GPU-1",modelName="{"N" * 300}",'
        f'Hostname="{"h" * 300}",pod="{"p" * 300}",cluster="{"c" * 300}"}} 5\n'
        'DCGM_FI_DEV_GPU_UTIL{gpu="99999999999999999999999",UUID="GPU-2",Hostname="w"} 6\n'
        f'DCGM_FI_DEV_GPU_UTIL{{gpu="0",UUID="{long_uuid}",Hostname="w"}} 7\n'
    )
    assert store(parse_exposition(text, timezone.now().timestamp()), None) == 2
    one, two = GpuDevice.objects.order_by("uuid")
    assert (one.uuid, one.index, len(one.model_name), len(one.hostname)) == (
        "GPU-1",
        None,
        100,
        253,
    )
    assert (two.uuid, two.index) == ("GPU-2", None)
    assert GpuSample.objects.count() == 2
