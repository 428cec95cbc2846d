"""Applying an operation's manifests and reading its progress, the way Cozystack v1.1 allows.

Plain Python (no Django). What the real cluster does (reference/devcluster-vs-cozystack.md):

- a duplicate create or a stale update comes back as a 500 wrapping "already exists" /
  "has been modified" (v1.1 loses the 409): ``as_conflict`` reads them as the 409 they are;
- reads lag writes: a GET right after a create may 404, so "absent after apply" is pending;
- no ``metadata.generation``: an update is done when the ``Released`` condition moves
  (its lastTransitionTime or message, i.e. the revision) or Ready transitions after the apply;
- spec errors surface later, as Helm ``InstallFailed`` / ``UpgradeFailed`` with the accepted 201.

Polling is batched: one list per kind and namespace for every operation in flight
(``observe``), never one GET per operation.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gpus.kube import apps as manifests
from gpus.kube.client import tenant_groups
from gpus.kube.errors import Cause, ConflictError, KubeError, NotFoundError, TransientError
from gpus.kube.gateway import ClusterGateway, Event
from gpus.kube.records import conditions_of

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


@dataclass
class NamespaceView:
    """What one poll saw in one namespace: objects by (plural, name), KubeVirt VMs, events."""

    apps: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    kubevirt: dict[str, dict[str, Any]] = field(default_factory=dict)
    monitors: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)


def observe(
    gateway: ClusterGateway,
    wanted: Mapping[str, Iterable[str]],
    with_events: Iterable[str] = (),
) -> dict[str, NamespaceView]:
    """One list per (namespace, plural) in ``wanted``, plus KubeVirt VMs, plus events where
    asked. ``wanted`` maps namespace -> plurals. Admin credential: polling is the portal's."""
    views: dict[str, NamespaceView] = {}
    events_for = set(with_events)
    for namespace, plurals in wanted.items():
        view = views[namespace] = NamespaceView()
        for plural in sorted(set(plurals)):
            for obj in gateway.iter_apps(plural, namespace=namespace):
                view.apps[(plural, (obj.get("metadata") or {}).get("name", ""))] = obj
        if {"vminstances", "virtualmachines"} & set(plurals):
            for obj in gateway.iter_apps(
                "virtualmachines", namespace=namespace, group="kubevirt.io", version="v1"
            ):
                view.kubevirt[(obj.get("metadata") or {}).get("name", "")] = obj
        if "kuberneteses" in plurals:
            for obj in gateway.iter_apps(
                "workloadmonitors", namespace=namespace, group="cozystack.io", version="v1alpha1"
            ):
                view.monitors[(obj.get("metadata") or {}).get("name", "")] = obj
        if namespace in events_for:
            view.events = gateway.list_events(namespace, field_selector="reason=FailedScheduling")
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


def _helm_failed_progress(
    app: Mapping[str, Any], baseline: Mapping[str, str] | None, observed: dict[str, Any]
) -> Progress | None:
    """A failed Progress carrying Helm's reason, message and causes, or None."""
    failure = _helm_failure(app, baseline)
    if not failure:
        return None
    reason, message = failure
    return Progress(
        exists=True,
        failed=True,
        reason=reason,
        message=message,
        causes=helm_causes(message),
        observed=observed,
    )


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


def scheduling_event(view: NamespaceView, kubevirt_name: str) -> str:
    """The newest FailedScheduling message for the VM's launcher pod, if any."""
    prefix = f"virt-launcher-{kubevirt_name}-"
    for ev in reversed(view.events):
        if ev.reason == "FailedScheduling" and ev.object_name.startswith(prefix):
            return ev.message
    return ""


def node_group_progress(
    cluster: str, group: str, view: NamespaceView, min_replicas: int, baseline: Mapping[str, str]
) -> Progress:
    """A node group is ready when Helm acted on the change (Released moved: no generation in
    v1.1) and its WorkloadMonitor reports at least ``minReplicas`` available workers."""
    app = view.apps.get(("kuberneteses", cluster))
    if app is None:
        return Progress()
    observed: dict[str, Any] = {"released": released_marker(app)}
    if failed := _helm_failed_progress(app, baseline, observed):
        return failed
    helm_done = _helm_done_since(app, baseline)
    monitor_name = f"{manifests.release_name(manifests.KUBERNETES, cluster)}-{group}"
    monitor = view.monitors.get(monitor_name) or {}
    status = monitor.get("status") or {}
    available = int(status.get("availableReplicas") or 0)
    observed.update(available=available, observed=int(status.get("observedReplicas") or 0))
    return Progress(
        exists=True,
        scheduled=available > 0,
        running=helm_done and available >= min_replicas,
        done=helm_done and bool(monitor) and available >= min_replicas,
        observed=observed,
    )


def node_group_removed_progress(
    cluster: str, group: str, view: NamespaceView, baseline: Mapping[str, str]
) -> Progress:
    """A node group deleted (merge patch ``nodeGroups.<group>: null``): done when the app no
    longer lists it and Helm has removed its workers' WorkloadMonitor (the chart ranges over
    ``.Values.nodeGroups``: cozystack v1.1.0 packages/apps/kubernetes/templates/cluster.yaml),
    or when the whole cluster is gone."""
    app = view.apps.get(("kuberneteses", cluster))
    if app is None:
        return Progress(done=True)
    observed: dict[str, Any] = {"released": released_marker(app)}
    if failed := _helm_failed_progress(app, baseline, observed):
        return failed
    listed = group in ((app.get("spec") or {}).get("nodeGroups") or {})
    monitor_name = f"{manifests.release_name(manifests.KUBERNETES, cluster)}-{group}"
    monitor = view.monitors.get(monitor_name)
    observed.update(listed=listed, monitor=monitor is not None)
    return Progress(exists=True, done=not listed and monitor is None, observed=observed)
