"""Discovery documents and OpenAPI v3: enough for kubectl's RESTMapper and `apply` validation.

kubectl 1.37 validates with server-side field validation when the group-version's OpenAPI v3
document has a PATCH operation for the kind (x-kubernetes-group-version-kind) taking the
`fieldValidation` query parameter; we serve exactly that, with the chart schema as the `spec`
schema.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .resources import Resource
from .schemas import load_schema

SERVER_VERSION = {
    "major": "1",
    "minor": "33",
    "gitVersion": "v1.33.3",
    "gitCommit": "80779bd6ff08b451e1c165a338a7b69351e9b0b8",
    "gitTreeState": "clean",
    "buildDate": "2025-07-15T17:59:55Z",
    "goVersion": "go1.24.4",
    "compiler": "gc",
    "platform": "linux/amd64",
    "emulationMajor": "1",
    "emulationMinor": "33",
    "minCompatibilityMajor": "1",
    "minCompatibilityMinor": "32",
}


def api_versions(host: str) -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": host}],
    }


def groups(resources: list[Resource]) -> list[str]:
    seen: list[str] = []
    for r in resources:
        if r.group and r.group not in seen:
            seen.append(r.group)
    return seen


def _group(group: str, resources: list[Resource]) -> dict[str, Any]:
    version = next(r.version for r in resources if r.group == group)
    gv = {"groupVersion": f"{group}/{version}", "version": version}
    return {"name": group, "versions": [gv], "preferredVersion": gv}


def api_group_list(resources: list[Resource]) -> dict[str, Any]:
    return {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [_group(g, resources) for g in groups(resources)],
    }


def api_group(group: str, resources: list[Resource]) -> dict[str, Any]:
    return dict(_group(group, resources), kind="APIGroup", apiVersion="v1")


def resource_list(group_version: str, resources: list[Resource]) -> dict[str, Any]:
    out = []
    for r in resources:
        if r.api_version != group_version:
            continue
        entry: dict[str, Any] = {
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": list(r.verbs),
        }
        if r.short_names:
            entry["shortNames"] = list(r.short_names)
        if r.categories:
            entry["categories"] = list(r.categories)
        out.append(entry)
        if r.plural in ("pods", "nodes", "namespaces") or r.is_app:
            out.append(
                {
                    "name": f"{r.plural}/status",
                    "singularName": "",
                    "namespaced": r.namespaced,
                    "kind": r.kind,
                    "verbs": ["get"],
                }
            )
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": out,
    }


OBJECT_META = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "namespace": {"type": "string"},
        "generateName": {"type": "string"},
        "uid": {"type": "string"},
        "resourceVersion": {"type": "string"},
        "generation": {"type": "integer"},
        "creationTimestamp": {"type": "string", "format": "date-time"},
        "deletionTimestamp": {"type": "string", "format": "date-time"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        "finalizers": {"type": "array", "items": {"type": "string"}},
        "ownerReferences": {"type": "array", "items": {"type": "object"}},
        "managedFields": {"type": "array", "items": {"type": "object"}},
    },
}
META_REF = "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"


def _schema_name(r: Resource) -> str:
    if not r.group:
        return f"io.k8s.api.core.v1.{r.kind}"
    return f"{'.'.join(reversed(r.group.split('.')))}.{r.version}.{r.kind}"


def _kind_schema(r: Resource) -> dict[str, Any]:
    gvk = [{"group": r.group, "version": r.version, "kind": r.kind}]
    spec: dict[str, Any] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    if r.schema:
        spec = {k: v for k, v in load_schema(r.schema).items() if k != "title"}
        spec["description"] = f"{r.kind} spec: values of the Cozystack chart ({r.schema})"
    return {
        "type": "object",
        "description": f"{r.kind} ({r.api_version})",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"allOf": [{"$ref": META_REF}], "default": {}},
            "spec": spec,
            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            **{f: {"x-kubernetes-preserve-unknown-fields": True} for f in r.top_fields},
        },
        "x-kubernetes-group-version-kind": gvk,
    }


def _op(r: Resource, action: str, schema_ref: str, params: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "operationId": f"{action}{r.kind}",
        "parameters": params,
        "responses": {
            "200": {
                "description": "OK",
                "content": {"application/json": {"schema": {"$ref": schema_ref}}},
            }
        },
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": r.group, "version": r.version, "kind": r.kind},
    }


def _q(name: str, typ: str = "string") -> dict[str, Any]:
    return {"name": name, "in": "query", "schema": {"type": typ, "uniqueItems": True}}


def openapi_v3_doc(group_version: str, resources: list[Resource]) -> dict[str, Any]:
    schemas: dict[str, Any] = {"io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta": OBJECT_META}
    paths: dict[str, Any] = {}
    for r in resources:
        if r.api_version != group_version:
            continue
        name = _schema_name(r)
        schemas[name] = _kind_schema(r)
        ref = f"#/components/schemas/{name}"
        base = f"/api/{r.version}" if not r.group else f"/apis/{r.group}/{r.version}"
        coll = (
            f"{base}/namespaces/{{namespace}}/{r.plural}" if r.namespaced else f"{base}/{r.plural}"
        )
        path_params = [
            {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
        ]
        if r.namespaced:
            path_params.append(
                {"name": "namespace", "in": "path", "required": True, "schema": {"type": "string"}}
            )
        write = [_q("dryRun"), _q("fieldManager"), _q("fieldValidation")]
        item: dict[str, Any] = {"get": _op(r, "get", ref, []), "parameters": path_params}
        collection: dict[str, Any] = {
            "get": _op(
                r,
                "list",
                ref,
                [
                    _q("labelSelector"),
                    _q("fieldSelector"),
                    _q("limit", "integer"),
                    _q("continue"),
                    _q("watch", "boolean"),
                ],
            )
        }
        if r.namespaced:
            collection["parameters"] = path_params[1:]
        if "patch" in r.verbs:
            item["patch"] = _op(r, "patch", ref, [*write, _q("force", "boolean")])
        if "update" in r.verbs:
            item["put"] = _op(r, "replace", ref, write)
        if "delete" in r.verbs:
            item["delete"] = _op(r, "delete", ref, [_q("dryRun")])
        if "create" in r.verbs:
            collection["post"] = _op(r, "create", ref, write)
        paths[f"{coll}/{{name}}"] = item
        paths[coll] = collection
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": SERVER_VERSION["gitVersion"]},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def openapi_v3_root(resources: list[Resource], docs: dict[str, bytes]) -> dict[str, Any]:
    paths = {}
    for gv in docs:
        prefix = "api" if "/" not in gv else "apis"
        h = hashlib.sha512(docs[gv]).hexdigest()[:64].upper()
        paths[f"{prefix}/{gv}"] = {"serverRelativeURL": f"/openapi/v3/{prefix}/{gv}?hash={h}"}
    return {"paths": paths}


def build_docs(resources: list[Resource]) -> dict[str, bytes]:
    gvs: list[str] = []
    for r in resources:
        if r.api_version not in gvs:
            gvs.append(r.api_version)
    return {gv: json.dumps(openapi_v3_doc(gv, resources)).encode() for gv in gvs}
