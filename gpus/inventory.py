"""Inventory sync: read the fleet from a cluster, store a snapshot the pages read.

A service (it writes), called by the Celery task with a cluster id. The snapshot is replaced in
one transaction, so pages never see half a sync; a failed sync keeps the previous snapshot and
records why and since when the cluster is unreachable.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from .choices import PRINTABLE_STATUS_STATES, NodeHealth, ResourceState, WorkloadKind
from .kube.client import ClusterConfig
from .kube.errors import KubeError, TransientError
from .kube.gateway import ClusterGateway, GpuPod, NodeInfo, conditions_of, conditions_summary
from .models import (
    Cluster,
    GpuModel,
    GpuWorkload,
    ModelInventory,
    Node,
    NodeGpu,
    Tenant,
    TenantAllocation,
)

log = logging.getLogger(__name__)

BATCH = 2000
# Pods in these phases hold their GPUs (the scheduler counts them).
HOLDING_PHASES = {"Pending", "Running", "Unknown", ""}
LAUNCHER_SELECTOR = "kubevirt.io=virt-launcher"
KUBEVIRT_VM_PREFIX = {"VMInstance": "vm-instance-", "VirtualMachine": "virtual-machine-"}


def cluster_config(cluster: Cluster) -> ClusterConfig:
    return ClusterConfig(
        name=cluster.name,
        kubeconfig=cluster.kubeconfig or None,
        context=cluster.context or None,
        in_cluster=cluster.in_cluster,
        timeout=settings.CLUSTER_TIMEOUT_SECONDS,
        qps=settings.CLUSTER_QPS,
        burst=settings.CLUSTER_BURST,
    )


def gateway_for(cluster: Cluster) -> ClusterGateway:
    return ClusterGateway(cluster_config(cluster))


@dataclass
class FleetReading:
    """Everything one sync read from the cluster, before it touches the database."""

    nodes: list[NodeInfo]
    pods: list[GpuPod]
    vm_kind: str
    disk_field: str
    vms: list[dict[str, Any]] = field(default_factory=list)
    kubevirt_vms: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    kubernetes_apps: list[dict[str, Any]] = field(default_factory=list)
    monitors: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)


def read_fleet(gateway: ClusterGateway, page_size: int = 500) -> FleetReading:
    flavour = gateway.discover()
    reading = FleetReading(
        nodes=list(gateway.iter_nodes(page_size=page_size)),
        # Only virt-launcher pods hold passthrough GPUs: the label keeps the list small.
        pods=list(gateway.iter_gpu_pods(page_size=page_size, label_selector=LAUNCHER_SELECTOR)),
        vm_kind=flavour.vm_kind,
        disk_field=flavour.node_group_disk_field,
    )
    reading.vms = list(gateway.iter_apps(flavour.vm_plural, page_size=page_size))
    reading.kubevirt_vms = {
        _key(obj): obj
        for obj in gateway.iter_apps(
            "virtualmachines", page_size=page_size, group="kubevirt.io", version="v1"
        )
    }
    if flavour.serves("kuberneteses"):
        reading.kubernetes_apps = list(gateway.iter_apps("kuberneteses", page_size=page_size))
        reading.monitors = {
            _key(obj): obj
            for obj in gateway.iter_apps(
                "workloadmonitors", page_size=page_size, group="cozystack.io", version="v1alpha1"
            )
        }
    return reading


def _key(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return meta.get("namespace", ""), meta.get("name", "")


def sync_cluster(cluster_id: int) -> Cluster:
    """Read the cluster and replace its snapshot. Raises KubeError after recording it."""
    cluster = Cluster.objects.get(pk=cluster_id)
    started = time.monotonic()
    now = timezone.now()
    gateway = gateway_for(cluster)
    try:
        reading = read_fleet(gateway)
    except KubeError as exc:
        record_failure(cluster, exc, now)
        raise
    finally:
        gateway.close()
    store_snapshot(cluster, reading, now)
    Cluster.objects.filter(pk=cluster.pk).update(
        vm_kind=reading.vm_kind,
        node_group_disk_field=reading.disk_field,
        last_synced_at=now,
        last_attempt_at=now,
        last_sync_seconds=time.monotonic() - started,
        last_error="",
        unreachable_since=None,
    )
    cluster.refresh_from_db()
    return cluster


def record_failure(cluster: Cluster, exc: KubeError, when: Any) -> None:
    updates: dict[str, Any] = {"last_attempt_at": when, "last_error": str(exc)[:2000]}
    if isinstance(exc, TransientError) and cluster.unreachable_since is None:
        updates["unreachable_since"] = when
    Cluster.objects.filter(pk=cluster.pk).update(**updates)


# --- the snapshot ---------------------------------------------------------------


def _health(node: NodeInfo) -> str:
    if not node.ready:
        return NodeHealth.NOT_READY
    if node.unschedulable:
        return NodeHealth.CORDONED
    return NodeHealth.READY


def gpu_models_for(names: Iterable[str]) -> dict[str, GpuModel]:
    """The catalog rows for these resource names, creating "unknown model" rows as needed."""
    wanted = set(names)
    models = {m.resource_name: m for m in GpuModel.objects.filter(resource_name__in=wanted)}
    missing = wanted - models.keys()
    if missing:
        GpuModel.objects.bulk_create(
            [
                GpuModel(resource_name=name, display_name=name.split("/", 1)[-1], is_known=False)
                for name in sorted(missing)
            ],
            ignore_conflicts=True,
        )
        models = {m.resource_name: m for m in GpuModel.objects.filter(resource_name__in=wanted)}
    return models


def _free_and_unavailable(installed: int, allocated: int, ready: bool) -> tuple[int, int]:
    """GPUs not held by pods are free on a ready node, unavailable on a cordoned or NotReady one."""
    idle = max(installed - allocated, 0)
    return (idle, 0) if ready else (0, idle)


def store_snapshot(cluster: Cluster, reading: FleetReading, now: Any) -> None:
    allocated_on: dict[tuple[str, str], int] = defaultdict(int)  # (node, resource) -> GPUs
    tenant_held: dict[tuple[str, str], int] = defaultdict(int)  # (namespace, resource) -> GPUs
    # namespace -> KubeVirt VM name -> GPUs its virt-launcher pod holds
    vm_held: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    holders: dict[str, list[dict[str, object]]] = defaultdict(list)  # node -> pods holding GPUs
    for pod in reading.pods:
        if pod.phase not in HOLDING_PHASES or not pod.node_name:
            continue  # unscheduled pods hold nothing yet
        vm_name = pod.labels.get("vm.kubevirt.io/name") or pod.labels.get("kubevirt.io/domain")
        for resource, count in pod.gpus.items():
            allocated_on[(pod.node_name, resource)] += count
            tenant_held[(pod.namespace, resource)] += count
            if vm_name:
                vm_held[pod.namespace][vm_name] += count
            holders[pod.node_name].append(
                {
                    "namespace": pod.namespace,
                    "pod": pod.name,
                    "workload": vm_name or pod.owner_name or "",
                    "resource": resource,
                    "count": count,
                }
            )
    resource_names = {r for n in reading.nodes for r in n.gpu_resources}
    resource_names |= {r for _, r in tenant_held}
    resource_names |= {g for vm in reading.vms for g in _gpu_names(vm.get("spec") or {})}
    for app in reading.kubernetes_apps:
        for group in ((app.get("spec") or {}).get("nodeGroups") or {}).values():
            resource_names |= set(_gpu_names(group or {}))
    models = gpu_models_for(resource_names)

    with transaction.atomic():
        node_ids = _store_nodes(cluster, reading.nodes, allocated_on, holders, now)
        _store_node_gpus(node_ids, reading.nodes, allocated_on, models)
        _store_model_totals(cluster, reading.nodes, allocated_on, models)
        _store_tenant_allocations(cluster, tenant_held, models)
        _store_workloads(cluster, reading, models, vm_held, now)


def _store_nodes(
    cluster: Cluster,
    nodes: list[NodeInfo],
    allocated_on: Mapping[tuple[str, str], int],
    holders: Mapping[str, list[dict[str, object]]],
    now: Any,
) -> dict[str, int]:
    rows = []
    for node in nodes:
        installed = sum(node.gpu_resources.values())
        allocated = sum(allocated_on.get((node.name, r), 0) for r in node.gpu_resources)
        health = _health(node)
        free, _ = _free_and_unavailable(installed, allocated, health == NodeHealth.READY)
        rows.append(
            Node(
                cluster=cluster,
                name=node.name,
                health=health,
                ready=node.ready,
                unschedulable=node.unschedulable,
                taints=node.taints,
                labels=node.labels,
                conditions=list(node.conditions),
                holders=holders.get(node.name, []),
                gpu_installed=installed,
                gpu_allocated=allocated,
                gpu_free=free,
                synced_at=now,
            )
        )
    Node.objects.bulk_create(
        rows,
        batch_size=BATCH,
        update_conflicts=True,
        unique_fields=["cluster", "name"],
        update_fields=[
            "health",
            "ready",
            "unschedulable",
            "taints",
            "labels",
            "conditions",
            "holders",
            "gpu_installed",
            "gpu_allocated",
            "gpu_free",
            "synced_at",
        ],
    )
    # Nodes gone from the cluster disappear from the snapshot.
    Node.objects.filter(cluster=cluster).exclude(synced_at=now).delete()
    return dict(Node.objects.filter(cluster=cluster).values_list("name", "id"))


def _store_node_gpus(
    node_ids: Mapping[str, int],
    nodes: list[NodeInfo],
    allocated_on: Mapping[tuple[str, str], int],
    models: Mapping[str, GpuModel],
) -> None:
    NodeGpu.objects.filter(node_id__in=list(node_ids.values())).delete()
    rows = []
    for node in nodes:
        ready = _health(node) == NodeHealth.READY
        for resource, installed in node.gpu_resources.items():
            allocated = allocated_on.get((node.name, resource), 0)
            rows.append(
                NodeGpu(
                    node_id=node_ids[node.name],
                    gpu_model=models[resource],
                    installed=installed,
                    allocated=allocated,
                    free=_free_and_unavailable(installed, allocated, ready)[0],
                )
            )
    NodeGpu.objects.bulk_create(rows, batch_size=BATCH)


def _store_model_totals(
    cluster: Cluster,
    nodes: list[NodeInfo],
    allocated_on: Mapping[tuple[str, str], int],
    models: Mapping[str, GpuModel],
) -> None:
    totals: dict[str, dict[str, int]] = defaultdict(
        lambda: {"installed": 0, "allocated": 0, "free": 0, "unavailable": 0}
    )
    for node in nodes:
        ready = _health(node) == NodeHealth.READY
        for resource, installed in node.gpu_resources.items():
            allocated = min(allocated_on.get((node.name, resource), 0), installed)
            row = totals[resource]
            row["installed"] += installed
            row["allocated"] += allocated
            free, unavailable = _free_and_unavailable(installed, allocated, ready)
            row["free"] += free
            row["unavailable"] += unavailable
    ModelInventory.objects.filter(cluster=cluster).delete()
    ModelInventory.objects.bulk_create(
        [
            ModelInventory(cluster=cluster, gpu_model=models[resource], **values)
            for resource, values in totals.items()
        ]
    )


def _store_tenant_allocations(
    cluster: Cluster, tenant_held: Mapping[tuple[str, str], int], models: Mapping[str, GpuModel]
) -> None:
    tenants = dict(Tenant.objects.values_list("namespace", "id"))
    TenantAllocation.objects.filter(cluster=cluster).delete()
    TenantAllocation.objects.bulk_create(
        [
            TenantAllocation(
                cluster=cluster,
                namespace=namespace,
                tenant_id=tenants.get(namespace),
                gpu_model=models[resource],
                allocated=count,
            )
            for (namespace, resource), count in tenant_held.items()
        ]
    )


# --- workloads: the tenants' GPU VMs and node groups --------------------------------


def _gpu_names(spec: Mapping[str, Any]) -> list[str]:
    return [
        str(g.get("name")) for g in spec.get("gpus") or [] if isinstance(g, dict) and g.get("name")
    ]


def _ready_condition(obj: Mapping[str, Any]) -> tuple[str, str, str]:
    ready = conditions_summary(obj).get("Ready")
    if ready is None:
        return "", "", ""
    return ready.status, ready.reason, ready.message


def vm_state(
    app: Mapping[str, Any], kubevirt_vm: Mapping[str, Any] | None, vm_kind: str
) -> tuple[str, str, str]:
    """(state, reason, message) of a GPU VM from its app and its KubeVirt VM."""
    spec = app.get("spec") or {}
    ready_status, reason, message = _ready_condition(app)
    if (app.get("metadata") or {}).get("deletionTimestamp"):
        return ResourceState.DELETING, reason, message
    if ready_status == "False" and reason.endswith("Failed"):
        return ResourceState.FAILED, reason, message
    halted = spec.get("runStrategy") == "Halted" or (
        vm_kind == "VirtualMachine" and spec.get("running") is False
    )
    if kubevirt_vm is None:
        return (ResourceState.STOPPED if halted else ResourceState.PROVISIONING), reason, message
    status = kubevirt_vm.get("status") or {}
    printable = str(status.get("printableStatus") or "")
    state = PRINTABLE_STATUS_STATES.get(printable, ResourceState.UNKNOWN)
    vm_conditions = conditions_of(kubevirt_vm)
    # Show the KubeVirt condition that explains a waiting VM (e.g. Unschedulable, Insufficient...).
    for condition in vm_conditions.values():
        if condition.status != "True" and condition.message:
            return state, condition.reason or printable, condition.message
    return state, printable or reason, message


def node_group_state(
    app: Mapping[str, Any], monitor: Mapping[str, Any] | None, min_replicas: int
) -> tuple[str, str, str, int]:
    """(state, reason, message, available workers) of one node group."""
    ready_status, reason, message = _ready_condition(app)
    if ready_status == "False" and reason.endswith("Failed"):
        return ResourceState.FAILED, reason, message, 0
    available = int(((monitor or {}).get("status") or {}).get("availableReplicas") or 0)
    if monitor is None:
        return ResourceState.PROVISIONING, reason, message, 0
    if available >= min_replicas:
        return ResourceState.RUNNING, "", "", available
    return (
        ResourceState.SCALING if available else ResourceState.PROVISIONING,
        "WorkersNotReady",
        f"{available} of {min_replicas} workers ready",
        available,
    )


def _store_workloads(
    cluster: Cluster,
    reading: FleetReading,
    models: Mapping[str, GpuModel],
    vm_held: Mapping[str, Mapping[str, int]],
    now: Any,
) -> None:
    tenants = {t.namespace: t for t in Tenant.objects.all()}
    rows: list[GpuWorkload] = []

    vm_prefix = KUBEVIRT_VM_PREFIX.get(reading.vm_kind, "vm-instance-")
    for app in reading.vms:
        namespace, name = _key(app)
        tenant = tenants.get(namespace)
        gpus = _gpu_names(app.get("spec") or {})
        if tenant is None or not gpus:
            continue  # only GPU VMs of tenants the portal knows
        kubevirt_name = vm_prefix + name
        state, reason, message = vm_state(
            app, reading.kubevirt_vms.get((namespace, kubevirt_name)), reading.vm_kind
        )
        held = vm_held.get(namespace, {}).get(kubevirt_name, 0)
        rows.append(
            GpuWorkload(
                cluster=cluster,
                tenant=tenant,
                kind=WorkloadKind.VM,
                app_kind=reading.vm_kind,
                name=name,
                node_group="",
                gpu_model=models.get(gpus[0]),
                gpus_per_instance=len(gpus),
                instances=1,
                gpus_held=held,
                state=state,
                reason=reason[:200],
                message=message,
                last_seen_at=now,
            )
        )

    for app in reading.kubernetes_apps:
        namespace, name = _key(app)
        tenant = tenants.get(namespace)
        if tenant is None:
            continue
        groups = ((app.get("spec") or {}).get("nodeGroups") or {}).items()
        held_in_namespace = vm_held.get(namespace, {})
        for group_name, group in groups:
            gpus = _gpu_names(group or {})
            if not gpus:
                continue
            min_replicas = int((group or {}).get("minReplicas") or 0)
            monitor = reading.monitors.get((namespace, f"kubernetes-{name}-{group_name}"))
            state, reason, message, available = node_group_state(app, monitor, min_replicas)
            worker_prefix = f"kubernetes-{name}-{group_name}-"
            # Worker VMs are named kubernetes-<cluster>-<group>-<suffix>.
            held = sum(c for vm, c in held_in_namespace.items() if vm.startswith(worker_prefix))
            rows.append(
                GpuWorkload(
                    cluster=cluster,
                    tenant=tenant,
                    kind=WorkloadKind.NODE_GROUP,
                    app_kind="Kubernetes",
                    name=name,
                    node_group=group_name,
                    gpu_model=models.get(gpus[0]),
                    gpus_per_instance=len(gpus),
                    instances=max(min_replicas, available),
                    gpus_held=held,
                    state=state,
                    reason=reason[:200],
                    message=message,
                    last_seen_at=now,
                )
            )

    GpuWorkload.objects.bulk_create(
        rows,
        batch_size=BATCH,
        update_conflicts=True,
        unique_fields=["cluster", "tenant", "kind", "name", "node_group"],
        update_fields=[
            "app_kind",
            "gpu_model",
            "gpus_per_instance",
            "instances",
            "gpus_held",
            "state",
            "reason",
            "message",
            "last_seen_at",
        ],
    )
    # Objects seen before and gone now were deleted in the cluster; rows the portal created and
    # the cluster has not shown yet (last_seen_at empty) stay for the provisioning poller.
    GpuWorkload.objects.filter(cluster=cluster, last_seen_at__isnull=False).exclude(
        last_seen_at=now
    ).delete()
