"""Right-sizing in query-API mode (#18 item 6): the GPU's history stays in a real Prometheus or
VictoriaMetrics and the portal keeps only group rollups; the workload's rollups carry its busy %
and memory peak (MiB, DCGM_FI_DEV_FB_USED), so a VM whose peak fits a smaller model gets the
same recommendation as with per-GPU rows."""

from __future__ import annotations

import datetime as dt
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from django.utils import timezone

from gpus.capacity import rightsizing
from gpus.capacity.tests.test_rightsizing import A100, make_workload, set_chf_prices
from gpus.catalog.models import GpuModel
from gpus.inventory.models import Cluster
from gpus.testing import L40S
from gpus.utilization import tasks
from gpus.utilization.collector import collect_cluster
from gpus.utilization.models import GpuDevice, GpuRollup, GroupRollup, MetricSource, Scope
from gpus.utilization.tests.tsdb import run_prometheus, run_victoria_metrics

pytestmark = [pytest.mark.integration, pytest.mark.django_db, pytest.mark.timeout(300)]

HOURS = 4  # closed hours of history (the test lowers MIN_HOURS to 3: the mode is under test)
PEAK_MIB = 10490  # 11 GB: an L40S (48 GB) holds it within its 80 % margin
NBSP = "\u00a0"


def _series(folder: Path, uuid: str) -> tuple[Path, Path, float]:
    """A VM's A100 every minute from HOURS hours before the current hour until now, 9 % busy,
    6,000 MiB used and once PEAK_MIB, as a guest agent's exporter scraped by Prometheus labels
    it (devcluster/metrics.py, `targets`): OpenMetrics for promtool, text for VictoriaMetrics."""
    labels = (
        f'UUID="{uuid}",gpu="0",modelName="NVIDIA A100 80GB PCIe",Hostname="journey-01",'
        'tenant="tenant-acme",vm="journey-01",source="guest-agent"'
    )
    end = int(time.time()) // 60 * 60
    first = end // 3600 * 3600 - HOURS * 3600
    times = list(range(first, end + 1, 60))
    peak_at = first + 3600 + 1800  # inside the second hour
    metrics = {
        "DCGM_FI_DEV_GPU_UTIL": lambda t: 9,
        "DCGM_FI_DEV_FB_USED": lambda t: PEAK_MIB if t == peak_at else 6000,
        "DCGM_FI_DEV_FB_FREE": lambda t: 81920 - (PEAK_MIB if t == peak_at else 6000),
        "DCGM_FI_DEV_POWER_USAGE": lambda t: 60,
    }
    om, prom = folder / "gpu.om", folder / "gpu.prom"
    with open(om, "w") as a, open(prom, "w") as b:
        for name, value in metrics.items():
            a.write(f"# TYPE {name} gauge\n")
            for t in times:
                a.write(f"{name}{{{labels}}} {value(t)} {t}\n")
                b.write(f"{name}{{{labels}}} {value(t)} {t * 1000}\n")
        a.write("# EOF\n")
    return om, prom, float(first)


@pytest.fixture(params=["prometheus", "victoriametrics"])
def source(request, tmp_path) -> Iterator[tuple[str, str, float]]:
    """(query API URL, the GPU's UUID, the history's first second) in a real server."""
    uuid = f"GPU-rightsizing-{request.param}-{int(time.time())}"
    om, prom, first = _series(tmp_path, uuid)
    if request.param == "prometheus":
        db = tmp_path / "db"
        backfill = ["promtool", "tsdb", "create-blocks-from", "openmetrics", "-q", str(om)]
        subprocess.run([*backfill, str(db)], check=True, capture_output=True)
        with run_prometheus(tmp_path / "p", tsdb=db) as url:
            yield url, uuid, first
        return
    with run_victoria_metrics(tmp_path / "v") as url:
        req = urllib.request.Request(  # noqa: S310 - the local VictoriaMetrics
            f"{url}/api/v1/import/prometheus", data=prom.read_bytes(), method="POST"
        )
        urllib.request.urlopen(req, timeout=60).read()  # noqa: S310 - local
        urllib.request.urlopen(f"{url}/internal/force_flush", timeout=60).read()  # noqa: S310
        yield url, uuid, first


def test_a_vm_whose_peak_fits_a_smaller_model_gets_it_in_query_api_mode(
    source, acme, platform_admin, monkeypatch
) -> None:
    url, uuid, first = source
    cluster = Cluster.objects.create(name="prod", last_synced_at=timezone.now())
    MetricSource.objects.create(cluster=cluster, kind="prometheus", url=url)
    set_chf_prices(platform_admin)
    vm = make_workload(cluster, acme, "journey-01", A100)
    l40s = GpuModel.objects.get(resource_name=L40S)
    # The collector's pass finds the GPU and its owner (query-API mode keeps no samples); it has
    # seen it since the history's start, where the rollups begin.
    assert collect_cluster(cluster.pk)["gpus"] == 1
    device = GpuDevice.objects.get(uuid=uuid)
    assert device.workload_id == vm.pk
    GpuDevice.objects.filter(pk=device.pk).update(
        last_seen_at=dt.datetime.fromtimestamp(first, tz=dt.UTC)
    )
    assert tasks.rollup_metrics()["buckets"] >= HOURS * 12
    # No per-GPU history in the portal: the workload's group rows carry what right-sizing needs.
    assert not GpuRollup.objects.filter(util_avg__isnull=False).exists()
    hours = GroupRollup.objects.filter(
        bucket="1h", scope=Scope.WORKLOAD, key="tenant-acme|journey-01"
    ).order_by("ts")
    assert hours.count() == HOURS
    assert [h.mem_used_max for h in hours] == [6000, PEAK_MIB, 6000, 6000]
    assert all(h.busy_avg == pytest.approx(9.0) for h in hours)

    monkeypatch.setattr(rightsizing, "MIN_HOURS", 3)
    (found,) = rightsizing.suggestions(acme)
    assert found.verdict == rightsizing.Verdict.SMALLER and found.target == l40s
    assert found.saving == Decimal("1022.00")
    assert found.text() == (
        "journey-01 used at most 11 GB of its NVIDIA A100's 80 GB and 9 % of its time: an NVIDIA "
        f"L40S would save CHF{NBSP}1,022.00 a month."
    )
    # Fleet-wide (the admins' page) too.
    assert [s.workload.name for s in rightsizing.suggestions()] == ["journey-01"]
