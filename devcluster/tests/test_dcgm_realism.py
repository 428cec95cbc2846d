"""DCGM as a Cozystack v1.1 tenant cluster exposes it (issue 8, item 9)."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

import pytest
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from devcluster import metrics
from devcluster.testing import REPO_ROOT, DevCluster

from .conftest import wait_for

pytestmark = pytest.mark.timeout(120)
G, V = "apps.cozystack.io", "v1alpha1"
A100 = "nvidia.com/GA100_A100_PCIE_80GB"

# The uncommented lines of NVIDIA/dcgm-exporter etc/dcp-metrics-included.csv at 4.1.1-4.0.4,
# the exporter the v1.1 gpu-operator chart runs (DCGM_FI_DRIVER_VERSION is a label there).
CSV_4_1_1 = {
    "DCGM_FI_DEV_SM_CLOCK",
    "DCGM_FI_DEV_MEM_CLOCK",
    "DCGM_FI_DEV_MEMORY_TEMP",
    "DCGM_FI_DEV_GPU_TEMP",
    "DCGM_FI_DEV_POWER_USAGE",
    "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
    "DCGM_FI_DEV_PCIE_REPLAY_COUNTER",
    "DCGM_FI_DEV_GPU_UTIL",
    "DCGM_FI_DEV_MEM_COPY_UTIL",
    "DCGM_FI_DEV_ENC_UTIL",
    "DCGM_FI_DEV_DEC_UTIL",
    "DCGM_FI_DEV_XID_ERRORS",
    "DCGM_FI_DEV_FB_FREE",
    "DCGM_FI_DEV_FB_USED",
    "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL",
    "DCGM_FI_DEV_VGPU_LICENSE_STATUS",
    "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS",
    "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS",
    "DCGM_FI_DEV_ROW_REMAP_FAILURE",
    "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
    "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE",
    "DCGM_FI_PROF_DRAM_ACTIVE",
    "DCGM_FI_PROF_PCIE_TX_BYTES",
    "DCGM_FI_PROF_PCIE_RX_BYTES",
}


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - local test URL
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""


def _targets(dc: DevCluster, vms: bool = False) -> dict[str, dict]:
    body = dc.request("GET", "/dcgm/targets" + ("?include=vms" if vms else ""), token="")[2]
    return {t["labels"].get("cluster") or t["labels"]["vm"]: t for t in json.loads(body)}


def test_metric_set_is_the_v1_1_exporter_csv(dc: DevCluster) -> None:
    assert {name for name, _, _ in metrics.METRICS} == CSV_4_1_1
    status, text = _get(dc.url + "/dcgm/kubernetes/tenant-acme/ml/metrics")
    assert status == 200
    names = {f.name for f in text_string_to_metric_families(text)}
    # A100 supports every field of the set; none of the opt-in extras appear.
    assert names == CSV_4_1_1
    assert "DCGM_FI_DEV_POWER_MGMT_LIMIT" not in text and "FB_RESERVED" not in text


def test_no_series_without_service_monitor_and_only_after_the_exporter_starts(
    dc: DevCluster,
) -> None:
    custom = client.CustomObjectsApi(dc.api_client())
    on = {"gpu-operator": {"dcgmExporter": {"serviceMonitor": {"enabled": True}}}}

    def create(name: str, values: dict) -> None:
        spec = {
            "nodeGroups": {
                "gpu": {
                    "minReplicas": 1,
                    "maxReplicas": 1,
                    "instanceType": "u1.8xlarge",
                    "ephemeralStorage": "20Gi",
                    "resources": {},
                    "gpus": [{"name": A100}],
                }
            },
            "addons": {
                "gpuOperator": {"enabled": True, "valuesOverride": values},
                "monitoringAgents": {"enabled": True, "valuesOverride": {}},
            },
        }
        body = {"apiVersion": f"{G}/{V}", "kind": "Kubernetes", "metadata": {"name": name}}
        custom.create_namespaced_custom_object(
            G, V, "tenant-acme", "kuberneteses", {**body, "spec": spec}
        )

    def running(name: str) -> bool:
        units = json.loads(dc.request("GET", "/devcluster/info")[2])["units"]
        return any(
            f"/kubernetes-{name}-" in k and u["phase"] == "Running" for k, u in units.items()
        )

    create("quiet", {})
    try:
        # Operator on, ServiceMonitor off (the v1.1 default): workers run, no series anywhere.
        wait_for(lambda: running("quiet"), timeout=60, what="quiet's worker running")
        # A twin with the ServiceMonitor on, started after quiet's worker: once its series are
        # there, quiet's worker too has run longer than the exporter delay (240 s / speed 50).
        create("loud", on)
        wait_for(lambda: _targets(dc).get("kubernetes-loud"), timeout=60, what="loud's series")
        assert "kubernetes-quiet" not in _targets(dc)
        assert _get(dc.url + "/dcgm/kubernetes/tenant-acme/quiet/metrics")[0] == 404
        custom.patch_namespaced_custom_object(
            G,
            V,
            "tenant-acme",
            "kuberneteses",
            "quiet",
            {"spec": {"addons": {"gpuOperator": {"enabled": True, "valuesOverride": on}}}},
        )
        # Series come once a worker has run for the exporter delay (240 s / speed 50).
        found = wait_for(lambda: _targets(dc).get("kubernetes-quiet"), timeout=60)
        assert found["labels"]["namespace"] == metrics.OPERATOR_NAMESPACE
        status, text = _get(dc.url + found["labels"]["__metrics_path__"])
        fams = {f.name: f for f in text_string_to_metric_families(text)}
        assert status == 200 and len(fams["DCGM_FI_DEV_GPU_UTIL"].samples) >= 1
    finally:
        for name in ("quiet", "loud"):
            try:
                custom.delete_namespaced_custom_object(G, V, "tenant-acme", "kuberneteses", name)
            except client.ApiException as exc:
                if exc.status != 404:
                    raise
        wait_for(
            lambda: not running("quiet") and not running("loud"),
            timeout=60,
            what="both clusters' workers gone (their GPUs free for the other tests)",
        )


def test_passthrough_vms_have_no_host_series_and_the_agent_has_no_pod_labels(
    dc: DevCluster,
) -> None:
    with_vms = _targets(dc, vms=True)
    assert "gpu-ws" not in with_vms  # acme's VM: passthrough, no agent
    assert _get(dc.url + "/dcgm/vm/tenant-acme/gpu-ws/metrics")[0] == 404
    agent = with_vms["inference"]["labels"]  # globex's VM runs the simulated agent
    assert agent["source"] == "guest-agent" and "namespace" not in agent
    text = _get(dc.url + agent["__metrics_path__"])[1]
    util = next(f for f in text_string_to_metric_families(text) if f.name == "DCGM_FI_DEV_GPU_UTIL")
    assert util.samples and not {"pod", "namespace", "container"} & set(util.samples[0].labels)
    assert "inference" not in _targets(dc)  # not listed without include=vms


def test_uuid_belongs_to_the_host_slot_and_is_reused() -> None:
    slots = metrics.Slots()
    first = {"uid": "a", "node": "gpu-a100-1", "gpus": ["x", "x"], "seq": 1}
    second = {"uid": "b", "node": "gpu-a100-1", "gpus": ["x"], "seq": 2}
    got = slots.assign([first, second])
    assert got[("a", 0)] == ("gpu-a100-1", 0) and got[("b", 0)] == ("gpu-a100-1", 2)
    assert slots.assign([second])[("b", 0)] == ("gpu-a100-1", 2)  # stable while it runs
    third = {"uid": "c", "node": "gpu-a100-1", "gpus": ["x"], "seq": 3}
    got = slots.assign([second, third])
    assert got[("c", 0)] == ("gpu-a100-1", 0)  # the next tenant gets the freed GPU
    assert metrics.physical_uuid(1, "gpu-a100-1", 0) == metrics.physical_uuid(1, "gpu-a100-1", 0)
    assert metrics.physical_uuid(1, "gpu-a100-1", 0) != metrics.physical_uuid(1, "gpu-a100-2", 0)


def test_backfill_as_vmagent_stores_it(tmp_path) -> None:
    out = tmp_path / "dcgm.om"
    subprocess.run(
        [sys.executable, "-m", "devcluster", "backfill", "--days", "0.002", "--out", str(out)],
        check=True,
        cwd=REPO_ROOT,
        capture_output=True,
        timeout=60,
    )
    lines = [ln for ln in out.read_text().splitlines() if ln.startswith("DCGM_FI_DEV_GPU_UTIL{")]
    ml = [ln for ln in lines if 'cluster="kubernetes-ml"' in ln]
    serve = [ln for ln in lines if 'cluster="kubernetes-serve"' in ln]
    # acme/ml: honorLabels false (chart default): the workload's labels become exported_*.
    assert ml and all('exported_namespace="ml"' in ln for ln in ml)
    assert all('namespace="cozy-gpu-operator"' in ln for ln in ml)
    # globex/serve: honorLabels true keeps the pod's own namespace.
    assert serve and any('namespace="inference"' in ln for ln in serve)
    assert not any("exported_" in ln for ln in serve)
