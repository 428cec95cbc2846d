"""The poller's observation grows with the operations in flight, not with the tenants (#17
item 3): one list per kind for the whole cluster, against devcluster over HTTP."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from devcluster.testing import run_devcluster
from gpus.kube import apps as manifests
from gpus.kube.client import ClusterConfig, Session
from gpus.kube.gateway import ClusterGateway
from gpus.kube.operations import (
    PORTAL_SELECTOR,
    SELECTOR_BUDGET,
    Target,
    has_portal_label,
    in_selectors,
    observe,
)

pytestmark = pytest.mark.integration

TENANTS = [f"tenant-t{i:02d}" for i in range(8)]


class CountingBucket:
    def __init__(self) -> None:
        self.count = 0

    def acquire(self) -> float:
        self.count += 1
        return 0.0


@pytest.fixture(scope="module")
def many_tenants(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    work = tmp_path_factory.mktemp("observe")
    fleet = work / "fleet.yaml"
    fleet.write_text(
        yaml.safe_dump(
            {
                "tenants": ["tenant-root", *TENANTS],
                "nodes": [{"prefix": "gpu-h100", "count": 2, "model": "nvidia.com/H100_94GB",
                           "gpus": 8}],
            }
        )
    )  # fmt: skip
    with run_devcluster(work / "dc", fleet=str(fleet), speed=1000.0) as dc:
        yield dc


def gateway(
    dc: Any, counter: CountingBucket | None = None, context: str = "admin"
) -> ClusterGateway:
    config = ClusterConfig(
        name=f"observe-{context}-{id(dc)}",
        kubeconfig=str(Path(dc.kubeconfig)),
        context=context,
        qps=1000.0,
    )
    if counter is None:
        return ClusterGateway(config)
    return ClusterGateway(config, session=Session(config, bucket=counter))  # type: ignore[arg-type]


def make_vm(admin: ClusterGateway, ns: str, name: str, labelled: bool = True) -> list[Target]:
    labels = manifests.PORTAL_LABELS if labelled else None
    disk = manifests.vm_disk(f"{name}-system", ns, "ubuntu", "10Gi", labels=labels)
    vm = manifests.vm_instance(
        name, ns, "u1.2xlarge", "ubuntu", [f"{name}-system"], [], labels=labels
    )
    admin.apply(disk)
    admin.apply(vm)
    return [
        Target(ns, manifests.VM_DISK, f"{name}-system", labelled),
        Target(ns, manifests.VM_INSTANCE, name, labelled),
    ]


def seen_all(views: dict, targets: list[Target]) -> bool:
    for t in targets:
        view = views.get(t.namespace)
        if view is None or (manifests.PLURALS[t.kind], t.name) not in view.apps:
            return False
        if t.kind == manifests.VM_INSTANCE and (
            manifests.release_name(t.kind, t.name) not in view.kubevirt
        ):
            return False
    return True


def observed(dc: Any, targets: list[Target], events_in: tuple[str, ...] = ()) -> tuple[dict, int]:
    """Observe until every target shows (v1.1 lists lag writes); the requests of the last one."""
    deadline = time.monotonic() + 60
    while True:
        counter = CountingBucket()
        views = observe(gateway(dc, counter), targets, events_in)
        if seen_all(views, targets) or time.monotonic() > deadline:
            return views, counter.count
        time.sleep(0.2)


def test_requests_do_not_grow_with_tenants(many_tenants):
    admin = gateway(many_tenants)
    two: list[Target] = []
    for i in range(6):
        two += make_vm(admin, TENANTS[i % 2], f"obs-two-{i}")
    eight: list[Target] = []
    for i in range(16):
        eight += make_vm(admin, TENANTS[i % 8], f"obs-eight-{i}")

    views_two, requests_two = observed(many_tenants, two)
    views_eight, requests_eight = observed(many_tenants, eight)
    assert seen_all(views_two, two) and seen_all(views_eight, eight)
    # vminstances and vmdisks by the portal's label, KubeVirt VMs by release name: 3 requests
    # over 2 tenants and over 8 (one list per kind and namespace would be 6 and 24).
    assert requests_two == requests_eight == 3
    # Each view holds its own namespace's objects only.
    for t in eight:
        view = views_eight[t.namespace]
        obj = view.apps[(manifests.PLURALS[t.kind], t.name)]
        assert obj["metadata"]["namespace"] == t.namespace and has_portal_label(obj)


def test_an_app_made_elsewhere_is_looked_for_in_its_namespace(many_tenants):
    """A day-2 change or a delete of a VM the portal did not make: the label list cannot see
    it, so it must not be taken for absent (a delete would succeed at once)."""
    admin = gateway(many_tenants)
    ours = make_vm(admin, TENANTS[2], "obs-ours") + make_vm(admin, TENANTS[3], "obs-ours-b")
    foreign = make_vm(admin, TENANTS[4], "obs-kubectl", labelled=False)
    views, requests = observed(many_tenants, ours + foreign)
    assert seen_all(views, ours + foreign)
    assert requests == 3 + 2  # its namespace's VMInstances and VMDisks, once each
    # The portal's label alone would have missed it.
    wrong = [Target(t.namespace, t.kind, t.name, labelled=True) for t in foreign] + ours
    views = observe(admin, wrong)
    assert ("vminstances", "obs-kubectl") not in views[TENANTS[4]].apps
    foreign_vm = admin.get("vminstances", TENANTS[4], "obs-kubectl")
    assert foreign_vm is not None and not has_portal_label(foreign_vm)


def test_events_are_one_cluster_wide_list(many_tenants):
    admin = gateway(many_tenants)
    targets = make_vm(admin, TENANTS[5], "obs-ev") + make_vm(admin, TENANTS[6], "obs-ev-b")
    _, without = observed(many_tenants, targets)
    _, with_events = observed(many_tenants, targets, events_in=(TENANTS[5], TENANTS[6]))
    assert with_events == without + 1


def test_the_portal_service_account_may_poll_cluster_wide(many_tenants):
    """deploy/'s least-privilege ClusterRole (modelled by devcluster's portal identity) allows
    every list the poller sends."""
    admin = gateway(many_tenants)
    targets = make_vm(admin, TENANTS[0], "obs-sa") + make_vm(admin, TENANTS[7], "obs-sa-b")
    targets += make_vm(admin, TENANTS[7], "obs-sa-kubectl", labelled=False)
    observed(many_tenants, targets)  # visible to the admin first
    views = observe(gateway(many_tenants, context="portal"), targets, (TENANTS[0],))
    assert seen_all(views, targets)


def test_workload_monitors_by_app_name(devcluster):
    """The demo fleet's tenant Kubernetes cluster ``ml``: its worker WorkloadMonitor is found by
    the app-name label Cozystack's lineage webhook sets."""
    counter = CountingBucket()
    views = observe(
        gateway(devcluster, counter), [Target("tenant-acme", manifests.KUBERNETES, "ml", False)]
    )
    view = views["tenant-acme"]
    assert ("kuberneteses", "ml") in view.apps
    assert any(name.startswith("kubernetes-ml-") for name in view.monitors)
    # the namespace's Kubernetes apps, the monitors by app name, the worker VMs by cluster name
    assert counter.count == 3


def test_selectors_stay_within_budget_and_cover_every_name():
    names = [f"vm-instance-op-{i:04d}-{'x' * 30}" for i in range(1000)]
    selectors = in_selectors("app.kubernetes.io/instance", names)
    assert 5 <= len(selectors) <= 12
    covered = set()
    for selector in selectors:
        assert selector.startswith("app.kubernetes.io/instance in (") and selector.endswith(")")
        values = selector[len("app.kubernetes.io/instance in (") : -1].split(",")
        assert len(",".join(values)) <= SELECTOR_BUDGET
        covered.update(values)
    assert covered == set(names)
    assert in_selectors("k", []) == []
    assert PORTAL_SELECTOR == "app.kubernetes.io/managed-by=hikube-portal"
