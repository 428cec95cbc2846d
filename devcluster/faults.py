"""Fault injection: per verb and resource, rates of 429/500/503, added latency, dropped connections.

Rules are checked in order; the first rule matching (verb, resource, namespace) applies. Draws come
from one RNG seeded with --seed, so a given request sequence gets the same faults every run.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from typing import Any

RULE_KEYS = {
    "verb",
    "resource",
    "namespace",
    "error_429",
    "error_500",
    "error_503",
    "latency_ms",
    "drop",
    "retry_after",
    "times",
}


# Timing knobs, in seconds at --speed 1 (divided by --speed when used, except continue_ttl, which
# races the client's real-time paging). Sources in devcluster/README.md.
DEFAULT_KNOBS: dict[str, Any] = {
    "cache_lag": 1.0,  # cozystack-api reads apps from the controller-runtime cache
    "continue_ttl": 300.0,  # wall seconds (not scaled): etcd compacts every 5 min
    "event_ttl": 3600.0,  # kube-apiserver --event-ttl=1h
    "stop_grace": 30.0,  # vm-instance chart: terminationGracePeriodSeconds: 30
    "uninstall": 3.0,  # helm uninstall after the release's resources are gone
    "scale_down_unneeded": 30.0,  # cluster-autoscaler --scale-down-unneeded-time=30s
    "helm_retry": 30.0,  # helm-controller retries a failed install/upgrade (Retries: -1)
    "gpu_ready": 180.0,  # tenant cluster: worker VM Running -> nvidia.com/gpu allocatable
    "import_fail": [],  # "ns/vmdisk-name" whose CDI import fails (DataVolumeError)
    "pending_demand": {},  # "ns/cluster/group" -> pods waiting for workers (autoscaler stand-in)
    # KubeVirt CR spec.configuration.permittedHostDevices.pciHostDevices[].resourceName; None =
    # every GPU model of the fleet (what Hikube's KubeVirt permits).
    "permitted_host_devices": None,
}
TIME_KNOBS = tuple(k for k, v in DEFAULT_KNOBS.items() if isinstance(v, float))


def check_knobs(knobs: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(knobs, dict):
        raise ValueError("faults: 'knobs' must be an object")
    unknown = set(knobs) - set(DEFAULT_KNOBS)
    if unknown:
        raise ValueError(
            f"faults: unknown knobs {sorted(unknown)} (allowed: {sorted(DEFAULT_KNOBS)})"
        )
    out: dict[str, Any] = {}
    for k, v in knobs.items():
        if k in TIME_KNOBS:
            if not isinstance(v, (int, float)) or v < 0:
                raise ValueError(f"faults: knob {k} must be a number of seconds >= 0")
            out[k] = float(v)
        elif k == "permitted_host_devices":
            if v is not None and (
                not isinstance(v, list) or not all(isinstance(x, str) for x in v)
            ):
                raise ValueError(
                    "faults: knob permitted_host_devices must be null or a list of resource names"
                )
            out[k] = None if v is None else list(v)
        elif k == "import_fail":
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise ValueError('faults: knob import_fail must be a list of "ns/name"')
            out[k] = list(v)
        else:
            if not isinstance(v, dict) or not all(
                isinstance(n, int) and n >= 0 for n in v.values()
            ):
                raise ValueError(
                    'faults: knob pending_demand must map "ns/cluster/group" to a count >= 0'
                )
            out[k] = dict(v)
    return out


@dataclass
class Decision:
    status: int = 0  # 0 = no error
    latency_ms: float = 0.0
    drop: bool = False
    retry_after: int = 1


def _as_set(v: Any) -> set[str] | None:
    if v is None or v == "*":
        return None
    if isinstance(v, str):
        return {v}
    return set(v)


class Faults:
    def __init__(
        self,
        seed: int = 1,
        config: dict[str, Any] | None = None,
        knobs: dict[str, Any] | None = None,
    ) -> None:
        self.lock = threading.Lock()
        self.rng = random.Random(seed)  # noqa: S311 - reproducible fault draws, not secrets
        self.rules: list[dict[str, Any]] = []
        self.injected = 0
        self.base_knobs = {**DEFAULT_KNOBS, **check_knobs(knobs or {})}
        self.knobs = dict(self.base_knobs)
        if config:
            self.set(config)

    def knob(self, name: str) -> Any:
        return self.knobs[name]

    def set(self, config: dict[str, Any] | list[Any]) -> None:
        """Replace the rules; `knobs` (if given) are merged over the current ones."""
        if isinstance(config, dict) and "knobs" in config:
            knobs = check_knobs(config["knobs"])
            with self.lock:
                self.knobs.update(knobs)
        rules = config.get("rules", []) if isinstance(config, dict) else config
        if not isinstance(rules, list):
            raise ValueError("faults: 'rules' must be a list")
        clean = []
        for r in rules:
            if not isinstance(r, dict):
                raise ValueError("faults: each rule must be an object")
            unknown = set(r) - RULE_KEYS
            if unknown:
                raise ValueError(
                    f"faults: unknown keys {sorted(unknown)} (allowed: {sorted(RULE_KEYS)})"
                )
            for k in ("error_429", "error_500", "error_503", "drop"):
                if not 0.0 <= float(r.get(k, 0)) <= 1.0:
                    raise ValueError(f"faults: {k} must be a rate between 0 and 1")
            clean.append(dict(r))
        with self.lock:
            self.rules = clean

    def clear(self) -> None:
        with self.lock:
            self.rules = []
            self.knobs = dict(self.base_knobs)

    def describe(self) -> dict[str, Any]:
        with self.lock:
            return {
                "rules": [dict(r) for r in self.rules],
                "injected": self.injected,
                "knobs": dict(self.knobs),
            }

    def decide(self, verb: str, resource: str, namespace: str | None) -> Decision | None:
        with self.lock:
            for rule in self.rules:
                verbs, resources, nss = (
                    _as_set(rule.get("verb")),
                    _as_set(rule.get("resource")),
                    _as_set(rule.get("namespace")),
                )
                if verbs is not None and verb not in verbs:
                    continue
                if resources is not None and resource not in resources:
                    continue
                if nss is not None and (namespace or "") not in nss:
                    continue
                if rule.get("times") is not None and int(rule["times"]) <= 0:
                    continue
                d = Decision(
                    latency_ms=float(rule.get("latency_ms", 0)),
                    retry_after=int(rule.get("retry_after", 1)),
                )
                x = self.rng.random()
                acc = 0.0
                for key, status in (("error_429", 429), ("error_500", 500), ("error_503", 503)):
                    acc += float(rule.get(key, 0))
                    if x < acc:
                        d.status = status
                        break
                if not d.status and self.rng.random() < float(rule.get("drop", 0)):
                    d.drop = True
                if d.status or d.drop:
                    self.injected += 1
                    if rule.get("times") is not None:
                        rule["times"] = int(rule["times"]) - 1
                return d
            return None
