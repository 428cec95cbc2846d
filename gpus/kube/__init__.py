"""Cluster boundary: the only package of the portal that imports the ``kubernetes`` client.

Plain Python (no Django): callers pass plain values and get plain dataclasses/dicts.
"""

from .client import ClusterConfig, Session, TokenBucket, api_client, call
from .discovery import ClusterFlavour, discover
from .errors import (
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
from .gateway import ClusterGateway, conditions_summary, with_retries

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
