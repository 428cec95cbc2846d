"""Fixtures: one shared demo devcluster per session (fast, speed 50), plus helpers to wait on it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client

from devcluster.testing import DevCluster, run_devcluster

APPS = ("apps.cozystack.io", "v1alpha1")


@pytest.fixture(scope="session")
def dc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevCluster]:
    with run_devcluster(
        tmp_path_factory.mktemp("devcluster"), fleet="demo", speed=50.0, seed=1
    ) as cluster:
        yield cluster


@pytest.fixture
def core(dc: DevCluster) -> client.CoreV1Api:
    return client.CoreV1Api(dc.api_client())


@pytest.fixture
def custom(dc: DevCluster) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(dc.api_client())


def wait_for(
    pred: Callable[[], Any], timeout: float = 15.0, interval: float = 0.05, what: str = ""
) -> Any:
    """Poll until pred() is truthy; fail with the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what or pred}: last={last!r}")


def vm_instance(name: str, gpus: list[str], ns: str = "tenant-acme", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps.cozystack.io/v1alpha1",
        "kind": "VMInstance",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "runStrategy": "Always",
            "instanceType": "u1.2xlarge",
            "gpus": [{"name": g} for g in gpus],
            **spec,
        },
    }


def kubevirt_status(custom: client.CustomObjectsApi, ns: str, name: str) -> str | None:
    try:
        vm = custom.get_namespaced_custom_object("kubevirt.io", "v1", ns, "virtualmachines", name)
    except client.ApiException as e:
        if e.status == 404:
            return None
        raise
    return vm.get("status", {}).get("printableStatus")
