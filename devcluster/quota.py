"""ResourceQuota as kube-apiserver and kube-controller-manager keep it, cut to what pods use.

Sources (kubernetes/kubernetes):

* ``plugin/pkg/admission/resourcequota/controller.go`` ``checkRequest``: a pod whose requests
  would take a tracked resource past ``hard`` is refused with
  ``exceeded quota: <name>, requested: <r>, used: <u>, limited: <h>`` (each a sorted
  ``key=value`` list, ``prettyPrint``), as ``admission.NewForbidden``: a 403 ``Forbidden``
  ``pods "<name>" is forbidden: ...``;
* ``pkg/quota/v1/evaluator/core/pods.go``: the pod evaluator tracks ``pods``, ``requests.*``
  for compute resources and, for extended resources, **only the ``requests.`` form**
  (``isExtendedResourceNameForQuota``: "As overcommit is not supported by extended resources
  for now, only quota objects in format of "requests.resourceName" is allowed"). A hard limit
  on ``nvidia.com/X`` or ``limits.nvidia.com/X`` is accepted by validation and never enforced;
  pods in a terminal phase count nothing (``QuotaV1Pod``);
* ``pkg/controller/resourcequota/resource_quota_controller.go`` ``syncResourceQuota``:
  ``status.hard`` = ``spec.hard``; ``status.used`` only for the resources an evaluator tracks.

devcluster tracks ``pods`` and ``requests.<extended resource>`` (CPU and memory are not
scheduled here, so quotas on them are accepted and not enforced).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

QUANTITY = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|[KMGTPE]i?|[mun]|k)?$")
TERMINAL_PHASES = ("Succeeded", "Failed")
REQUESTS = "requests."


def is_extended(name: str) -> bool:
    """Not a native resource: has a domain that is not ``kubernetes.io`` (``nvidia.com/X``)."""
    if "/" not in name:
        return False
    domain = name.split("/", 1)[0]
    return not (domain == "kubernetes.io" or domain.endswith(".kubernetes.io"))


def tracked(name: str) -> bool:
    """What the pod evaluator counts among devcluster's resources."""
    if name == "pods":
        return True
    return name.startswith(REQUESTS) and is_extended(name[len(REQUESTS) :])


def count(value: Any) -> int:
    """A whole-number quantity ("2", "2000m" -> 2); devices only come in whole numbers."""
    text = str(value).strip()
    if text.endswith("m"):
        return int(float(text[:-1]) / 1000)
    try:
        return int(float(text))
    except ValueError:
        return 0


def validate_hard(hard: Any) -> list[dict[str, str]]:
    """``ValidateResourceQuotaSpec``: every value a quantity, every name qualified."""
    if hard is None:
        return []
    if not isinstance(hard, Mapping):
        return [
            {
                "reason": "FieldValueInvalid",
                "field": "spec.hard",
                "message": "Invalid value: must be a map of resource names to quantities",
            }
        ]
    causes = []
    for name, value in hard.items():
        if not QUANTITY.match(str(value)):
            causes.append(
                {
                    "reason": "FieldValueInvalid",
                    "field": f"spec.hard[{name}]",
                    "message": f'Invalid value: "{value}": quantities must match the regular '
                    "expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
                }
            )
    return causes


def pod_usage(pod: Mapping[str, Any]) -> dict[str, int]:
    """What one pod counts against quotas: 1 pod and its extended resources' requests."""
    if (pod.get("status") or {}).get("phase") in TERMINAL_PHASES:
        return {}
    usage = {"pods": 1}
    for c in (pod.get("spec") or {}).get("containers") or []:
        for k, v in ((c.get("resources") or {}).get("requests") or {}).items():
            if is_extended(k):
                usage[REQUESTS + k] = usage.get(REQUESTS + k, 0) + count(v)
    return usage


def usage(pods: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for pod in pods:
        for k, v in pod_usage(pod).items():
            total[k] = total.get(k, 0) + v
    return total


def status(quota: Mapping[str, Any], used: Mapping[str, int]) -> dict[str, Any]:
    """The controller's status: hard = spec.hard, used for the tracked names only."""
    hard = dict(((quota.get("spec") or {}).get("hard")) or {})
    return {
        "hard": hard,
        "used": {k: str(used.get(k, 0)) for k in sorted(hard) if tracked(k)},
    }


def pretty(values: Mapping[str, int]) -> str:
    """``prettyPrint``: sorted ``key=value`` pairs joined by commas."""
    return ",".join(f"{k}={values[k]}" for k in sorted(values))


def denial(
    quotas: Iterable[Mapping[str, Any]], used: Mapping[str, int], pod: Mapping[str, Any]
) -> str:
    """The admission error for creating ``pod`` in a namespace with these quotas ("" if it is
    admitted): the first quota it would exceed, in the apiserver's words."""
    delta = pod_usage(pod)
    for q in quotas:
        hard = {k: count(v) for k, v in ((q.get("spec") or {}).get("hard") or {}).items()}
        requested = {k: v for k, v in delta.items() if k in hard and tracked(k) and v}
        exceeded = sorted(k for k, v in requested.items() if used.get(k, 0) + v > hard[k])
        if exceeded:
            name = q["metadata"]["name"]
            return (
                f'pods "{pod["metadata"]["name"]}" is forbidden: exceeded quota: {name}, '
                f"requested: {pretty({k: requested[k] for k in exceeded})}, "
                f"used: {pretty({k: used.get(k, 0) for k in exceeded})}, "
                f"limited: {pretty({k: hard[k] for k in exceeded})}"
            )
    return ""
