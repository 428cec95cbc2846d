"""The OpenAPI spec schemas a cluster serves for its app kinds: read by a task, checked by forms
without calling the cluster."""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from gpus.inventory.clusters import gateway_for
from gpus.inventory.models import Cluster, ServedSchema
from gpus.kube.errors import (
    Cause,
)
from gpus.kube.schema_check import read_spec_schemas, spec_causes


def served_schema_causes(cluster: Cluster, docs: list[dict[str, Any]]) -> list[Cause]:
    """Check each manifest's spec against the schema the cluster serves (read by a task)."""
    schemas = dict(ServedSchema.objects.filter(cluster=cluster).values_list("app_kind", "schema"))
    causes: list[Cause] = []
    for doc in docs:
        causes += spec_causes(schemas.get(doc["kind"]) or {}, doc.get("spec") or {})
    return causes


def refresh_served_schemas(cluster_id: int) -> int:
    """Read the OpenAPI v3 spec schemas of the app kinds and keep them for the forms."""
    cluster = Cluster.objects.get(pk=cluster_id)
    gateway = gateway_for(cluster)
    try:
        schemas = read_spec_schemas(gateway.session)
    finally:
        gateway.close()
    now = timezone.now()
    for kind, schema in schemas.items():
        ServedSchema.objects.update_or_create(
            cluster=cluster, app_kind=kind, defaults={"schema": schema, "fetched_at": now}
        )
    return len(schemas)
