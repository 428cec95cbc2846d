"""The kubernetes Python client (strict pydantic models) against devcluster."""

from __future__ import annotations

import json
import time

import pytest
from kubernetes import client, watch

from devcluster.testing import DevCluster

from .conftest import kubevirt_status, vm_instance, wait_for

pytestmark = pytest.mark.timeout(120)
G, V = "apps.cozystack.io", "v1alpha1"


def test_nodes_deserialize_into_strict_models(core: client.CoreV1Api) -> None:
    nodes = core.list_node().items
    assert len(nodes) == 9
    n = next(x for x in nodes if x.metadata.name == "gpu-h100-1")
    assert n.status.allocatable["nvidia.com/H100_94GB"] == "8"
    assert n.status.node_info.kubelet_version.startswith("v1.")
    assert n.metadata.labels["nvidia.com/gpu.workload.config"] == "vm-passthrough"
    cordoned = next(x for x in nodes if x.metadata.name == "gpu-l40s-4")
    assert cordoned.spec.unschedulable is True


def test_paging_returns_every_node_exactly_once(core: client.CoreV1Api) -> None:
    seen: list[str] = []
    token = None
    pages = 0
    while True:
        resp = core.list_node(limit=2, _continue=token)
        seen += [n.metadata.name for n in resp.items]
        pages += 1
        token = (
            resp.metadata.var_continue
            if hasattr(resp.metadata, "var_continue")
            else resp.metadata._continue
        )
        if not token:
            break
    assert pages == 5
    assert sorted(seen) == sorted(set(seen)) and len(seen) == 9


def test_pods_and_events_deserialize(core: client.CoreV1Api) -> None:
    pods = core.list_namespaced_pod("tenant-acme").items
    launcher = next(
        p for p in pods if p.metadata.name.startswith("virt-launcher-vm-instance-gpu-ws-")
    )
    assert launcher.status.phase == "Running"
    assert launcher.spec.containers[0].resources.requests["nvidia.com/AD102GL_L40S"] == "1"
    # The demo's workloads started an hour ago: their events have expired (--event-ttl 1h).
    events = core.list_namespaced_event("tenant-acme").items
    assert not any(e.reason == "Scheduled" and "gpu-ws" in e.message for e in events)


def test_label_and_field_selectors(core: client.CoreV1Api) -> None:
    # No gpu-feature-discovery labels on passthrough hosts: select on other labels.
    h100 = core.list_node(
        label_selector="kubernetes.io/hostname in (gpu-h100-1,gpu-h100-2,gpu-h100-9)"
    ).items
    assert {n.metadata.name for n in h100} == {"gpu-h100-1", "gpu-h100-2"}
    not_l40s = core.list_node(
        label_selector="kubernetes.io/hostname notin "
        "(gpu-l40s-1,gpu-l40s-2,gpu-l40s-3,gpu-l40s-4),kubernetes.io/os"
    ).items
    assert len(not_l40s) == 5
    one = core.list_node(field_selector="metadata.name=gpu-a100-2").items
    assert [n.metadata.name for n in one] == ["gpu-a100-2"]
    on_node = core.list_pod_for_all_namespaces(field_selector="spec.nodeName=gpu-a100-1").items
    assert on_node and all(p.spec.node_name == "gpu-a100-1" for p in on_node)


def test_crud_conflict_and_status_errors(custom: client.CustomObjectsApi) -> None:
    body = vm_instance("crud-vm", ["nvidia.com/AD102GL_L40S"], runStrategy="Halted")
    created = custom.create_namespaced_custom_object(G, V, "tenant-acme", "vminstances", body)
    assert created["spec"]["externalPorts"] == [22]  # server-side default
    with pytest.raises(client.ApiException) as exc:
        custom.create_namespaced_custom_object(G, V, "tenant-acme", "vminstances", body)
    # cozystack-api v1.1 wraps the HelmRelease error: a 500 with no reason.
    dup = json.loads(exc.value.body)
    assert exc.value.status == 500 and "reason" not in dup
    assert dup["message"] == (
        'failed to create HelmRelease: helmreleases.helm.toolkit.fluxcd.io "vm-instance-crud-vm" '
        "already exists"
    )
    assert "generation" not in created["metadata"]
    wait_for(
        lambda: [
            c
            for c in custom.get_namespaced_custom_object(
                G, V, "tenant-acme", "vminstances", "crud-vm"
            )
            .get("status", {})
            .get("conditions", [])
            if c["type"] == "Ready" and c["status"] == "True"
        ],
        what="installed",
    )
    stale = custom.get_namespaced_custom_object(G, V, "tenant-acme", "vminstances", "crud-vm")
    created = stale
    fresh = custom.patch_namespaced_custom_object(
        G, V, "tenant-acme", "vminstances", "crud-vm", {"metadata": {"labels": {"team": "a"}}}
    )
    assert int(fresh["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])
    stale["spec"] = dict(stale["spec"], instanceType="u1.4xlarge")
    with pytest.raises(client.ApiException) as exc:
        custom.replace_namespaced_custom_object(
            G, V, "tenant-acme", "vminstances", "crud-vm", stale
        )
    status = json.loads(exc.value.body)
    assert exc.value.status == 500 and status["kind"] == "Status"
    assert status["message"].startswith("failed to update HelmRelease: Operation cannot be")
    assert "the object has been modified" in status["message"]
    fresh = wait_for(
        lambda: _fresh_get(custom, "crud-vm", fresh["metadata"]["resourceVersion"]),
        what="cache caught up",
    )
    fresh["spec"]["instanceType"] = "u1.4xlarge"
    replaced = custom.replace_namespaced_custom_object(
        G, V, "tenant-acme", "vminstances", "crud-vm", fresh
    )
    assert "generation" not in replaced["metadata"]
    wait_for(  # reads lag writes (1 s / speed 50): patch what the replace wrote
        lambda: _fresh_get(custom, "crud-vm", replaced["metadata"]["resourceVersion"]),
        what="cache caught up with the replace",
    )
    jp = custom.patch_namespaced_custom_object(
        G,
        V,
        "tenant-acme",
        "vminstances",
        "crud-vm",
        [{"op": "replace", "path": "/spec/externalPorts", "value": [22, 80]}],
        _content_type="application/json-patch+json",
    )
    assert jp["spec"]["externalPorts"] == [22, 80]
    custom.delete_namespaced_custom_object(G, V, "tenant-acme", "vminstances", "crud-vm")

    def gone() -> client.ApiException | None:
        try:
            custom.get_namespaced_custom_object(G, V, "tenant-acme", "vminstances", "crud-vm")
        except client.ApiException as e:
            return e
        return None

    exc_value = wait_for(gone, what="helm uninstalled")
    nf = json.loads(exc_value.body)
    assert exc_value.status == 404
    assert nf["reason"] == "NotFound"
    assert nf["details"] == {"name": "crud-vm", "group": G, "kind": "vminstances"}


def test_only_the_name_and_reserved_keys_are_checked_at_once(
    custom: client.CustomObjectsApi,
) -> None:
    """rest.go Create: DNS-1035 name, prefix + name <= 53 and `_` keys; the spec goes to Helm."""
    with pytest.raises(client.ApiException) as exc:
        custom.create_namespaced_custom_object(
            G, V, "tenant-acme", "vminstances", vm_instance("Bad_Name", [])
        )
    st = json.loads(exc.value.body)
    assert exc.value.status == 422 and st["reason"] == "Invalid"
    assert st["details"]["causes"][0]["field"] == "metadata.name"
    with pytest.raises(client.ApiException) as exc:
        custom.create_namespaced_custom_object(
            G, V, "tenant-acme", "vminstances", vm_instance("reserved", [], _cozy="x")
        )
    assert exc.value.status == 400
    assert json.loads(exc.value.body)["message"] == (
        "values key \"_cozy\" is reserved (keys starting with '_' are not allowed)"
    )
    long_name = vm_instance("x" * 42, [])
    with pytest.raises(client.ApiException) as exc:
        custom.create_namespaced_custom_object(G, V, "tenant-acme", "vminstances", long_name)
    assert json.loads(exc.value.body)["details"]["causes"][0]["reason"] == "FieldValueTooLong"
    k8s = {
        "apiVersion": f"{G}/{V}",
        "kind": "Kubernetes",
        "metadata": {"name": "no-res"},
        "spec": {"nodeGroups": {"gpu": {"minReplicas": 1, "maxReplicas": 2}}},
    }
    made = custom.create_namespaced_custom_object(G, V, "tenant-acme", "kuberneteses", k8s)
    assert made["metadata"]["name"] == "no-res"  # accepted: Helm will refuse it
    custom.delete_namespaced_custom_object(G, V, "tenant-acme", "kuberneteses", "no-res")


def test_more_h100_than_free_is_unschedulable_until_capacity_frees(
    dc: DevCluster, custom: client.CustomObjectsApi, core: client.CoreV1Api
) -> None:
    h100 = "nvidia.com/H100_94GB"
    for name in ("h-a", "h-b"):
        custom.create_namespaced_custom_object(
            G, V, "tenant-globex", "vminstances", vm_instance(name, [h100] * 8, "tenant-globex")
        )
    for name in ("h-a", "h-b"):
        wait_for(
            lambda n=name: (
                kubevirt_status(custom, "tenant-globex", f"vm-instance-{n}") == "Running"
            ),
            what=f"{name} running",
        )
    custom.create_namespaced_custom_object(
        G, V, "tenant-globex", "vminstances", vm_instance("h-c", [h100] * 4, "tenant-globex")
    )
    wait_for(
        lambda: kubevirt_status(custom, "tenant-globex", "vm-instance-h-c") == "ErrorUnschedulable",
        what="h-c unschedulable",
    )
    events = core.list_namespaced_event(
        "tenant-globex", field_selector="reason=FailedScheduling"
    ).items
    msgs = [e.message for e in events if "vm-instance-h-c" in e.involved_object.name]
    assert msgs and msgs[0].startswith("0/9 nodes are available:")
    assert (
        "7 Insufficient nvidia.com/H100_94GB" in msgs[0]
        and "1 node(s) were unschedulable" in msgs[0]
    )
    pending = [
        p
        for p in core.list_namespaced_pod("tenant-globex").items
        if p.metadata.name.startswith("virt-launcher-vm-instance-h-c-")
    ]
    assert pending and pending[0].status.phase == "Pending" and pending[0].spec.node_name is None
    custom.delete_namespaced_custom_object(G, V, "tenant-globex", "vminstances", "h-a")
    wait_for(
        lambda: kubevirt_status(custom, "tenant-globex", "vm-instance-h-c") == "Running",
        what="h-c runs",
    )
    for name in ("h-b", "h-c"):
        custom.delete_namespaced_custom_object(G, V, "tenant-globex", "vminstances", name)


def test_unknown_gpu_never_schedules_and_halted_frees(
    custom: client.CustomObjectsApi, core: client.CoreV1Api
) -> None:
    custom.create_namespaced_custom_object(
        G,
        V,
        "tenant-root",
        "vminstances",
        vm_instance("ghost", ["nvidia.com/GB200_NOPE"], "tenant-root"),
    )

    # Not in KubeVirt's permittedHostDevices (the fleet's models): no launcher pod at all.
    def sync_reason() -> str:
        try:
            vm = custom.get_namespaced_custom_object(
                "kubevirt.io", "v1", "tenant-root", "virtualmachines", "vm-instance-ghost"
            )
        except client.ApiException:
            return ""  # not created yet
        conds = {c["type"]: c for c in vm["status"]["conditions"]}
        return conds.get("Synchronized", {}).get("reason", "")

    wait_for(lambda: sync_reason() == "FailedCreate")
    assert kubevirt_status(custom, "tenant-root", "vm-instance-ghost") == "Starting"
    custom.patch_namespaced_custom_object(
        G,
        V,
        "tenant-root",
        "vminstances",
        "ghost",
        {"spec": {"gpus": [{"name": "nvidia.com/GA100_A100_PCIE_80GB"}]}},
    )
    wait_for(lambda: kubevirt_status(custom, "tenant-root", "vm-instance-ghost") == "Running")
    custom.patch_namespaced_custom_object(
        G, V, "tenant-root", "vminstances", "ghost", {"spec": {"runStrategy": "Halted"}}
    )
    wait_for(lambda: kubevirt_status(custom, "tenant-root", "vm-instance-ghost") == "Stopped")
    assert not [
        p for p in core.list_namespaced_pod("tenant-root").items if "ghost" in p.metadata.name
    ]
    custom.delete_namespaced_custom_object(G, V, "tenant-root", "vminstances", "ghost")


def test_watch_streams_added_modified_deleted(
    dc: DevCluster, custom: client.CustomObjectsApi
) -> None:
    start = custom.list_namespaced_custom_object(G, V, "tenant-root", "vmdisks")["metadata"][
        "resourceVersion"
    ]
    body = {"apiVersion": f"{G}/{V}", "kind": "VMDisk", "metadata": {"name": "watched"}, "spec": {}}
    custom.create_namespaced_custom_object(G, V, "tenant-root", "vmdisks", body)
    # v1.1's app watch re-sends only objects that exist when it starts (rest.go Watch), so the
    # delete waits for the ADDED: deleted before the watch began, the disk would never be seen
    # (as happened on a loaded machine, where the watch request came after the deletion).
    seen = []
    w = watch.Watch()
    for ev in w.stream(
        custom.list_namespaced_custom_object,
        G,
        V,
        "tenant-root",
        "vmdisks",
        resource_version=start,
        timeout_seconds=30,
    ):
        seen.append(ev["type"])
        if ev["type"] == "ADDED" and ev["object"]["metadata"]["name"] == "watched":
            custom.delete_namespaced_custom_object(G, V, "tenant-root", "vmdisks", "watched")
        if ev["type"] == "DELETED":
            w.stop()
    assert seen[0] == "ADDED" and seen[-1] == "DELETED", seen


def test_watch_from_compacted_resource_version_gets_410(tmp_path) -> None:
    from devcluster.testing import run_devcluster

    with run_devcluster(tmp_path, speed=100.0, extra_args=["--watch-history", "5"]) as small:
        custom = client.CustomObjectsApi(small.api_client())
        for i in range(8):
            custom.create_namespaced_custom_object(
                G,
                V,
                "tenant-root",
                "vmdisks",
                {
                    "apiVersion": f"{G}/{V}",
                    "kind": "VMDisk",
                    "metadata": {"name": f"d{i}"},
                    "spec": {},
                },
            )
        # Core resources expire old resourceVersions; v1.1 app watches never do (see
        # test_realism.py).
        core = client.CoreV1Api(small.api_client())
        with pytest.raises(client.ApiException) as exc:
            for _ in watch.Watch().stream(core.list_node, resource_version="2", timeout_seconds=3):
                pass
        assert exc.value.status == 410
        _status, _, raw = small.request(
            "GET", "/api/v1/nodes?watch=1&resourceVersion=2&timeoutSeconds=1"
        )
        first = json.loads(raw.splitlines()[0])
        assert (
            first["type"] == "ERROR"
            and first["object"]["reason"] == "Expired"
            and first["object"]["code"] == 410
        )


def test_authentication_and_impersonation(dc: DevCluster) -> None:
    assert dc.request("GET", "/api/v1/nodes", token="")[0] == 401
    st = json.loads(dc.request("GET", "/api/v1/nodes", token="nope")[2])
    assert st["code"] == 401 and st["reason"] == "Unauthorized"
    path = "/apis/apps.cozystack.io/v1alpha1/namespaces/tenant-globex/vminstances"
    as_globex = {
        "Impersonate-User": "alice@globex.example",
        "Impersonate-Group": "tenant-globex-admin",
    }
    assert dc.request("GET", path, headers=as_globex)[0] == 200
    acme_path = path.replace("tenant-globex", "tenant-acme")
    code, _, body = dc.request("GET", acme_path, headers=as_globex)
    assert code == 403 and 'User "alice@globex.example"' in json.loads(body)["message"]
    assert dc.request("GET", "/api/v1/nodes", headers=as_globex)[0] == 403
    # A tenant may not impersonate.
    code, _, body = dc.request(
        "GET",
        acme_path,
        token=dc.tenant_tokens["tenant-acme"],
        headers={"Impersonate-User": "x", "Impersonate-Group": "tenant-globex-admin"},
    )
    assert code == 403 and "cannot impersonate" in json.loads(body)["message"]
    tenant_core = client.CoreV1Api(dc.api_client(tenant="tenant-acme"))
    with pytest.raises(client.ApiException) as exc:
        tenant_core.list_node()
    assert exc.value.status == 403
    assert tenant_core.list_namespaced_pod("tenant-acme").items


def test_injected_429_carries_retry_after(dc: DevCluster, core: client.CoreV1Api) -> None:
    dc.set_faults(
        {
            "rules": [
                {
                    "verb": "list",
                    "resource": "nodes",
                    "error_429": 1.0,
                    "retry_after": 1,
                    "times": 1,
                }
            ]
        }
    )
    try:
        code, headers, body = dc.request("GET", "/api/v1/nodes")
        st = json.loads(body)
        assert code == 429 and headers["Retry-After"] == "1"
        assert st["reason"] == "TooManyRequests" and st["details"]["retryAfterSeconds"] == 1
        assert dc.request("GET", "/api/v1/nodes")[0] == 200  # `times` exhausted
        # The client's urllib3 pool honours Retry-After on 429 by itself: two faults, then success.
        dc.set_faults(
            {
                "rules": [
                    {
                        "verb": "list",
                        "resource": "nodes",
                        "error_429": 1.0,
                        "retry_after": 1,
                        "times": 2,
                    }
                ]
            }
        )
        t0 = time.monotonic()
        assert len(core.list_node().items) == 9
        assert time.monotonic() - t0 >= 1.9
        assert dc.get_faults()["injected"] == 3  # cumulative: 1 + 2
        dc.set_faults({"rules": [{"verb": "get", "resource": "namespaces", "error_503": 1.0}]})
        assert dc.request("GET", "/api/v1/namespaces/tenant-acme")[0] == 503
        dc.set_faults(
            {"rules": [{"verb": "get", "resource": "namespaces", "drop": 1.0, "times": 1}]}
        )
        with pytest.raises(Exception):  # noqa: B017 - a dropped connection surfaces as a transport error
            dc.request("GET", "/api/v1/namespaces/tenant-acme")
    finally:
        dc.clear_faults()
    assert dc.request("GET", "/api/v1/namespaces/tenant-acme")[0] == 200
    assert (
        dc.request("PUT", "/devcluster/faults", token=dc.tenant_tokens["tenant-acme"], body={})[0]
        == 403
    )


def test_concurrent_creates_never_overcommit_gpus(dc: DevCluster, core: client.CoreV1Api) -> None:
    """Twelve 3 x A100 VMs at once: exactly as many run as free capacity allows, per host."""
    from concurrent.futures import ThreadPoolExecutor

    a100 = "nvidia.com/GA100_A100_PCIE_80GB"

    def used_per_node() -> dict[str, int]:
        used: dict[str, int] = {}
        for p in core.list_pod_for_all_namespaces().items:
            if p.spec.node_name and p.status.phase in ("Pending", "Running"):
                req = p.spec.containers[0].resources.requests or {}
                used[p.spec.node_name] = used.get(p.spec.node_name, 0) + int(req.get(a100, "0"))
        return used

    before = used_per_node()
    hosts = [
        n
        for n in core.list_node(
            label_selector="nvidia.com/gpu.workload.config=vm-passthrough"
        ).items
        if a100 in (n.status.allocatable or {})
        and not n.spec.unschedulable
        and n.status.conditions[-1].status == "True"
    ]
    expected = sum(
        (int(n.status.allocatable[a100]) - before.get(n.metadata.name, 0)) // 3 for n in hosts
    )
    assert expected >= 1

    def make(i: int) -> None:
        api = client.CustomObjectsApi(dc.api_client())
        api.create_namespaced_custom_object(
            G, V, "tenant-root", "vminstances", vm_instance(f"race-{i}", [a100] * 3, "tenant-root")
        )

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(make, range(12)))
    custom = client.CustomObjectsApi(dc.api_client())

    def settled() -> list[str]:
        states = [
            kubevirt_status(custom, "tenant-root", f"vm-instance-race-{i}") for i in range(12)
        ]
        return states if all(s in ("Running", "ErrorUnschedulable") for s in states) else []

    states = wait_for(settled, what="all race VMs settled")
    assert states.count("Running") == expected
    used = used_per_node()
    assert all(used.get(n.metadata.name, 0) <= int(n.status.allocatable[a100]) for n in hosts)
    for i in range(12):
        custom.delete_namespaced_custom_object(G, V, "tenant-root", "vminstances", f"race-{i}")


def _fresh_get(custom: client.CustomObjectsApi, name: str, after: str) -> dict | None:
    obj = custom.get_namespaced_custom_object(G, V, "tenant-acme", "vminstances", name)
    return obj if int(obj["metadata"]["resourceVersion"]) >= int(after) else None
