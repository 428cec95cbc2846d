"""A tenant cluster's admin kubeconfig Secret and the API behind it (issue 16 item 5): read the
Secret as a tenant's `-use` person, then list the tenant cluster's nodes with the real client and
kubectl; a worker's `nvidia.com/gpu` is allocatable only a while after its VM boots."""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config

from devcluster.testing import DevCluster, kubectl_path

from .conftest import wait_for

G, V = "apps.cozystack.io", "v1alpha1"
A100 = "nvidia.com/GA100_A100_PCIE_80GB"


@pytest.fixture
def knobs(dc: DevCluster) -> Iterator[Any]:
    def set_knobs(**values: Any) -> None:
        dc.set_faults({"rules": [], "knobs": values})

    yield set_knobs
    dc.clear_faults()


def portal_as(dc: DevCluster, group: str) -> client.CoreV1Api:
    """The portal's own credential, impersonating a person with one tenant group."""
    api = dc.api_client(token=dc.portal_token)
    api.set_default_header("Impersonate-User", "hikube-portal:someone")
    api.set_default_header("Impersonate-Group", group)
    return client.CoreV1Api(api)


def admin_conf(core: client.CoreV1Api, ns: str, cluster: str) -> dict[str, Any]:
    secret = core.read_namespaced_secret(f"kubernetes-{cluster}-admin-kubeconfig", ns)
    return yaml.safe_load(base64.b64decode(secret.data["admin.conf"]))


def tenant_core(conf: dict[str, Any]) -> client.CoreV1Api:
    cfg = client.Configuration()
    config.load_kube_config_from_dict(conf, client_configuration=cfg, persist_config=False)
    return client.CoreV1Api(client.ApiClient(cfg))


def test_the_admin_kubeconfig_is_readable_from_use_up_and_reaches_the_tenant_nodes(
    dc: DevCluster, tmp_path: Path
) -> None:
    with pytest.raises(client.ApiException) as refused:
        portal_as(dc, "tenant-acme-view").read_namespaced_secret(
            "kubernetes-ml-admin-kubeconfig", "tenant-acme"
        )
    assert refused.value.status == 403
    conf = admin_conf(portal_as(dc, "tenant-acme-use"), "tenant-acme", "ml")
    nodes = tenant_core(conf).list_node().items
    by_group: dict[str, list[Any]] = {}
    for node in nodes:
        group = next(k.rsplit("/", 1)[1] for k in node.metadata.labels if "node-role" in k)
        by_group.setdefault(group, []).append(node)
    # The demo's `ml`: two A100 workers (one GPU each), long booted; md0 has no GPU.
    assert sorted(n.status.allocatable.get("nvidia.com/gpu") for n in by_group["gpu"]) == [
        "1",
        "1",
    ]
    assert all("nvidia.com/gpu" not in n.status.allocatable for n in by_group["md0"])
    # The node is the worker VM (CAPK: one node per KubevirtMachine, named like its VM).
    vms = client.CustomObjectsApi(dc.api_client()).list_namespaced_custom_object(
        "kubevirt.io", "v1", "tenant-acme", "virtualmachines"
    )["items"]
    assert {n.metadata.name for n in nodes} <= {vm["metadata"]["name"] for vm in vms}
    # kubectl reads it too (TLS with the CA the kubeconfig carries).
    path = tmp_path / "ml.conf"
    path.write_text(yaml.safe_dump(conf))
    done = subprocess.run(
        [kubectl_path(), "--kubeconfig", str(path), "get", "nodes"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "kubernetes-ml-gpu-" in done.stdout
    # Another cluster's token opens nothing.
    other = admin_conf(client.CoreV1Api(dc.api_client()), "tenant-globex", "serve")
    conf["users"][0]["user"]["token"] = other["users"][0]["user"]["token"]
    with pytest.raises(client.ApiException) as wrong:
        tenant_core(conf).list_node()
    assert wrong.value.status == 401


def test_gpus_are_allocatable_only_after_the_operator_made_them(
    dc: DevCluster, custom: client.CustomObjectsApi, core: client.CoreV1Api, knobs: Any
) -> None:
    knobs(gpu_ready=1e6)  # the operator is still building the driver
    spec = {
        "version": "v1.33",
        "nodeGroups": {
            "gpu": {
                "minReplicas": 1,
                "maxReplicas": 2,
                "instanceType": "u1.2xlarge",
                "ephemeralStorage": "50Gi",
                "resources": {},
                "roles": [],
                "gpus": [{"name": A100}],
            }
        },
        "addons": {"gpuOperator": {"enabled": True, "valuesOverride": {}}},
    }
    body = {"apiVersion": f"{G}/{V}", "kind": "Kubernetes", "metadata": {"name": "late"}}
    custom.create_namespaced_custom_object(
        G, V, "tenant-root", "kuberneteses", {**body, "spec": spec}
    )
    try:
        conf = wait_for(
            lambda: _try(lambda: admin_conf(core, "tenant-root", "late")),
            timeout=30,
            what="the admin kubeconfig",
        )
        api = tenant_core(conf)
        nodes = wait_for(
            lambda: [
                n
                for n in api.list_node().items
                if n.metadata.name.startswith("kubernetes-late-gpu-")
            ],
            timeout=30,
            what="a booted worker",
        )
        assert all("nvidia.com/gpu" not in (n.status.allocatable or {}) for n in nodes)
        knobs(gpu_ready=0)
        ready = wait_for(
            lambda: [
                n
                for n in api.list_node().items
                if (n.status.allocatable or {}).get("nvidia.com/gpu") == "1"
            ],
            timeout=30,
            what="GPUs allocatable",
        )
        assert ready[0].status.capacity["nvidia.com/gpu"] == "1"
    finally:
        custom.delete_namespaced_custom_object(G, V, "tenant-root", "kuberneteses", "late")


def _try(fn: Any) -> Any:
    try:
        return fn()
    except client.ApiException as exc:
        if exc.status == 404:
            return None
        raise
