"""What /metrics reads from the database at scrape time: a few small grouped queries, each
answered from an index or a table with one row per cluster."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count, Max, Min

from gpus.inventory.models import Cluster, SyncIssue
from gpus.provisioning.choices import ACTIVE_OPERATION_STATES, OperationState
from gpus.provisioning.models import Operation
from gpus.utilization.models import Bucket, GroupRollup, MetricSource, Scope


@dataclass(frozen=True)
class ClusterFigures:
    name: str
    last_synced_at: datetime | None
    last_sync_seconds: float | None
    failing: bool
    consecutive_failures: int
    sync_issues: int
    collected_at: datetime | None
    collection_seconds: float | None
    collection_failing: bool
    rolled_up_to: datetime | None


def cluster_figures() -> list[ClusterFigures]:
    """One line per registered cluster: its sync, its telemetry collection and rollup."""
    issues = dict(
        SyncIssue.objects.values_list("cluster_id")
        .annotate(n=Count("id"))
        .values_list("cluster_id", "n")
    )
    sources = {s.cluster_id: s for s in MetricSource.objects.all()}
    out = []
    for cluster in Cluster.objects.order_by("name"):
        source = sources.get(cluster.pk)
        rolled = (
            GroupRollup.objects.filter(
                bucket=Bucket.FIVE_MINUTES, scope=Scope.CLUSTER, key=cluster.name
            )
            .aggregate(ts=Max("ts"))
            .get("ts")
        )
        out.append(
            ClusterFigures(
                name=cluster.name,
                last_synced_at=cluster.last_synced_at,
                last_sync_seconds=cluster.last_sync_seconds,
                failing=bool(cluster.last_error),
                consecutive_failures=cluster.consecutive_failures,
                sync_issues=issues.get(cluster.pk, 0),
                collected_at=source.last_collected_at if source else None,
                collection_seconds=source.last_seconds if source else None,
                collection_failing=bool(source and source.last_error),
                rolled_up_to=rolled,
            )
        )
    return out


def operations_by_state() -> dict[str, int]:
    """Every state (zero included, so a series never vanishes), from the state index."""
    counts = dict(
        Operation.objects.order_by()
        .values_list("state")
        .annotate(n=Count("id"))
        .values_list("state", "n")
    )
    return {state.value: counts.get(state.value, 0) for state in OperationState}


def oldest_active_operation() -> datetime | None:
    """When the oldest operation still in flight was submitted."""
    return (
        Operation.objects.filter(state__in=ACTIVE_OPERATION_STATES)
        .aggregate(at=Min("created_at"))
        .get("at")
    )
