"""ClusterGateway: the portal's verbs against one cluster, returning plain data.

Callers never receive kubernetes client models: lists of nodes/pods/events are read
raw (``_preload_content=False`` + ``json.loads``) because the strict pydantic models
of client v37 are slow on 12,500-node lists and reject incomplete objects; custom
objects come back as dicts already.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

from . import manifests
from .client import ClusterConfig, Session
from .discovery import ClusterFlavour, discover
from .errors import ConflictError, ExpiredError, NotFoundError, TransientError

T = TypeVar("T")

GPU_PREFIX = "nvidia.com/"
FIELD_MANAGER = "hikube-portal"
MERGE_PATCH = "application/merge-patch+json"


# --- plain results ----------------------------------------------------------------


@dataclass(frozen=True)
class NodeInfo:
    name: str
    labels: dict[str, str]
    allocatable: dict[str, str]
    capacity: dict[str, str]
    ready: bool
    unschedulable: bool
    taints: list[dict[str, str]]
    gpu_resources: dict[str, int]  # allocatable nvidia.com/* counts
    # status.conditions as plain dicts (type, status, reason, message), for the node page.
    conditions: tuple[dict[str, str], ...] = ()


@dataclass(frozen=True)
class GpuPod:
    namespace: str
    name: str
    node_name: str
    phase: str
    gpus: dict[str, int]
    labels: dict[str, str]
    owner_kind: str = ""
    owner_name: str = ""


@dataclass(frozen=True)
class Condition:
    type: str
    status: str  # "True" / "False" / "Unknown"
    reason: str = ""
    message: str = ""
    last_transition_time: str = ""

    @property
    def is_true(self) -> bool:
        return self.status == "True"


@dataclass(frozen=True)
class KubevirtVm:
    namespace: str
    name: str
    printable_status: str  # "" if not reported yet; map unknown values to "unknown" upstream
    ready: bool
    conditions: dict[str, Condition]


@dataclass(frozen=True)
class WorkloadMonitor:
    namespace: str
    name: str
    kind: str
    type: str
    min_replicas: int | None
    replicas: int | None
    operational: bool | None
    available_replicas: int | None
    observed_replicas: int | None


@dataclass(frozen=True)
class Event:
    namespace: str
    type: str
    reason: str
    message: str
    object_kind: str
    object_name: str
    count: int
    last_timestamp: str


# --- helpers ---------------------------------------------------------------------

_SUFFIXES = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
}


def parse_quantity(value: Any) -> Decimal:
    """Kubernetes quantity -> Decimal ("8", "500m", "16Gi", "1e3"); raises ValueError."""
    text = str(value).strip()
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if text.endswith(suffix) and text[: -len(suffix)]:
            number, mult = text[: -len(suffix)], Decimal(_SUFFIXES[suffix])
            break
    else:
        number, mult = text, Decimal(1)
    try:
        return Decimal(number) * mult
    except InvalidOperation as exc:
        raise ValueError(f"not a quantity: {value!r}") from exc


def _count(value: Any) -> int:
    try:
        return int(parse_quantity(value))
    except ValueError:
        return 0


def _gpu_counts(resources: Mapping[str, Any]) -> dict[str, int]:
    return {k: _count(v) for k, v in resources.items() if k.startswith(GPU_PREFIX)}


def node_from_json(item: Mapping[str, Any]) -> NodeInfo:
    meta = item.get("metadata") or {}
    spec = item.get("spec") or {}
    status = item.get("status") or {}
    allocatable = {k: str(v) for k, v in (status.get("allocatable") or {}).items()}
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    return NodeInfo(
        name=meta.get("name", ""),
        labels=dict(meta.get("labels") or {}),
        allocatable=allocatable,
        capacity={k: str(v) for k, v in (status.get("capacity") or {}).items()},
        ready=ready,
        unschedulable=bool(spec.get("unschedulable", False)),
        taints=[
            {"key": t.get("key", ""), "value": t.get("value", ""), "effect": t.get("effect", "")}
            for t in spec.get("taints") or []
        ],
        gpu_resources=_gpu_counts(allocatable),
        conditions=tuple(
            {k: str(c.get(k) or "") for k in ("type", "status", "reason", "message")}
            for c in status.get("conditions") or []
            if isinstance(c, dict)
        ),
    )


def pod_gpus(pod: Mapping[str, Any]) -> dict[str, int]:
    """GPUs a pod holds: sum over containers, or the largest init container (k8s rule)."""
    spec = pod.get("spec") or {}

    def of(container: Mapping[str, Any]) -> dict[str, int]:
        res = container.get("resources") or {}
        # Extended resources: requests default to limits and must equal them.
        merged = {**(res.get("limits") or {}), **(res.get("requests") or {})}
        return _gpu_counts(merged)

    total: dict[str, int] = {}
    for c in spec.get("containers") or []:
        for k, v in of(c).items():
            total[k] = total.get(k, 0) + v
    for c in spec.get("initContainers") or []:
        for k, v in of(c).items():
            total[k] = max(total.get(k, 0), v)
    return {k: v for k, v in total.items() if v > 0}


def pod_from_json(item: Mapping[str, Any], gpus: dict[str, int]) -> GpuPod:
    meta = item.get("metadata") or {}
    owners = meta.get("ownerReferences") or []
    owner = next((o for o in owners if o.get("controller")), owners[0] if owners else {})
    return GpuPod(
        namespace=meta.get("namespace", ""),
        name=meta.get("name", ""),
        node_name=(item.get("spec") or {}).get("nodeName") or "",
        phase=(item.get("status") or {}).get("phase") or "",
        gpus=gpus,
        labels=dict(meta.get("labels") or {}),
        owner_kind=owner.get("kind", ""),
        owner_name=owner.get("name", ""),
    )


SUMMARY_CONDITIONS = ("Ready", "Released", "WorkloadsReady")


def conditions_of(obj: Mapping[str, Any] | None) -> dict[str, Condition]:
    out = {}
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if isinstance(c, dict) and c.get("type"):
            out[c["type"]] = Condition(
                type=c["type"],
                status=str(c.get("status", "Unknown")),
                reason=str(c.get("reason", "") or ""),
                message=str(c.get("message", "") or ""),
                last_transition_time=str(c.get("lastTransitionTime", "") or ""),
            )
    return out


def conditions_summary(obj: Mapping[str, Any] | None) -> dict[str, Condition]:
    """Ready / Released / WorkloadsReady of an app, those present only.

    Cozystack v1.1 (Hikube) reports only Ready and Released; v1.3+ adds WorkloadsReady.
    """
    all_conditions = conditions_of(obj)
    return {t: all_conditions[t] for t in SUMMARY_CONDITIONS if t in all_conditions}


def _opt_int(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def with_retries(
    fn: Callable[[], T],
    attempts: int = 5,
    base_delay: float = 0.5,
    max_delay: float = 30.0,
    sleep: Callable[[float], None] = time.sleep,
    jitter: Callable[[], float] = random.random,
) -> T:
    """Run ``fn``; on TransientError wait (Retry-After if given, else exponential) and retry.

    For sync code paths only (management commands, discovery at startup); Celery tasks
    use their own retry with the same rule.
    """
    for attempt in range(attempts):
        try:
            return fn()
        except ExpiredError:
            raise  # the same continue token will never work again: the caller restarts
        except TransientError as exc:
            if attempt == attempts - 1:
                raise
            if exc.retry_after is not None:
                delay = min(max_delay, exc.retry_after)
            else:
                delay = min(max_delay, base_delay * 2**attempt) * (0.5 + jitter() / 2)
            sleep(delay)
    raise AssertionError("unreachable")


def _split_api_version(api_version: str) -> tuple[str, str]:
    group, _, version = api_version.rpartition("/")
    return group, version


# --- gateway ---------------------------------------------------------------------


class ClusterGateway:
    """Everything the portal does against one cluster. Thread-safe if the client is."""

    def __init__(
        self,
        config: ClusterConfig,
        flavour: ClusterFlavour | None = None,
        session: Session | None = None,
        page_attempts: int = 5,
    ) -> None:
        self.config = config
        self.session = session or Session(config)
        self._flavour = flavour
        self.page_attempts = page_attempts

    def close(self) -> None:
        self.session.close()

    @property
    def flavour(self) -> ClusterFlavour:
        if self._flavour is None:
            self._flavour = discover(self.session)
        return self._flavour

    def discover(self) -> ClusterFlavour:
        """Re-read the flavour from the cluster (e.g. after an upgrade)."""
        self._flavour = discover(self.session)
        return self._flavour

    # -- inventory (admin credential) --

    def _paged(
        self, fn: Callable[..., Any], page_size: int, restarts: int = 3, **kwargs: Any
    ) -> Iterator[dict[str, Any]]:
        """Every item of a list, page by page. A transient failure retries the same page (same
        continue token), so one 429 in a 12,500-node list does not restart the whole list.
        A 410 Expired token (etcd compacted the list's revision) restarts the list from the
        start, at most ``restarts`` times; items already yielded are not yielded again."""
        seen: set[str] = set()
        for restart in range(restarts + 1):
            token: str | None = None
            try:
                while True:
                    page = (
                        with_retries(
                            lambda token=token: self.session.call_json(
                                fn, limit=page_size, _continue=token, **kwargs
                            ),
                            attempts=self.page_attempts,
                        )
                        or {}
                    )
                    for item in page.get("items") or []:
                        md = item.get("metadata") or {}
                        key = md.get("uid") or f"{md.get('namespace')}/{md.get('name')}"
                        if key not in seen:
                            seen.add(key)
                            yield item
                    token = (page.get("metadata") or {}).get("continue") or None
                    if not token:
                        return
            except ExpiredError:
                if restart == restarts:
                    raise

    def iter_nodes(
        self, page_size: int = 500, label_selector: str | None = None
    ) -> Iterator[NodeInfo]:
        core = self.session.core()
        for item in self._paged(core.list_node, page_size, label_selector=label_selector):
            yield node_from_json(item)

    def iter_gpu_pods(
        self,
        page_size: int = 500,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> Iterator[GpuPod]:
        """Pods in all namespaces whose containers request ``nvidia.com/*``."""
        core = self.session.core()
        for item in self._paged(
            core.list_pod_for_all_namespaces,
            page_size,
            label_selector=label_selector,
            field_selector=field_selector,
        ):
            gpus = pod_gpus(item)
            if gpus:
                yield pod_from_json(item, gpus)

    def iter_apps(
        self,
        kind_plural: str,
        page_size: int = 500,
        namespace: str | None = None,
        label_selector: str | None = None,
        group: str = manifests.GROUP,
        version: str = manifests.VERSION,
    ) -> Iterator[dict[str, Any]]:
        """Custom objects of one kind, cluster-wide (admin) or in one namespace (tenant)."""
        custom = self.session.custom()
        if namespace:
            yield from self._paged(
                custom.list_namespaced_custom_object,
                page_size,
                group=group,
                version=version,
                namespace=namespace,
                plural=kind_plural,
                label_selector=label_selector,
            )
        else:
            yield from self._paged(
                custom.list_cluster_custom_object,
                page_size,
                group=group,
                version=version,
                plural=kind_plural,
                label_selector=label_selector,
            )

    # -- reads --

    def get(
        self,
        kind_plural: str,
        namespace: str,
        name: str,
        group: str = manifests.GROUP,
        version: str = manifests.VERSION,
        impersonate_user: str | None = None,
        impersonate_groups: Iterable[str] = (),
    ) -> dict[str, Any] | None:
        try:
            return self.session.call(
                self.session.custom().get_namespaced_custom_object,
                group=group,
                version=version,
                namespace=namespace,
                plural=kind_plural,
                name=name,
                impersonate_user=impersonate_user,
                impersonate_groups=impersonate_groups,
            )
        except NotFoundError:
            return None

    def read_kubevirt_vm(self, namespace: str, name: str) -> KubevirtVm | None:
        """KubeVirt VM (``vm-instance-<name>`` for a VMInstance); None if it does not exist yet."""
        obj = self.get("virtualmachines", namespace, name, group="kubevirt.io", version="v1")
        if obj is None:
            return None
        conditions = conditions_of(obj)
        status = obj.get("status") or {}
        return KubevirtVm(
            namespace=namespace,
            name=name,
            printable_status=str(status.get("printableStatus") or ""),
            ready=bool(status.get("ready"))
            or (conditions.get("Ready") or Condition("Ready", "")).is_true,
            conditions=conditions,
        )

    def list_workload_monitors(
        self, namespace: str, label_selector: str | None = None
    ) -> list[WorkloadMonitor]:
        out = []
        for obj in self.iter_apps(
            "workloadmonitors",
            namespace=namespace,
            label_selector=label_selector,
            group="cozystack.io",
            version="v1alpha1",
        ):
            meta, spec, status = (
                obj.get("metadata") or {},
                obj.get("spec") or {},
                obj.get("status") or {},
            )
            operational = status.get("operational")
            out.append(
                WorkloadMonitor(
                    namespace=meta.get("namespace", namespace),
                    name=meta.get("name", ""),
                    kind=str(spec.get("kind", "")),
                    type=str(spec.get("type", "")),
                    min_replicas=_opt_int(spec.get("minReplicas")),
                    replicas=_opt_int(spec.get("replicas")),
                    operational=operational if isinstance(operational, bool) else None,
                    available_replicas=_opt_int(status.get("availableReplicas")),
                    observed_replicas=_opt_int(status.get("observedReplicas")),
                )
            )
        return out

    def list_events(
        self, namespace: str, field_selector: str | None = None, limit: int = 500
    ) -> list[Event]:
        """Events in a namespace, e.g. ``involvedObject.name=virt-launcher-...``; newest last."""
        page = (
            self.session.call_json(
                self.session.core().list_namespaced_event,
                namespace,
                field_selector=field_selector,
                limit=limit,
            )
            or {}
        )
        out = []
        for e in page.get("items") or []:
            involved = e.get("involvedObject") or {}
            out.append(
                Event(
                    namespace=(e.get("metadata") or {}).get("namespace", namespace),
                    type=str(e.get("type", "")),
                    reason=str(e.get("reason", "")),
                    message=str(e.get("message", "")),
                    object_kind=str(involved.get("kind", "")),
                    object_name=str(involved.get("name", "")),
                    # events.k8s.io writers (kube-scheduler) use series + eventTime, with
                    # count and lastTimestamp empty.
                    count=_opt_int((e.get("series") or {}).get("count"))
                    or _opt_int(e.get("count"))
                    or 1,
                    last_timestamp=str(
                        e.get("lastTimestamp")
                        or (e.get("series") or {}).get("lastObservedTime")
                        or e.get("eventTime")
                        or ""
                    ),
                )
            )
        out.sort(key=lambda ev: ev.last_timestamp)
        return out

    # -- writes (optionally impersonating the tenant) --

    def apply(
        self,
        manifest: Mapping[str, Any],
        impersonate_user: str | None = None,
        impersonate_groups: Iterable[str] = (),
        plural: str | None = None,
    ) -> dict[str, Any]:
        """Read, then create or merge-patch labels/annotations/spec. Idempotent.

        Merge patch never removes spec keys absent from ``manifest``; to remove a node
        group use ``patch`` with ``manifests.node_group_merge_patch(group, None)``.
        On Cozystack v1.1 an AlreadyExists is a 500 (classified as ConflictError) and reads
        come from a cache: a 404 right after a create means "still pending", and the
        manifest is returned as sent.
        """
        group, version = _split_api_version(manifest["apiVersion"])
        plural = plural or manifests.plural_for(manifest)
        meta = manifest["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        custom = self.session.custom()
        who = {"impersonate_user": impersonate_user, "impersonate_groups": impersonate_groups}
        try:
            current = self.session.call(
                custom.get_namespaced_custom_object, group, version, namespace, plural, name,
                **who,
            )  # fmt: skip
        except NotFoundError:
            current = None
        if current is None:
            try:
                return self.session.call(
                    custom.create_namespaced_custom_object,
                    group=group,
                    version=version,
                    namespace=namespace,
                    plural=plural,
                    body=dict(manifest),
                    field_manager=FIELD_MANAGER,
                    **who,
                )
            except ConflictError as exc:
                if not exc.already_exists:
                    raise
                # It exists, but the cache the read went through has not seen it yet.
        body: dict[str, Any] = {"spec": manifest.get("spec", {})}
        extra_meta = {k: meta[k] for k in ("labels", "annotations") if meta.get(k)}
        if extra_meta:
            body["metadata"] = extra_meta
        try:
            return self.patch(plural, namespace, name, body, group=group, version=version, **who)
        except NotFoundError:
            if current is not None:
                raise  # it was there a moment ago: really deleted
            return dict(manifest)  # created a moment ago, not in the cache yet: still pending

    def patch(
        self,
        kind_plural: str,
        namespace: str,
        name: str,
        patch: Mapping[str, Any],
        group: str = manifests.GROUP,
        version: str = manifests.VERSION,
        impersonate_user: str | None = None,
        impersonate_groups: Iterable[str] = (),
    ) -> dict[str, Any]:
        """JSON merge patch (RFC 7386): maps merge, lists replace, null deletes."""
        return self.session.call(
            self.session.custom().patch_namespaced_custom_object,
            group=group,
            version=version,
            namespace=namespace,
            plural=kind_plural,
            name=name,
            body=dict(patch),
            field_manager=FIELD_MANAGER,
            _content_type=MERGE_PATCH,
            impersonate_user=impersonate_user,
            impersonate_groups=impersonate_groups,
        )

    def delete(
        self,
        kind_plural: str,
        namespace: str,
        name: str,
        group: str = manifests.GROUP,
        version: str = manifests.VERSION,
        impersonate_user: str | None = None,
        impersonate_groups: Iterable[str] = (),
    ) -> bool:
        """Delete; True if this call deleted it, False if it was already gone (404 = done)."""
        try:
            self.session.call(
                self.session.custom().delete_namespaced_custom_object,
                group=group,
                version=version,
                namespace=namespace,
                plural=kind_plural,
                name=name,
                impersonate_user=impersonate_user,
                impersonate_groups=impersonate_groups,
            )
        except NotFoundError:
            return False
        return True
