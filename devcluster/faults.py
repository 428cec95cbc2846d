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
    def __init__(self, seed: int = 1, config: dict[str, Any] | None = None) -> None:
        self.lock = threading.Lock()
        self.rng = random.Random(seed)  # noqa: S311 - reproducible fault draws, not secrets
        self.rules: list[dict[str, Any]] = []
        self.injected = 0
        if config:
            self.set(config)

    def set(self, config: dict[str, Any] | list[Any]) -> None:
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

    def describe(self) -> dict[str, Any]:
        with self.lock:
            return {"rules": [dict(r) for r in self.rules], "injected": self.injected}

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
