"""Inventory sync: store the snapshot of the fleet the gateway read, writing only what changed,
one sync per cluster at a time."""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, models, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from gpus.accounts.services import refresh_new_tenants
from gpus.catalog.models import GpuModel
from gpus.catalog.sizing import os_family
from gpus.inventory.choices import NodeHealth, WorkloadKind
from gpus.inventory.clusters import gateway_for
from gpus.inventory.models import (
    CatalogueEntry,
    Cluster,
    ClusterMonitoring,
    ClusterQuota,
    GpuWorkload,
    ModelInventory,
    Node,
    NodeGpu,
    SyncIssue,
    TenantAllocation,
)
from gpus.inventory.signals import snapshot_stored
from gpus.kube.apps import KUBERNETES, release_name
from gpus.kube.budget import RetryBudget, RetryBudgetSpent
from gpus.kube.errors import KubeError, TransientError, failure_kind
from gpus.kube.records import CatalogueItem, FleetReading, NodeInfo, OddObject
from gpus.kube.retry import Backoff
from gpus.kube.states import node_group_state, vm_state
from gpus.tenancy.models import Tenant, tenant_namespace_validator

log = logging.getLogger(__name__)

BATCH = 2000
# Pods in these phases hold their GPUs (the scheduler counts them).
HOLDING_PHASES = {"Pending", "Running", "Unknown", ""}


class SyncInProgress(Exception):
    """Another sync of the same cluster holds the lease."""


# --- one sync per cluster ---------------------------------------------------------------


def _lease_seconds() -> float:
    # Longer than any sync can run: the worker kills a task at its time limit.
    return max(2.0 * settings.CELERY_TASK_TIME_LIMIT, 60.0)


def acquire_lease(cluster_id: int) -> str | None:
    """Take the cluster's sync lease (an atomic conditional UPDATE); None if another sync has it."""
    now = timezone.now()
    token = uuid.uuid4().hex
    taken = (
        Cluster.objects.filter(pk=cluster_id)
        .filter(Q(sync_lease_until__isnull=True) | Q(sync_lease_until__lt=now))
        .update(sync_lease_until=now + timedelta(seconds=_lease_seconds()), sync_lease=token)
    )
    return token if taken else None


def release_lease(cluster_id: int, token: str) -> None:
    Cluster.objects.filter(pk=cluster_id, sync_lease=token).update(
        sync_lease_until=None, sync_lease=""
    )


@dataclass
class Written:
    """Rows one sync inserted, updated and deleted, per table."""

    tables: dict[str, list[int]] = field(default_factory=dict)  # name -> [ins, upd, del]

    def add(self, table: str, inserted: int = 0, updated: int = 0, deleted: int = 0) -> None:
        row = self.tables.setdefault(table, [0, 0, 0])
        row[0] += inserted
        row[1] += updated
        row[2] += deleted

    def rows(self, table: str | None = None) -> int:
        if table is not None:
            return sum(self.tables.get(table, [0]))
        return sum(sum(v) for v in self.tables.values())


def sync_cluster(cluster_id: int) -> Cluster:
    """Read the cluster and store what changed. Raises after recording any failure on the cluster.

    Raises ``SyncInProgress`` (recording nothing) when another sync of this cluster is running.
    """
    token = acquire_lease(cluster_id)
    if token is None:
        Cluster.objects.get(pk=cluster_id)  # DoesNotExist for a cluster removed meanwhile
        raise SyncInProgress(f"cluster {cluster_id} is being synced already")
    try:
        return _sync(Cluster.objects.get(pk=cluster_id))
    finally:
        release_lease(cluster_id, token)


def _sync(cluster: Cluster) -> Cluster:
    started = time.monotonic()
    now = timezone.now()
    budget = RetryBudget(
        settings.INVENTORY_SYNC_RETRY_BUDGET,
        on_first_failure=lambda exc: report_first_failure(cluster, exc, timezone.now()),
    )
    gateway = gateway_for(cluster, budget)
    try:
        reading = gateway.read_inventory()
    except Exception as exc:  # KubeError or anything unexpected: on the cluster, then raised
        record_failure(cluster, exc, now)
        raise
    finally:
        gateway.close()
    try:
        written = store_snapshot(cluster, reading, now, started=started)
    except Exception as exc:
        log.exception("Storing the inventory of cluster %s failed", cluster.name)
        record_failure(cluster, exc, now)
        raise
    cluster.refresh_from_db()
    cluster.written = written  # type: ignore[attr-defined]  # for the caller (bench, command)
    return cluster


def _is_unreachable(exc: BaseException) -> bool:
    """5xx, timeouts, refused connections; a 429 says the cluster is there, only busy."""
    if isinstance(exc, RetryBudgetSpent):
        exc = exc.cause
    return isinstance(exc, TransientError) and exc.status != 429


def report_first_failure(cluster: Cluster, exc: TransientError, when: datetime) -> None:
    """The sync's first failed request, shown at once while its retries go on."""
    Cluster.objects.filter(pk=cluster.pk).update(
        last_attempt_at=when, last_error=str(exc)[:2000], last_error_kind=failure_kind(exc)
    )
    if _is_unreachable(exc):
        Cluster.objects.filter(pk=cluster.pk, unreachable_since__isnull=True).update(
            unreachable_since=when
        )


def backoff_seconds(failures: int, retry_after: float | None = None) -> float:
    """How long the whole cluster rests after ``failures`` failed syncs in a row: the sync
    interval, doubled per failure, up to ``INVENTORY_SYNC_BACKOFF_MAX_SECONDS``."""
    policy = Backoff(settings.INVENTORY_SYNC_SECONDS, settings.INVENTORY_SYNC_BACKOFF_MAX_SECONDS)
    return policy.delay(failures - 1, retry_after)


def record_failure(cluster: Cluster, exc: BaseException, when: datetime) -> None:
    """Say why the sync failed, since when the cluster is unreachable, and back it off."""
    if isinstance(exc, KubeError):
        text = str(exc)
    else:
        text = f"Unexpected error during the sync: {type(exc).__name__}: {exc}"
    current = Cluster.objects.filter(pk=cluster.pk).values_list(
        "consecutive_failures", "unreachable_since"
    )
    failures, unreachable_since = current.first() or (0, None)
    failures += 1
    retry_after = getattr(exc, "retry_after", None)
    updates: dict[str, Any] = {
        "last_attempt_at": when,
        "last_error": text[:2000],
        "last_error_kind": failure_kind(exc),
        "consecutive_failures": failures,
        "next_sync_at": when + timedelta(seconds=backoff_seconds(failures, retry_after)),
    }
    if _is_unreachable(exc) and unreachable_since is None:
        updates["unreachable_since"] = when
    Cluster.objects.filter(pk=cluster.pk).update(**updates)


# --- the snapshot -----------------------------------------------------------------------


def _health(node: NodeInfo) -> str:
    if not node.ready:
        return NodeHealth.NOT_READY
    if node.unschedulable:
        return NodeHealth.CORDONED
    return NodeHealth.READY


def _free_and_unavailable(
    installed: int, allocated: int, ready: bool, unhealthy: int = 0
) -> tuple[int, int]:
    """GPUs not held by pods are free on a ready node, unavailable on a cordoned or NotReady one;
    an unhealthy GPU (in capacity, not in allocatable) is unavailable wherever it is."""
    idle = max(installed - unhealthy - allocated, 0)
    return (idle, unhealthy) if ready else (0, idle + unhealthy)


def too_long(model: type[models.Model], **values: str) -> str:
    """Which value does not fit its column ("" if all fit): PostgreSQL would refuse the row."""
    for name, value in values.items():
        limit = model._meta.get_field(name).max_length
        if limit and len(value) > limit:
            return f"{name} is {len(value)} characters long; at most {limit} are stored"
    return ""


def gpu_models_for(names: Iterable[str]) -> dict[str, GpuModel]:
    """The catalog rows for these resource names, creating "unknown model" rows as needed.

    Only for names the platform serves (node allocatable, pods' requests): a name that appears
    only in a tenant's spec never becomes a catalog row (see ``_known_models``).
    """
    wanted = set(names)
    models_ = {m.resource_name: m for m in GpuModel.objects.filter(resource_name__in=wanted)}
    missing = wanted - models_.keys()
    if missing:
        GpuModel.objects.bulk_create(
            [
                GpuModel(
                    resource_name=name,
                    display_name=name.split("/", 1)[-1][:100],
                    is_known=False,
                )
                for name in sorted(missing)
            ],
            ignore_conflicts=True,
        )
        models_ = {m.resource_name: m for m in GpuModel.objects.filter(resource_name__in=wanted)}
    return models_


def _catalog_models(names: Iterable[str], served: Mapping[str, GpuModel]) -> dict[str, GpuModel]:
    """The catalog's own rows (or ones the platform serves) for these names, creating none."""
    known = GpuModel.objects.filter(resource_name__in=set(names) - served.keys(), is_known=True)
    return {**{m.resource_name: m for m in known}, **served}


def remove_unused_unknown_models() -> int:
    """Unknown models nothing refers to any more (a node gone, a tenant's odd name)."""
    unused = GpuModel.objects.filter(is_known=False, offered=False).exclude(
        Exists(NodeGpu.objects.filter(gpu_model=OuterRef("pk")))
        | Exists(ModelInventory.objects.filter(gpu_model=OuterRef("pk")))
        | Exists(TenantAllocation.objects.filter(gpu_model=OuterRef("pk")))
        | Exists(GpuWorkload.objects.filter(gpu_model=OuterRef("pk")))
    )
    try:
        with transaction.atomic():
            return unused.delete()[0]
    except IntegrityError:
        return 0  # another cluster's sync is storing a row for it right now: next time


COPY_FROM = 1000  # rows; below this a plain INSERT is as fast


def insert(model: type[models.Model], rows: list[Any]) -> None:
    """INSERT many rows; on PostgreSQL with COPY (a first sync loads 25,000 rows per cluster, and
    an INSERT of them spends most of its time quoting parameters client-side)."""
    if connection.vendor != "postgresql" or len(rows) < COPY_FROM:
        model.objects.bulk_create(rows, batch_size=BATCH)
        return
    fields = [f for f in model._meta.concrete_fields if not f.primary_key]
    quote = connection.ops.quote_name
    columns = ", ".join(quote(f.column) for f in fields)
    sql = f"COPY {quote(model._meta.db_table)} ({columns}) FROM STDIN"
    with connection.cursor() as cursor, cursor.cursor.copy(sql) as copy:
        for obj in rows:
            copy.write_row(
                [f.get_db_prep_save(getattr(obj, f.attname), connection) for f in fields]
            )


def sync_rows(
    written: Written,
    table: str,
    queryset: models.QuerySet[Any],
    key_fields: tuple[str, ...],
    value_fields: tuple[str, ...],
    wanted: Mapping[tuple[Any, ...], Mapping[str, Any]],
    fixed: Mapping[str, Any] | None = None,
    before_delete: Callable[[list[int]], None] | None = None,
    also_write: tuple[str, ...] = (),
) -> None:
    """Make ``queryset`` hold exactly ``wanted`` (key -> values), writing only the differences.

    Rows are compared on ``value_fields``; a changed row is updated with those and
    ``also_write`` (values compared through a fingerprint). Unchanged rows are not touched:
    no UPDATE, so no dead tuple.
    """
    model = queryset.model
    existing: dict[tuple[Any, ...], tuple[int, tuple[Any, ...]]] = {}
    n_keys = len(key_fields)
    for row in queryset.values_list("pk", *key_fields, *value_fields).iterator(chunk_size=BATCH):
        existing[tuple(row[1 : 1 + n_keys])] = (row[0], tuple(row[1 + n_keys :]))
    to_create, to_update = [], []
    for key, values in wanted.items():
        current = existing.pop(key, None)
        ordered = tuple(values[f] for f in value_fields)
        if current is None:
            to_create.append(
                model(**fixed or {}, **dict(zip(key_fields, key, strict=True)), **values)
            )
        elif current[1] != ordered:
            to_update.append(model(pk=current[0], **values))
    if to_create:
        insert(model, to_create)
    if to_update:
        model.objects.bulk_update(to_update, [*value_fields, *also_write], batch_size=500)
    gone = [pk for pk, _ in existing.values()]
    if gone and before_delete is not None:
        before_delete(gone)
    for start in range(0, len(gone), BATCH):
        model.objects.filter(pk__in=gone[start : start + BATCH]).delete()
    written.add(table, len(to_create), len(to_update), len(gone))


def store_snapshot(
    cluster: Cluster, reading: FleetReading, now: datetime, started: float | None = None
) -> Written:
    """Store what changed since the last snapshot, and the sync's outcome, in one transaction.

    A sync that started before the stored snapshot's time stores nothing (a newer one won).
    """
    odd: list[OddObject] = list(reading.odd)
    allocated_on: dict[tuple[str, str], int] = defaultdict(int)  # (node, resource) -> GPUs
    tenant_held: dict[tuple[str, str], int] = defaultdict(int)  # (namespace, resource) -> GPUs
    # namespace -> KubeVirt VM name -> GPUs its virt-launcher pod holds
    vm_held: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    # namespace -> (cluster-name, deployment-name) -> GPUs held by that node group's workers
    group_held: dict[str, dict[tuple[str, str], int]] = defaultdict(lambda: defaultdict(int))
    holders: dict[str, list[dict[str, object]]] = defaultdict(list)  # node -> pods holding GPUs
    for pod in reading.pods:
        if pod.phase not in HOLDING_PHASES or not pod.node_name:
            continue  # unscheduled pods hold nothing yet
        for resource, count in pod.gpus.items():
            if too_long(GpuModel, resource_name=resource):
                continue  # no node serves such a name: the pod cannot hold it
            allocated_on[(pod.node_name, resource)] += count
            tenant_held[(pod.namespace, resource)] += count
            if pod.kubevirt_vm:
                vm_held[pod.namespace][pod.kubevirt_vm] += count
            if pod.machine_deployment[1]:
                group_held[pod.namespace][pod.machine_deployment] += count
            holders[pod.node_name].append(
                {
                    "namespace": pod.namespace,
                    "pod": pod.name,
                    "workload": pod.kubevirt_vm or pod.owner_name or "",
                    "resource": resource,
                    "count": count,
                }
            )

    nodes = []
    for node in reading.nodes:
        problem = too_long(Node, name=node.name) or next(
            (
                f"GPU resource {r[:80]}...: " + too_long(GpuModel, resource_name=r)
                for r in node.gpu_installed
                if too_long(GpuModel, resource_name=r)
            ),
            "",
        )
        if problem:
            odd.append(OddObject("Node", "", node.name, problem))
        else:
            nodes.append(node)

    written = Written()
    with transaction.atomic():
        # FOR NO KEY UPDATE: one sync per cluster at a time, while a submission's foreign-key
        # check on this row (KEY SHARE, at its commit) does not wait for the sync; a FOR UPDATE
        # here deadlocked with submissions (issue 20 item 5).
        locked = Cluster.objects.select_for_update(no_key=True).filter(pk=cluster.pk)
        last = locked.values_list("last_synced_at", flat=True).first()
        if last is not None and last >= now:
            log.warning("Sync of cluster %s finished after a newer one: dropped", cluster.name)
            return written
        served = {r for n in nodes for r in n.gpu_installed} | {r for _, r in tenant_held}
        catalog = gpu_models_for(served)
        node_ids = _store_nodes(written, cluster, nodes, allocated_on, holders, catalog)
        _store_node_gpus(written, cluster, node_ids, nodes, allocated_on, catalog)
        _store_model_totals(written, cluster, nodes, allocated_on, catalog)
        new_tenants = _store_tenants(written, reading.tenant_namespaces)
        _store_tenant_allocations(written, cluster, tenant_held, catalog)
        _store_workloads(written, cluster, reading, catalog, vm_held, group_held, now, odd)
        _store_quotas(written, cluster, reading, catalog)
        _store_issues(written, cluster, odd, now)
        store_catalogue(written, cluster, reading.catalogue)
        # One row of its own (a Cluster column was decoded with every row joining its cluster).
        sync_rows(
            written,
            "monitoring",
            ClusterMonitoring.objects.filter(cluster=cluster),
            (),
            ("tenants",),
            {(): {"tenants": reading.tenant_monitoring}},
            fixed={"cluster": cluster},
        )
        locked.update(
            vm_kind=reading.vm_kind,
            node_group_disk_field=reading.disk_field,
            last_synced_at=now,
            last_attempt_at=now,
            last_sync_seconds=(time.monotonic() - started) if started is not None else None,
            last_sync_rows=written.rows(),
            last_error="",
            last_error_kind="",
            unreachable_since=None,
            consecutive_failures=0,
            next_sync_at=None,
        )
    remove_unused_unknown_models()
    # People whose groups name a tenant seen for the first time get it now, not at next sign-in.
    refresh_new_tenants(new_tenants)
    _announce(cluster, now)
    return written


def store_catalogue(
    written: Written, cluster: Cluster, catalogue: Mapping[str, list[CatalogueItem]]
) -> None:
    """What the forms may offer. Instance types that are deprecated or bring their own GPUs
    (gn1) are never offered; a kind the cluster did not let us read keeps its rows."""
    fields = ("label", "vcpu", "memory_mib", "os_family", "windows", "is_default")
    for kind, items in catalogue.items():
        wanted = {
            (item.name,): {
                "label": item.label[:200],
                "vcpu": item.vcpu,
                "memory_mib": item.memory_mib,
                "os_family": os_family(item.name) if kind == CatalogueEntry.Kind.IMAGE else "",
                "windows": item.windows,
                "is_default": item.default,
            }
            for item in items
            if len(item.name) <= 253 and not item.deprecated and not item.gpus
        }
        sync_rows(
            written,
            "catalogue",
            CatalogueEntry.objects.filter(cluster=cluster, kind=kind),
            ("name",),
            fields,
            wanted,
            fixed={"cluster": cluster, "kind": kind},
        )


def _announce(cluster: Cluster, now: datetime) -> None:
    """Tell the apps above (capacity history, waitlist) that a snapshot is stored, once the
    transaction it may run in commits; their failures are logged, never the sync's."""

    def send() -> None:
        for receiver, result in snapshot_stored.send_robust(Cluster, cluster_id=cluster.pk, at=now):
            if isinstance(result, Exception):
                log.error(
                    "After the sync of cluster %s, %s failed: %r", cluster.name, receiver, result
                )

    transaction.on_commit(send)


def _store_tenants(written: Written, namespaces: Iterable[str]) -> list[str]:
    """Tenant namespaces the portal does not know yet become tenants (never removed here: a
    tenant's operations and audit outlive its namespace)."""
    known = set(Tenant.objects.values_list("namespace", flat=True))
    new = [
        ns
        for ns in namespaces
        if ns not in known
        and not too_long(Tenant, namespace=ns)
        and tenant_namespace_validator.regex.match(ns)
    ]
    Tenant.objects.bulk_create(
        [Tenant(namespace=ns, display_name=ns) for ns in new], ignore_conflicts=True
    )
    written.add("tenant", inserted=len(new))
    return new


# Labels, taints, conditions and GPU holders are compared through their fingerprint: reading
# 12,500 JSON documents back at every sync would cost more than the rest of the comparison.
NODE_VALUES = (
    "health",
    "ready",
    "unschedulable",
    "fingerprint",
    "gpu_installed",
    "gpu_allocated",
    "gpu_free",
    "gpu_model_id",
)


def fingerprint(*documents: Any) -> str:
    text = json.dumps(documents, sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def _store_nodes(
    written: Written,
    cluster: Cluster,
    nodes: list[NodeInfo],
    allocated_on: Mapping[tuple[str, str], int],
    holders: Mapping[str, list[dict[str, object]]],
    catalog: Mapping[str, GpuModel],
) -> dict[str, int]:
    wanted: dict[tuple[Any, ...], dict[str, Any]] = {}
    for node in nodes:
        gpus = node.gpu_installed
        installed = sum(gpus.values())
        allocated = sum(allocated_on.get((node.name, r), 0) for r in gpus)
        health = _health(node)
        free, _ = _free_and_unavailable(
            installed,
            allocated,
            health == NodeHealth.READY,
            sum(node.gpu_unhealthy(r) for r in gpus),
        )
        wanted[(node.name,)] = {
            "health": health,
            "ready": node.ready,
            "unschedulable": node.unschedulable,
            "taints": node.taints,
            "labels": node.labels,
            "conditions": list(node.conditions),
            "holders": holders.get(node.name, []),
            "fingerprint": fingerprint(
                node.labels, node.taints, node.conditions, holders.get(node.name, [])
            ),
            "gpu_installed": installed,
            "gpu_allocated": allocated,
            "gpu_free": free,
            # The one model it serves (the filtered list's index); none for 0 or several.
            "gpu_model_id": (catalog[next(iter(gpus))].pk if len(gpus) == 1 else None),
        }
    sync_rows(
        written,
        "node",
        Node.objects.filter(cluster=cluster),
        ("name",),
        NODE_VALUES,
        wanted,
        fixed={"cluster": cluster},
        also_write=("labels", "taints", "conditions", "holders"),
        # Their GPU rows go with them: counted as written.
        before_delete=lambda pks: written.add(
            "nodegpu", deleted=NodeGpu.objects.filter(node_id__in=pks).delete()[0]
        ),
    )
    return dict(Node.objects.filter(cluster=cluster).values_list("name", "id"))


def _store_node_gpus(
    written: Written,
    cluster: Cluster,
    node_ids: Mapping[str, int],
    nodes: list[NodeInfo],
    allocated_on: Mapping[tuple[str, str], int],
    catalog: Mapping[str, GpuModel],
) -> None:
    wanted = {}
    for node in nodes:
        ready = _health(node) == NodeHealth.READY
        for resource, installed in node.gpu_installed.items():
            allocated = allocated_on.get((node.name, resource), 0)
            unhealthy = node.gpu_unhealthy(resource)
            wanted[(node_ids[node.name], catalog[resource].pk)] = {
                "installed": installed,
                "allocated": allocated,
                "free": _free_and_unavailable(installed, allocated, ready, unhealthy)[0],
            }
    sync_rows(
        written,
        "nodegpu",
        NodeGpu.objects.filter(node__cluster=cluster),
        ("node_id", "gpu_model_id"),
        ("installed", "allocated", "free"),
        wanted,
    )


def _store_model_totals(
    written: Written,
    cluster: Cluster,
    nodes: list[NodeInfo],
    allocated_on: Mapping[tuple[str, str], int],
    catalog: Mapping[str, GpuModel],
) -> None:
    totals: dict[tuple[int], dict[str, int]] = defaultdict(
        lambda: {"installed": 0, "allocated": 0, "free": 0, "unavailable": 0, "mixed_nodes": 0}
    )
    for node in nodes:
        ready = _health(node) == NodeHealth.READY
        gpus = node.gpu_installed
        for resource, installed in gpus.items():
            allocated = min(allocated_on.get((node.name, resource), 0), installed)
            row = totals[(catalog[resource].pk,)]
            row["installed"] += installed
            row["allocated"] += allocated
            free, unavailable = _free_and_unavailable(
                installed, allocated, ready, node.gpu_unhealthy(resource)
            )
            row["free"] += free
            row["unavailable"] += unavailable
            row["mixed_nodes"] += len(gpus) > 1
    sync_rows(
        written,
        "modelinventory",
        ModelInventory.objects.filter(cluster=cluster),
        ("gpu_model_id",),
        ("installed", "allocated", "free", "unavailable", "mixed_nodes"),
        totals,
        fixed={"cluster": cluster},
    )


def _store_tenant_allocations(
    written: Written,
    cluster: Cluster,
    tenant_held: Mapping[tuple[str, str], int],
    catalog: Mapping[str, GpuModel],
) -> None:
    tenants = dict(Tenant.objects.values_list("namespace", "id"))
    wanted = {
        (namespace, catalog[resource].pk): {"tenant_id": tenants.get(namespace), "allocated": n}
        for (namespace, resource), n in tenant_held.items()
        if not too_long(TenantAllocation, namespace=namespace)
    }
    sync_rows(
        written,
        "tenantallocation",
        TenantAllocation.objects.filter(cluster=cluster),
        ("namespace", "gpu_model_id"),
        ("tenant_id", "allocated"),
        wanted,
        fixed={"cluster": cluster},
    )


# --- workloads: the tenants' GPU VMs and node groups --------------------------------


WORKLOAD_VALUES = (
    "app_kind",
    "gpu_model_id",
    "gpu_resource",
    "gpus_per_instance",
    "instances",
    "max_instances",
    "group_spec",
    "gpus_held",
    "state",
    "reason",
    "message",
)


def _store_workloads(
    written: Written,
    cluster: Cluster,
    reading: FleetReading,
    served: Mapping[str, GpuModel],
    vm_held: Mapping[str, Mapping[str, int]],
    group_held: Mapping[str, Mapping[tuple[str, str], int]],
    now: datetime,
    odd: list[OddObject],
) -> None:
    tenants = dict(Tenant.objects.values_list("namespace", "id"))
    # A name only a tenant's spec mentions links to the catalog if the catalog has it, and is
    # kept on the row (gpu_resource) otherwise: never a catalog row of its own.
    requested = {g for vm in reading.vms for g in vm.gpus[:1]}
    requested |= {g.gpus[0] for app in reading.kubernetes_apps for g in app.node_groups if g.gpus}
    catalog = _catalog_models(requested, served)
    wanted: dict[tuple[Any, ...], dict[str, Any]] = {}

    def add(kind: str, namespace: str, app_kind: str, name: str, group: str, **values: Any) -> None:
        gpu = values.pop("gpu")
        problem = too_long(
            GpuWorkload, name=name, node_group=group, gpu_resource=gpu, app_kind=app_kind
        )
        if problem:
            odd.append(
                OddObject(app_kind, namespace, f"{name}/{group}" if group else name, problem)
            )
            return
        model = catalog.get(gpu)
        reading_ = values.pop("reading")
        wanted[(tenants[namespace], kind, name, group)] = {
            "app_kind": app_kind,
            "gpu_model_id": model.pk if model else None,
            "gpu_resource": gpu,
            "state": str(reading_.state),
            "reason": reading_.reason[:200],
            "message": reading_.message,
            **values,
        }

    for vm in reading.vms:
        if vm.namespace not in tenants or not vm.gpus:
            continue  # only GPU VMs of tenants the portal knows
        add(
            WorkloadKind.VM,
            vm.namespace,
            vm.kind,
            vm.name,
            "",
            gpu=vm.gpus[0],
            reading=vm_state(vm, reading.kubevirt_vms.get((vm.namespace, vm.kubevirt_name))),
            gpus_per_instance=len(vm.gpus),
            instances=1,
            max_instances=1,
            group_spec={},
            gpus_held=vm_held.get(vm.namespace, {}).get(vm.kubevirt_name, 0),
        )

    for app in reading.kubernetes_apps:
        if app.namespace not in tenants:
            continue
        held_in_namespace = group_held.get(app.namespace, {})
        release = release_name(KUBERNETES, app.name)
        # Every group, GPUs or not: "add a GPU group to my cluster" picks from these apps, and a
        # group without GPUs counts none (gpus_per_instance 0) in every GPU figure.
        for group in app.node_groups:
            state = node_group_state(
                app, group, reading.monitors.get((app.namespace, group.monitor_name))
            )
            add(
                WorkloadKind.NODE_GROUP,
                app.namespace,
                "Kubernetes",
                app.name,
                group.name,
                gpu=group.gpus[0] if group.gpus else "",
                reading=state,
                gpus_per_instance=len(group.gpus),
                instances=max(group.min_replicas, state.available),
                max_instances=max(group.max_replicas, group.min_replicas, state.available),
                group_spec={
                    "min_replicas": group.min_replicas,
                    "max_replicas": group.max_replicas,
                    "gpus": list(group.gpus),
                    "instance_type": group.instance_type,
                    "disk": group.disk,
                    "roles": list(group.roles),
                },
                # The launcher pods' Cluster API labels, not a name prefix (gpu vs gpu-large).
                # A pod without the cluster-name label counts by its deployment-name alone.
                gpus_held=held_in_namespace.get((release, group.monitor_name), 0)
                + held_in_namespace.get(("", group.monitor_name), 0),
            )

    # Rows the portal created and the cluster has not shown yet (last_seen_at empty) stay for
    # the provisioning poller; one the cluster now shows becomes an observed row.
    pending = GpuWorkload.objects.filter(cluster=cluster, last_seen_at__isnull=True)
    claimed = [
        pk
        for pk, *key in pending.values_list("pk", "tenant_id", "kind", "name", "node_group")
        if tuple(key) in wanted
    ]
    if claimed:
        GpuWorkload.objects.filter(pk__in=claimed).update(last_seen_at=now)
        written.add("gpuworkload", updated=len(claimed))
    sync_rows(
        written,
        "gpuworkload",
        GpuWorkload.objects.filter(cluster=cluster, last_seen_at__isnull=False),
        ("tenant_id", "kind", "name", "node_group"),
        WORKLOAD_VALUES,
        wanted,
        # Written when the sync first sees the object, not at every sync.
        fixed={"cluster": cluster, "last_seen_at": now},
    )


def _store_quotas(
    written: Written, cluster: Cluster, reading: FleetReading, served: Mapping[str, GpuModel]
) -> None:
    """The tenants' own ResourceQuotas on GPUs (a model the catalog or the fleet knows; a quota
    on a name nothing serves limits nothing the portal can ask for)."""
    tenants = dict(Tenant.objects.values_list("namespace", "id"))
    catalog = _catalog_models({q.resource for q in reading.quotas}, served)
    wanted: dict[tuple[Any, ...], dict[str, Any]] = {}
    for q in reading.quotas:
        model = catalog.get(q.resource)
        if model is None or q.namespace not in tenants or too_long(ClusterQuota, name=q.name):
            continue
        wanted[(tenants[q.namespace], q.name, model.pk)] = {"hard": q.hard, "used": q.used}
    sync_rows(
        written,
        "clusterquota",
        ClusterQuota.objects.filter(cluster=cluster),
        ("tenant_id", "name", "gpu_model_id"),
        ("hard", "used"),
        wanted,
        fixed={"cluster": cluster},
    )


def _store_issues(written: Written, cluster: Cluster, odd: list[OddObject], now: datetime) -> None:
    wanted: dict[tuple[Any, ...], dict[str, Any]] = {}
    for item in odd:
        key = (item.kind[:63], item.namespace[:253], item.name[:253])
        wanted[key] = {"problem": item.problem[:2000]}
    sync_rows(
        written,
        "syncissue",
        SyncIssue.objects.filter(cluster=cluster),
        ("kind", "namespace", "name"),
        ("problem",),
        wanted,
        fixed={"cluster": cluster, "first_seen_at": now},
    )
    for item in odd:
        log.warning(
            "Cluster %s: skipped %s %s/%s: %s",
            cluster.name,
            item.kind,
            item.namespace,
            item.name[:253],
            item.problem,
        )
