"""Cluster boundary: the only package of the portal that imports the ``kubernetes`` client.

Plain Python (no Django): callers pass plain values and get plain dataclasses/dicts.
``records`` holds the typed records the gateway returns (nodes, GPU pods, VM apps, KubeVirt VMs,
Kubernetes apps with all their node groups, WorkloadMonitors); ``states`` maps them to the
portal's workload state; ``budget`` bounds the retries of a whole job; ``ratelimit`` paces every
call to a cluster, shared by all worker processes through Redis. ruff's banned-api rule
(pyproject.toml) keeps ``kubernetes`` imports inside this package.
"""

from gpus.kube.client import ClusterConfig, Session, TokenBucket, api_client, call
from gpus.kube.discovery import ClusterFlavour, discover
from gpus.kube.errors import (
    ConflictError,
    ExpiredError,
    ForbiddenError,
    InvalidError,
    KubeError,
    NotFoundError,
    TransientError,
    UnauthorizedError,
    translate,
)
from gpus.kube.gateway import ClusterGateway, conditions_summary, with_retries

__all__ = [
    "ClusterConfig",
    "ClusterFlavour",
    "ClusterGateway",
    "ConflictError",
    "ExpiredError",
    "ForbiddenError",
    "InvalidError",
    "KubeError",
    "NotFoundError",
    "Session",
    "TokenBucket",
    "TransientError",
    "UnauthorizedError",
    "api_client",
    "call",
    "conditions_summary",
    "discover",
    "translate",
    "with_retries",
]
