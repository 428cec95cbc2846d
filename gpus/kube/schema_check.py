"""Check a spec against the schema the cluster serves (OpenAPI v3), before sending it.

Cozystack v1.1 accepts any spec with a 201 and lets Helm fail later (``InstallFailed``); checking
here against the served chart schema makes that rare. Pure functions plus one reader.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonschema

from gpus.kube import apps as manifests
from gpus.kube.client import Session
from gpus.kube.errors import Cause


def spec_schemas_from_openapi(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{kind: spec schema} for the apps.cozystack.io kinds in an OpenAPI v3 document."""
    out: dict[str, dict[str, Any]] = {}
    schemas = (doc.get("components") or {}).get("schemas") or {}
    for schema in schemas.values():
        if not isinstance(schema, dict):
            continue
        gvks = schema.get("x-kubernetes-group-version-kind") or []
        for gvk in [gvks] if isinstance(gvks, dict) else gvks:
            if isinstance(gvk, dict) and gvk.get("group") == manifests.GROUP:
                spec = (schema.get("properties") or {}).get("spec")
                if isinstance(spec, dict):
                    out[str(gvk.get("kind"))] = spec
    return out


def read_spec_schemas(session: Session) -> dict[str, dict[str, Any]]:
    doc = session.request_json("GET", f"/openapi/v3/apis/{manifests.GROUP}/{manifests.VERSION}")
    return spec_schemas_from_openapi(doc or {})


def with_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Fill schema defaults as Helm's values.yaml does before the chart's schema check."""
    if not isinstance(value, dict) or schema.get("type") not in (None, "object"):
        return value
    out = copy.deepcopy(value)
    props = schema.get("properties") or {}
    for key, sub in props.items():
        if not isinstance(sub, dict):
            continue
        if key not in out and "default" in sub:
            out[key] = copy.deepcopy(sub["default"])
        if key in out:
            out[key] = with_defaults(sub, out[key])
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key in list(out):
            if key not in props:
                out[key] = with_defaults(extra, out[key])
    return out


def _clean(schema: Any) -> Any:
    # Kubernetes extensions are not JSON Schema; drop them so the validator ignores nothing odd.
    if isinstance(schema, dict):
        return {k: _clean(v) for k, v in schema.items() if not k.startswith("x-")}
    if isinstance(schema, list):
        return [_clean(v) for v in schema]
    return schema


def spec_causes(schema: dict[str, Any], spec: dict[str, Any]) -> list[Cause]:
    """Every schema violation of ``spec`` as a cause naming its field (``spec.gpus[0].name``)."""
    if not schema:
        return []
    cleaned = _clean(schema)
    validator = jsonschema.Draft7Validator(cleaned)
    out = []
    for error in sorted(validator.iter_errors(with_defaults(cleaned, spec)), key=str):
        path = "spec"
        for part in error.absolute_path:
            path += f"[{part}]" if isinstance(part, int) else f".{part}"
        out.append(Cause(field=path, message=error.message, reason="SchemaViolation"))
    return out
