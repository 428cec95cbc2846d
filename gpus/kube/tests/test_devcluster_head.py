"""The `head` flavour (cozystack v1.6.2) answers a duplicate create with the same 500 as v1.1
(rest.go still wraps the HelmRelease error with fmt.Errorf): the portal reads it as the conflict
it is. Real kubernetes client over HTTP."""

from __future__ import annotations

import pytest

from devcluster.testing import run_devcluster
from gpus.kube import apps as manifests
from gpus.kube.errors import ConflictError
from gpus.kube.operations import apply_manifest

from .test_devcluster import gateway_for

pytestmark = pytest.mark.integration

NS = "tenant-acme"


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    with run_devcluster(
        tmp_path_factory.mktemp("devcluster-head"), fleet="demo", flavour="head", seed=1
    ) as dc:
        yield dc


def test_a_duplicate_create_behind_a_lagging_read_is_a_conflict_not_an_error(head):
    gateway = gateway_for(head)
    vm = manifests.vm_instance("kube-dup", NS, "u1.medium", "ubuntu", [], [], run_strategy="Halted")
    try:
        # The read cache lags the write by a long time: the second apply's GET says 404, its
        # create meets the HelmRelease and gets v1.6.2's 500 "... already exists".
        head.set_faults({"rules": [], "knobs": {"cache_lag": 3600.0}})
        first = apply_manifest(gateway, vm, create_only=True)
        assert first.wrote and first.before is None
        with pytest.raises(ConflictError) as exc:
            apply_manifest(gateway, vm, create_only=True)
        assert exc.value.already_exists
        # Classified from what the cluster answered: a 500 that says "already exists".
        answered = exc.value.__cause__
        assert answered is not None and answered.status == 500
        assert "failed to create HelmRelease" in str(answered)
    finally:
        head.clear_faults()
        gateway.delete("vminstances", NS, "kube-dup")
        gateway.close()
