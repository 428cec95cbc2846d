"""The query-API source against a real Prometheus and a real VictoriaMetrics (Debian packages),
started on free ports and scraping devcluster's exporters through HTTP service discovery with
honor_labels false, as vmagent does with the chart's ServiceMonitor."""

from __future__ import annotations

import time

import pytest

from devcluster.testing import run_devcluster
from gpus.inventory.models import Cluster, GpuWorkload
from gpus.inventory.sync import sync_cluster
from gpus.utilization.collector import store
from gpus.utilization.metrics.errors import PermanentMetricsError, TransientMetricsError
from gpus.utilization.metrics.sources import Http, PrometheusSource, step_for
from gpus.utilization.models import GpuDevice, GpuSample
from gpus.utilization.rollup import gpu_rollups, rows_from_readings
from gpus.utilization.tests.tsdb import run_prometheus, run_victoria_metrics, wait_for_series

pytestmark = [pytest.mark.integration, pytest.mark.django_db, pytest.mark.timeout(180)]


# One GPU of each tenant cluster is idle (no pod holds it): its series carry only the scrape
# target's namespace/pod (the exporter's own), with honorLabels false (ml) and true (serve).
PROFILES = {("tenant-acme", "ml"): "training,free", ("tenant-globex", "serve"): "inference,free"}


@pytest.fixture(scope="module")
def dc(tmp_path_factory):
    with run_devcluster(tmp_path_factory.mktemp("dc"), fleet="demo", speed=50.0) as cluster:
        for (ns, name), profile in PROFILES.items():
            status, _, body = cluster.request(
                "PATCH",
                f"/apis/apps.cozystack.io/v1alpha1/namespaces/{ns}/kuberneteses/{name}",
                body={"metadata": {"annotations": {"devcluster.hikube.io/gpu-profile": profile}}},
                headers={"Content-Type": "application/merge-patch+json"},
            )
            assert status == 200, body
        yield cluster


@pytest.fixture
def cluster(dc, acme, globex):
    c = Cluster.objects.create(name="devcluster", kubeconfig=str(dc.kubeconfig), context="admin")
    deadline = time.monotonic() + 20
    while not GpuWorkload.objects.filter(name="ml", gpus_held=2).exists():
        sync_cluster(c.pk)
        assert time.monotonic() < deadline
        time.sleep(0.2)
    return c


def _check_source(url: str, cluster: Cluster) -> None:
    raw = wait_for_series(url, "DCGM_FI_PROF_GR_ENGINE_ACTIVE", n=4)
    ml = [s["metric"] for s in raw if s["metric"].get("cluster") == "kubernetes-ml"]
    # honor_labels false: the workload's labels became exported_*, namespace is the exporter's;
    # the idle GPU has no exported_* and only the exporter's own namespace/pod.
    assert len(ml) == 2 and all(m["namespace"] == "cozy-gpu-operator" for m in ml)
    assert sorted(m.get("exported_namespace", "") for m in ml) == ["", "ml"]
    assert all(m["pod"].startswith("nvidia-dcgm-exporter-") for m in ml)
    source = PrometheusSource(url, Http(timeout=5))
    readings = source.collect()
    by_cluster = {r.cluster for r in readings}
    assert by_cluster == {"kubernetes-ml", "kubernetes-serve"}
    mine = [r for r in readings if r.cluster == "kubernetes-ml"]
    held = [r for r in mine if r.allocated]
    assert len(mine) == 2 and len(held) == 1
    assert held[0].namespace == "ml" and held[0].pod.startswith("train-")
    assert {r.tenant for r in mine} == {"tenant-acme"}
    assert all("util" in r.values and "gr_active" in r.values for r in mine)
    # The idle GPUs: the exporter's own pod is never the workload, whatever honorLabels says.
    idle = [r for r in readings if not r.allocated]
    assert {r.cluster for r in idle} == {"kubernetes-ml", "kubernetes-serve"}
    assert all(r.pod == "" and r.namespace == "" for r in idle)
    # Query-API mode keeps devices and owners, not per-GPU samples.
    store(readings, cluster.pk, keep_samples=False)
    assert GpuSample.objects.count() == 0
    assert GpuDevice.objects.filter(tenant__namespace="tenant-acme").count() == 2
    assert GpuDevice.objects.filter(workload__name="serve").count() == 2
    assert GpuDevice.objects.filter(pod="").count() == 2
    assert not GpuDevice.objects.filter(pod__startswith="nvidia-dcgm-exporter").exists()
    end = time.time()
    step = step_for(0, 2 * 86400)  # two days: a step that keeps 2,000 points
    series = source.query_range("avg by (UUID) (DCGM_FI_DEV_GPU_UTIL)", end - 1999 * step, end)
    assert len(series) == 5 or len(series) == 4
    assert all(1 <= len(points) <= 2000 for _, points in series)
    found = source.readings_between(end - 2, end, 1)  # the scrapes of the last seconds
    rows = rows_from_readings(found, cluster.pk)
    assert rows and gpu_rollups(rows, "5m", None, 5)
    with pytest.raises(PermanentMetricsError):
        source.query("sum(")
    with pytest.raises(TransientMetricsError):
        PrometheusSource("http://127.0.0.1:9", Http(timeout=1)).collect()


def test_prometheus_source(dc, cluster, tmp_path) -> None:
    with run_prometheus(tmp_path / "prom", sd_url=f"{dc.url}/dcgm/targets") as url:
        _check_source(url, cluster)


def test_victoria_metrics_source(dc, cluster, tmp_path) -> None:
    with run_victoria_metrics(tmp_path / "vm", sd_url=f"{dc.url}/dcgm/targets") as url:
        _check_source(url, cluster)
