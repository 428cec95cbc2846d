"""What the inventory tells apps above it, without importing them (the layers run one way)."""

from __future__ import annotations

from django.dispatch import Signal

# Sent once a sync's snapshot is committed, with ``cluster_id`` and ``at`` (the snapshot's
# time); not sent when a newer sync won and nothing was stored. Receivers run outside the
# snapshot's transaction and their failures never fail the sync (``send_robust``).
snapshot_stored = Signal()
