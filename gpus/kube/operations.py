"""Applying an operation's manifests and reading its progress, the way Cozystack v1.1 allows.

Plain Python (no Django). What the real cluster does (reference/devcluster-vs-cozystack.md):

- a duplicate create or a stale update comes back as a 500 wrapping "already exists" /
  "has been modified" (v1.1 loses the 409): ``as_conflict`` reads them as the 409 they are;
- reads lag writes: a GET right after a create may 404, so "absent after apply" is pending;
- no ``metadata.generation``: an update is done when the ``Released`` condition moves
  (its lastTransitionTime or message, i.e. the revision) or Ready transitions after the apply;
- spec errors surface later, as Helm ``InstallFailed`` / ``UpgradeFailed`` with the accepted 201.

Polling is batched (``observe``): a list per kind for the whole cluster, by the portal's label
or by the names of the operations in flight, never one GET per operation nor one list per
tenant namespace.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gpus.kube import apps as manifests
from gpus.kube.client import tenant_groups
from gpus.kube.errors import (
    Cause,
    ConflictError,
    ForbiddenError,
    KubeError,
    NotFoundError,
    TransientError,
)
from gpus.kube.gateway import ClusterGateway, Event
from gpus.kube.records import NodeInfo, conditions_of
from gpus.kube.states import launch_refusal, quota_refusal

_ALREADY_EXISTS = re.compile(r"already exists", re.I)
_MODIFIED = re.compile(r"has been modified|the object has been modified", re.I)


def as_conflict(exc: KubeError) -> KubeError:
    """A 500 that wraps AlreadyExists/Conflict (Cozystack v1.1) becomes the ConflictError it is."""
    if isinstance(exc, ConflictError) or exc.status != 500:
        return exc
    text = f"{exc.detail} {exc.message}"
    if _ALREADY_EXISTS.search(text):
        return ConflictError(exc.message, 409, "AlreadyExists", exc.detail)
    if _MODIFIED.search(text):
        return ConflictError(exc.message, 409, "Conflict", exc.detail)
    return exc


@dataclass(frozen=True)
class Identity:
    """Who the cluster sees acting: the portal user with the tenant's -admin group."""

    user: str | None = None
    groups: tuple[str, ...] = ()

    @classmethod
    def tenant_admin(cls, username: str, namespace: str) -> Identity:
        return cls(username, tuple(tenant_groups(namespace, "admin")))


def _meta(manifest: Mapping[str, Any]) -> tuple[str, str, str, str, str]:
    group, _, version = manifest["apiVersion"].rpartition("/")
    meta = manifest["metadata"]
    return group, version, manifests.plural_for(manifest), meta["namespace"], meta["name"]


@dataclass(frozen=True)
class Applied:
    obj: dict[str, Any]
    before: dict[str, Any] | None  # the object as read before this apply (None: created)
    wrote: bool


def apply_manifest(
    gateway: ClusterGateway,
    manifest: Mapping[str, Any],
    who: Identity = Identity(),
    must_exist: bool = False,
    create_only: bool = False,
) -> Applied:
    """Read, then create or merge-patch. Idempotent: running it twice changes nothing.

    ``create_only``: the object must not exist; if it does (or a create meets one made in
    between) raise ConflictError ``AlreadyExists`` and change nothing.
    Raises TransientError when the object is being deleted or a create raced a lagging read
    (the caller retries later), KubeError subclasses otherwise.
    """
    group, version, plural, namespace, name = _meta(manifest)
    kw = {"impersonate_user": who.user, "impersonate_groups": who.groups}
    for _attempt in range(3):
        current = gateway.get(plural, namespace, name, group=group, version=version, **kw)
        if current is not None and (current.get("metadata") or {}).get("deletionTimestamp"):
            raise TransientError(
                f"{manifest['kind']} {name} is still being deleted; it will be created once gone.",
                reason="Terminating",
            )
        if current is None and must_exist:
            raise NotFoundError(f"{manifest['kind']} {name} no longer exists.", 404, "NotFound")
        if current is not None and create_only:
            raise ConflictError(f"{manifest['kind']} {name} already exists.", 409, "AlreadyExists")
        if current is None:
            try:
                created = gateway.session.call(
                    gateway.session.custom().create_namespaced_custom_object,
                    group=group,
                    version=version,
                    namespace=namespace,
                    plural=plural,
                    body=dict(manifest),
                    field_manager="hikube-portal",
                    impersonate_user=who.user,
                    impersonate_groups=who.groups,
                )
            except KubeError as exc:
                err = as_conflict(exc)
                if isinstance(err, ConflictError) and not create_only:
                    continue  # it exists after all (our earlier attempt, or a lagging read)
                raise err from exc
            return Applied(created, None, True)
        body: dict[str, Any] = {"spec": manifest.get("spec", {})}
        extra = {
            k: manifest["metadata"][k]
            for k in ("labels", "annotations")
            if manifest["metadata"].get(k)
        }
        if extra:
            body["metadata"] = extra
        if _contains(current, body):
            return Applied(current, current, False)  # nothing to change: no write at all
        try:
            patched = gateway.patch(
                plural, namespace, name, body, group=group, version=version, **kw
            )
            return Applied(patched, current, True)
        except KubeError as exc:
            err = as_conflict(exc)
            if isinstance(err, ConflictError):
                continue
            raise err from exc
    raise TransientError(f"{manifest['kind']} {name} kept changing while being applied; retrying.")


def _contains(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """True if merge-patching ``wanted`` onto ``current`` would change nothing."""
    for key, value in wanted.items():
        have = current.get(key) if isinstance(current, Mapping) else None
        if isinstance(value, Mapping):
            if not isinstance(have, Mapping) or not _contains(have, value):
                return False
        elif have != value:
            return False
    return True


def delete_target(
    gateway: ClusterGateway, app_kind: str, namespace: str, name: str, who: Identity = Identity()
) -> bool:
    return gateway.delete(
        manifests.PLURALS[app_kind],
        namespace,
        name,
        impersonate_user=who.user,
        impersonate_groups=who.groups,
    )


# --- batched observation -------------------------------------------------------------

# The portal's own label, on every app it creates: one list per kind finds them cluster-wide.
PORTAL_SELECTOR = ",".join(f"{k}={v}" for k, v in manifests.PORTAL_LABELS.items())
# KubeVirt VMs carry their chart's app.kubernetes.io/instance (the Helm release name,
# packages/apps/vm-instance/templates/_helpers.tpl in Cozystack v1.1); WorkloadMonitors carry
# the app's name from Cozystack's lineage webhook (internal/lineagecontrollerwebhook).
INSTANCE_LABEL = "app.kubernetes.io/instance"
APPLICATION_LABEL = "apps.cozystack.io/application.name"
# cluster-api-provider-kubevirt labels each worker VirtualMachine with its Cluster API cluster
# (kubernetes-<app>); its MachineDeployment is named only in the VMI template's labels (v1.1
# cluster.yaml `template.metadata.labels`; CAPK pkg/kubevirt/utils.go
# newVirtualMachineFromKubevirtMachine).
CAPI_CLUSTER_LABEL = "cluster.x-k8s.io/cluster-name"
CAPI_DEPLOYMENT_LABEL = "cluster.x-k8s.io/deployment-name"
# Characters of names in one ``key in (...)`` selector: the URL stays far below the 8 KiB a
# proxy in front of an apiserver may accept, and one selector covers about 100 operations.
SELECTOR_BUDGET = 6000


@dataclass
class NamespaceView:
    """What one poll saw in one namespace: objects by (plural, name), KubeVirt VMs, events."""

    apps: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    kubevirt: dict[str, dict[str, Any]] = field(default_factory=dict)
    monitors: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    # Tenant Kubernetes clusters whose own nodes were read (by app name).
    tenant_nodes: dict[str, TenantNodes] = field(default_factory=dict)


# Why a tenant cluster's GPUs could not be seen (the engine words them for people).
GPUS_UNSEEN_MISSING = "missing"  # no admin kubeconfig Secret yet
GPUS_UNSEEN_FORBIDDEN = "forbidden"  # the Secret is not readable with the person's rights
GPUS_UNSEEN_UNREACHABLE = "unreachable"  # the Secret or the tenant's API did not answer
GPUS_UNSEEN_OPERATOR_OFF = "operator_off"  # no GPU operator: nothing advertises nvidia.com/gpu


@dataclass(frozen=True)
class TenantNodes:
    """One read of a tenant cluster's own nodes: the nodes, or why they could not be read."""

    nodes: tuple[NodeInfo, ...] = ()
    problem: str = ""  # one of GPUS_UNSEEN_*; "" when read
    detail: str = ""  # the cluster's words, for "what the cluster said"


def read_tenant_nodes(
    gateway: ClusterGateway, namespace: str, cluster: str, who: Identity, timeout: float = 5.0
) -> TenantNodes:
    """The tenant cluster's nodes through its admin kubeconfig, or why not (never raises a
    cluster error: GPU readiness is a step the portal shows when it can see it)."""
    try:
        nodes = gateway.tenant_cluster_nodes(
            namespace,
            cluster,
            impersonate_user=who.user,
            impersonate_groups=who.groups,
            timeout=timeout,
        )
    except ForbiddenError as exc:
        return TenantNodes(problem=GPUS_UNSEEN_FORBIDDEN, detail=exc.detail or exc.message)
    except KubeError as exc:
        return TenantNodes(problem=GPUS_UNSEEN_UNREACHABLE, detail=exc.detail or exc.message)
    if nodes is None:
        return TenantNodes(problem=GPUS_UNSEEN_MISSING)
    return TenantNodes(nodes=tuple(nodes))


@dataclass(frozen=True)
class Target:
    """An app a poll must see. ``labelled``: it carries the portal's label (the portal made it),
    so the cluster-wide list by that label finds it; an app made elsewhere is looked for in a
    list of its namespace, since the label list would take it for absent."""

    namespace: str
    kind: str
    name: str
    labelled: bool = True


def has_portal_label(obj: Mapping[str, Any] | None) -> bool:
    labels = ((obj or {}).get("metadata") or {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in manifests.PORTAL_LABELS.items())


def in_selectors(key: str, values: Iterable[str], prefix: str = "") -> list[str]:
    """``prefix key in (a,b,...)`` selectors covering ``values``, each within SELECTOR_BUDGET."""
    out: list[str] = []
    chunk: list[str] = []
    size = 0
    for value in sorted(set(values)):
        if chunk and size + len(value) + 1 > SELECTOR_BUDGET:
            out.append(f"{prefix}{key} in ({','.join(chunk)})")
            chunk, size = [], 0
        chunk.append(value)
        size += len(value) + 1
    if chunk:
        out.append(f"{prefix}{key} in ({','.join(chunk)})")
    return out


def _where(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def observe(
    gateway: ClusterGateway,
    targets: Iterable[Target],
    events_in: Iterable[str] = (),
    clone_events_in: Iterable[str] = (),
    tenant_clusters: Mapping[tuple[str, str], Identity] | None = None,
) -> dict[str, NamespaceView]:
    """Everything the progress of ``targets`` needs, in requests that grow with the operations
    in flight, not with the tenants (admin credential: polling is the portal's):

    - apps of one kind the portal made, in several namespaces: one cluster-wide list by the
      portal's label; in one namespace only, or made elsewhere: a list of that namespace;
    - KubeVirt VMs of the VMs, WorkloadMonitors of the Kubernetes apps: cluster-wide lists by
      their release or app name, about 100 names a request;
    - FailedScheduling events, when ``events_in`` names namespaces: one cluster-wide list;
    - CDI's CloneWithoutSource events (a disk's golden image is missing), when
      ``clone_events_in`` names namespaces: one cluster-wide list;
    - the nodes of the tenant clusters in ``tenant_clusters`` ((namespace, app) -> who reads
      its admin kubeconfig): a Secret GET and one node list each, only for node groups whose
      workers booted and whose GPUs are awaited.
    """
    targets = list(targets)
    namespaces = {t.namespace for t in targets}
    views: dict[str, NamespaceView] = {ns: NamespaceView() for ns in namespaces}
    by_plural: dict[str, set[str]] = {}
    for t in targets:
        if t.labelled:
            by_plural.setdefault(manifests.PLURALS[t.kind], set()).add(t.namespace)
    cluster_wide = {plural for plural, spaces in by_plural.items() if len(spaces) > 1}
    for plural in sorted(cluster_wide):
        for obj in gateway.iter_apps(plural, label_selector=PORTAL_SELECTOR):
            ns, name = _where(obj)
            if ns in views:
                views[ns].apps[(plural, name)] = obj
    listed = {
        (t.namespace, manifests.PLURALS[t.kind])
        for t in targets
        if not (t.labelled and manifests.PLURALS[t.kind] in cluster_wide)
    }
    for ns, plural in sorted(listed):
        for obj in gateway.iter_apps(plural, namespace=ns):
            views[ns].apps[(plural, _where(obj)[1])] = obj
    vms = {
        manifests.release_name(t.kind, t.name)
        for t in targets
        if t.kind in (manifests.VM_INSTANCE, manifests.VIRTUAL_MACHINE)
    }
    for selector in in_selectors(INSTANCE_LABEL, vms):
        for obj in gateway.iter_apps(
            "virtualmachines", label_selector=selector, group="kubevirt.io", version="v1"
        ):
            ns, name = _where(obj)
            if ns in views:
                views[ns].kubevirt[name] = obj
    clusters = {t.name for t in targets if t.kind == manifests.KUBERNETES}
    # Their worker VMs too: one that cannot be placed says so long before the monitor does.
    releases = {manifests.release_name(manifests.KUBERNETES, c) for c in clusters}
    for selector in in_selectors(CAPI_CLUSTER_LABEL, releases):
        for obj in gateway.iter_apps(
            "virtualmachines", label_selector=selector, group="kubevirt.io", version="v1"
        ):
            ns, name = _where(obj)
            if ns in views:
                views[ns].kubevirt[name] = obj
    for selector in in_selectors(APPLICATION_LABEL, clusters):
        for obj in gateway.iter_apps(
            "workloadmonitors", label_selector=selector, group="cozystack.io", version="v1alpha1"
        ):
            ns, name = _where(obj)
            if ns in views:
                views[ns].monitors[name] = obj
    events_in = set(events_in) & namespaces
    if events_in:
        for event in gateway.iter_events(field_selector="reason=FailedScheduling"):
            if event.namespace in events_in:
                views[event.namespace].events.append(event)
    clone_events_in = set(clone_events_in) & namespaces
    if clone_events_in:
        for event in gateway.iter_events(field_selector=f"reason={CLONE_WITHOUT_SOURCE}"):
            if event.namespace in clone_events_in:
                views[event.namespace].events.append(event)
    for ns in events_in | clone_events_in:
        views[ns].events.sort(key=lambda ev: ev.last_timestamp)  # newest last
    for (ns, cluster), who in sorted((tenant_clusters or {}).items()):
        if ns in views:
            views[ns].tenant_nodes[cluster] = read_tenant_nodes(gateway, ns, cluster, who)
    return views


# --- progress: a pure reading of what was observed -----------------------------------


@dataclass(frozen=True)
class Progress:
    """What one observation says about an operation's target."""

    exists: bool = False
    disk_ready: bool = False
    scheduled: bool = False
    running: bool = False
    done: bool = False
    failed: bool = False
    unschedulable: bool = False
    # Helm failed in a way that clears by itself (a disk not there yet, a wait that ran out):
    # the HelmRelease retries (Retries: -1), so this is not a failure yet.
    retrying: bool = False
    reason: str = ""
    message: str = ""
    causes: tuple[Cause, ...] = ()
    observed: dict[str, Any] = field(default_factory=dict)


def released_marker(app: Mapping[str, Any] | None) -> dict[str, str]:
    """What moves when Helm acts on a change (no generation in v1.1): Released and Ready times
    and messages (the message carries the release revision ``.vN``)."""
    conds = conditions_of(app)
    out = {}
    for t in ("Released", "Ready"):
        c = conds.get(t)
        if c is not None:
            out[t] = f"{c.status}|{c.reason}|{c.last_transition_time}|{c.message}"
    return out


def helm_causes(message: str) -> tuple[Cause, ...]:
    """Name the fields Helm's schema check complained about (``at '/spec/x': ...``)."""
    out = []
    for match in re.finditer(r"at '/?([^']+)'[^:]*:\s*([^;\n]+)", message):
        path = match.group(1).strip("/").replace("/", ".")
        if not path.startswith("spec."):
            path = "spec." + path
        out.append(Cause(field=path, message=match.group(2).strip(), reason="HelmSchema"))
    if not out:
        for match in re.finditer(r"-\s*([A-Za-z][\w.\[\]]*):\s*([^\n]+)", message):
            out.append(
                Cause(
                    field="spec." + match.group(1),
                    message=match.group(2).strip(),
                    reason="HelmSchema",
                )
            )
    return tuple(out)


def _helm_failure(
    app: Mapping[str, Any], baseline: Mapping[str, str] | None = None
) -> tuple[str, str] | None:
    """Helm's failure, unless it is the very condition seen before our apply (a retry after a
    fix must wait for Helm to act again, not fail on the old InstallFailed)."""
    ready = conditions_of(app).get("Ready")
    if ready and ready.status == "False" and ready.reason.endswith("Failed"):
        if baseline and released_marker(app).get("Ready") == baseline.get("Ready"):
            return None
        return ready.reason, ready.message
    return None


# Helm failures that no retry can clear: the values break the chart's schema, or the chart's
# render-time checks refuse them (cozystack v1.1 packages/apps/vm-instance/templates/vm.yaml
# `fail "Specified instanceType does not exist in the cluster"`, `instanceProfile` likewise; the
# kubernetes chart's instance type check; a name that cannot be a label value). Anything else
# (`Specified disk not exists in cluster` while the disk's release catches up, Helm's wait timing
# out) is retried by helm-controller forever (Retries: -1) and may clear by itself.
FINAL_HELM_MESSAGES = (
    "values don't meet the specifications of the schema",
    "Specified instanceType does not exist in the cluster",
    "Specified instanceProfile does not exist in the cluster",
    "Specified instancetype not exists in cluster",
    "Specified profile not exists in cluster",  # the legacy virtual-machine chart
    "must be no more than 63 characters",
)

# CDI waits for a clone's missing source with this Warning on the DataVolume, forever
# (containerized-data-importer pkg/controller/datavolume/pvc-clone-controller.go); a disk from a
# golden image the cluster does not have would wait until the operation's timeout.
CLONE_WITHOUT_SOURCE = "CloneWithoutSource"

# What the cluster does not have, from the charts' and CDI's own words: (what, name).
_MISSING = (
    (
        "instance_type",
        re.compile(
            r"Specified instance[tT]ype (?:does not exist in the cluster|not exists in cluster): "
            r"(\S+)"
        ),
    ),
    (
        "profile",
        re.compile(
            r"Specified (?:instanceProfile does not exist in the cluster|profile not exists in "
            r"cluster): (\S+)"
        ),
    ),
    ("image", re.compile(r"The source pvc vm-image-(\S+) doesn't exist")),
)


def missing_from_cluster(message: str) -> tuple[str, str] | None:
    """("instance_type" | "profile" | "image", name) when the message says the cluster has no
    such thing, else None."""
    for what, pattern in _MISSING:
        if match := pattern.search(message or ""):
            return what, match.group(1)
    return None


def helm_failure_is_final(message: str) -> bool:
    """A Helm install/upgrade failure that a retry cannot clear (a known message, or schema
    errors naming fields)."""
    return any(m in message for m in FINAL_HELM_MESSAGES) or bool(helm_causes(message))


def app_ready(app: Mapping[str, Any] | None) -> bool:
    """The app's Ready condition is True (its Helm release installed and became ready)."""
    ready = conditions_of(app).get("Ready") if app else None
    return bool(ready and ready.status == "True")


def _helm_failed_progress(
    app: Mapping[str, Any], baseline: Mapping[str, str] | None, observed: dict[str, Any]
) -> Progress | None:
    """A failed Progress carrying Helm's reason, message and causes, a retrying one when the
    failure may clear by itself, or None."""
    failure = _helm_failure(app, baseline)
    if not failure:
        return None
    reason, message = failure
    if not helm_failure_is_final(message):
        return Progress(
            exists=True, retrying=True, reason=reason, message=message, observed=observed
        )
    return Progress(
        exists=True,
        failed=True,
        reason=reason,
        message=message,
        causes=helm_causes(message),
        observed=observed,
    )


def helm_progress(app: Mapping[str, Any] | None) -> Progress:
    """What Helm says about an app alone: failed, retrying, or nothing to report."""
    if app is None:
        return Progress()
    return _helm_failed_progress(app, None, {}) or Progress(exists=True)


def _helm_done_since(app: Mapping[str, Any], baseline: Mapping[str, str]) -> bool:
    """Ready=True and, for an object that existed before, Released/Ready moved since."""
    ready = conditions_of(app).get("Ready")
    if not ready or ready.status != "True":
        return False
    if not baseline:
        return True
    return released_marker(app) != dict(baseline)


def vm_progress(
    vm_kind: str,
    name: str,
    view: NamespaceView,
    disk_name: str | None,
    baseline: Mapping[str, str],
    want_running: bool = True,
    restart_applied: bool = False,
) -> Progress:
    """Progress of a GPU VM create/update/start/stop from one namespace observation.
    ``restart_applied``: a start is done only once KubeVirt no longer says RestartRequired."""
    plural = manifests.PLURALS[vm_kind]
    app = view.apps.get((plural, name))
    if app is None:
        return Progress()  # not visible yet: reads lag writes
    observed: dict[str, Any] = {"released": released_marker(app)}
    if failed := _helm_failed_progress(app, baseline, observed):
        return failed
    disk_ready = True
    if disk_name:
        disk = view.apps.get(("vmdisks", disk_name))
        dready = conditions_of(disk).get("Ready") if disk else None
        disk_ready = bool(dready and dready.status == "True")
        if disk and (failed := _helm_failed_progress(disk, None, observed)):
            return failed
    if disk_name:  # CDI waits forever for a golden image the cluster does not have
        for ev in reversed(view.events):
            if ev.reason == CLONE_WITHOUT_SOURCE and ev.object_name == (
                manifests.release_name(manifests.VM_DISK, disk_name)
            ):
                return Progress(
                    exists=True,
                    failed=True,
                    reason=CLONE_WITHOUT_SOURCE,
                    message=ev.message,
                    observed={**observed, "printableStatus": "Provisioning"},
                )
    helm_done = _helm_done_since(app, baseline)
    kv = view.kubevirt.get(manifests.release_name(vm_kind, name))
    status = (kv or {}).get("status") or {}
    printable = str(status.get("printableStatus") or "")
    observed["printableStatus"] = printable
    kv_conds = conditions_of(kv)
    sched = kv_conds.get("PodScheduled")
    unschedulable = printable == "ErrorUnschedulable" or bool(
        sched and sched.status == "False" and sched.reason == "Unschedulable"
    )
    running = printable == "Running" and bool(status.get("ready", True))
    scheduled = running or printable in ("Starting", "Running", "Migrating")
    reason, message = "", ""
    if (refused := launch_refusal(kv_conds)) is not None:
        # KubeVirt will never create its launcher pod (a GPU it does not permit): no retry.
        return Progress(
            exists=True,
            disk_ready=disk_ready,
            failed=True,
            reason=refused.reason,
            message=refused.message,
            observed=observed,
        )
    if unschedulable:
        reason, message = "ErrorUnschedulable", (sched.message if sched else "")
    elif printable in (
        "ErrImagePull",
        "ImagePullBackOff",
        "CrashLoopBackOff",
        "DataVolumeError",
        "ErrorPvcNotFound",
        "ErrorDataVolumeNotFound",
    ):
        return Progress(
            exists=True,
            disk_ready=disk_ready,
            failed=True,
            reason=printable,
            message=next((c.message for c in kv_conds.values() if c.message), ""),
            observed=observed,
        )
    if (quota := quota_refusal(kv_conds)) is not None:
        # The tenant's ResourceQuota refused the launcher pod: KubeVirt retries, but nothing
        # changes until a GPU of the tenant frees or the quota grows; say so now rather than
        # time out.
        return Progress(
            exists=True,
            disk_ready=disk_ready,
            failed=True,
            reason=quota.reason,
            message=quota.message,
            observed=observed,
        )
    # A start waits for Running; a stop (or a VM created halted) for Stopped.
    done = helm_done and (running if want_running else printable in ("Stopped", ""))
    if restart_applied and want_running:
        pending = kv_conds.get("RestartRequired")
        done = done and not (pending and pending.status == "True")
    return Progress(
        exists=True,
        disk_ready=disk_ready and (helm_done or bool(disk_name)),
        scheduled=scheduled,
        running=running,
        done=done,
        unschedulable=unschedulable,
        reason=reason,
        message=message,
        observed=observed,
    )


def printable_of(view: NamespaceView, vm_kind: str, name: str) -> str:
    """The KubeVirt VM's printableStatus as this poll saw it ("" when not seen)."""
    kv = view.kubevirt.get(manifests.release_name(vm_kind, name)) or {}
    return str((kv.get("status") or {}).get("printableStatus") or "")


def scheduling_event(view: NamespaceView, kubevirt_name: str) -> str:
    """The newest FailedScheduling message for the VM's launcher pod, if any."""
    prefix = f"virt-launcher-{kubevirt_name}-"
    for ev in reversed(view.events):
        if ev.reason == "FailedScheduling" and ev.object_name.startswith(prefix):
            return ev.message
    return ""


def node_group_progress(
    cluster: str,
    group: str,
    view: NamespaceView,
    min_replicas: int,
    baseline: Mapping[str, str],
    removing: bool = False,
) -> Progress:
    """A node group is ready when Helm acted on the change (Released moved: no generation in
    v1.1) and its WorkloadMonitor reports at least ``minReplicas`` available workers. One being
    removed is done when the spec no longer has it and its WorkloadMonitor is gone (its workers
    with it)."""
    app = view.apps.get(("kuberneteses", cluster))
    if app is None:
        return Progress()
    if removing:
        monitor_name = f"{manifests.release_name(manifests.KUBERNETES, cluster)}-{group}"
        groups = (app.get("spec") or {}).get("nodeGroups") or {}
        observed_ = {"released": released_marker(app), "in_spec": group in groups}
        if failed := _helm_failed_progress(app, baseline, observed_):
            return failed
        gone = group not in groups and monitor_name not in view.monitors
        return Progress(exists=True, scheduled=True, running=gone, done=gone, observed=observed_)
    observed: dict[str, Any] = {"released": released_marker(app)}
    if failed := _helm_failed_progress(app, baseline, observed):
        return failed
    helm_done = _helm_done_since(app, baseline)
    monitor_name = f"{manifests.release_name(manifests.KUBERNETES, cluster)}-{group}"
    monitor = view.monitors.get(monitor_name) or {}
    status = monitor.get("status") or {}
    available = int(status.get("availableReplicas") or 0)
    observed.update(available=available, observed=int(status.get("observedReplicas") or 0))
    workers = worker_vms(view, monitor_name)
    booted = [vm for vm in workers if _printable(vm) == "Running"]
    # Step one, "workers booted": Helm acted and the monitor counts enough booted VMs (v1.1's
    # WorkloadMonitor counts Ready launcher pods, not joined nodes).
    booted_all = helm_done and bool(monitor) and available >= min_replicas
    observed.update(booted=len(booted), workers=max(len(workers), min_replicas))
    done = booted_all
    per_worker = _gpus_per_worker(app, group)
    if per_worker:
        # Step two, "GPUs ready": every booted worker's node advertises its GPUs in the tenant
        # cluster (the GPU operator loads the driver after the VM boots), where the portal can
        # read that cluster; else the booted step is the last one it can see.
        ready = _gpus_ready(view.tenant_nodes.get(cluster), booted)
        observed.update(
            gpus_per_worker=per_worker,
            gpus_wanted=per_worker * max(len(workers), min_replicas),
            gpus_ready=ready if ready is not None else 0,
        )
        reading = view.tenant_nodes.get(cluster)
        if not _gpu_operator_on(app):
            observed["gpus_unseen"] = GPUS_UNSEEN_OPERATOR_OFF
        elif reading is not None and reading.problem:
            observed.update(gpus_unseen=reading.problem, gpus_unseen_detail=reading.detail[:300])
        elif reading is None:
            done = False  # not read yet: the next poll reads it once the workers booted
        else:
            done = booted_all and ready is not None and ready >= per_worker * len(booted)
    for vm in workers:
        if not done and (refused := launch_refusal(conditions_of(vm))) is not None:
            # No worker of this group can ever start (a GPU KubeVirt does not permit).
            return Progress(
                exists=True,
                failed=True,
                reason=refused.reason,
                message=refused.message,
                observed=observed,
            )
    quota = next((q for vm in workers if (q := quota_refusal(conditions_of(vm)))), None)
    if quota is not None and not done:
        return Progress(
            exists=True,
            failed=True,
            reason=quota.reason,
            message=quota.message,
            observed=observed,
        )
    stuck = [i for i, vm in enumerate(workers, 1) if _printable(vm) == "ErrorUnschedulable"]
    if stuck and not done:
        # "no <model> free for worker 2 of 3": the engine words it (it knows the model).
        observed.update(unschedulable_worker=stuck[0], workers=len(workers))
    return Progress(
        exists=True,
        scheduled=booted_all,
        running=booted_all,
        done=done,
        unschedulable=bool(stuck) and not done,
        reason="ErrorUnschedulable" if stuck and not done else "",
        observed=observed,
    )


def _gpus_per_worker(app: Mapping[str, Any], group: str) -> int:
    spec = ((app.get("spec") or {}).get("nodeGroups") or {}).get(group) or {}
    return len([g for g in spec.get("gpus") or [] if isinstance(g, Mapping)])


def _gpu_operator_on(app: Mapping[str, Any]) -> bool:
    addons = (app.get("spec") or {}).get("addons") or {}
    return bool((addons.get("gpuOperator") or {}).get("enabled"))


def _gpus_ready(reading: TenantNodes | None, booted: list[dict[str, Any]]) -> int | None:
    """GPUs allocatable on the tenant-cluster nodes of the booted workers (CAPK names each node
    like its VM); None when the tenant cluster was not read."""
    if reading is None or reading.problem:
        return None
    names = {str((vm.get("metadata") or {}).get("name") or "") for vm in booted}
    return sum(sum(n.gpu_resources.values()) for n in reading.nodes if n.name in names)


def _printable(vm: Mapping[str, Any]) -> str:
    return str((vm.get("status") or {}).get("printableStatus") or "")


def worker_vms(view: NamespaceView, deployment: str) -> list[dict[str, Any]]:
    """A node group's worker VMs (its MachineDeployment ``kubernetes-<app>-<group>``, from the
    VMI template's labels: never a name prefix, gpu vs gpu-large), oldest first."""
    found = [
        vm
        for vm in view.kubevirt.values()
        if ((((vm.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels")
            or {}).get(CAPI_DEPLOYMENT_LABEL) == deployment
    ]  # fmt: skip
    return sorted(
        found,
        key=lambda vm: (
            str((vm.get("metadata") or {}).get("creationTimestamp") or ""),
            str((vm.get("metadata") or {}).get("name") or ""),
        ),
    )
