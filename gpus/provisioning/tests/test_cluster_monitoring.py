"""A new cluster exports GPU metrics when its tenant has a monitoring tenant (#16 item 4): the
portal turns on the monitoring agents and the dcgm-exporter's ServiceMonitor (honorLabels), and
says so when it cannot. devcluster over HTTP; its series need all of it, as on v1.1."""

from __future__ import annotations

import json
import time

import pytest
import yaml
from django.urls import reverse

from devcluster.testing import run_devcluster
from gpus.inventory.models import Cluster
from gpus.provisioning import engine
from gpus.provisioning.choices import OperationState
from gpus.provisioning.models import Operation

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

L40S = "nvidia.com/AD102GL_L40S"
# tenant-acme uses the root tenant's monitoring; tenant-globex has none (label "").
FLEET = {
    "nodes": [{"prefix": "gpu-l40s", "count": 2, "model": L40S, "gpus": 4}],
    "tenants": ["tenant-root", "tenant-acme", "tenant-globex"],
    "monitoring": {"tenant-root": "tenant-root", "tenant-acme": "tenant-root", "tenant-globex": ""},
}
FORM = {
    "new_cluster": "mon",
    "version": "v1.33",
    "group": "gpu",
    "min_replicas": "1",
    "max_replicas": "1",
    "instance_type": "u1.2xlarge",
    "disk_size_gi": "50",
    "gpu_model": L40S,
    "gpus_per_node": "1",
}


@pytest.fixture
def dc(tmp_path):
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(json.dumps(FLEET))
    with run_devcluster(tmp_path / "dc", fleet=str(fleet), speed=200.0) as cluster:
        yield cluster


@pytest.fixture
def cluster(dc, acme, globex, register) -> Cluster:
    return register(dc, "dc")


def _targets(dc) -> set[str]:
    body = dc.request("GET", "/dcgm/targets", token="")[2]
    return {t["labels"]["cluster"] for t in json.loads(body)}


def _preview(client, namespace: str) -> tuple[dict, str]:
    url = reverse("gpus:node_group_new", args=[namespace])
    page = client.post(url, FORM).content.decode()
    start = page.index('<code id="preview-yaml">') + len('<code id="preview-yaml">')
    text = page[start : page.index("</code>", start)].replace("&quot;", '"').replace("&#x27;", "'")
    return yaml.safe_load(text), page


def test_a_monitored_tenants_new_cluster_exports_gpu_metrics(
    dc, cluster, alice, alice_client, bob_client, django_capture_on_commit_callbacks
) -> None:
    assert cluster.monitoring_for("tenant-acme") == "tenant-root"
    assert cluster.monitoring_for("tenant-globex") == ""
    # The preview shows what is sent; only globex's says its GPUs will have no metrics.
    doc, page = _preview(alice_client, "tenant-acme")
    addons = doc["spec"]["addons"]
    assert addons["monitoringAgents"] == {"enabled": True, "valuesOverride": {}}
    sm = addons["gpuOperator"]["valuesOverride"]["gpu-operator"]["dcgmExporter"]["serviceMonitor"]
    assert sm == {"enabled": True, "honorLabels": True}
    assert "no monitoring" not in page
    doc, page = _preview(bob_client, "tenant-globex")
    assert "monitoringAgents" not in doc["spec"]["addons"]
    assert doc["spec"]["addons"]["gpuOperator"]["valuesOverride"] == {}
    assert "This tenant has no monitoring" in page
    # Created through the portal, the cluster's GPU series reach the tenant's monitoring.
    with django_capture_on_commit_callbacks():
        response = alice_client.post(
            reverse("gpus:node_group_new", args=["tenant-acme"]), {**FORM, "confirm": "1"}
        )
    assert response.status_code == 302
    op = Operation.objects.get(name="mon")
    assert op.params["monitoring"] is True
    deadline = time.monotonic() + 60
    while "kubernetes-mon" not in _targets(dc):
        assert time.monotonic() < deadline, f"no series: {op.state} {op.message}"
        op.refresh_from_db()
        if op.state == OperationState.PENDING and (claimed := engine.claim(op.pk)):
            engine.apply(claimed)
        else:
            engine.poll_cluster(cluster.pk)
        time.sleep(0.2)


CLUSTER_YAML = """
apiVersion: apps.cozystack.io/v1alpha1
kind: Kubernetes
metadata: {name: %(name)s, namespace: %(ns)s}
spec:
  nodeGroups:
    gpu: {minReplicas: 1, maxReplicas: 1, instanceType: u1.2xlarge, ephemeralStorage: 20Gi,
          resources: {}, gpus: [{name: %(gpu)s}]}
  addons:
    gpuOperator:
      enabled: true
      valuesOverride: {gpu-operator: {dcgmExporter: {serviceMonitor: {enabled: true}}}}
    monitoringAgents: {enabled: %(agents)s, valuesOverride: {}}
"""


def test_devcluster_stores_no_series_without_agents_or_a_monitoring_tenant(dc) -> None:
    """As on v1.1: a ServiceMonitor with no vmagent is scraped by no one, and agents of a tenant
    with no monitoring tenant write to no VictoriaMetrics."""
    for name, ns, agents in (
        ("sm-only", "tenant-acme", "false"),
        ("nowhere", "tenant-globex", "true"),
        ("full", "tenant-acme", "true"),
    ):
        manifest = CLUSTER_YAML % {"name": name, "ns": ns, "gpu": L40S, "agents": agents}
        dc.kubectl("apply", "-f", "-", input=manifest)
    deadline = time.monotonic() + 60
    while "kubernetes-full" not in _targets(dc):
        assert time.monotonic() < deadline
        time.sleep(0.3)
    # The three started together: full's series mean the others' exporters have run as long.
    assert _targets(dc) == {"kubernetes-full"}
