"""GPUs held by a node group: matched on the launcher pods' Cluster API labels, over HTTP against
devcluster with the real client (#16 item 8)."""

from __future__ import annotations

import time

import pytest

from devcluster.testing import run_devcluster
from gpus.inventory.models import Cluster, GpuWorkload
from gpus.inventory.sync import sync_cluster

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

L40S = "nvidia.com/AD102GL_L40S"
H100 = "nvidia.com/H100_94GB"

# Two groups whose names share a prefix: the workers of `gpu-large` are
# kubernetes-twins-gpu-large-<hash>-<suffix>, which also starts with kubernetes-twins-gpu-.
TWINS_YAML = f"""
apiVersion: apps.cozystack.io/v1alpha1
kind: Kubernetes
metadata: {{name: twins, namespace: tenant-acme}}
spec:
  version: v1.33
  nodeGroups:
    gpu:
      minReplicas: 1
      maxReplicas: 1
      instanceType: u1.xlarge
      ephemeralStorage: 50Gi
      resources: {{}}
      gpus: [{{name: {L40S}}}]
    gpu-large:
      minReplicas: 1
      maxReplicas: 1
      instanceType: u1.8xlarge
      ephemeralStorage: 100Gi
      resources: {{}}
      gpus: [{{name: {H100}}}, {{name: {H100}}}]
"""


def test_a_group_holds_only_its_own_workers_gpus(tmp_path, acme, globex) -> None:
    with run_devcluster(tmp_path / "dc", fleet="demo", speed=50.0) as dc:
        cluster = Cluster.objects.create(
            name="devcluster", kubeconfig=str(dc.kubeconfig), context="admin"
        )
        dc.kubectl("apply", "-f", "-", input=TWINS_YAML)
        deadline = time.monotonic() + 30
        held: dict[str, int] = {}
        # v1.1's chart md0 is there too (its spec does not name it), holding no GPU.
        while held != {"gpu": 1, "gpu-large": 2, "md0": 0}:
            assert time.monotonic() < deadline, held
            time.sleep(0.2)
            sync_cluster(cluster.pk)
            held = dict(
                GpuWorkload.objects.filter(name="twins").values_list("node_group", "gpus_held")
            )
