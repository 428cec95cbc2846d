"""Connecting to what a tenant rents: a VM's addresses and SSH command, a Kubernetes cluster's
admin kubeconfig.

No request calls the cluster (DESIGN rule 1), and the portal's own account reads no Secret: a page
asks for a read, a task makes it impersonating the person (so the tenant's own RBAC decides, as
for writes), and the answer waits a short while in the cache, never in the database (a kubeconfig
is a credential). A kubeconfig is handed over once, then forgotten.
"""

from __future__ import annotations

import logging
from typing import Any

from django.contrib.auth import get_user_model
from django.core.cache import cache

from gpus.accounts.selectors import cluster_groups, cluster_user
from gpus.inventory.choices import WorkloadKind
from gpus.inventory.clusters import gateway_for
from gpus.inventory.models import GpuWorkload
from gpus.kube.errors import ForbiddenError, KubeError
from gpus.web import queue

log = logging.getLogger(__name__)

# A VM's addresses change rarely; a kubeconfig is kept only until it is downloaded.
ANSWER_SECONDS = {"vm": 60, "kubeconfig": 120}
PENDING_SECONDS = 30  # one read in flight per person and object; asked again after this
TASK = "provisioning.read_connection"


def what_for(workload: GpuWorkload) -> str:
    """What connecting means: a VM's endpoint, or the kubeconfig of a node group's cluster."""
    return "vm" if workload.kind == WorkloadKind.VM else "kubeconfig"


def _key(what: str, user_id: int, workload: GpuWorkload) -> str:
    # A kubeconfig is one per cluster: any of its node groups reads the same one.
    target = workload.pk if what == "vm" else f"{workload.cluster_id}/{workload.name}"
    return f"connect:{what}:{user_id}:{workload.tenant_id}:{target}"


def answer(user: Any, workload: GpuWorkload) -> dict[str, Any] | None:
    """What the last read found (``state`` ready, missing, forbidden or error), a pending
    marker (``state`` pending) or None when nothing was asked."""
    return cache.get(_key(what_for(workload), user.pk, workload))


def ask(user: Any, workload: GpuWorkload, again: bool = False) -> dict[str, Any]:
    """Ask for a read unless one is in flight or fresh (``again`` drops a finished answer)."""
    what = what_for(workload)
    key = _key(what, user.pk, workload)
    found = cache.get(key)
    if found is not None and (found["state"] == "pending" or not again):
        return found
    pending = {"state": "pending"}
    cache.set(key, pending, PENDING_SECONDS)
    try:
        queue.enqueue(TASK, user.pk, workload.pk)
    except Exception:  # the broker is down: say so, keep nothing pending
        log.warning("Cannot enqueue %s for workload %s", TASK, workload.pk, exc_info=True)
        cache.delete(key)
        return {"state": "error", "message": "queue"}
    return pending


def take_kubeconfig(user: Any, workload: GpuWorkload) -> str | None:
    """The kubeconfig read for this person, handed over once."""
    key = _key("kubeconfig", user.pk, workload)
    found = cache.get(key)
    if not found or found.get("state") != "ready":
        return None
    cache.delete(key)
    return found["kubeconfig"]


def read(user_id: int, workload_id: int) -> str:
    """The task's body: read as the person, keep the answer briefly."""
    user = get_user_model().objects.filter(pk=user_id).first()
    workload = (
        GpuWorkload.objects.select_related("tenant", "cluster").filter(pk=workload_id).first()
    )
    if user is None or workload is None:
        return "gone"
    what = what_for(workload)
    who = {
        "impersonate_user": cluster_user(user),
        "impersonate_groups": cluster_groups(user, workload.tenant),
    }
    gateway = gateway_for(workload.cluster)
    namespace = workload.tenant.namespace
    result: dict[str, Any]
    try:
        if what == "vm":
            endpoint = gateway.vm_endpoint(namespace, workload.app_kind, workload.name, **who)
            result = (
                {"state": "missing"}
                if endpoint is None
                else {
                    "state": "ready",
                    "ips": list(endpoint.external_ips),
                    "ports": list(endpoint.ports),
                    "whole_ip": endpoint.whole_ip,
                    "dns": endpoint.dns_name,
                }
            )
        else:
            config = gateway.admin_kubeconfig(namespace, workload.name, **who)
            result = (
                {"state": "missing"} if config is None else {"state": "ready", "kubeconfig": config}
            )
    except ForbiddenError:
        result = {"state": "forbidden"}
    except KubeError as exc:
        result = {"state": "error", "message": str(exc)[:300]}
    finally:
        gateway.close()
    cache.set(_key(what, user.pk, workload), result, ANSWER_SECONDS[what])
    return result["state"]
