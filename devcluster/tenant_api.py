"""A tenant Kubernetes cluster's own API server, as its admin kubeconfig reaches it.

On Cozystack v1.1 a `Kubernetes` app's control plane (Kamaji) writes the Secret
`kubernetes-<name>-admin-kubeconfig` in the tenant namespace (keys `admin.conf` and
`super-admin.conf`: packages/apps/kubernetes/templates/NOTES.txt, README.md); the app's
`<release>-dashboard-resources` Role lets the tenant's `-use` level and up get it by name
(packages/apps/kubernetes/templates/dashboard-resourcemap.yaml). Behind it is the tenant cluster's
apiserver, whose nodes are the worker VMs (Cluster API Provider KubeVirt: one node per
KubevirtMachine, named like its VM).

Served here, under `/tenant-clusters/<ns>/<release>/` (the kubeconfig's server), with the
kubeconfig's token only: discovery (`/version`, `/api`, `/api/v1`) and `nodes` (get, list).

A worker is a node once its VM runs; `nvidia.com/gpu` appears in its capacity and
allocatable the `gpu_ready` knob's seconds (180 at --speed 1, divided by --speed) later, and
only when the app's `addons.gpuOperator` is on: the operator's driver DaemonSet builds and loads
the driver on the new node, the toolkit follows, then the device plugin, whose init containers
wait for the driver and toolkit validations, advertises `nvidia.com/gpu` (NVIDIA gpu-operator
v25.3.0 `assets/state-driver/`, `assets/state-device-plugin/0500_daemonset.yaml`). Without the
operator no GPU is ever advertised.
"""

from __future__ import annotations

import json
from typing import Any

from .fleet import model_for, stable_hex, stable_uuid
from .openapi import SERVER_VERSION
from .store import now_rfc3339

PATH_PREFIX = "/tenant-clusters/"
GPU_RESOURCE = "nvidia.com/gpu"


def token_for(seed: int, ns: str, release: str) -> str:
    """The bearer token of a tenant cluster's admin kubeconfig (deterministic per seed)."""
    return stable_hex(seed, "kubeconfig", ns, release, n=32)


def server_for(base: str, ns: str, release: str) -> str:
    return f"{base.rstrip('/')}{PATH_PREFIX}{ns}/{release}"


def _gpu_operator_on(app: dict[str, Any]) -> bool:
    addons = (app.get("spec") or {}).get("addons") or {}
    return bool((addons.get("gpuOperator") or {}).get("enabled"))


class TenantApi:
    """The `/tenant-clusters/` routes of one DevCluster."""

    def __init__(self, dc: Any) -> None:
        self.dc = dc

    def _error(self, code: int, reason: str, message: str) -> Any:
        from .api import Response

        body = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        }
        return Response(code, json.dumps(body).encode())

    def route(self, req: Any) -> Any:
        from .api import Response

        segs = req.path[len(PATH_PREFIX) :].strip("/").split("/")
        if len(segs) < 2:
            return self._error(404, "NotFound", "the server could not find the requested resource")
        ns, release, rest = segs[0], segs[1], segs[2:]
        app_name = release.removeprefix("kubernetes-")
        with self.dc.store.lock:
            app = self._app(ns, app_name)
            if app is None or not release.startswith("kubernetes-"):
                # No such control plane: nothing answers at that address.
                return self._error(503, "ServiceUnavailable", "no endpoints available")
            auth = req.headers.get("authorization") or ""
            if auth != f"Bearer {token_for(self.dc.seed, ns, release)}":
                return self._error(401, "Unauthorized", "Unauthorized")
            if req.method != "GET":
                return self._error(
                    405,
                    "MethodNotAllowed",
                    "the server does not allow this method on the requested resource",
                )
            nodes = self._nodes(ns, release, app)
        if rest == ["version"]:
            return Response(200, json.dumps(SERVER_VERSION).encode())
        if rest == ["api"]:
            body = {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
            return Response(200, json.dumps(body).encode())
        if rest == ["apis"]:  # only core/v1 nodes are modelled
            body = {"kind": "APIGroupList", "apiVersion": "v1", "groups": []}
            return Response(200, json.dumps(body).encode())
        if rest == ["api", "v1"]:
            body = {
                "kind": "APIResourceList",
                "groupVersion": "v1",
                "resources": [
                    {
                        "name": "nodes",
                        "singularName": "node",
                        "namespaced": False,
                        "kind": "Node",
                        "verbs": ["get", "list"],
                        "shortNames": ["no"],
                    }
                ],
            }
            return Response(200, json.dumps(body).encode())
        if rest == ["api", "v1", "nodes"]:
            body = {
                "kind": "NodeList",
                "apiVersion": "v1",
                "metadata": {"resourceVersion": str(self.dc.store.rv)},
                "items": nodes,
            }
            return Response(200, json.dumps(body).encode())
        if len(rest) == 4 and rest[:3] == ["api", "v1", "nodes"]:
            found = next((n for n in nodes if n["metadata"]["name"] == rest[3]), None)
            if found is None:
                return self._error(404, "NotFound", f'nodes "{rest[3]}" not found')
            return Response(200, json.dumps(found).encode())
        return self._error(404, "NotFound", "the server could not find the requested resource")

    def _app(self, ns: str, name: str) -> dict[str, Any] | None:
        for res in self.dc.reconciler.apps:
            if res.plural == "kuberneteses":
                obj = self.dc.store.get(res.key, ns, name)
                if obj is not None:
                    return obj
        return None

    def _nodes(self, ns: str, release: str, app: dict[str, Any]) -> list[dict[str, Any]]:
        """One node per running worker VM of the cluster; GPUs once the operator is done."""
        now = self.dc.clock.now()
        ready_after = self.dc.reconciler.knob_s("gpu_ready")
        operator = _gpu_operator_on(app)
        out = []
        units = [
            u
            for u in self.dc.reconciler.units.values()
            if u.get("cluster") == release and u["ns"] == ns and u["phase"] == "Running"
        ]
        for u in sorted(units, key=lambda u: u["name"]):
            gpus = len(u.get("gpus") or [])
            capacity = {"cpu": "8", "memory": "32827152Ki", "pods": "110"}
            allocatable = dict(capacity)
            labels = {
                "kubernetes.io/hostname": u["name"],
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                f"node-role.kubernetes.io/{u.get('group', 'worker')}": "",
            }
            if gpus and operator and now >= u.get("since", now) + ready_after:
                capacity[GPU_RESOURCE] = allocatable[GPU_RESOURCE] = str(gpus)
                model = model_for(u["gpus"][0])
                labels.update(
                    {
                        "nvidia.com/gpu.present": "true",
                        "nvidia.com/gpu.product": model.product,
                        "nvidia.com/gpu.count": str(gpus),
                    }
                )
            out.append(
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {
                        "name": u["name"],
                        "uid": stable_uuid(self.dc.seed, "tenant-node", ns, u["name"]),
                        "creationTimestamp": now_rfc3339(u.get("since", now)),
                        "labels": labels,
                        "annotations": {
                            "cluster.x-k8s.io/cluster-name": release,
                            "cluster.x-k8s.io/cluster-namespace": ns,
                        },
                    },
                    "spec": {"providerID": f"kubevirt://{u['name']}"},
                    "status": {
                        "capacity": capacity,
                        "allocatable": allocatable,
                        "conditions": [
                            {
                                "type": "Ready",
                                "status": "True",
                                "reason": "KubeletReady",
                                "message": "kubelet is posting ready status",
                                "lastHeartbeatTime": now_rfc3339(now),
                                "lastTransitionTime": now_rfc3339(u.get("since", now)),
                            }
                        ],
                        "nodeInfo": {
                            "architecture": "amd64",
                            "bootID": stable_uuid(self.dc.seed, "boot", u["uid"]),
                            "containerRuntimeVersion": "containerd://1.7.27",
                            "kernelVersion": "6.8.0-60-generic",
                            "kubeProxyVersion": "",
                            "kubeletVersion": str(SERVER_VERSION["gitVersion"]),
                            "machineID": stable_hex(self.dc.seed, "machine", u["uid"]),
                            "operatingSystem": "linux",
                            "osImage": "Ubuntu 24.04.2 LTS",
                            "systemUUID": u["uid"],
                        },
                    },
                }
            )
        return out
