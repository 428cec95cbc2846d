"""The controller side: Helm-like app status, KubeVirt VMs, GPU scheduling, monitors, events.

Every KubeVirt VM the cluster runs (a standalone VMInstance / legacy VirtualMachine, or a worker
of a tenant Kubernetes node group) is a *unit*. A unit holds GPUs only through its virt-launcher
pod's `nvidia.com/<MODEL>` requests, as on a real cluster, so allocation = what bound pods
request. All work happens under the store lock; delays are divided by --speed.
"""

from __future__ import annotations

import copy
import threading
from collections import Counter
from typing import Any

from .clock import Clock
from .fleet import stable_hex, stable_uuid
from .resources import EVENTS, KUBEVIRT_VMS, NODES, PODS, WORKLOAD_MONITORS, Resource
from .store import Store, now_rfc3339

# Base delays in seconds at --speed 1 (real Cozystack takes minutes; these keep demos lively).
DELAYS = {
    "install": 3.0,  # HelmRelease install -> Ready/Released
    "upgrade": 2.0,
    "disk": 5.0,  # CDI import of a VMDisk
    "vm_provision": 2.0,  # VM Provisioning before its launcher pod is scheduled
    "vm_start": 4.0,  # Starting -> Running
    "control_plane": 2.0,  # Kubernetes Ready -> first workers created
    "sched_retry": 15.0,  # FailedScheduling re-emitted while still unschedulable
}
CHART_VERSION = "1.1.0"
LAUNCHER_IMAGE = "quay.io/kubevirt/virt-launcher:v1.6.2"
RUNNING_PHASES = ("Starting", "Running")


def _cond(
    ctype: str, status: str, reason: str, message: str, ts: str, gen: int | None = None
) -> dict[str, Any]:
    c = {
        "type": ctype,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": ts,
    }
    if gen is not None:
        c["observedGeneration"] = gen
    return c


class Reconciler:
    def __init__(
        self,
        store: Store,
        resources: list[Resource],
        clock: Clock,
        speed: float = 1.0,
        seed: int = 1,
    ) -> None:
        self.store = store
        self.clock = clock
        self.speed = max(speed, 1e-6)
        self.seed = seed
        self.apps = [r for r in resources if r.is_app]
        self.app_records: dict[str, dict[str, Any]] = {}
        self.units: dict[str, dict[str, Any]] = {}
        self.seq = 0
        self.wake = threading.Event()
        self.stop_flag = threading.Event()
        self._index_dirty = True
        self.free: dict[
            str, dict[str, int]
        ] = {}  # model -> node -> free GPUs (schedulable nodes only)
        self.order: dict[str, list[str]] = {}  # model -> schedulable node names, sorted
        self.schedulable: list[str] = []
        self.node_counts = {"total": 0, "not_ready": 0, "cordoned": 0}
        self.thread: threading.Thread | None = None
        store.listeners.append(self._on_change)
        self._app_keys = {r.key for r in self.apps}

    # --- plumbing ----------------------------------------------------------------------
    def delay(self, name: str) -> float:
        return DELAYS[name] / self.speed

    def _on_change(self, res: str, _type: str, _obj: dict[str, Any]) -> None:
        if res == NODES.key:
            self._index_dirty = True
            self.wake.set()
        elif res in self._app_keys:
            self.wake.set()

    def start(self) -> None:
        self.thread = threading.Thread(target=self._loop, name="reconciler", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stop_flag.set()
        self.wake.set()
        if self.thread:
            self.thread.join(timeout=5)

    def _loop(self) -> None:
        next_at = 0.0
        while not self.stop_flag.is_set():
            timeout = max(0.0, min(1.0, next_at - self.clock.now())) if next_at else 1.0
            self.wake.wait(timeout)
            self.wake.clear()
            if self.stop_flag.is_set():
                return
            with self.store.lock:
                next_at = self.reconcile()

    def fast_forward(self, start: float, end: float, step: float = 30.0) -> None:
        """Run passes on a simulated clock (bootstrap: the demo's workloads are already running)."""
        t = start
        while t < end:
            self.clock.fixed = t
            with self.store.lock:
                self.reconcile()
            t += step
        self.clock.fixed = None

    def state(self) -> dict[str, Any]:
        return {"apps": self.app_records, "units": self.units, "seq": self.seq}

    def load_state(self, data: dict[str, Any]) -> None:
        self.app_records = data.get("apps", {})
        self.units = data.get("units", {})
        self.seq = int(data.get("seq", 0))
        self._index_dirty = True

    # --- scheduling index --------------------------------------------------------------
    def _rebuild_index(self) -> None:
        used: dict[str, Counter[str]] = {}
        for _, pod in self.store.iter_objects(PODS.key):
            node = pod["spec"].get("nodeName")
            if node and pod["status"].get("phase") in ("Pending", "Running"):
                for c in pod["spec"]["containers"]:
                    for k, v in (c.get("resources", {}).get("requests") or {}).items():
                        if k.startswith("nvidia.com/"):
                            used.setdefault(node, Counter())[k] += int(v)
        self.free, self.order, self.schedulable = {}, {}, []
        counts = {"total": 0, "not_ready": 0, "cordoned": 0}
        for (_, name), node in self.store.iter_objects(NODES.key):
            counts["total"] += 1
            if not _node_ready(node):
                counts["not_ready"] += 1
                continue
            if node["spec"].get("unschedulable"):
                counts["cordoned"] += 1
                continue
            self.schedulable.append(name)
            for k, v in node["status"].get("allocatable", {}).items():
                if k.startswith("nvidia.com/"):
                    self.free.setdefault(k, {})[name] = int(v) - used.get(name, Counter())[k]
                    self.order.setdefault(k, []).append(name)
        self.node_counts = counts
        self._index_dirty = False

    def _find_node(self, need: Counter[str], unit_name: str) -> str | None:
        if not need:
            if not self.schedulable:
                return None
            return self.schedulable[int(stable_hex(unit_name, n=8), 16) % len(self.schedulable)]
        models = list(need)
        first = models[0]
        for node in self.order.get(first, []):
            if all(self.free.get(m, {}).get(node, 0) >= need[m] for m in models):
                return node
        return None

    def _take(self, node: str, need: Counter[str], sign: int) -> None:
        for m, n in need.items():
            if node in self.free.get(m, {}):
                self.free[m][node] -= sign * n

    def _unschedulable_message(self, need: Counter[str]) -> str:
        total = self.node_counts["total"]
        reasons: Counter[str] = Counter()
        if self.node_counts["not_ready"]:
            reasons["node(s) had untolerated taint {node.kubernetes.io/unreachable: }"] = (
                self.node_counts["not_ready"]
            )
        if self.node_counts["cordoned"]:
            reasons["node(s) were unschedulable"] = self.node_counts["cordoned"]
        resource_fail = 0
        for node in self.schedulable:
            failed = False
            for m, n in need.items():
                if self.free.get(m, {}).get(node, 0) < n:
                    reasons[f"Insufficient {m}"] += 1
                    failed = True
            resource_fail += failed
        parts = sorted(f"{n} {r}" for r, n in reasons.items())
        not_helpful = total - resource_fail
        pre = sorted(
            p
            for p in (
                f"{resource_fail} No preemption victims found for incoming pod"
                if resource_fail
                else "",
                f"{not_helpful} Preemption is not helpful for scheduling" if not_helpful else "",
            )
            if p
        )
        return (
            f"0/{total} nodes are available: {', '.join(parts)}. "
            f"preemption: 0/{total} nodes are available: {', '.join(pre)}."
        )

    # --- events ------------------------------------------------------------------------
    def emit(
        self,
        ns: str,
        involved: dict[str, Any],
        etype: str,
        reason: str,
        message: str,
        component: str,
    ) -> None:
        digest = stable_hex(self.seed, involved.get("uid", ""), reason, message, n=16)
        name = f"{involved['name']}.{digest}"
        ts = now_rfc3339(self.clock.now())
        old = self.store.get(EVENTS.key, ns, name)
        if old:
            ev = copy.deepcopy(old)
            ev["count"] = int(ev.get("count", 1)) + 1
            ev["lastTimestamp"] = ts
        else:
            ev = {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {
                    "name": name,
                    "namespace": ns,
                    "uid": stable_uuid(self.seed, "event", ns, name),
                    "creationTimestamp": ts,
                },
                "involvedObject": involved,
                "reason": reason,
                "message": message,
                "type": etype,
                "source": {"component": component},
                "reportingComponent": component,
                "reportingInstance": "",
                "firstTimestamp": ts,
                "lastTimestamp": ts,
                "count": 1,
            }
        self.store.put(EVENTS.key, ev)

    # --- applications ------------------------------------------------------------------
    def reconcile(self, now: float | None = None) -> float:
        """One pass; returns the wall time of the next timer (0 = none)."""
        now = self.clock.now() if now is None else now
        if self._index_dirty:
            self._rebuild_index()
        deadlines: list[float] = []
        live_apps: set[str] = set()
        for res in self.apps:
            for (ns, name), obj in list(self.store.iter_objects(res.key)):
                key = f"{res.key}|{ns}/{name}"
                live_apps.add(key)
                d = self._reconcile_app(res, key, obj, now)
                if d:
                    deadlines.append(d)
        for key in [k for k in self.app_records if k not in live_apps]:
            self._forget_app(key)
        for _ in range(3):  # a release late in the pass may let an earlier unit schedule
            changed, unit_deadlines = self._reconcile_units(now)
            if not changed:
                break
        deadlines += unit_deadlines
        return min(deadlines) if deadlines else 0.0

    def _reconcile_app(self, res: Resource, key: str, obj: dict[str, Any], now: float) -> float:
        md = obj["metadata"]
        gen = int(md.get("generation", 1))
        rec = self.app_records.get(key)
        if rec is None or rec.get("uid") != md.get("uid"):
            rec = {
                "uid": md.get("uid"),
                "gen": gen,
                "since": now,
                "installed": False,
                "revision": 0,
                "ready": False,
            }
            self.app_records[key] = rec
        if rec["gen"] != gen:
            rec.update(gen=gen, since=now, ready=False)
            self._set_app_status(
                res, obj, "Unknown", "Progressing", "Reconciliation in progress", now
            )
            obj = self.store.get(res.key, md.get("namespace", ""), md["name"]) or obj
        if not rec["ready"]:
            wait = self.delay(
                "disk"
                if res.plural == "vmdisks"
                else ("upgrade" if rec["installed"] else "install")
            )
            if now >= rec["since"] + wait:
                rec["revision"] += 1
                action = "upgrade" if rec["installed"] else "install"
                rec["installed"] = True
                rec["ready"] = True
                rec["ready_at"] = now
                release = f"{md.get('namespace')}/{res.prefix}{md['name']}.v{rec['revision']}"
                verb = "Upgrade" if action == "upgrade" else "Install"
                chart = f"{res.prefix.rstrip('-')}@{CHART_VERSION}"
                msg = f"Helm {action} succeeded for release {release} with chart {chart}"
                self._set_app_status(res, obj, "True", f"{verb}Succeeded", msg, now, released=True)
            else:
                return rec["since"] + wait
        # Derived objects exist once the release is installed.
        if res.plural in ("vminstances", "virtualmachines"):
            self._ensure_vm_unit(res, obj, now)
        elif res.plural == "kuberneteses":
            return self._ensure_cluster_units(res, obj, rec, now)
        return 0.0

    def _set_app_status(
        self,
        res: Resource,
        obj: dict[str, Any],
        status: str,
        reason: str,
        message: str,
        now: float,
        released: bool = False,
    ) -> None:
        new = copy.copy(obj)
        st = dict(obj.get("status") or {})
        ts = now_rfc3339(now)
        gen = int(obj["metadata"].get("generation", 1))
        conds = [_cond("Ready", status, reason, message, ts, gen)]
        old_released = [c for c in st.get("conditions", []) if c.get("type") == "Released"]
        if released:
            conds.append(_cond("Released", "True", reason, message, ts, gen))
        elif old_released:
            conds.append(old_released[0])
        st["conditions"] = conds
        if status == "True":
            digest = stable_hex(self.seed, obj["metadata"].get("uid"), gen, n=12)
            st["version"] = f"{CHART_VERSION}+{digest}"
        new["status"] = st
        self.store.put(res.key, new)

    def _forget_app(self, key: str) -> None:
        self.app_records.pop(key, None)
        for ukey in [k for k, u in self.units.items() if u["owner"] == key]:
            self._remove_unit(ukey)
        res_key, nsname = key.split("|", 1)
        ns, name = nsname.split("/", 1)
        prefix = next((r.prefix for r in self.apps if r.key == res_key), "")
        for _, mon in list(self.store.iter_objects(WORKLOAD_MONITORS.key, ns)):
            if mon["metadata"].get("labels", {}).get(
                "apps.cozystack.io/application.name"
            ) == name and mon["metadata"]["name"].startswith(prefix):
                self.store.delete(WORKLOAD_MONITORS.key, ns, mon["metadata"]["name"])

    # --- units -------------------------------------------------------------------------
    def _new_unit(
        self, owner: str, ns: str, name: str, gpus: list[str], now: float, **extra: Any
    ) -> dict[str, Any]:
        self.seq += 1
        unit = {
            "owner": owner,
            "ns": ns,
            "name": name,
            "gpus": gpus,
            "phase": "Provisioning",
            "since": now,
            "node": None,
            "pod": None,
            "seq": self.seq,
            "halted": False,
            "created": now,
            "uid": stable_uuid(self.seed, "vm", ns, name, self.seq),
            "event_at": 0.0,
        }
        unit.update(extra)
        self.units[f"{ns}/{name}"] = unit
        self._write_vm(unit, now)
        return unit

    def _ensure_vm_unit(self, res: Resource, obj: dict[str, Any], now: float) -> None:
        md, spec = obj["metadata"], obj.get("spec", {})
        ns = md["namespace"]
        uname = f"{res.prefix}{md['name']}"
        owner = f"{res.key}|{ns}/{md['name']}"
        gpus = [g.get("name", "") for g in spec.get("gpus", []) if isinstance(g, dict)]
        halted = spec.get("runStrategy") in ("Halted", "Manual") or spec.get("running") is False
        disks = [d.get("name") for d in spec.get("disks", []) if isinstance(d, dict)]
        unit = self.units.get(f"{ns}/{uname}")
        if unit is None:
            unit = self._new_unit(
                owner,
                ns,
                uname,
                gpus,
                now,
                disks=disks,
                instance_type=spec.get("instanceType"),
                labels={
                    "app.kubernetes.io/instance": uname,
                    "app.kubernetes.io/managed-by": "Helm",
                },
            )
            self._ensure_monitor(ns, uname, md["name"], "virtual-machine", "virtual-machine", 1, 1)
        changed = False
        if (
            unit["gpus"] != gpus
            or unit.get("disks") != disks
            or unit.get("instance_type") != spec.get("instanceType")
        ):
            unit.update(gpus=gpus, disks=disks, instance_type=spec.get("instanceType"))
            if unit["phase"] in RUNNING_PHASES or unit["phase"] == "ErrorUnschedulable":
                self._release(unit)  # KubeVirt restarts the VM to apply a new device list
                unit.update(phase="Provisioning", since=now)
            changed = True
        if unit["halted"] != halted:
            unit["halted"] = halted
            changed = True
        if changed:
            self._write_vm(unit, now)

    def _ensure_cluster_units(
        self, res: Resource, obj: dict[str, Any], rec: dict[str, Any], now: float
    ) -> float:
        md, spec = obj["metadata"], obj.get("spec", {})
        ns, name = md["namespace"], md["name"]
        owner = f"{res.key}|{ns}/{name}"
        cluster = f"{res.prefix}{name}"
        cp = int((spec.get("controlPlane") or {}).get("replicas", 2))
        self._ensure_monitor(ns, cluster, name, "kubernetes", "control-plane", cp, cp, available=cp)
        first_ready = rec.get("first_ready_at", rec.get("ready_at", now))
        rec.setdefault("first_ready_at", first_ready)
        if now < first_ready + self.delay("control_plane"):
            return first_ready + self.delay("control_plane")
        groups = spec.get("nodeGroups") or {}
        mine = {k: u for k, u in self.units.items() if u["owner"] == owner}
        for ukey, u in mine.items():
            if u.get("group") not in groups:
                self._remove_unit(ukey)
        for gname, g in groups.items():
            if not isinstance(g, dict):
                continue
            want = max(0, min(int(g.get("minReplicas", 0)), int(g.get("maxReplicas", 0) or 0)))
            gpus = [x.get("name", "") for x in g.get("gpus") or [] if isinstance(x, dict)]
            members = sorted(
                (u for u in self.units.values() if u["owner"] == owner and u.get("group") == gname),
                key=lambda u: u["seq"],
            )
            for u in members[want:]:
                self._remove_unit(f"{u['ns']}/{u['name']}")  # scale down: newest first
            members = members[:want]
            ms = stable_hex(self.seed, ns, name, gname, n=5)
            for _ in range(want - len(members)):
                suffix = stable_hex(self.seed, ns, name, gname, self.seq + 1, n=5)
                u = self._new_unit(
                    owner,
                    ns,
                    f"{cluster}-{gname}-{ms}-{suffix}",
                    gpus,
                    now,
                    group=gname,
                    cluster=cluster,
                    instance_type=g.get("instanceType"),
                    labels={
                        "cluster.x-k8s.io/cluster-name": cluster,
                        "cluster.x-k8s.io/deployment-name": f"{cluster}-{gname}",
                        "kubevirt.io/vm": "true",
                    },
                )
                members.append(u)
            for u in members:
                if u["gpus"] != gpus:
                    u["gpus"] = gpus
                    if u["phase"] in RUNNING_PHASES or u["phase"] == "ErrorUnschedulable":
                        self._release(u)
                        u.update(phase="Provisioning", since=now)
                    self._write_vm(u, now)
            running = sum(1 for u in members if u["phase"] == "Running")
            self._ensure_monitor(
                ns,
                f"{cluster}-{gname}",
                name,
                "kubernetes",
                "worker",
                int(g.get("minReplicas", 0)),
                want,
                available=running,
                observed=len(members),
            )
        for _, mon in list(self.store.iter_objects(WORKLOAD_MONITORS.key, ns)):
            mname = mon["metadata"]["name"]
            if (
                mname.startswith(cluster + "-")
                and mon["spec"].get("type") == "worker"
                and mname[len(cluster) + 1 :] not in groups
                and mon["metadata"].get("labels", {}).get("apps.cozystack.io/application.name")
                == name
            ):
                self.store.delete(WORKLOAD_MONITORS.key, ns, mname)
        return 0.0

    def _ensure_monitor(
        self,
        ns: str,
        mname: str,
        app: str,
        kind: str,
        mtype: str,
        min_replicas: int,
        replicas: int,
        available: int | None = None,
        observed: int | None = None,
    ) -> None:
        if available is None:
            u = self.units.get(f"{ns}/{mname}")
            available = 1 if u and u["phase"] == "Running" else 0
            observed = 0 if u is None or u["halted"] else 1
        observed = available if observed is None else observed
        spec = {
            "selector": {"app.kubernetes.io/instance": mname},
            "kind": kind,
            "type": mtype,
            "version": CHART_VERSION,
            "minReplicas": min_replicas,
            "replicas": replicas,
        }
        status = {
            "operational": available >= min_replicas,
            "availableReplicas": available,
            "observedReplicas": observed,
        }
        old = self.store.get(WORKLOAD_MONITORS.key, ns, mname)
        if old and old.get("spec") == spec and old.get("status") == status:
            return
        ts = now_rfc3339(self.clock.now())
        mon = {
            "apiVersion": "cozystack.io/v1alpha1",
            "kind": "WorkloadMonitor",
            "metadata": (
                copy.deepcopy(old["metadata"])
                if old
                else {
                    "name": mname,
                    "namespace": ns,
                    "uid": stable_uuid(self.seed, "wm", ns, mname, ts),
                    "creationTimestamp": ts,
                    "generation": 1,
                    "labels": {"apps.cozystack.io/application.name": app},
                }
            ),
            "spec": spec,
            "status": status,
        }
        self.store.put(WORKLOAD_MONITORS.key, mon)

    def _remove_unit(self, ukey: str) -> None:
        unit = self.units.pop(ukey, None)
        if unit is None:
            return
        self._release(unit)
        self.store.delete(KUBEVIRT_VMS.key, unit["ns"], unit["name"])
        if not unit.get("group"):
            self.store.delete(WORKLOAD_MONITORS.key, unit["ns"], unit["name"])

    def _release(self, unit: dict[str, Any]) -> None:
        if unit.get("pod"):
            pod = self.store.delete(PODS.key, unit["ns"], unit["pod"])
            if pod is not None and unit.get("node"):
                self._take(unit["node"], Counter(unit["gpus"]), -1)
        unit["pod"] = None
        unit["node"] = None

    def _reconcile_units(self, now: float) -> tuple[bool, list[float]]:
        changed = False
        deadlines: list[float] = []
        for unit in sorted(self.units.values(), key=lambda u: u["seq"]):
            before = (unit["phase"], unit.get("node"))
            d = self._step_unit(unit, now)
            if d:
                deadlines.append(d)
            if (unit["phase"], unit.get("node")) != before:
                changed = True
                self._write_vm(unit, now)
                if unit.get("group") is None and unit["owner"]:
                    app = unit["owner"].split("|", 1)[1].split("/", 1)[1]
                    self._ensure_monitor(
                        unit["ns"], unit["name"], app, "virtual-machine", "virtual-machine", 1, 1
                    )
        return changed, deadlines

    def _step_unit(self, unit: dict[str, Any], now: float) -> float:
        phase = unit["phase"]
        if unit["halted"]:
            if phase != "Stopped":
                self._release(unit)
                unit.update(phase="Stopped", since=now)
            return 0.0
        if phase == "Stopped":
            unit.update(phase="Provisioning", since=now - self.delay("vm_provision"))
            phase = "Provisioning"
        if phase in ("Provisioning", "WaitingForVolumeBinding", "ErrorPvcNotFound"):
            ready_at = unit["since"] + self.delay("vm_provision")
            if now < ready_at:
                return ready_at
            blocked = self._disk_block(unit)
            if blocked:
                unit["phase"] = blocked
                return 0.0
            return self._try_schedule(unit, now)
        if phase == "ErrorUnschedulable":
            return self._try_schedule(unit, now)
        if phase == "Starting":
            ready_at = unit["since"] + self.delay("vm_start")
            if now < ready_at:
                return ready_at
            unit.update(phase="Running", since=now)
            self._write_pod(unit, now, running=True)
        return 0.0

    def _disk_block(self, unit: dict[str, Any]) -> str | None:
        for disk in unit.get("disks") or []:
            d = self.store.get("apps.cozystack.io/v1alpha1/vmdisks", unit["ns"], disk)
            if d is None:
                return "ErrorPvcNotFound"
            ready = [
                c for c in (d.get("status") or {}).get("conditions", []) if c["type"] == "Ready"
            ]
            if not ready or ready[0]["status"] != "True":
                return "WaitingForVolumeBinding"
        return None

    def _try_schedule(self, unit: dict[str, Any], now: float) -> float:
        need = Counter(unit["gpus"])
        node = self._find_node(need, unit["name"])
        if unit.get("pod") is None:
            unit["pod"] = f"virt-launcher-{unit['name']}-{stable_hex(self.seed, unit['uid'], n=5)}"
        if node is not None:
            self._take(node, need, +1)
            unit.update(phase="Starting", since=now, node=node)
            pod = self._write_pod(unit, now)
            self.emit(
                unit["ns"],
                _ref(pod),
                "Normal",
                "Scheduled",
                f"Successfully assigned {unit['ns']}/{unit['pod']} to {node}",
                "default-scheduler",
            )
            self.emit(
                unit["ns"],
                self._vm_ref(unit),
                "Normal",
                "SuccessfulCreate",
                "Started the virtual machine by creating the new virtual machine instance "
                + unit["name"],
                "virtualmachine-controller",
            )
            return unit["since"] + self.delay("vm_start")
        first = unit["phase"] != "ErrorUnschedulable"
        unit["phase"] = "ErrorUnschedulable"
        if first or now >= unit.get("event_at", 0) + self.delay("sched_retry"):
            # The message scans every node: build it only when an event is due.
            msg = self._unschedulable_message(need)
            unit["message"] = msg
            pod = self._write_pod(unit, now, message=msg)
            self.emit(
                unit["ns"], _ref(pod), "Warning", "FailedScheduling", msg, "default-scheduler"
            )
            unit["event_at"] = now
        return unit["event_at"] + self.delay("sched_retry")

    # --- derived objects ---------------------------------------------------------------
    def _vm_ref(self, unit: dict[str, Any]) -> dict[str, Any]:
        return {
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachine",
            "name": unit["name"],
            "namespace": unit["ns"],
            "uid": unit["uid"],
        }

    def _write_vm(self, unit: dict[str, Any], now: float) -> None:
        ts = now_rfc3339(now)
        old = self.store.get(KUBEVIRT_VMS.key, unit["ns"], unit["name"])
        phase = unit["phase"]
        ready = phase == "Running"
        conds = [
            {
                "type": "Ready",
                "status": "True" if ready else "False",
                "lastProbeTime": None,
                "lastTransitionTime": ts,
                "reason": ""
                if ready
                else ("VMINotExists" if phase in ("Stopped", "Provisioning") else "PodNotReady"),
                "message": ""
                if ready
                else (
                    "VMI does not exist"
                    if phase in ("Stopped", "Provisioning")
                    else "virt-launcher pod is not ready"
                ),
            }
        ]
        if phase == "ErrorUnschedulable":
            conds.append(
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "lastProbeTime": None,
                    "lastTransitionTime": ts,
                    "reason": "Unschedulable",
                    "message": unit.get("message", ""),
                }
            )
        gpus = [{"name": f"gpu{i + 1}", "deviceName": g} for i, g in enumerate(unit["gpus"])]
        spec: dict[str, Any] = {
            "runStrategy": "Halted" if unit["halted"] else "Always",
            "template": {
                "metadata": {"labels": {"kubevirt.io/domain": unit["name"]}},
                "spec": {"domain": {"devices": {"gpus": gpus}}},
            },
        }
        if unit.get("instance_type"):
            spec["instancetype"] = {
                "kind": "VirtualMachineClusterInstancetype",
                "name": unit["instance_type"],
            }
        status = {
            "printableStatus": phase,
            "created": phase in RUNNING_PHASES,
            "ready": ready,
            "conditions": conds,
            "runStrategy": spec["runStrategy"],
        }
        if old and old["spec"] == spec and old["status"]["printableStatus"] == phase:
            return
        md = (
            copy.deepcopy(old["metadata"])
            if old
            else {
                "name": unit["name"],
                "namespace": unit["ns"],
                "uid": unit["uid"],
                "generation": 1,
                "creationTimestamp": now_rfc3339(unit["created"]),
                "labels": dict(unit.get("labels") or {}),
                "annotations": {"kubevirt.io/latest-observed-api-version": "v1"},
            }
        )
        if old and old["spec"] != spec:
            md["generation"] = int(md.get("generation", 1)) + 1
        self.store.put(
            KUBEVIRT_VMS.key,
            {
                "apiVersion": "kubevirt.io/v1",
                "kind": "VirtualMachine",
                "metadata": md,
                "spec": spec,
                "status": status,
            },
        )

    def _write_pod(
        self, unit: dict[str, Any], now: float, running: bool = False, message: str | None = None
    ) -> dict[str, Any]:
        ts = now_rfc3339(now)
        need = Counter(unit["gpus"])
        gpu_req = {m: str(n) for m, n in sorted(need.items())}
        requests = {"cpu": "100m", "memory": "4Gi", "devices.kubevirt.io/kvm": "1", **gpu_req}
        limits = {"devices.kubevirt.io/kvm": "1", **gpu_req}
        old = self.store.get(PODS.key, unit["ns"], unit["pod"])
        md = (
            copy.deepcopy(old["metadata"])
            if old
            else {
                "name": unit["pod"],
                "namespace": unit["ns"],
                "uid": stable_uuid(self.seed, "pod", unit["pod"], now),
                "creationTimestamp": ts,
                "generateName": f"virt-launcher-{unit['name']}-",
                "labels": {
                    "kubevirt.io": "virt-launcher",
                    "kubevirt.io/created-by": unit["uid"],
                    "vm.kubevirt.io/name": unit["name"],
                    "kubevirt.io/domain": unit["name"],
                    **{
                        k: v
                        for k, v in (unit.get("labels") or {}).items()
                        if k.startswith("cluster.x-k8s.io")
                    },
                },
                "annotations": {"kubevirt.io/domain": unit["name"]},
                "ownerReferences": [
                    {
                        "apiVersion": "kubevirt.io/v1",
                        "kind": "VirtualMachineInstance",
                        "name": unit["name"],
                        "uid": unit["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            }
        )
        spec: dict[str, Any] = {
            "containers": [
                {
                    "name": "compute",
                    "image": LAUNCHER_IMAGE,
                    "command": ["/usr/bin/virt-launcher-monitor"],
                    "resources": {"requests": requests, "limits": limits},
                }
            ],
            "restartPolicy": "Never",
            "schedulerName": "default-scheduler",
            "serviceAccountName": "default",
            "terminationGracePeriodSeconds": 210,
            "priority": 0,
            "automountServiceAccountToken": False,
            "tolerations": [
                {
                    "key": "node.kubernetes.io/not-ready",
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 300,
                },
                {
                    "key": "node.kubernetes.io/unreachable",
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 300,
                },
            ],
        }
        status: dict[str, Any] = {"phase": "Pending", "qosClass": "Burstable"}
        if unit.get("node"):
            spec["nodeName"] = unit["node"]
            ip = int(stable_hex(unit["pod"], n=4), 16)
            status.update(
                hostIP=_node_ip(self.store, unit["node"]),
                podIP=f"10.244.{ip % 250}.{ip % 253 + 2}",
                startTime=md["creationTimestamp"],
            )
            conds = [{"type": "PodScheduled", "status": "True", "lastTransitionTime": ts}]
            if running:
                status["phase"] = "Running"
                conds += [
                    {"type": t, "status": "True", "lastTransitionTime": ts}
                    for t in ("Initialized", "ContainersReady", "Ready")
                ]
                status["containerStatuses"] = [
                    {
                        "name": "compute",
                        "image": LAUNCHER_IMAGE,
                        "imageID": LAUNCHER_IMAGE + "@sha256:" + stable_hex("img", n=64),
                        "ready": True,
                        "restartCount": 0,
                        "started": True,
                        "containerID": "containerd://" + stable_hex(unit["pod"], n=64),
                        "state": {"running": {"startedAt": ts}},
                    }
                ]
            status["conditions"] = conds
        else:
            status["conditions"] = [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": message or unit.get("message", ""),
                    "lastTransitionTime": ts,
                }
            ]
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": md, "spec": spec, "status": status}
        return self.store.put(PODS.key, pod)


def _ref(pod: dict[str, Any]) -> dict[str, Any]:
    md = pod["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "name": md["name"],
        "namespace": md["namespace"],
        "uid": md["uid"],
        "resourceVersion": md.get("resourceVersion", ""),
    }


def _node_ready(node: dict[str, Any]) -> bool:
    for c in node.get("status", {}).get("conditions", []):
        if c.get("type") == "Ready":
            return c.get("status") == "True"
    return False


def _node_ip(store: Store, name: str) -> str:
    node = store.get(NODES.key, "", name)
    for a in (node or {}).get("status", {}).get("addresses", []):
        if a.get("type") == "InternalIP":
            return a["address"]
    return "10.0.0.1"
