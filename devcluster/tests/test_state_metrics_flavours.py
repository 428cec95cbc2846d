"""State across restarts, DCGM endpoints and backfill, the legacy and head flavours."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

import pytest
from kubernetes import client, watch
from prometheus_client.parser import text_string_to_metric_families

from devcluster.testing import REPO_ROOT, DevCluster, run_devcluster

from .conftest import kubevirt_status, vm_instance, wait_for

pytestmark = pytest.mark.timeout(120)
G, V = "apps.cozystack.io", "v1alpha1"


def test_state_survives_restart_and_old_watches_expire(tmp_path) -> None:
    state = tmp_path / "state.json"
    with run_devcluster(tmp_path / "a", state=state) as first:
        custom = client.CustomObjectsApi(first.api_client())
        created = custom.create_namespaced_custom_object(
            G, V, "tenant-acme", "vminstances", vm_instance("keep-me", ["nvidia.com/AD102GL_L40S"])
        )
        wait_for(lambda: kubevirt_status(custom, "tenant-acme", "vm-instance-keep-me") == "Running")
        old_rv = created["metadata"]["resourceVersion"]
    assert first.proc is not None and first.proc.returncode == 0  # clean SIGTERM shutdown
    assert json.loads(state.read_text())["version"] == 1
    with run_devcluster(tmp_path / "b", state=state) as second:
        custom = client.CustomObjectsApi(second.api_client())
        again = custom.get_namespaced_custom_object(G, V, "tenant-acme", "vminstances", "keep-me")
        assert again["metadata"]["uid"] == created["metadata"]["uid"]
        assert kubevirt_status(custom, "tenant-acme", "vm-instance-keep-me") == "Running"
        # The GPU stays allocated to the restored launcher pod.
        pods = (
            client.CoreV1Api(second.api_client())
            .list_namespaced_pod(
                "tenant-acme", label_selector="vm.kubevirt.io/name=vm-instance-keep-me"
            )
            .items
        )
        assert len(pods) == 1 and pods[0].spec.node_name
        with pytest.raises(client.ApiException) as exc:
            for _ in watch.Watch().stream(
                client.CoreV1Api(second.api_client()).list_namespaced_pod,
                "tenant-acme",
                resource_version=old_rv,
                timeout_seconds=2,
            ):
                pass
        assert exc.value.status == 410
        # A v1.1 app watch never says 410: it re-sends the current objects as ADDED.
        seen = [
            (ev["type"], ev["object"]["metadata"]["name"])
            for ev in watch.Watch().stream(
                custom.list_namespaced_custom_object,
                G,
                V,
                "tenant-acme",
                "vminstances",
                resource_version=old_rv,
                timeout_seconds=1,
            )
        ]
        assert ("ADDED", "keep-me") in seen
        # And the reconciler still works after a restore.
        custom.delete_namespaced_custom_object(G, V, "tenant-acme", "vminstances", "keep-me")
        wait_for(lambda: kubevirt_status(custom, "tenant-acme", "vm-instance-keep-me") is None)


def _scrape(url: str) -> tuple[str, str]:
    with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - the test's own http URL
        return resp.headers["Content-Type"], resp.read().decode()


def test_dcgm_targets_and_metrics(dc: DevCluster) -> None:
    targets = json.loads(dc.request("GET", "/dcgm/targets", token="")[2])
    by_cluster = {t["labels"]["cluster"]: t for t in targets}
    assert by_cluster["kubernetes-ml"]["labels"]["tenant"] == "tenant-acme"
    assert by_cluster["kubernetes-ml"]["targets"] == [f"127.0.0.1:{dc.port}"]
    path = by_cluster["kubernetes-ml"]["labels"]["__metrics_path__"]
    ctype, text = _scrape(dc.url + path)
    assert ctype.startswith("text/plain; version=0.0.4")
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    for name in (
        "DCGM_FI_DEV_GPU_UTIL",
        "DCGM_FI_DEV_FB_USED",
        "DCGM_FI_DEV_FB_FREE",
        "DCGM_FI_DEV_POWER_USAGE",
        "DCGM_FI_DEV_GPU_TEMP",
        "DCGM_FI_DEV_SM_CLOCK",
        "DCGM_FI_DEV_XID_ERRORS",
        "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE",
    ):
        assert name in fams, name
    util = fams["DCGM_FI_DEV_GPU_UTIL"].samples
    assert len(util) == 2  # acme/ml: 2 A100 workers x 1 GPU
    labels = util[0].labels
    assert set(labels) >= {
        "gpu",
        "UUID",
        "pci_bus_id",
        "device",
        "modelName",
        "Hostname",
        "DCGM_FI_DRIVER_VERSION",
        "pod",
        "namespace",
        "container",
    }
    assert labels["modelName"] == "NVIDIA A100 80GB PCIe" and labels["Hostname"].startswith(
        "kubernetes-ml-gpu-"
    )
    temps = sorted(s.value for s in fams["DCGM_FI_DEV_GPU_TEMP"].samples)
    assert temps[-1] >= 87  # the throttling hot GPU
    # globex/serve: bursty inference + allocated-but-idle on one worker.
    serve = _scrape(dc.url + by_cluster["kubernetes-serve"]["labels"]["__metrics_path__"])[1]
    fams = {f.name: f for f in text_string_to_metric_families(serve)}
    idle = [s for s in fams["DCGM_FI_DEV_GPU_UTIL"].samples if s.labels["gpu"] == "1"]
    assert idle and idle[0].value == 0 and idle[0].labels["pod"]  # a pod holds it, nothing runs
    assert dc.request("GET", "/dcgm/kubernetes/tenant-acme/nope/metrics", token="")[0] == 404
    with_vms = json.loads(dc.request("GET", "/dcgm/targets?include=vms", token="")[2])
    assert any(t["labels"].get("source") == "guest-agent" for t in with_vms)


def test_backfill_writes_openmetrics(tmp_path) -> None:
    out = tmp_path / "dcgm.om"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "devcluster",
            "backfill",
            "--fleet",
            "demo",
            "--days",
            "0.01",
            "--step",
            "60",
            "--end",
            "1780000000",
            "--out",
            str(out),
        ],
        check=True,
        cwd=REPO_ROOT,
        capture_output=True,
        timeout=60,
    )
    text = out.read_text()
    assert text.endswith("# EOF\n")
    lines = [ln for ln in text.splitlines() if ln.startswith("DCGM_FI_DEV_GPU_UTIL{")]
    # 4 cluster GPUs (acme/ml 2 x A100, globex/serve 1 worker x 2 L40S)
    # x 15 samples (864 s / 60 s + 1)
    assert len(lines) == 4 * 15
    assert 'cluster="kubernetes-ml"' in lines[0] and 'tenant="tenant-acme"' in lines[0]
    assert lines[-1].rsplit(" ", 1)[1] == "1780000000"


def test_legacy_flavour_serves_virtualmachines(tmp_path) -> None:
    with run_devcluster(tmp_path, flavour="legacy") as legacy:
        res = json.loads(legacy.request("GET", "/apis/apps.cozystack.io/v1alpha1")[2])
        names = {r["name"] for r in res["resources"]}
        assert "virtualmachines" in names and "vminstances" not in names and "kuberneteses" in names
        custom = client.CustomObjectsApi(legacy.api_client())
        body = {
            "apiVersion": f"{G}/{V}",
            "kind": "VirtualMachine",
            "metadata": {"name": "old"},
            "spec": {
                "running": False,
                "gpus": [{"name": "nvidia.com/AD102GL_L40S"}],
                "systemDisk": {"image": "ubuntu", "storage": "50Gi"},
            },
        }
        made = custom.create_namespaced_custom_object(G, V, "tenant-acme", "virtualmachines", body)
        assert made["spec"]["systemDisk"]["storageClass"] == "replicated"  # nested default
        with pytest.raises(client.ApiException) as exc:  # the old API wraps errors too
            custom.create_namespaced_custom_object(G, V, "tenant-acme", "virtualmachines", body)
        assert exc.value.status == 500 and "already exists" in exc.value.body
        wait_for(lambda: kubevirt_status(custom, "tenant-acme", "virtual-machine-old") == "Stopped")
        custom.patch_namespaced_custom_object(
            G, V, "tenant-acme", "virtualmachines", "old", {"spec": {"running": True}}
        )
        wait_for(lambda: kubevirt_status(custom, "tenant-acme", "virtual-machine-old") == "Running")
        out = legacy.kubectl("get", "virtualmachines.apps.cozystack.io", "-n", "tenant-acme").stdout
        assert out.splitlines()[0].split() == ["NAME", "READY", "AGE", "VERSION"]


def test_head_flavour_uses_disk_size(tmp_path) -> None:
    with run_devcluster(tmp_path, flavour="head") as head:
        custom = client.CustomObjectsApi(head.api_client())
        old = {
            "apiVersion": f"{G}/{V}",
            "kind": "Kubernetes",
            "metadata": {"name": "k"},
            "spec": {
                "nodeGroups": {
                    "g": {"minReplicas": 0, "maxReplicas": 1, "instanceType": "u1.large"}
                }
            },
        }
        made = custom.create_namespaced_custom_object(G, V, "tenant-acme", "kuberneteses", old)
        assert made["spec"]["nodeGroups"]["g"]["diskSize"] == "20Gi"
        doc = json.loads(head.request("GET", "/openapi/v3/apis/apps.cozystack.io/v1alpha1")[2])
        schema = doc["components"]["schemas"]["io.cozystack.apps.v1alpha1.Kubernetes"]
        group = schema["properties"]["spec"]["properties"]["nodeGroups"]["additionalProperties"]
        assert "diskSize" in group["properties"] and "ephemeralStorage" not in group["properties"]
