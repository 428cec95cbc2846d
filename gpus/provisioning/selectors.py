"""Reads of operations and the audit log, scoped to the user asking."""

from __future__ import annotations

from typing import Any

from django.db.models import BooleanField, ExpressionWrapper, F, Q, QuerySet
from django.http import Http404

from gpus.provisioning.choices import ACTIVE_OPERATION_STATES, OperationState
from gpus.provisioning.models import AuditEvent, Operation
from gpus.tenancy.models import Tenant
from gpus.tenancy.selectors import get_tenant_for_user
from gpus.web.access import User, require_platform_admin
from gpus.web.paging import KeysetPage, PageRequest, keyset_page

# --- operations ------------------------------------------------------------------------


def tenant_operations(user: User, tenant: Tenant) -> QuerySet[Operation]:
    """The tenant's operations; ``tenant`` comes from ``get_tenant_for_user`` (already checked)."""
    return Operation.objects.filter(tenant=tenant).select_related("gpu_model", "cluster")


def get_operation_for_user(user: User, namespace: str, pk: int) -> Operation:
    """An operation of a tenant the user may see, or 404 (never 403)."""
    tenant = get_tenant_for_user(user, namespace)
    op = (
        Operation.objects.filter(tenant=tenant, pk=pk)
        .select_related("gpu_model", "cluster", "tenant")
        .first()
    )
    if op is None:
        raise Http404("No such operation.")
    return op


def target_operations(
    user: User, tenant: Tenant, cluster_id: int, name: str, node_group: str = ""
) -> QuerySet[Operation]:
    """The operations on one VM or node group of the tenant, newest first, each marked
    ``in_flight`` as ``operations_in_flight`` means it (one query serves both)."""
    return (
        tenant_operations(user, tenant)
        .filter(cluster_id=cluster_id, name=name, node_group=node_group)
        .annotate(in_flight=ExpressionWrapper(_in_flight(), output_field=BooleanField()))
    )


def active_operation(tenant: Tenant, name: str, node_group: str | None = "") -> Operation | None:
    """The change in flight on a target, if any (at most one per target and cluster): what
    "another change is still in progress" points to. ``node_group=None``: on a cluster or any
    of its groups."""
    ops = Operation.objects.filter(tenant=tenant, name=name, state__in=ACTIVE_OPERATION_STATES)
    if node_group is not None:
        ops = ops.filter(node_group=node_group)
    return ops.only("pk", "kind", "state", "name", "node_group").first()


def last_node_group_params(tenant: Tenant, cluster_name: str, group: str) -> dict[str, Any]:
    """What the last succeeded create or resize of this group asked for (min, instance type,
    disk, roles): the snapshot keeps only counts, so a resize prefills the rest from here."""
    op = (
        Operation.objects.filter(
            tenant=tenant,
            name=cluster_name,
            node_group=group,
            state=OperationState.SUCCEEDED,
            params__has_key="max_replicas",  # a create, resize or their retry
        )
        .only("params")
        .first()
    )
    return dict(op.params) if op else {}


def vm_image(tenant: Tenant, name: str) -> str:
    """The image the last succeeded create of this VM asked for ("" if the portal did not
    make it): it says which user to log in as."""
    op = (
        Operation.objects.filter(
            tenant=tenant, name=name, node_group="", state=OperationState.SUCCEEDED,
            params__has_key="image",
        )
        .only("params")
        .first()
    )  # fmt: skip
    return str(op.params.get("image", "")) if op else ""


def _in_flight() -> Q:
    """Active, or finished after its cluster's last sync (the snapshot does not show it yet)."""
    return (
        Q(state__in=ACTIVE_OPERATION_STATES)
        | Q(finished_at__gt=F("cluster__last_synced_at"))
        | Q(finished_at__isnull=False, cluster__last_synced_at__isnull=True)
    )


def operations_in_flight(user: User, tenant: Tenant) -> QuerySet[Operation]:
    """Active operations, and those finished after their cluster's last sync: the snapshot does
    not show their result yet, so the page shows the operation instead (DESIGN rule 8)."""
    return tenant_operations(user, tenant).filter(_in_flight())


def audit_events(user: User) -> QuerySet[AuditEvent]:
    """Every audit event, newest first: platform admins only (tenants see their operations)."""
    require_platform_admin(user)
    # The page links an event to its operation by id: the operation row is not read.
    return AuditEvent.objects.select_related("tenant").order_by("-created_at", "-pk")


# Pages are keyset ranges on (created_at, id), read from an index in that order: one query of
# PER_PAGE + 1 rows whatever the table's size (an OFFSET walks every newer row first).
PAGE_KEY = ("created_at", "id")
OPERATIONS_PER_PAGE = 50
AUDIT_PER_PAGE = 50
# Counted exactly up to this many; beyond, a page says "more than 1,000" (an exact COUNT(*)
# reads every matching row).
COUNT_CAP = 1000


def tenant_operations_page(user: User, tenant: Tenant, page: PageRequest) -> KeysetPage[Operation]:
    """One page of the tenant's operations, newest first (the (tenant, created_at, id) index)."""
    return keyset_page(
        tenant_operations(user, tenant), PAGE_KEY, page, OPERATIONS_PER_PAGE, descending=True
    )


def audit_page(events: QuerySet[AuditEvent], page: PageRequest) -> KeysetPage[AuditEvent]:
    """One page of (filtered) audit events, newest first."""
    return keyset_page(events, PAGE_KEY, page, AUDIT_PER_PAGE, descending=True)


def capped_count(qs: QuerySet[Any], cap: int = COUNT_CAP) -> tuple[int, bool]:
    """How many rows, counted up to ``cap`` (reads at most cap + 1 index entries), and whether
    there are more."""
    n = qs.order_by().values("pk")[: cap + 1].count()
    return min(n, cap), n > cap
