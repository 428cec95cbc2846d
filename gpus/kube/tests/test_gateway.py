"""Gateway and discovery against the local fake API (paging, idempotent apply, parsing)."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlparse

import pytest

from gpus.kube import apps as manifests
from gpus.kube import discovery, errors, records
from gpus.kube import gateway as gw
from gpus.kube.client import ClusterConfig
from gpus.kube.gateway import ClusterGateway
from gpus.kube.tests.fakeapi import Recorded, fake_api

L40S = "nvidia.com/AD102GL_L40S"


def node(i: int, gpus: int = 8, ready: bool = True, cordoned: bool = False) -> dict:
    return {
        "metadata": {"name": f"gpu-{i:05d}", "labels": {"nvidia.com/gpu.product": "L40S"}},
        "spec": {"unschedulable": cordoned, "taints": [{"key": "k", "effect": "NoSchedule"}]},
        "status": {
            "allocatable": {"cpu": "64", "memory": "512Gi", L40S: str(gpus)},
            "capacity": {"cpu": "64", L40S: str(gpus)},
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def pod(ns: str, name: str, gpus: int, phase: str = "Running") -> dict:
    limits = {L40S: str(gpus)} if gpus else {"cpu": "1"}
    return {
        "metadata": {
            "namespace": ns,
            "name": name,
            "labels": {"vm.kubevirt.io/name": "vm-instance-x"},
            "ownerReferences": [
                {"kind": "VirtualMachineInstance", "name": "vm-instance-x", "controller": True}
            ],
        },
        "spec": {
            "nodeName": "gpu-00001",
            "containers": [{"name": "compute", "resources": {"limits": limits}}],
        },
        "status": {"phase": phase},
    }


def paged(items: list, rec: Recorded) -> tuple[int, dict, dict]:
    q = parse_qs(urlparse(rec.path).query)
    limit = int(q.get("limit", ["500"])[0])
    start = int(q.get("continue", ["0"])[0])
    chunk = items[start : start + limit]
    meta = {"continue": str(start + limit)} if start + limit < len(items) else {}
    return 200, {"kind": "List", "metadata": meta, "items": chunk}, {}


def test_iter_nodes_pages_every_node_once(tmp_path):
    nodes = [node(i, ready=i % 7 != 0, cordoned=i % 5 == 0) for i in range(23)]
    with fake_api(tmp_path, lambda rec: paged(nodes, rec)) as api:
        gateway = ClusterGateway(ClusterConfig("paging", kubeconfig=str(api.kubeconfig)))
        got = list(gateway.iter_nodes(page_size=5))
        assert len(api.requests) == 5
    assert [n.name for n in got] == [f"gpu-{i:05d}" for i in range(23)]
    first = got[0]
    assert isinstance(first, gw.NodeInfo)
    assert first.gpu_resources == {L40S: 8}
    assert first.allocatable["memory"] == "512Gi"
    assert first.ready is False and first.unschedulable is True
    assert got[1].ready is True and got[1].unschedulable is False
    assert first.taints == [{"key": "k", "value": "", "effect": "NoSchedule"}]


def test_iter_gpu_pods_keeps_gpu_holders_only(tmp_path):
    pods = [
        pod("tenant-acme", "virt-launcher-a", 2),
        pod("tenant-acme", "web", 0),
        pod("tenant-b", "l", 1),
    ]
    with fake_api(tmp_path, lambda rec: paged(pods, rec)) as api:
        gateway = ClusterGateway(ClusterConfig("pods", kubeconfig=str(api.kubeconfig)))
        got = list(gateway.iter_gpu_pods(page_size=2))
    assert [(p.namespace, p.name, p.gpus) for p in got] == [
        ("tenant-acme", "virt-launcher-a", {L40S: 2}),
        ("tenant-b", "l", {L40S: 1}),
    ]
    assert got[0].owner_kind == "VirtualMachineInstance" and got[0].node_name == "gpu-00001"


def test_pod_gpus_rules():
    p = {
        "spec": {
            "containers": [
                {"resources": {"requests": {L40S: "1"}, "limits": {L40S: "1"}}},
                {"resources": {"limits": {L40S: "2", "nvidia.com/gpu": "1"}}},
            ],
            "initContainers": [{"resources": {"limits": {L40S: "5"}}}],
        }
    }
    assert gw.pod_gpus(p) == {L40S: 5, "nvidia.com/gpu": 1}


def test_gpu_counts_use_the_clients_quantities_and_ignore_garbage():
    # kubernetes.utils.parse_quantity underneath: "1k", "2e0" are quantities; "lots" is not.
    counts = records.gpu_counts(
        {L40S: "1k", "nvidia.com/H100_94GB": "2e0", "nvidia.com/x": "lots", "cpu": "64"}
    )
    assert counts == {L40S: 1000, "nvidia.com/H100_94GB": 2, "nvidia.com/x": 0}


class FakeApps:
    """Just enough of a custom-objects API: create/409, merge patch, get, delete/404."""

    def __init__(self) -> None:
        self.objects: dict[str, dict] = {}

    def __call__(self, rec: Recorded):
        path = urlparse(rec.path).path
        parts = path.strip("/").split("/")
        if rec.method == "POST":
            key = path + "/" + rec.body["metadata"]["name"]
            if key in self.objects:
                return (
                    409,
                    {"kind": "Status", "code": 409, "reason": "AlreadyExists", "message": "exists"},
                    {},
                )
            self.objects[key] = rec.body
            return 201, rec.body, {}
        if path not in self.objects:
            return (
                404,
                {
                    "kind": "Status",
                    "code": 404,
                    "reason": "NotFound",
                    "message": f"{parts[-1]} not found",
                },
                {},
            )
        if rec.method == "PATCH":
            assert dict(rec.headers)["Content-Type"] == "application/merge-patch+json"
            self.objects[path] = merge(self.objects[path], rec.body)
        if rec.method == "DELETE":
            return 200, self.objects.pop(path), {}
        return 200, self.objects[path], {}


def merge(target, patch):
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge(out.get(k), v)
    return out


def test_apply_is_idempotent_and_delete_twice_is_fine(tmp_path):
    store = FakeApps()
    vm = manifests.vm_instance(
        "gpu-ws", "tenant-acme", "u1.2xlarge", "ubuntu", ["gpu-ws-system"], [L40S]
    )
    with fake_api(tmp_path, store) as api:
        gateway = ClusterGateway(ClusterConfig("apply", kubeconfig=str(api.kubeconfig)))
        first = gateway.apply(vm, impersonate_user="u", impersonate_groups=["g"])
        again = gateway.apply(vm, impersonate_user="u", impersonate_groups=["g"])
        assert first == again
        methods = [r.method for r in api.requests]
        assert methods == ["GET", "POST", "GET", "PATCH"]  # read, then create or patch
        assert all(r.all("Impersonate-Group") == ["g"] for r in api.requests)
        assert "fieldManager=hikube-portal" in api.requests[1].path
        assert gateway.get("vminstances", "tenant-acme", "gpu-ws")["spec"]["gpus"] == [
            {"name": L40S}
        ]
        patched = gateway.patch(
            "vminstances", "tenant-acme", "gpu-ws", manifests.vm_power_patch("VMInstance", False)
        )
        assert patched["spec"]["runStrategy"] == "Halted"
        assert gateway.delete("vminstances", "tenant-acme", "gpu-ws") is True
        assert gateway.delete("vminstances", "tenant-acme", "gpu-ws") is False
        assert gateway.get("vminstances", "tenant-acme", "gpu-ws") is None


def test_node_group_patch_touches_one_group(tmp_path):
    store = FakeApps()
    groups = {
        "md0": manifests.node_group(1, 3, "u1.large", "50Gi"),
        "gpu": manifests.node_group(1, 2, "u1.2xlarge", "100Gi", gpus=[L40S]),
    }
    cluster = manifests.kubernetes_cluster("ml", "tenant-acme", "v1.33", groups)
    with fake_api(tmp_path, store) as api:
        gateway = ClusterGateway(ClusterConfig("ng", kubeconfig=str(api.kubeconfig)))
        gateway.apply(cluster)
        bigger = manifests.node_group(1, 8, "u1.2xlarge", "100Gi", gpus=[L40S, L40S])
        out = gateway.patch(
            "kuberneteses", "tenant-acme", "ml", manifests.node_group_merge_patch("gpu", bigger)
        )
        assert out["spec"]["nodeGroups"]["gpu"]["maxReplicas"] == 8
        assert out["spec"]["nodeGroups"]["md0"] == groups["md0"]
        out = gateway.patch(
            "kuberneteses", "tenant-acme", "ml", manifests.node_group_merge_patch("gpu", None)
        )
        assert set(out["spec"]["nodeGroups"]) == {"md0"}
        assert "/kuberneteses/ml" in api.requests[-1].path


def test_conditions_summary():
    obj = {
        "status": {
            "conditions": [
                {"type": "Ready", "status": "False", "reason": "InstallFailed", "message": "boom"},
                {"type": "Released", "status": "True", "reason": "InstallSucceeded"},
                {"type": "Other", "status": "True"},
            ]
        }
    }
    summary = gw.conditions_summary(obj)
    assert set(summary) == {"Ready", "Released"}
    assert summary["Ready"] == gw.Condition("Ready", "False", "InstallFailed", "boom")
    assert not summary["Ready"].is_true and summary["Released"].is_true
    assert gw.conditions_summary(None) == {}


def test_with_retries_honours_retry_after():
    slept: list[float] = []
    calls = {"n": 0}

    def flaky():
        calls["n"] += 1
        if calls["n"] == 1:
            raise errors.TransientError("busy", 429, retry_after=7)
        if calls["n"] == 2:
            raise errors.TransientError("down", 503)
        return "ok"

    assert (
        gw.with_retries(flaky, attempts=3, base_delay=1, sleep=slept.append, jitter=lambda: 1.0)
        == "ok"
    )
    assert slept == [7, 2]


def test_with_retries_gives_up_and_skips_permanent():
    def always():
        raise errors.TransientError("down", 503)

    with pytest.raises(errors.TransientError):
        gw.with_retries(always, attempts=2, sleep=lambda s: None)

    def invalid():
        raise errors.InvalidError("bad", 422)

    with pytest.raises(errors.InvalidError):
        gw.with_retries(invalid, attempts=5, sleep=lambda s: pytest.fail("no sleep for permanent"))


# --- discovery -------------------------------------------------------------------------


def kubernetes_openapi_v3(field: str) -> dict:
    return {
        "components": {
            "schemas": {
                "com.github.cozystack.apps.v1alpha1.Kubernetes": {
                    "x-kubernetes-group-version-kind": [
                        {"group": "apps.cozystack.io", "version": "v1alpha1", "kind": "Kubernetes"}
                    ],
                    "properties": {"spec": {"$ref": "#/components/schemas/KSpec"}},
                },
                "KSpec": {
                    "properties": {
                        "nodeGroups": {
                            "additionalProperties": {"allOf": [{"$ref": "#/components/schemas/NG"}]}
                        }
                    }
                },
                "NG": {"properties": {field: {"type": "string"}, "instanceType": {}}},
            }
        }
    }


@pytest.mark.parametrize("field", ["ephemeralStorage", "diskSize"])
def test_disk_field_from_openapi(field):
    assert discovery.disk_field_from_openapi(kubernetes_openapi_v3(field)) == field
    v2 = {
        "definitions": {
            "io.cozystack.apps.v1alpha1.Kubernetes": {
                "properties": {
                    "spec": {
                        "properties": {
                            "nodeGroups": {"additionalProperties": {"properties": {field: {}}}}
                        }
                    }
                }
            }
        }
    }
    assert discovery.disk_field_from_openapi(v2) == field
    assert discovery.disk_field_from_openapi({}) is None


def discovery_route(plurals: list[str], openapi: dict | None):
    def route(rec: Recorded):
        path = urlparse(rec.path).path
        if path == "/apis/apps.cozystack.io/v1alpha1":
            resources = [
                {"name": p, "namespaced": True, "kind": p, "verbs": ["get"]} for p in plurals
            ]
            resources.append(
                {"name": "vminstances/status", "namespaced": True, "kind": "x", "verbs": []}
            )
            return (
                200,
                {
                    "kind": "APIResourceList",
                    "groupVersion": "apps.cozystack.io/v1alpha1",
                    "resources": resources,
                },
                {},
            )
        if path.startswith("/openapi/v3/") and openapi is not None:
            return 200, openapi, {}
        return 404, {"kind": "Status", "code": 404, "reason": "NotFound", "message": "no"}, {}

    return route


@pytest.mark.parametrize(
    ("plurals", "openapi", "kind", "name", "field"),
    [
        (
            ["vminstances", "vmdisks", "kuberneteses"],
            kubernetes_openapi_v3("diskSize"),
            "VMInstance",
            "current",
            "diskSize",
        ),
        (
            ["vminstances", "vmdisks", "kuberneteses"],
            None,
            "VMInstance",
            "current",
            "ephemeralStorage",
        ),
        (
            ["virtualmachines", "kuberneteses"],
            kubernetes_openapi_v3("ephemeralStorage"),
            "VirtualMachine",
            "legacy",
            "ephemeralStorage",
        ),
    ],
)
def test_discover(tmp_path, plurals, openapi, kind, name, field):
    with fake_api(tmp_path, discovery_route(plurals, openapi)) as api:
        gateway = ClusterGateway(ClusterConfig("disc", kubeconfig=str(api.kubeconfig)))
        flavour = gateway.flavour
    assert (flavour.vm_kind, flavour.name, flavour.node_group_disk_field) == (kind, name, field)
    assert "vminstances/status" not in flavour.served_plurals
    assert flavour.vm_plural == manifests.PLURALS[kind]


def test_discover_not_cozystack(tmp_path):
    with fake_api(tmp_path, lambda rec: (404, {"kind": "Status", "code": 404}, {})) as api:
        gateway = ClusterGateway(ClusterConfig("plain", kubeconfig=str(api.kubeconfig)))
        with pytest.raises(errors.KubeError, match="does not serve"):
            gateway.discover()


def test_list_events(tmp_path):
    events = {
        "items": [
            {
                "metadata": {"namespace": "tenant-acme"},
                "type": "Warning",
                "reason": "FailedScheduling",
                "message": f"0/3 nodes are available: 3 Insufficient {L40S}.",
                "involvedObject": {"kind": "Pod", "name": "virt-launcher-x"},
                "count": 3,
                "lastTimestamp": "2026-11-28T10:00:00Z",
            },
        ]
    }

    def route(rec: Recorded):
        path = urlparse(rec.path).path
        if path == "/api/v1/namespaces/tenant-acme/events":
            assert "fieldSelector=involvedObject.name" in rec.path
            return 200, events, {}
        return 404, {"kind": "Status", "code": 404}, {}

    with fake_api(tmp_path, route) as api:
        gateway = ClusterGateway(ClusterConfig("kv", kubeconfig=str(api.kubeconfig)))
        evs = gateway.list_events("tenant-acme", "involvedObject.name=virt-launcher-x")
    assert evs[0].reason == "FailedScheduling" and evs[0].count == 3
    assert json.dumps(evs[0].message).count("Insufficient") == 1


@pytest.mark.parametrize(
    ("flavour", "field"),
    [("current", "ephemeralStorage"), ("legacy", "ephemeralStorage"), ("head", "diskSize")],
)
def test_disk_field_from_devcluster_openapi_documents(flavour, field):
    """The OpenAPI devcluster serves per flavour (built in-process, no server)."""
    openapi = pytest.importorskip("devcluster.openapi")
    resources = pytest.importorskip("devcluster.resources")
    doc = openapi.openapi_v3_doc("apps.cozystack.io/v1alpha1", resources.resources_for(flavour))
    assert discovery.disk_field_from_openapi(doc) == field


V11_EXISTS = {
    "kind": "Status",
    "apiVersion": "v1",
    "status": "Failure",
    "code": 500,
    "message": 'failed to create HelmRelease: helmreleases.helm.toolkit.fluxcd.io "vm-instance-x" '
    "already exists",
}


def test_apply_on_v11_tolerates_the_lagging_cache(tmp_path):
    """GET 404 (cache lag), create 500 "already exists", PATCH 404: still pending, not an error."""
    vm = manifests.vm_instance("x", "tenant-acme", "u1.2xlarge", "ubuntu", [], [L40S])

    def route(rec: Recorded):
        if rec.method == "POST":
            return 500, V11_EXISTS, {}
        return 404, {"kind": "Status", "code": 404, "reason": "NotFound", "message": "nf"}, {}

    with fake_api(tmp_path, route) as api:
        gateway = ClusterGateway(ClusterConfig("lag", kubeconfig=str(api.kubeconfig)))
        out = gateway.apply(vm)
        assert out["metadata"]["name"] == "x"
        assert [r.method for r in api.requests] == ["GET", "POST", "PATCH"]


def test_paged_restarts_the_list_on_an_expired_token(tmp_path):
    nodes = [node(i) for i in range(5)]
    expired = {"n": 1}

    def route(rec: Recorded):
        q = parse_qs(urlparse(rec.path).query)
        if q.get("continue") and expired["n"]:
            expired["n"] -= 1
            return 410, {"kind": "Status", "code": 410, "reason": "Expired", "message": "old"}, {}
        return paged(nodes, rec)

    with fake_api(tmp_path, route) as api:
        gateway = ClusterGateway(ClusterConfig("exp", kubeconfig=str(api.kubeconfig)))
        names = [n.name for n in gateway.iter_nodes(page_size=2)]
        assert names == [f"gpu-{i:05d}" for i in range(5)]  # each once
        firsts = [r for r in api.requests if "continue" not in r.path]
        assert len(firsts) == 2  # the list started again, not the same token retried


def test_paged_gives_up_after_bounded_restarts(tmp_path):
    nodes = [node(i) for i in range(5)]

    def route(rec: Recorded):
        if parse_qs(urlparse(rec.path).query).get("continue"):
            return 410, {"kind": "Status", "code": 410, "reason": "Expired", "message": "old"}, {}
        return paged(nodes, rec)

    with fake_api(tmp_path, route) as api:
        gateway = ClusterGateway(ClusterConfig("exp2", kubeconfig=str(api.kubeconfig)))
        with pytest.raises(errors.ExpiredError):
            list(gateway.iter_nodes(page_size=2))
        assert len([r for r in api.requests if "continue" in r.path]) == 4  # 1 + 3 restarts


def test_list_events_reads_series_and_event_time(tmp_path):
    events = {
        "items": [
            {
                "metadata": {"namespace": "tenant-acme"},
                "type": "Warning",
                "reason": "FailedScheduling",
                "message": "0/9 nodes are available",
                "involvedObject": {"kind": "Pod", "name": "virt-launcher-x"},
                "firstTimestamp": None,
                "lastTimestamp": None,
                "eventTime": "2026-11-28T10:00:00.000001Z",
                "series": {"count": 7, "lastObservedTime": "2026-11-28T10:05:00.000002Z"},
            },
            {
                "metadata": {"namespace": "tenant-acme"},
                "type": "Normal",
                "reason": "Scheduled",
                "message": "assigned",
                "involvedObject": {"kind": "Pod", "name": "virt-launcher-y"},
                "firstTimestamp": None,
                "lastTimestamp": None,
                "eventTime": "2026-11-28T10:01:00.000000Z",
            },
        ]
    }
    with fake_api(tmp_path, lambda rec: (200, events, {})) as api:
        gateway = ClusterGateway(ClusterConfig("ev", kubeconfig=str(api.kubeconfig)))
        evs = gateway.list_events("tenant-acme")
    assert [(e.reason, e.count) for e in evs] == [("Scheduled", 1), ("FailedScheduling", 7)]
    assert evs[1].last_timestamp == "2026-11-28T10:05:00.000002Z"
