"""From a Cluster row to a client of that cluster (gpus.kube), with the settings' timeouts and
rate limit."""

from __future__ import annotations

from django.conf import settings

from gpus.inventory.models import (
    Cluster,
)
from gpus.kube.budget import BudgetedSession, RetryBudget
from gpus.kube.client import ClusterConfig, Session
from gpus.kube.gateway import ClusterGateway


def cluster_config(cluster: Cluster) -> ClusterConfig:
    return ClusterConfig(
        name=cluster.name,
        kubeconfig=cluster.kubeconfig or None,
        context=cluster.context or None,
        in_cluster=cluster.in_cluster,
        timeout=settings.CLUSTER_TIMEOUT_SECONDS,
        qps=settings.CLUSTER_QPS,
        burst=settings.CLUSTER_BURST,
        rate_limit_url=settings.CLUSTER_RATE_LIMIT_URL or None,
    )


def gateway_for(cluster: Cluster, budget: RetryBudget | None = None) -> ClusterGateway:
    config = cluster_config(cluster)
    session = Session(config)
    if budget is None:
        return ClusterGateway(config, session=session)
    return ClusterGateway(config, session=BudgetedSession(session, budget))  # type: ignore[arg-type]
