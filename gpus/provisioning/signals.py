"""What provisioning tells apps above it (capacity: demand, notifications), without importing
them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.dispatch import Signal

# A request refused at submit for lack of capacity (no operation is saved): ``tenant_id``,
# ``cluster_id``, ``gpu_model_id``, ``gpus``, ``actor_name``, ``user_id``. Sent after the
# refusing transaction rolled back, so a receiver's rows are kept.
capacity_refused = Signal()

# An operation reached succeeded or failed: ``operation_id``. Sent once the change commits.
operation_ended = Signal()


@dataclass(frozen=True)
class Sizing:
    """What a VM or node-group form asks for, per instance (a VM is one instance)."""

    gpu_model: Any  # catalog GpuModel
    gpus_per_instance: int
    instance_type: str
    disk_gib: int
    instances: int  # a node group's minimum workers; 1 for a VM
    max_instances: int | None = None  # a node group's maximum; None for a VM
    surge_instances: int = 0  # new workers beside the old during a roll
    rolling_from: Sizing | None = None  # during a roll: the old workers, until they go


# The VM and node-group forms' live checks, before anything is sent: ``tenant``, ``sizing``.
# Each receiver returns HTML shown with the checks, or "" (capacity: the cost estimate).
form_checked = Signal()


def checked_extras(sender: Any, tenant: Any, sizing: Sizing) -> list[Any]:
    return [
        html for _receiver, html in form_checked.send(sender, tenant=tenant, sizing=sizing) if html
    ]
