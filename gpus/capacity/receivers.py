"""Capacity listens to the inventory (a snapshot is stored) and to provisioning (a request was
refused for lack of capacity, an operation ended, a form is being checked: its cost)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from django.dispatch import receiver
from django.template.loader import render_to_string

from gpus.capacity import history, pricing, services
from gpus.capacity.models import RefusedRequest
from gpus.inventory.signals import snapshot_stored
from gpus.provisioning.signals import Sizing, capacity_refused, form_checked, operation_ended


@receiver(snapshot_stored, dispatch_uid="capacity.after_sync")
def after_sync(sender: Any, cluster_id: int, at: dt.datetime, **kwargs: Any) -> None:
    history.record_samples(cluster_id, at)
    services.fire_waitlist()


@receiver(capacity_refused, dispatch_uid="capacity.refused")
def refused(sender: Any, **kw: Any) -> None:
    RefusedRequest.objects.create(
        cluster_id=kw["cluster_id"],
        tenant_id=kw["tenant_id"],
        gpu_model_id=kw["gpu_model_id"],
        gpus=kw["gpus"],
        actor_name=kw["actor_name"][:150],
    )


@receiver(operation_ended, dispatch_uid="capacity.operation_ended")
def ended(sender: Any, operation_id: int, **kwargs: Any) -> None:
    services.notify_operation_end(operation_id)


@receiver(form_checked, dispatch_uid="capacity.estimate")
def estimate(sender: Any, tenant: Any, sizing: Sizing, **kwargs: Any) -> str:
    """The cost of what a VM or node-group form asks for, at the list in force now."""
    rates = pricing.rates_at()
    if sizing.max_instances is None:
        found = pricing.vm_estimate(
            sizing.gpu_model, sizing.gpus_per_instance, sizing.instance_type, sizing.disk_gib, rates
        )
    else:
        old = sizing.rolling_from
        was = Decimal(0)
        if old is not None and rates is not None:
            was = pricing.worker_hour(
                old.gpu_model, old.gpus_per_instance, old.instance_type, old.disk_gib, rates
            )
        found = pricing.node_group_estimate(
            sizing.gpu_model,
            sizing.gpus_per_instance,
            sizing.instance_type,
            sizing.disk_gib,
            sizing.instances,
            sizing.max_instances,
            rates,
            surge_workers=sizing.surge_instances,
            old_workers=old.instances if old is not None else 0,
            old_worker_hour=was,
        )
    context: dict[str, Any] = {"estimate": found}
    if found is not None:
        context.update(
            hour=found.text(found.hour),
            month=found.text(found.month),
            max_hour=found.text(found.max_hour),
            max_month=found.text(found.max_month),
            surge_hour=found.text(found.surge_hour),
        )
    return render_to_string("capacity/_estimate.html", context)
