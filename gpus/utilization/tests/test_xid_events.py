"""The XID gauge (DCGM_FI_DEV_XID_ERRORS keeps the last XID until the driver reloads): one
incident when a value first appears on a GPU in a driver boot, not one per bucket (#16 item 8)."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from django.test import override_settings
from django.utils import timezone

from devcluster import metrics as dcgm
from devcluster.fleet import MODELS
from devcluster.testing import run_devcluster
from gpus.inventory.models import Cluster
from gpus.utilization import rollup
from gpus.utilization.collector import collect_cluster, store
from gpus.utilization.metrics.parse import Reading, parse_exposition
from gpus.utilization.models import GpuDevice, MetricSource, XidEvent
from gpus.utilization.selectors import TimeRange, health

pytestmark = [pytest.mark.integration, pytest.mark.django_db]
A100 = "nvidia.com/GA100_A100_PCIE_80GB"


def test_scrapes_of_a_sticky_xid_make_one_incident(tmp_path, acme, globex) -> None:
    """devcluster over HTTP: acme's ml cluster runs `faulty` GPUs; every scrape shows XID 13."""
    with run_devcluster(tmp_path / "dc", fleet="demo", speed=50.0) as dc:
        status, _, body = dc.request(
            "PATCH",
            "/apis/apps.cozystack.io/v1alpha1/namespaces/tenant-acme/kuberneteses/ml",
            body={"metadata": {"annotations": {"devcluster.hikube.io/gpu-profile": "faulty"}}},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert status == 200, body
        c = Cluster.objects.create(name="dc", kubeconfig=str(dc.kubeconfig), context="admin")
        MetricSource.objects.create(
            cluster=c, kind="direct", sd_url=f"{dc.url}/dcgm/targets", timeout_seconds=5
        )
        deadline = time.monotonic() + 30
        while GpuDevice.objects.filter(kube_cluster="kubernetes-ml").count() != 2:
            assert time.monotonic() < deadline
            time.sleep(0.3)
            collect_cluster(c.pk)
        for _ in range(3):
            collect_cluster(c.pk)
    ml = GpuDevice.objects.filter(kube_cluster="kubernetes-ml")
    assert {d.xid_value for d in ml} == {13}
    assert sorted(XidEvent.objects.values_list("device__kube_cluster", "xid")) == [
        ("kubernetes-ml", 13),
        ("kubernetes-ml", 13),
    ]
    assert {e.tenant for e in XidEvent.objects.all()} == {acme}


@override_settings(METRICS_COLLECT_SECONDS=60)
def test_health_counts_incidents_not_buckets(acme) -> None:
    """Two hours of a faulty GPU, scraped each minute: one XID 13, first seen at the first
    scrape; the buckets that still show the gauge's 13 add nothing."""
    faulty = dcgm.Gpu(
        dcgm.physical_uuid(1, "gpu-a100-8", 0),
        0,
        "kubernetes-ml-gpu-aaaaa-ccccc",
        MODELS[A100],
        "faulty",
        ("ml", "trainer", "train-0"),
        (("cluster", "kubernetes-ml"), ("tenant", "tenant-acme")),
    )
    end = rollup.floor_ts(timezone.now(), 3600)
    start = end - dt.timedelta(hours=2)
    t = start.timestamp()
    while t < end.timestamp():
        store(parse_exposition(dcgm.render([faulty], t, 1), t), None)
        t += 60
    for b in rollup.pending_buckets(end + dt.timedelta(minutes=5)):
        rollup.rollup_bucket(b)
    (row,) = health(TimeRange(start, end, "custom"))["rows"]
    assert row["xids"] == [13] and row["xid_count"] == 1
    assert row["last_xid_at"] == start  # when it first appeared, not the last bucket


def test_a_driver_reload_or_another_xid_is_a_new_incident(acme) -> None:
    t0 = dt.datetime(2026, 3, 1, 10, tzinfo=dt.UTC).timestamp()
    gauge = [13, 13, 0, 0, 13, 13, 43, 43]  # reload (0), 13 again, then 43
    for k, xid in enumerate(gauge):
        r = Reading(uuid="GPU-x", ts=t0 + 60 * k, values={"xid": float(xid), "util": 50.0})
        store([r], None)
        store([r], None)  # the same pass twice (a retried task) adds nothing
    got = list(XidEvent.objects.order_by("ts").values_list("xid", "ts"))
    at = [dt.datetime.fromtimestamp(t0 + 60 * k, tz=dt.UTC) for k in (0, 4, 6)]
    assert got == [(13, at[0]), (13, at[1]), (43, at[2])]
