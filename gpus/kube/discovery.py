"""Discover which Cozystack API flavour a cluster serves (DESIGN rule 7).

- ``vminstances`` served in ``apps.cozystack.io/v1alpha1`` -> "current": a GPU VM is a
  VMDisk + VMInstance (Cozystack >= v1.0, Hikube v1.1.2).
- only ``virtualmachines`` -> "legacy": one VirtualMachine with a systemDisk.
- node-group disk field: ``ephemeralStorage`` (v1.1, Hikube) or ``diskSize`` (v1.4+),
  read from the served OpenAPI schema of the ``Kubernetes`` kind.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from gpus.kube import apps as manifests
from gpus.kube.client import Session
from gpus.kube.errors import KubeError, NotFoundError, TransientError

log = logging.getLogger(__name__)

DISK_FIELDS = ("ephemeralStorage", "diskSize")
DEFAULT_DISK_FIELD = "ephemeralStorage"


@dataclass(frozen=True)
class ClusterFlavour:
    vm_kind: str  # "VMInstance" or "VirtualMachine"
    node_group_disk_field: str  # "ephemeralStorage" or "diskSize"
    served_plurals: frozenset[str]

    @property
    def name(self) -> str:
        return "current" if self.vm_kind == manifests.VM_INSTANCE else "legacy"

    @property
    def vm_plural(self) -> str:
        return manifests.PLURALS[self.vm_kind]

    def serves(self, plural: str) -> bool:
        return plural in self.served_plurals


def served_plurals(
    session: Session, group: str = manifests.GROUP, version: str = manifests.VERSION
) -> frozenset[str]:
    data = session.request_json("GET", f"/apis/{group}/{version}")
    # Subresources ("vminstances/status") are not kinds.
    return frozenset(
        r["name"] for r in (data or {}).get("resources", []) if "/" not in r.get("name", "/")
    )


def _resolve(schema: Any, root: dict[str, Any], depth: int = 0) -> Any:
    """Follow a local ``$ref`` (v3 components or v2 definitions); allOf with one ref too."""
    if not isinstance(schema, dict) or depth > 20:
        return schema
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        node: Any = root
        for part in ref[2:].split("/"):
            node = node.get(part, {}) if isinstance(node, dict) else {}
        return _resolve(node, root, depth + 1)
    all_of = schema.get("allOf")
    if isinstance(all_of, list) and len(all_of) == 1 and "properties" not in schema:
        return _resolve(all_of[0], root, depth + 1)
    return schema


def _is_kubernetes_kind(key: str, schema: dict[str, Any]) -> bool:
    gvks = schema.get("x-kubernetes-group-version-kind") or []
    for gvk in [gvks] if isinstance(gvks, dict) else gvks:
        if not isinstance(gvk, dict):
            continue
        if gvk.get("group") == manifests.GROUP and gvk.get("kind") == manifests.KUBERNETES:
            return True
    # No GVK extension: trust the key's last segment; requiring spec.nodeGroups below
    # keeps an unrelated "Kubernetes" definition from matching.
    return key.split(".")[-1] == manifests.KUBERNETES


def disk_field_from_openapi(doc: dict[str, Any]) -> str | None:
    """Find ``nodeGroups.*`` properties of the Kubernetes kind in an OpenAPI v3 or v2 document."""
    schemas = (doc.get("components") or {}).get("schemas") or doc.get("definitions") or {}
    for key, schema in schemas.items():
        if not isinstance(schema, dict) or not _is_kubernetes_kind(key, schema):
            continue
        spec = _resolve((schema.get("properties") or {}).get("spec"), doc)
        spec_props = (spec.get("properties") or {}) if isinstance(spec, dict) else {}
        groups = _resolve(spec_props.get("nodeGroups"), doc)
        group = (
            _resolve(groups.get("additionalProperties"), doc) if isinstance(groups, dict) else None
        )
        props = (group.get("properties") or {}) if isinstance(group, dict) else {}
        for field in ("diskSize", "ephemeralStorage"):
            if field in props:
                return field
    return None


def node_group_disk_field(session: Session) -> str:
    """Read the disk field from the served OpenAPI (v3, then v2); default ephemeralStorage."""
    attempts = (
        f"/openapi/v3/apis/{manifests.GROUP}/{manifests.VERSION}",
        "/openapi/v2",
    )
    for path in attempts:
        try:
            doc = session.request_json("GET", path)
        except TransientError:
            raise  # a busy cluster must not be mistaken for an old one; let the caller retry
        except KubeError as exc:
            log.info("OpenAPI %s unreadable on %s: %s", path, session.config.name, exc)
            continue
        field = disk_field_from_openapi(doc or {}) if isinstance(doc, dict) else None
        if field:
            return field
    return DEFAULT_DISK_FIELD


def discover(session: Session) -> ClusterFlavour:
    """Ask the cluster what it serves. Raises KubeError if it serves no Cozystack apps."""
    try:
        plurals = served_plurals(session)
    except NotFoundError as exc:
        raise KubeError(
            f"Cluster {session.config.name} does not serve {manifests.GROUP}/{manifests.VERSION}: "
            "is it a Cozystack management cluster?",
            404,
            "NotFound",
        ) from exc
    if "vminstances" in plurals:
        vm_kind = manifests.VM_INSTANCE
    elif "virtualmachines" in plurals:
        vm_kind = manifests.VIRTUAL_MACHINE
    else:
        raise KubeError(
            f"Cluster {session.config.name} serves neither vminstances nor virtualmachines "
            f"in {manifests.GROUP}/{manifests.VERSION}."
        )
    return ClusterFlavour(vm_kind, node_group_disk_field(session), plurals)
