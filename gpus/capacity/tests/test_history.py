"""The capacity history (#18 item 1): samples at each sync, GPU-hours, demand, rollups,
retention; and the forecast on a known trend."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from django.utils import timezone

from gpus.capacity import history
from gpus.capacity.forecast import days_to_exhaustion, theil_sen
from gpus.capacity.models import (
    Bucket,
    CapacityRollup,
    CapacitySample,
    RefusedRequest,
    TenantUsage,
)
from gpus.catalog.models import GpuModel
from gpus.inventory.sync import store_snapshot
from gpus.kube.records import FleetReading, GpuPod
from gpus.provisioning.choices import OperationState
from gpus.provisioning.models import Operation
from gpus.testing import H100, L40S, node_info

pytestmark = pytest.mark.django_db


def reading(l40s_held: int = 1, h100_held: int = 2) -> FleetReading:
    pods = [
        GpuPod(
            namespace="tenant-acme",
            name="virt-launcher-vm-instance-ws-abcde",
            node_name="gpu-l40s-worker-01",
            phase="Running",
            gpus={L40S: l40s_held},
            labels={"vm.kubevirt.io/name": "vm-instance-ws"},
        ),
        GpuPod(
            namespace="tenant-globex",
            name="trainer-0",
            node_name="gpu-h100-worker-01",
            phase="Running",
            gpus={H100: h100_held},
            labels={},
            owner_kind="StatefulSet",
            owner_name="trainer",
        ),
    ]
    return FleetReading(
        nodes=[
            node_info("gpu-l40s-worker-01", {L40S: 4}),
            node_info("gpu-l40s-worker-02", {L40S: 4}, ready=False),
            node_info("gpu-h100-worker-01", {H100: 8}),
        ],
        pods=pods,
        vm_kind="VMInstance",
        disk_field="ephemeralStorage",
    )


def sync(cluster, at, capture, **held) -> None:
    with capture(execute=True):
        store_snapshot(cluster, reading(**held), at)


def test_each_sync_appends_one_sample_per_model(
    snapshot, django_capture_on_commit_callbacks, django_assert_max_num_queries
):
    t0 = timezone.now() + dt.timedelta(minutes=1)
    sync(snapshot, t0, django_capture_on_commit_callbacks)
    l40s = GpuModel.objects.get(resource_name=L40S)
    s = CapacitySample.objects.get(cluster=snapshot, gpu_model=l40s, at=t0)
    # 8 installed, 4 on a node that is not ready; 1 held by a VM pod; the fixture's node
    # group (acme's k8s, 2 held) and VM (0 held yet) are the workload split.
    assert (s.installed, s.allocated, s.free, s.unavailable, s.free_max_one) == (8, 1, 3, 4, 3)
    assert (s.allocated_vms, s.allocated_node_groups) == (0, 2)
    assert CapacitySample.objects.filter(at=t0).count() == 2
    # An unchanged fleet: the same fixed number of rows, in a fixed number of queries (one of
    # them reads the instance types' sizes for the usage rows, one how busy the GPUs are).
    with django_assert_max_num_queries(16):
        assert history.record_samples(snapshot.pk, t0 + dt.timedelta(seconds=30)) == 2
    # The same time again writes nothing (a sync that lost to a newer one).
    assert history.record_samples(snapshot.pk, t0) == 0
    assert CapacitySample.objects.count() == 4


def test_demand_counts_queued_and_refused(snapshot, acme, alice):
    h100 = GpuModel.objects.get(resource_name=H100)
    t0 = timezone.now()
    history.record_samples(snapshot.pk, t0)
    Operation.objects.create(
        cluster=snapshot,
        tenant=acme,
        actor_name="alice",
        kind="create",
        namespace=acme.namespace,
        app_kind="VMInstance",
        name="big",
        gpu_model=h100,
        gpu_count=8,
        state=OperationState.QUEUED,
    )
    RefusedRequest.objects.create(
        cluster=snapshot, tenant=acme, gpu_model=h100, gpus=4, actor_name="alice"
    )
    history.record_samples(snapshot.pk, timezone.now() + dt.timedelta(seconds=1))
    last = CapacitySample.objects.filter(gpu_model=h100).latest("at")
    assert (last.queued, last.refused) == (8, 4)


def test_a_refusal_for_capacity_is_recorded(snapshot, acme, alice):
    """A VM asking more than any server has free is refused at submit; capacity keeps it."""
    from gpus.provisioning.services import OperationRefused, record

    h100 = GpuModel.objects.get(resource_name=H100)
    with pytest.raises(OperationRefused):
        record(
            user=alice,
            tenant=acme,
            cluster=snapshot,
            kind="create",
            app_kind="VMInstance",
            name="huge",
            docs=[],
            gpu_model=h100,
            gpu_count=7,
        )
    refusal = RefusedRequest.objects.get()
    assert (refusal.gpus, refusal.actor_name, refusal.tenant) == (7, "alice", acme)


def test_gpu_hours_and_rollups(snapshot, acme, globex, settings):
    settings.CAPACITY_USAGE_GAP_SECONDS = 3600
    start = timezone.now().replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=3)
    for minutes in range(0, 180, 10):  # a sync every 10 minutes for 3 hours
        history.record_samples(snapshot.pk, start + dt.timedelta(minutes=minutes))
    hours = TenantUsage.objects.filter(bucket=Bucket.HOUR, tenant=globex)
    # globex holds 2 H100 all along: 17 intervals of 10 minutes.
    assert sum(h.gpu_hours for h in hours) == pytest.approx(2 * 170 / 60)
    assert {h.gpus_max for h in hours} == {2}
    written = history.rollup(now=start + dt.timedelta(hours=3))
    assert written[Bucket.HOUR] == 6  # 3 hours x 2 models
    h100 = GpuModel.objects.get(resource_name=H100)
    hour = CapacityRollup.objects.get(bucket=Bucket.HOUR, gpu_model=h100, ts=start)
    assert (hour.samples, hour.allocated, hour.installed) == (6, 2, 8)
    day_hours = TenantUsage.objects.filter(bucket=Bucket.DAY, tenant=globex)
    assert sum(d.gpu_hours for d in day_hours) == pytest.approx(2 * 170 / 60)
    # Rolling up again is idempotent.
    history.rollup(now=start + dt.timedelta(hours=3))
    assert CapacityRollup.objects.filter(bucket=Bucket.HOUR).count() == 6
    # A sample that lands in the previous hour after it was rolled up is counted next time.
    CapacitySample.objects.create(
        cluster=snapshot, gpu_model=h100, at=start + dt.timedelta(hours=1, minutes=59),
        installed=8, allocated=8,
    )  # fmt: skip
    history.rollup(now=start + dt.timedelta(hours=3))
    late = CapacityRollup.objects.get(
        bucket=Bucket.HOUR, gpu_model=h100, ts=start + dt.timedelta(hours=1)
    )
    assert (late.samples, late.allocated_max) == (7, 8)


def test_retention_drops_old_rows(snapshot, settings):
    settings.CAPACITY_RAW_RETENTION_DAYS = 14
    old = timezone.now() - dt.timedelta(days=20)
    history.record_samples(snapshot.pk, old)
    history.record_samples(snapshot.pk, timezone.now())
    out = history.apply_retention(timezone.now())
    assert out["samples_deleted"] == 2
    assert CapacitySample.objects.count() == 2


# --- the forecast -----------------------------------------------------------------------


def test_theil_sen_finds_a_known_slope_despite_outliers():
    rng = np.random.default_rng(7)
    t = np.linspace(0, 14, 14 * 24)
    y = 100 + 3.0 * t + rng.normal(0, 2, t.size)
    y[::37] += 60  # spikes a least-squares fit would follow
    fit = theil_sen(t, y)
    assert fit.slope == pytest.approx(3.0, rel=0.03)
    assert fit.slope_low < 3.0 < fit.slope_high


def test_days_to_exhaustion_within_tolerance_of_the_trend():
    """Allocation grows 5 GPUs a day from 200 of 400 installed over 14 days: at the end 270
    are held, so the true answer is (400 - 270) / 5 = 26 days. Tolerance: 5 %."""
    rng = np.random.default_rng(3)
    t = np.arange(0, 14, 1 / 24)
    y = 200 + 5 * t + rng.normal(0, 3, t.size)
    result = days_to_exhaustion(list(t), list(y), installed=400)
    true_days = (400 - (200 + 5 * t[-1])) / 5
    assert result.enough_history and result.running_out
    assert result.days == pytest.approx(true_days, rel=0.05)
    assert result.days_low <= result.days <= result.days_high


def test_not_enough_history_and_no_growth():
    assert not days_to_exhaustion([0, 0.5, 1], [1, 2, 3], installed=10).enough_history
    flat = days_to_exhaustion(list(np.arange(0, 5, 0.1)), [10.0] * 50, installed=20)
    assert flat.enough_history and not flat.running_out
