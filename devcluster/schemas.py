"""Validation and server-side defaults from the real Cozystack chart schemas (devcluster/schemas/).

Defaults are applied the way apiextensions does (missing property with a default gets it, then
recurse), and errors come back as Kubernetes `details.causes` (reason, message, field).
"""

from __future__ import annotations

import copy
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
HELM_RELEASE_MAX = 53


@cache
def load_schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMA_DIR / name).read_text())


def apply_defaults(value: Any, schema: dict[str, Any]) -> Any:
    """Return `value` with schema defaults filled in (value is not modified)."""
    if isinstance(value, dict) and (
        schema.get("type") == "object" or "properties" in schema or "additionalProperties" in schema
    ):
        out = dict(value)
        props = schema.get("properties", {})
        for key, sub in props.items():
            if key not in out and "default" in sub:
                out[key] = copy.deepcopy(sub["default"])
            if key in out:
                out[key] = apply_defaults(out[key], sub)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in out:
                if key not in props:
                    out[key] = apply_defaults(out[key], extra)
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(v, schema["items"]) for v in value]
    return value


def _field(prefix: str, path: Any) -> str:
    out = prefix
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out


def _quote(v: Any) -> str:
    return json.dumps(v)


def _cause(err: jsonschema.ValidationError, prefix: str) -> dict[str, str]:
    v = err.validator
    field = _field(prefix, err.absolute_path)
    if v == "enum":
        allowed = ", ".join(_quote(x) for x in err.validator_value)
        return {
            "reason": "FieldValueNotSupported",
            "field": field,
            "message": f"Unsupported value: {_quote(err.instance)}: supported values: {allowed}",
        }
    if v == "required":
        missing = re.findall(r"'([^']+)' is a required property", err.message)
        name = missing[0] if missing else "?"
        return {
            "reason": "FieldValueRequired",
            "field": f"{field}.{name}",
            "message": "Required value",
        }
    if v in ("type", "anyOf"):
        want = err.validator_value if v == "type" else "integer or string"
        return {
            "reason": "FieldValueTypeInvalid",
            "field": field,
            "message": f"Invalid value: {_quote(type(err.instance).__name__)}: "
            f"{field} in body must be of type {want}: {_quote(err.instance)}",
        }
    if v == "pattern":
        return {
            "reason": "FieldValueInvalid",
            "field": field,
            "message": f"Invalid value: {_quote(err.instance)}: {field} in body should match "
            f"'{err.validator_value}'",
        }
    return {
        "reason": "FieldValueInvalid",
        "field": field,
        "message": f"Invalid value: {_quote(err.instance)}: {err.message}",
    }


def validate_spec(spec: Any, schema_name: str) -> list[dict[str, str]]:
    schema = load_schema(schema_name)
    if not isinstance(spec, dict):
        return [
            {
                "reason": "FieldValueTypeInvalid",
                "field": "spec",
                "message": f"Invalid value: {_quote(type(spec).__name__)}: "
                "spec in body must be of type object",
            }
        ]
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(
        validator.iter_errors(spec), key=lambda e: (list(map(str, e.absolute_path)), e.validator)
    )
    causes = []
    for err in errors:
        # anyOf(int|string) + pattern: report the pattern failure, not the anyOf wrapper twice.
        causes.append(_cause(err, "spec"))
    seen, out = set(), []
    for c in causes:
        k = (c["field"], c["message"])
        if k not in seen:
            seen.add(k)
            out.append(c)
    return out


def default_spec(spec: dict[str, Any], schema_name: str) -> dict[str, Any]:
    return apply_defaults(spec, load_schema(schema_name))


def chart_values(schema_name: str) -> dict[str, Any]:
    """The chart's values.yaml. Cozystack generates each app's values.schema.json from its
    values.yaml (cozyvalues-gen), so the schema's defaults applied to nothing give it back
    (checked equal for kubernetes, vm-instance and vm-disk at v1.1.0)."""
    return apply_defaults({}, load_schema(schema_name))


def coalesce(defaults: Any, values: Any) -> Any:
    """Helm's coalescing of the chart's values.yaml with the release's values (pkg/chartutil
    coalesce.go): maps merge key by key, anything else from `values` wins, null deletes."""
    if not isinstance(defaults, dict) or not isinstance(values, dict):
        return copy.deepcopy(values)
    out = copy.deepcopy(defaults)
    for key, value in values.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = coalesce(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def helm_values(spec: dict[str, Any], schema_name: str) -> dict[str, Any]:
    """What Helm renders and checks: values.yaml coalesced with the HelmRelease's values, which
    are the app's spec as sent (cozystack-api defaults on read only). A node group the user
    adds gets nothing from values.yaml (it only holds md0): its missing required keys stay
    missing."""
    return coalesce(chart_values(schema_name), spec)


def validate_name(name: str, prefix: str) -> list[dict[str, str]]:
    """cozystack-api's validateNameFormat / validateNameLength."""
    causes = []
    if not DNS1035.match(name or ""):
        causes.append(
            {
                "reason": "FieldValueInvalid",
                "field": "metadata.name",
                "message": f"Invalid value: {_quote(name)}: a DNS-1035 label must consist of lower "
                "case alphanumeric characters or '-', start with an alphabetic character, and end "
                "with an alphanumeric "
                "character (e.g. 'my-name',  or 'abc-123', regex used for validation is "
                "'[a-z]([-a-z0-9]*[a-z0-9])?')",
            }
        )
    limit = HELM_RELEASE_MAX - len(prefix)
    if len(name or "") > limit:
        causes.append(
            {
                "reason": "FieldValueTooLong",
                "field": "metadata.name",
                "message": f"Too long: may not be more than {limit} bytes",
            }
        )
    return causes


def describe(causes: list[dict[str, str]]) -> str:
    if len(causes) == 1:
        return f"{causes[0]['field']}: {causes[0]['message']}"
    return "[" + ", ".join(f"{c['field']}: {c['message']}" for c in causes) + "]"


def _pointer(path: Any) -> str:
    return "/" + "/".join(str(p) for p in path) if path else ""


def _helm_line(err: jsonschema.ValidationError) -> str:
    """One error as Helm 3.18+ prints it (santhosh-tekuri/jsonschema v6 `- at '/path': ...`)."""
    v, inst = err.validator, err.instance
    if v == "enum":
        want = ", ".join(
            f"'{x}'" if isinstance(x, str) else json.dumps(x) for x in err.validator_value
        )
        text = f"value must be one of {want}"
    elif v == "required":
        missing = re.findall(r"'([^']+)' is a required property", err.message)
        text = f"missing property '{missing[0] if missing else '?'}'"
    elif v == "type":
        got = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
        kind = got.get(type(inst), "number")
        text = f"got {kind}, want {err.validator_value}"
    elif v == "pattern":
        text = f"'{inst}' does not match pattern '{err.validator_value}'"
    elif v == "additionalProperties":
        extra = re.findall(r"'([^']+)'", err.message.split("(")[-1])
        text = "additional properties " + ", ".join(f"'{x}'" for x in extra) + " not allowed"
    elif v in ("minimum", "maximum"):
        text = f"{v}: got {inst}, want {err.validator_value}"
    else:
        text = err.message
    return f"- at '{_pointer(err.absolute_path)}': {text}"


def helm_schema_error(spec: Any, schema_name: str, chart: str) -> str | None:
    """Helm's values.schema.json check (pkg/chartutil/jsonschema.go), or None when it passes."""
    validator = jsonschema.Draft7Validator(load_schema(schema_name))
    errors = sorted(
        validator.iter_errors(spec), key=lambda e: (list(map(str, e.absolute_path)), e.validator)
    )
    if not errors:
        return None
    # santhosh-tekuri/jsonschema v6 reports one `required` error per object, naming every
    # missing key ("missing properties 'a', 'b'"); Python's jsonschema yields one per key.
    missing: dict[str, list[str]] = {}
    others = []
    for e in errors:
        if e.validator == "required":
            found = re.findall(r"'([^']+)' is a required property", e.message)
            missing.setdefault(_pointer(e.absolute_path), []).extend(found)
        else:
            others.append(_helm_line(e))
    for at, keys in missing.items():
        keys = list(dict.fromkeys(keys))
        word = "property" if len(keys) == 1 else "properties"
        others.append(f"- at '{at}': missing {word} " + ", ".join(f"'{k}'" for k in keys))
    lines = "\n".join(dict.fromkeys(sorted(others)))
    return (
        "values don't meet the specifications of the schema(s) in the following chart(s):\n"
        f"{chart}:\n{lines}"
    )
