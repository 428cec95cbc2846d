"""Capacity listens to the inventory (a snapshot is stored) and to provisioning (a request was
refused for lack of capacity, an operation ended)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.dispatch import receiver

from gpus.capacity import history, services
from gpus.capacity.models import RefusedRequest
from gpus.inventory.signals import snapshot_stored
from gpus.provisioning.signals import capacity_refused, operation_ended


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
