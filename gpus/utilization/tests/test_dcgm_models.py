"""DCGM model names matched whole against the catalog: devcluster's exporters scraped over HTTP
(#16 item 8). An L40 is not an L40S, an A10 not an A100."""

from __future__ import annotations

import json
import time

import pytest

from devcluster.testing import run_devcluster
from gpus.utilization.collector import store
from gpus.utilization.metrics.sources import DirectSource, Http
from gpus.utilization.models import GpuDevice

pytestmark = [pytest.mark.integration, pytest.mark.django_db, pytest.mark.timeout(120)]

# NVML's names, as dcgm-exporter's modelName label carries them.
MODELS = {
    "nvidia.com/AD102GL_L40": "NVIDIA L40",
    "nvidia.com/AD102GL_L40S": "NVIDIA L40S",
    "nvidia.com/GA102GL_A10": "NVIDIA A10",
    "nvidia.com/GA100_A100_PCIE_80GB": "NVIDIA A100 80GB PCIe",
    "nvidia.com/H100_94GB": "NVIDIA H100 NVL",
}
SCRAPED = {"gpu-operator": {"dcgmExporter": {"serviceMonitor": {"enabled": True}}}}


def _fleet() -> dict:
    nodes, workloads = [], []
    for i, resource in enumerate(MODELS):
        nodes.append({"name": f"host-{i}", "model": resource, "gpus": 2})
        group = {
            "minReplicas": 1,
            "maxReplicas": 1,
            "instanceType": "u1.xlarge",
            "ephemeralStorage": "50Gi",
            "resources": {},
            "gpus": [{"name": resource}],
        }
        workloads.append(
            {
                "apiVersion": "apps.cozystack.io/v1alpha1",
                "kind": "Kubernetes",
                "metadata": {"name": f"k{i}", "namespace": "tenant-acme"},
                "spec": {
                    "version": "v1.33",
                    "nodeGroups": {"gpu": group},
                    "addons": {
                        "gpuOperator": {"enabled": True, "valuesOverride": SCRAPED},
                        "monitoringAgents": {"enabled": True, "valuesOverride": {}},
                    },
                },
            }
        )
    models = {r: {"modelName": name} for r, name in MODELS.items()}
    return {"models": models, "nodes": nodes, "tenants": ["tenant-acme"], "workloads": workloads}


def test_each_gpu_gets_its_own_model_not_a_prefix(tmp_path, acme) -> None:
    fleet = tmp_path / "models.yaml"
    fleet.write_text(json.dumps(_fleet()))  # JSON is YAML
    with run_devcluster(tmp_path / "dc", fleet=str(fleet), speed=200.0) as dc:
        source = DirectSource(Http(timeout=5), sd_url=f"{dc.url}/dcgm/targets")
        deadline = time.monotonic() + 60
        readings = []
        while len(readings) < len(MODELS):
            assert time.monotonic() < deadline, len(readings)
            time.sleep(0.3)
            readings = source.collect()
        store(readings, None)
    got = {
        d.model_name: d.gpu_model.resource_name if d.gpu_model else None
        for d in GpuDevice.objects.select_related("gpu_model")
    }
    assert got == {name: resource for resource, name in MODELS.items()}
