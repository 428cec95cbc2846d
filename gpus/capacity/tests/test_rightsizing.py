"""Right-sizing (#18 item 6): from a known week of hourly utilization, the GPUs held but idle,
the VMs that would fit a cheaper model, with the monthly saving at the price list in force; for
the tenant on My GPUs (another tenant's is a 404), fleet-wide for admins; in French and German."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from html import escape

import pytest
from django.urls import reverse
from django.utils import timezone, translation

from gpus.capacity import rightsizing, services
from gpus.catalog.models import GpuModel
from gpus.inventory.choices import ResourceState, WorkloadKind
from gpus.inventory.models import Cluster, GpuWorkload
from gpus.testing import L40S
from gpus.utilization.models import Bucket, GpuDevice, GpuRollup

pytestmark = pytest.mark.django_db

A100 = "nvidia.com/GA100_A100_PCIE_80GB"
GIB = 1024  # MiB
NBSP = "\u00a0"


def set_chf_prices(admin) -> None:
    """Today's price list in CHF: an A100 at 3.00 an hour, an L40S at 1.60."""
    services.set_price_list(
        admin,
        timezone.now().astimezone(dt.UTC).date(),
        "CHF",
        Decimal("0.02"),
        Decimal("0.005"),
        Decimal("0.1"),
        {
            GpuModel.objects.get(resource_name=A100): Decimal("3.00"),
            GpuModel.objects.get(resource_name=L40S): Decimal("1.60"),
        },
    )


def make_workload(cluster, tenant, name, resource, gpus=1, group="") -> GpuWorkload:
    return GpuWorkload.objects.create(
        cluster=cluster,
        tenant=tenant,
        kind=WorkloadKind.NODE_GROUP if group else WorkloadKind.VM,
        app_kind="Kubernetes" if group else "VMInstance",
        name=name,
        node_group=group,
        gpu_model=GpuModel.objects.get(resource_name=resource),
        gpus_per_instance=gpus,
        gpus_held=gpus,
        state=ResourceState.RUNNING,
    )


def _history(workload, busy, mem_mib, hours=168, peak_mib=None, now=None) -> None:
    """`hours` hourly rollups per GPU ending at the last full hour: `busy` % busy, `mem_mib`
    used on average and at most, and once `peak_mib` (the week's highest)."""
    now = now or timezone.now()
    end = now.replace(minute=0, second=0, microsecond=0)
    rows = []
    for i in range(workload.gpus_held):
        device = GpuDevice.objects.create(
            uuid=f"GPU-{workload.name}-{workload.node_group}-{i}",
            gpu_model=workload.gpu_model,
            tenant=workload.tenant,
            workload=workload,
        )
        for h in range(1, hours + 1):
            rows.append(
                GpuRollup(
                    bucket=Bucket.HOUR,
                    ts=end - dt.timedelta(hours=h),
                    device=device,
                    tenant=workload.tenant,
                    workload=workload,
                    samples=60,
                    allocated=True,
                    busy_avg=busy,
                    util_avg=busy,
                    mem_used_avg=mem_mib * 0.9,
                    mem_used_max=peak_mib if (peak_mib and h == 30) else mem_mib,
                    mem_total=80 * GIB,
                )
            )
    GpuRollup.objects.bulk_create(rows)


@pytest.fixture
def week(acme, globex, platform_admin):
    cluster = Cluster.objects.create(name="prod", last_synced_at=timezone.now())
    set_chf_prices(platform_admin)
    # 11 GB at most (10,490 MiB), 9 % busy: an L40S (48 GB) holds it.
    _history(make_workload(cluster, acme, "journey-01", A100), 9.0, 6000, peak_mib=10490)
    _history(make_workload(cluster, acme, "idle-vm", L40S), 1.0, 500)  # held but idle
    _history(make_workload(cluster, acme, "k8s", A100, gpus=2, group="gpu"), 80.0, 70000)  # busy
    _history(make_workload(cluster, acme, "big-mem", A100), 12.0, 58000)  # needs the memory
    _history(make_workload(cluster, acme, "new-vm", A100), 1.0, 500, hours=24)  # too new
    _history(make_workload(cluster, globex, "other", A100), 2.0, 500)
    return cluster


JOURNEY = (
    f"journey-01 used at most 11 GB of its NVIDIA A100's 80 GB and 9 % of its time: an NVIDIA "
    f"L40S would save CHF{NBSP}1,022.00 a month."
)
IDLE = (
    f"idle-vm held its NVIDIA L40S for 7 days and used it 1 % of the time: releasing it would "
    f"save CHF{NBSP}1,168.00 a month."
)
BIG_MEM = (
    "big-mem was busy 12 % of its time but used up to 61 GB of its NVIDIA A100's 80 GB: no "
    "cheaper model has the memory."
)


def test_the_tenants_suggestions_and_their_savings(week, acme) -> None:
    found = rightsizing.suggestions(acme)
    assert [(s.workload.name, s.verdict) for s in found] == [
        ("idle-vm", rightsizing.Verdict.IDLE),
        ("journey-01", rightsizing.Verdict.SMALLER),
        ("big-mem", rightsizing.Verdict.MOSTLY_IDLE),
    ]
    assert [s.saving for s in found] == [Decimal("1168.00"), Decimal("1022.00"), None]
    assert found[1].target.resource_name == L40S
    assert [s.text() for s in found] == [IDLE, JOURNEY, BIG_MEM]


def test_my_gpus_box_is_the_tenants_own(week, alice_client, bob_client) -> None:
    url = reverse("gpus:capacity_rightsizing_fragment") + "?tenant=tenant-acme"
    box = alice_client.get(url).content.decode()
    assert escape(JOURNEY) in box and escape(IDLE) in box
    assert "other" not in box  # globex's VM
    assert bob_client.get(url).status_code == 404
    my_gpus = alice_client.get(reverse("gpus:my_gpus", args=["tenant-acme"])).content.decode()
    assert reverse("gpus:capacity_rightsizing_fragment") in my_gpus


def test_admins_see_the_fleet(week, admin_client_, alice_client) -> None:
    url = reverse("gpus:capacity_rightsizing")
    page = admin_client_.get(url).content.decode()
    assert escape(JOURNEY) in page
    assert "other held its NVIDIA A100 for 7 days and used it 2 % of the time" in page
    assert f"CHF{NBSP}2,190.00" in page  # globex's idle A100, the biggest saving, first
    assert page.index("other held") < page.index("idle-vm held")
    assert alice_client.get(url).status_code == 404
    capacity = admin_client_.get(reverse("gpus:capacity")).content.decode()
    assert url in capacity


@pytest.mark.parametrize(
    ("language", "words"),
    [
        ("fr", "un NVIDIA L40S économiserait CHF"),
        ("de", "eine NVIDIA L40S würde monatlich CHF"),
    ],
)
def test_in_french_and_german(week, acme, language, words) -> None:
    with translation.override(language):
        texts = [s.text() for s in rightsizing.suggestions(acme)]
    assert any(words in t for t in texts), texts
