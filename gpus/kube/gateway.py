"""ClusterGateway: the portal's verbs against one cluster, returning plain data.

Callers never receive kubernetes client models: lists of nodes/pods/events are read
raw (``_preload_content=False`` + ``json.loads``) because the strict pydantic models
of client v37 are slow on 12,500-node lists and reject incomplete objects; custom
objects come back as dicts already.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from gpus.kube import apps as manifests
from gpus.kube.client import USER_AGENT, ClusterConfig, PortalApiClient, Session
from gpus.kube.discovery import ClusterFlavour, discover
from gpus.kube.errors import (
    ConflictError,
    ExpiredError,
    ForbiddenError,
    KubeError,
    NotFoundError,
    TransientError,
)
from gpus.kube.records import (
    CATALOGUE_SOURCES,
    MONITORING_LABEL,
    CatalogueItem,
    Condition,
    FleetReading,
    GpuPod,
    KubernetesApp,
    KubevirtVm,
    NodeInfo,
    OddObject,
    VmApp,
    VmEndpoint,
    WorkloadMonitor,
    catalogue_item_from_json,
    conditions_of,
    gpu_quota_limits,
    kubeconfig_from_secret,
    kubernetes_app_from_json,
    kubevirt_vm_from_json,
    node_from_json,
    pod_from_json,
    pod_gpus,
    vm_app_from_json,
    vm_endpoint_from_json,
    workload_monitor_from_json,
)
from gpus.kube.records import opt_int as _opt_int
from gpus.kube.retry import Backoff

T = TypeVar("T")
log = logging.getLogger(__name__)

FIELD_MANAGER = "hikube-portal"
MERGE_PATCH = "application/merge-patch+json"
LAUNCHER_SELECTOR = "kubevirt.io=virt-launcher"


# --- plain results (the typed records live in records.py) ------------------------


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


def event_from_json(e: Mapping[str, Any], namespace: str = "") -> Event:
    involved = e.get("involvedObject") or {}
    return Event(
        namespace=str((e.get("metadata") or {}).get("namespace") or namespace),
        type=str(e.get("type", "")),
        reason=str(e.get("reason", "")),
        message=str(e.get("message", "")),
        object_kind=str(involved.get("kind", "")),
        object_name=str(involved.get("name", "")),
        # events.k8s.io writers (kube-scheduler) use series + eventTime, with count and
        # lastTimestamp empty.
        count=_opt_int((e.get("series") or {}).get("count")) or _opt_int(e.get("count")) or 1,
        last_timestamp=str(
            e.get("lastTimestamp")
            or (e.get("series") or {}).get("lastObservedTime")
            or e.get("eventTime")
            or ""
        ),
    )


SUMMARY_CONDITIONS = ("Ready", "Released", "WorkloadsReady")


def conditions_summary(obj: Mapping[str, Any] | None) -> dict[str, Condition]:
    """Ready / Released / WorkloadsReady of an app, those present only.

    Cozystack v1.1 (Hikube) reports only Ready and Released; v1.3+ adds WorkloadsReady.
    """
    all_conditions = conditions_of(obj)
    return {t: all_conditions[t] for t in SUMMARY_CONDITIONS if t in all_conditions}


def with_retries(
    fn: Callable[[], T],
    attempts: int = 5,
    base_delay: float = 0.5,
    max_delay: float = 30.0,
    sleep: Callable[[float], None] = time.sleep,
    jitter: Callable[[], float] = random.random,
) -> T:
    """Run ``fn``; on TransientError wait (the one retry policy, with jitter) and retry.

    For sync code paths only (pages of a list, management commands, discovery at startup);
    Celery tasks retry through Celery with the same policy.
    """
    backoff = Backoff(base_delay, max_delay)
    for attempt in range(attempts):
        try:
            return fn()
        except ExpiredError:
            raise  # the same continue token will never work again: the caller restarts
        except TransientError as exc:
            if attempt == attempts - 1:
                raise
            sleep(backoff.delay(attempt, exc.retry_after, jitter=0.5 + jitter() / 2))
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

    def _records(
        self,
        items: Iterable[Mapping[str, Any]],
        parse: Callable[[Mapping[str, Any]], T],
        kind: str,
        odd: list[OddObject] | None,
    ) -> Iterator[T]:
        """Parse each object; one that cannot be read goes to ``odd`` (or raises without it)."""
        for obj in items:
            try:
                yield parse(obj)
            except Exception as exc:
                if odd is None:
                    raise
                meta = obj.get("metadata") if isinstance(obj, Mapping) else None
                meta = meta if isinstance(meta, Mapping) else {}
                odd.append(
                    OddObject(
                        kind,
                        str(meta.get("namespace") or ""),
                        str(meta.get("name") or ""),
                        f"unreadable: {type(exc).__name__}: {exc}",
                    )
                )

    def iter_vm_apps(
        self, page_size: int = 500, namespace: str | None = None, odd: list[OddObject] | None = None
    ) -> Iterator[VmApp]:
        """GPU VMs and other VMs: ``VMInstance`` or the legacy ``VirtualMachine`` (discovered)."""
        flavour = self.flavour
        items = self.iter_apps(flavour.vm_plural, page_size=page_size, namespace=namespace)
        yield from self._records(
            items, lambda obj: vm_app_from_json(obj, flavour.vm_kind), flavour.vm_kind, odd
        )

    def iter_kubevirt_vms(
        self, page_size: int = 500, namespace: str | None = None, odd: list[OddObject] | None = None
    ) -> Iterator[KubevirtVm]:
        items = self.iter_apps(
            "virtualmachines",
            page_size=page_size,
            namespace=namespace,
            group="kubevirt.io",
            version="v1",
        )
        yield from self._records(items, kubevirt_vm_from_json, "kubevirt.io/VirtualMachine", odd)

    def iter_kubernetes_apps(
        self, page_size: int = 500, namespace: str | None = None, odd: list[OddObject] | None = None
    ) -> Iterator[KubernetesApp]:
        """Tenant Kubernetes clusters with all their node groups (GPU or not), v1.1's md0 too
        (its chart merges md0 into every cluster; the v1.4+ schema, diskSize, has no default
        group)."""
        items = self.iter_apps("kuberneteses", page_size=page_size, namespace=namespace)
        chart_md0 = self.flavour.node_group_disk_field == "ephemeralStorage"
        yield from self._records(
            items,
            functools.partial(kubernetes_app_from_json, chart_md0=chart_md0),
            "Kubernetes",
            odd,
        )

    def iter_workload_monitors(
        self,
        page_size: int = 500,
        namespace: str | None = None,
        label_selector: str | None = None,
        odd: list[OddObject] | None = None,
    ) -> Iterator[WorkloadMonitor]:
        items = self.iter_apps(
            "workloadmonitors",
            page_size=page_size,
            namespace=namespace,
            label_selector=label_selector,
            group="cozystack.io",
            version="v1alpha1",
        )
        yield from self._records(items, workload_monitor_from_json, "WorkloadMonitor", odd)

    def read_inventory(self, page_size: int = 500) -> FleetReading:
        """Everything the inventory sync stores, read cluster-wide with the admin credential."""
        flavour = self.discover()
        reading = FleetReading(vm_kind=flavour.vm_kind, disk_field=flavour.node_group_disk_field)
        odd = reading.odd
        nodes = self._paged(self.session.core().list_node, page_size)
        reading.nodes = list(self._records(nodes, node_from_json, "Node", odd))
        for ns in self._paged(self.session.core().list_namespace, page_size):
            meta = ns.get("metadata") or {}
            if (name := str(meta.get("name") or "")).startswith("tenant-"):
                labels = meta.get("labels") or {}
                reading.tenant_monitoring[name] = str(labels.get(MONITORING_LABEL) or "")
        reading.tenant_namespaces = sorted(reading.tenant_monitoring)
        quotas = self._paged(self.session.core().list_resource_quota_for_all_namespaces, page_size)
        for q in self._records(quotas, gpu_quota_limits, "ResourceQuota", odd):
            reading.quotas += [limit for limit in q if limit.namespace in reading.tenant_monitoring]
        # Only virt-launcher pods hold passthrough GPUs: the label keeps the list small.
        reading.pods = list(
            self.iter_gpu_pods(page_size=page_size, label_selector=LAUNCHER_SELECTOR)
        )
        reading.vms = list(self.iter_vm_apps(page_size=page_size, odd=odd))
        reading.kubevirt_vms = {
            (vm.namespace, vm.name): vm for vm in self.iter_kubevirt_vms(page_size, odd=odd)
        }
        reading.catalogue = self.read_catalogue(page_size)
        if flavour.serves("kuberneteses"):
            reading.kubernetes_apps = list(self.iter_kubernetes_apps(page_size, odd=odd))
            reading.monitors = {
                (m.namespace, m.name): m for m in self.iter_workload_monitors(page_size, odd=odd)
            }
        return reading

    def read_catalogue(self, page_size: int = 500) -> dict[str, list[CatalogueItem]]:
        """Instance types, preferences, golden images and storage classes; a kind the cluster
        does not serve or lets the portal read is left out (the sync keeps what it had)."""
        out: dict[str, list[CatalogueItem]] = {}
        for kind, group, version, plural, namespace in CATALOGUE_SOURCES:
            try:
                items = list(
                    self.iter_apps(
                        plural,
                        page_size=page_size,
                        namespace=namespace or None,
                        group=group,
                        version=version,
                    )
                )
            except (NotFoundError, ForbiddenError) as exc:
                log.warning("The cluster's %s cannot be read: %s", plural, exc)
                continue
            found = (catalogue_item_from_json(kind, obj) for obj in items)
            out[kind] = sorted((i for i in found if i is not None), key=lambda i: i.name)
        return out

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

    # -- connecting to what a tenant rents: read as the person, so the tenant's RBAC decides --

    def vm_endpoint(
        self,
        namespace: str,
        vm_kind: str,
        name: str,
        impersonate_user: str | None = None,
        impersonate_groups: Iterable[str] = (),
    ) -> VmEndpoint | None:
        """The VM's Service as its chart renders it (named as the release): its external
        addresses and ports; None if it does not exist (yet)."""
        release = manifests.release_name(vm_kind, name)
        try:
            svc = self.session.call_json(
                self.session.core().read_namespaced_service,
                release,
                namespace,
                impersonate_user=impersonate_user,
                impersonate_groups=impersonate_groups,
            )
        except NotFoundError:
            return None
        return vm_endpoint_from_json(svc or {})

    def admin_kubeconfig(
        self,
        namespace: str,
        cluster_name: str,
        impersonate_user: str | None = None,
        impersonate_groups: Iterable[str] = (),
    ) -> str | None:
        """A tenant cluster's admin kubeconfig (Secret ``kubernetes-<name>-admin-kubeconfig``,
        key ``super-admin.conf``); None while the cluster has not written it."""
        secret_name = manifests.release_name(manifests.KUBERNETES, cluster_name) + (
            "-admin-kubeconfig"
        )
        try:
            secret = self.session.call_json(
                self.session.core().read_namespaced_secret,
                secret_name,
                namespace,
                impersonate_user=impersonate_user,
                impersonate_groups=impersonate_groups,
            )
        except NotFoundError:
            return None
        return kubeconfig_from_secret(secret or {})

    def tenant_cluster_nodes(
        self,
        namespace: str,
        cluster_name: str,
        impersonate_user: str | None = None,
        impersonate_groups: Iterable[str] = (),
        timeout: float = 5.0,
    ) -> list[NodeInfo] | None:
        """The nodes of a tenant Kubernetes cluster, through its admin kubeconfig (the Secret
        ``kubernetes-<name>-admin-kubeconfig``, readable from the tenant's ``-use`` level up:
        v1.1 ``packages/apps/kubernetes/templates/dashboard-resourcemap.yaml``). None while the
        cluster has not written it. One list, within ``timeout`` seconds: a tenant's API that
        hangs must not hold the poll."""
        config_text = self.admin_kubeconfig(
            namespace, cluster_name, impersonate_user, impersonate_groups
        )
        if config_text is None:
            return None
        name = f"{self.config.name}/{namespace}/{cluster_name}"
        try:
            parsed = yaml.safe_load(config_text) or {}
            cfg = k8s.Configuration()
            k8s_config.load_kube_config_from_dict(
                parsed, client_configuration=cfg, persist_config=False
            )
        except Exception as exc:  # an unreadable kubeconfig is the cluster's, permanent
            raise KubeError(f"Cannot read the admin kubeconfig of {name}: {exc}") from exc
        cfg.retries = False
        client = PortalApiClient(cfg)
        client.user_agent = USER_AGENT
        session = Session(ClusterConfig(name=f"tenant:{name}", timeout=timeout), client=client)
        try:
            data = session.call_json(session.core().list_node) or {}
        finally:
            session.close()
        return [node_from_json(item) for item in data.get("items") or []]

    def list_workload_monitors(
        self, namespace: str, label_selector: str | None = None
    ) -> list[WorkloadMonitor]:
        return list(self.iter_workload_monitors(namespace=namespace, label_selector=label_selector))

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
        out = [event_from_json(e, namespace) for e in page.get("items") or []]
        out.sort(key=lambda ev: ev.last_timestamp)
        return out

    def iter_events(
        self, field_selector: str | None = None, page_size: int = 500
    ) -> Iterator[Event]:
        """Events in every namespace (admin), paged, in the server's order."""
        core = self.session.core()
        for item in self._paged(
            core.list_event_for_all_namespaces, page_size, field_selector=field_selector
        ):
            yield event_from_json(item)

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
