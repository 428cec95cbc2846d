"""Writes of the inventory: the default cluster's record, and asking for a sync now."""

from __future__ import annotations

from django.conf import settings

from gpus.inventory.models import Cluster
from gpus.web.queue import enqueue_on_commit


def register_default_cluster() -> Cluster:
    """The cluster named by the CLUSTER_* settings, created or updated."""
    cluster, _ = Cluster.objects.update_or_create(
        name=settings.CLUSTER_NAME,
        defaults={
            "kubeconfig": "" if settings.CLUSTER_IN_CLUSTER else settings.CLUSTER_KUBECONFIG,
            "context": settings.CLUSTER_CONTEXT,
            "in_cluster": settings.CLUSTER_IN_CLUSTER,
        },
    )
    return cluster


def request_inventory_sync(cluster: Cluster) -> None:
    """Queue a sync now (the button admins press); the task runs after the commit."""
    enqueue_on_commit("inventory.sync_inventory", cluster.pk)
