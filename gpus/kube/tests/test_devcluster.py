"""Integration: the real kubernetes client against devcluster over HTTP.

Skipped until ``devcluster.testing.run_devcluster`` exists (see conftest).
"""

from __future__ import annotations

import time

import pytest

from gpus.kube import apps as manifests
from gpus.kube.client import ClusterConfig
from gpus.kube.errors import ForbiddenError, TransientError
from gpus.kube.gateway import ClusterGateway, conditions_summary

pytestmark = pytest.mark.integration

NS = "tenant-acme"


def gateway_for(dc, context: str = "admin", **kwargs) -> ClusterGateway:
    config = ClusterConfig(
        name=f"devcluster-{context}-{id(dc)}",
        kubeconfig=str(dc.kubeconfig),
        context=context,
        qps=kwargs.pop("qps", 1000.0),
        burst=kwargs.pop("burst", 1000),
        **kwargs,
    )
    return ClusterGateway(config)


@pytest.fixture
def admin(devcluster):
    gateway = gateway_for(devcluster)
    yield gateway
    devcluster.clear_faults()
    gateway.close()


def a_gpu(gateway: ClusterGateway) -> str:
    for node in gateway.iter_nodes():
        for resource in node.gpu_resources:
            return resource
    pytest.fail("devcluster fleet has no GPU node")


def test_discovery_current(admin):
    flavour = admin.discover()
    assert flavour.name == "current"
    assert flavour.vm_kind == "VMInstance"
    assert flavour.node_group_disk_field == "ephemeralStorage"
    assert {"vminstances", "vmdisks", "kuberneteses"} <= flavour.served_plurals


def test_discovery_legacy(legacy_devcluster):
    gateway = gateway_for(legacy_devcluster)
    flavour = gateway.discover()
    assert flavour.name == "legacy"
    assert flavour.vm_kind == "VirtualMachine"
    assert "vminstances" not in flavour.served_plurals


def test_iter_nodes_every_node_once(admin):
    one_page = list(admin.iter_nodes(page_size=10_000))
    small_pages = list(admin.iter_nodes(page_size=2))
    names = [n.name for n in small_pages]
    assert len(names) == len(set(names)) == len(one_page) > 2
    assert sorted(names) == sorted(n.name for n in one_page)
    assert sum(sum(n.gpu_resources.values()) for n in small_pages) > 0


def test_apply_idempotent_delete_twice(admin):
    gpu = a_gpu(admin)
    disk = manifests.vm_disk("kube-it-disk", NS, "ubuntu", "10Gi")
    vm = manifests.vm_instance("kube-it-vm", NS, "u1.2xlarge", "ubuntu", ["kube-it-disk"], [gpu])
    try:
        admin.apply(disk)
        first = admin.apply(vm)
        # Cozystack reads through a cache: wait until it shows the new app, as the portal does.
        _wait(lambda: admin.get("vminstances", NS, "kube-it-vm"))
        second = admin.apply(vm)
        assert second["metadata"]["uid"] == first["metadata"]["uid"]
        assert second["spec"] == first["spec"]
        assert second["spec"]["gpus"] == [{"name": gpu}]
        got = admin.get("vminstances", NS, "kube-it-vm")
        assert got is not None and got["metadata"]["uid"] == first["metadata"]["uid"]
        apps = {
            (a["metadata"]["namespace"], a["metadata"]["name"])
            for a in admin.iter_apps("vminstances", page_size=1)
        }
        assert (NS, "kube-it-vm") in apps
        # This call deletes it: Helm's uninstall starts (Terminating) and the app goes once it
        # is done; then deleting again finds it gone (404 counts as done).
        assert admin.delete("vminstances", NS, "kube-it-vm") is True
        _wait(lambda: admin.get("vminstances", NS, "kube-it-vm") is None)
        assert admin.delete("vminstances", NS, "kube-it-vm") is False
        assert admin.get("vminstances", NS, "kube-it-vm") is None
    finally:
        # Cleanup only, after a failed assertion above (deleting is idempotent).
        admin.delete("vminstances", NS, "kube-it-vm")
        admin.delete("vmdisks", NS, "kube-it-disk")


def test_invalid_enum_names_the_field(admin):
    vm = manifests.vm_instance(
        "kube-it-bad", NS, "u1.medium", "ubuntu", [], [], run_strategy="Sometimes"
    )
    # Cozystack v1.1 accepts it (only the name is checked); Helm's schema check fails later.
    admin.apply(vm)
    try:

        def failed():
            app = admin.get("vminstances", NS, "kube-it-bad")
            ready = conditions_summary(app).get("Ready") if app else None
            return app if ready and ready.reason == "InstallFailed" else None

        app = _wait(failed)
        ready = conditions_summary(app)["Ready"]
        assert ready.status == "False"
        assert "- at '/runStrategy': value must be one of" in ready.message
    finally:
        admin.delete("vminstances", NS, "kube-it-bad")


def _wait(pred, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {pred}")


def test_tenant_cannot_list_nodes(devcluster):
    tenant = gateway_for(devcluster, context="tenant-acme")
    with pytest.raises(ForbiddenError):
        list(tenant.iter_nodes())
    # but may list its own apps
    list(tenant.iter_apps("vminstances", namespace=NS))


def test_impersonation_with_several_groups(admin):
    """Only the SECOND group grants rights in tenant-acme: proves both header lines arrive."""
    disk = manifests.vm_disk("kube-it-imp", NS, "ubuntu", "5Gi")
    try:
        admin.apply(disk, impersonate_user="alice", impersonate_groups=["some-team", f"{NS}-admin"])
    finally:
        admin.delete("vmdisks", NS, "kube-it-imp")
    with pytest.raises(ForbiddenError):
        admin.apply(
            manifests.vm_disk("kube-it-imp", "tenant-globex", "ubuntu", "5Gi"),
            impersonate_user="alice",
            impersonate_groups=["some-team", f"{NS}-admin"],
        )


def test_injected_429_has_retry_after(devcluster, admin):
    devcluster.set_faults(
        {
            "rules": [
                {
                    "verb": "list",
                    "resource": "nodes",
                    "error_429": 1.0,
                    "retry_after": 5,
                    "times": 1,
                }
            ]
        }
    )
    admin.page_attempts = 1  # no retry: see the error itself
    with pytest.raises(TransientError) as info:
        list(admin.iter_nodes())
    assert info.value.status == 429
    assert info.value.retry_after == 5
    # the fault was one-shot: the next list succeeds
    assert list(admin.iter_nodes())


def test_a_429_in_the_middle_of_a_paged_list_retries_that_page(devcluster, admin):
    injected_before = devcluster.get_faults()["injected"]
    devcluster.set_faults(
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
    names = [node.name for node in admin.iter_nodes(page_size=2)]
    assert len(names) == len(set(names)) == 9  # the demo fleet, each node once
    assert devcluster.get_faults()["injected"] - injected_before == 2
