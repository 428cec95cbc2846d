"""What provisioning tells apps above it (capacity: demand, notifications), without importing
them."""

from __future__ import annotations

from django.dispatch import Signal

# A request refused at submit for lack of capacity (no operation is saved): ``tenant_id``,
# ``cluster_id``, ``gpu_model_id``, ``gpus``, ``actor_name``, ``user_id``. Sent after the
# refusing transaction rolled back, so a receiver's rows are kept.
capacity_refused = Signal()

# An operation reached succeeded or failed: ``operation_id``. Sent once the change commits.
operation_ended = Signal()
