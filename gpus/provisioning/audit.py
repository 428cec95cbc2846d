"""The audit log: append-only, who asked for what, when, and what became of it."""

from __future__ import annotations

from gpus.provisioning.models import AuditEvent, Operation
from gpus.tenancy.models import Tenant


def audit(
    op: Operation | None, tenant: Tenant, actor: str, action: str, detail: dict | None = None
) -> None:
    target = ""
    if op is not None:
        target = f"{op.app_kind} {op.namespace}/{op.name}" + (
            f"/{op.node_group}" if op.node_group else ""
        )
    AuditEvent.objects.create(
        operation=op,
        tenant=tenant,
        actor_name=actor,
        action=action,
        target=target,
        detail=detail or {},
    )
