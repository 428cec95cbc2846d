"""Store readings: upsert devices (owner at this time, idle tracking), bulk-insert samples."""

from __future__ import annotations

import datetime as dt
import time
from collections import defaultdict
from collections.abc import Iterable

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from gpus.catalog.models import GpuModel
from gpus.inventory.choices import WorkloadKind
from gpus.inventory.models import Cluster, GpuWorkload
from gpus.tenancy.models import Tenant
from gpus.utilization.metrics.config import source_for
from gpus.utilization.metrics.dcgm import NVML_MODELS, model_key
from gpus.utilization.metrics.errors import MetricsError
from gpus.utilization.metrics.parse import Reading
from gpus.utilization.models import GpuDevice, GpuSample, MetricSource, XidEvent

BATCH = 2000
UUID_MAX = GpuDevice._meta.get_field("uuid").max_length
MODEL_NAME_MAX = GpuDevice._meta.get_field("model_name").max_length
HOSTNAME_MAX = GpuDevice._meta.get_field("hostname").max_length
KUBE_CLUSTER_MAX = GpuDevice._meta.get_field("kube_cluster").max_length
POD_MAX = GpuDevice._meta.get_field("pod").max_length


class Owners:
    """Who held a GPU, from the inventory snapshot as it is now."""

    def __init__(self, cluster_id: int | None) -> None:
        self.tenants = {t.namespace: t.pk for t in Tenant.objects.only("namespace")}
        self.vms: dict[tuple[int, str], int] = {}
        self.groups: list[tuple[int, str, str, int]] = []  # tenant, app name, group, workload
        qs = GpuWorkload.objects.all()
        if cluster_id is not None:
            qs = qs.filter(cluster_id=cluster_id)
        for w in qs.values("pk", "tenant_id", "kind", "name", "node_group"):
            if w["kind"] == WorkloadKind.VM:
                self.vms[(w["tenant_id"], w["name"])] = w["pk"]
            else:
                self.groups.append((w["tenant_id"], w["name"], w["node_group"], w["pk"]))
        # Longest group first, so "gpu-large" wins over "gpu" for kubernetes-ml-gpu-large-x.
        self.groups.sort(key=lambda g: -len(g[2]))

    def of(self, r: Reading) -> tuple[int | None, int | None]:
        tenant = self.tenants.get(r.tenant)
        if r.vm:
            return tenant, self.vms.get((tenant, r.vm)) if tenant else None
        app = r.cluster.removeprefix("kubernetes-") if r.cluster else ""
        for t, name, group, pk in self.groups:
            same_tenant = tenant is None or t == tenant
            if name == app and same_tenant and r.hostname.startswith(f"kubernetes-{name}-{group}-"):
                return t, pk
        return tenant, None


def _models() -> tuple[dict[str, int], dict[str, int]]:
    """Catalog models by resource name and by display name (as compared)."""
    by_resource, by_display = {}, {}
    rows = GpuModel.objects.values_list("pk", "resource_name", "display_name")
    for pk, resource, display in rows:
        by_resource[resource] = pk
        by_display[model_key(display)] = pk
    return by_resource, by_display


def _model_id(models: tuple[dict[str, int], dict[str, int]], model_name: str) -> int | None:
    """DCGM modelName -> catalog model: NVML's name for the resource, else the catalog's display
    name, both whole (a prefix would make an L40 an L40S and an A10 an A100)."""
    by_resource, by_display = models
    key = model_key(model_name)
    for resource in NVML_MODELS.get(key, ()):
        if resource in by_resource:
            return by_resource[resource]
    return by_display.get(key) or by_display.get(f"nvidia {key}")


def model_id_for(model_name: str) -> int | None:
    """The catalog model a reported model name is, if the catalog knows it."""
    return _model_id(_models(), model_name)


def store(
    readings: Iterable[Reading],
    cluster_id: int | None,
    keep_samples: bool = True,
    owners: Owners | None = None,
) -> int:
    """Record one pass: devices upserted with their owner now, idle tracking, samples."""
    # Labels are the exporter's (a tenant's cluster runs it): a value past its column would fail
    # the whole pass on PostgreSQL. A UUID that long names no GPU; the other texts are clipped.
    readings = [r for r in readings if len(r.uuid) <= UUID_MAX]
    for r in readings:
        r.model_name, r.hostname = r.model_name[:MODEL_NAME_MAX], r.hostname[:HOSTNAME_MAX]
        r.cluster, r.pod, r.vm = r.cluster[:KUBE_CLUSTER_MAX], r.pod[:POD_MAX], r.vm[:POD_MAX]
    if not readings:
        return 0
    owners = owners or Owners(cluster_id)
    models = _models()
    model_ids: dict[str, int | None] = {}
    threshold = settings.METRICS_IDLE_THRESHOLD
    existing = GpuDevice.objects.in_bulk([r.uuid for r in readings], field_name="uuid")
    before = {uuid: _tracked(d) for uuid, d in existing.items()}
    new: list[GpuDevice] = []
    seen: dict[dt.datetime, list[int]] = defaultdict(list)  # last_seen_at -> existing pks
    samples: list[GpuSample] = []
    events: list[XidEvent] = []
    for r in readings:
        ts = dt.datetime.fromtimestamp(r.ts, tz=dt.UTC)
        tenant_id, workload_id = owners.of(r)
        busy, busy_metric = r.busy()
        d = existing.get(r.uuid)
        if d is None:
            d = existing[r.uuid] = GpuDevice(uuid=r.uuid)
            new.append(d)
        if d.tenant_id != tenant_id or d.workload_id != workload_id:
            d.idle_since = None  # a new owner starts a new idle period
        d.cluster_id = cluster_id
        d.model_name = r.model_name or d.model_name
        if d.model_name not in model_ids:
            model_ids[d.model_name] = _model_id(models, d.model_name)
        d.gpu_model_id = model_ids[d.model_name]
        d.hostname, d.index, d.source = r.hostname, r.index, r.source
        d.tenant_id, d.workload_id = tenant_id, workload_id
        d.kube_cluster, d.pod = r.cluster, r.pod or r.vm
        d.power_limit_w = r.values.get("power_limit", d.power_limit_w)
        d.last_seen_at = ts
        d.busy_metric = busy_metric
        if r.allocated and busy is not None and busy < threshold:
            d.idle_since = d.idle_since or ts
        else:
            d.idle_since = None
        if "xid" in r.values:
            xid = int(r.values["xid"])
            if xid and xid != d.xid_value:  # the gauge moved to a new value: one incident
                events.append(
                    XidEvent(device=d, ts=ts, xid=xid, tenant_id=tenant_id, workload_id=workload_id)
                )
            d.xid_value = xid  # 0 after a driver reload: the same XID again is a new incident
        if d.pk is not None:
            seen[ts].append(d.pk)
        if keep_samples:
            v = r.values
            samples.append(
                GpuSample(
                    device=d,
                    ts=ts,
                    tenant_id=tenant_id,
                    workload_id=workload_id,
                    allocated=r.allocated,
                    util=v.get("util"),
                    busy=busy,
                    tensor=v.get("tensor"),
                    mem_used=v.get("mem_used"),
                    mem_total=r.mem_total(),
                    power=v.get("power"),
                    temp=v.get("temp"),
                    sm_clock=v.get("sm_clock"),
                    mem_clock=v.get("mem_clock"),
                    energy_mj=v.get("energy_mj"),
                    xid=int(v["xid"]) if "xid" in v else None,
                    throttle=int(v["throttle"]) if "throttle" in v else None,
                )
            )
    # Most passes change only last_seen_at: one UPDATE per timestamp, and a (slow, CASE WHEN)
    # bulk update only for the devices whose other fields moved.
    changed = [d for uuid, d in existing.items() if uuid in before and _tracked(d) != before[uuid]]
    with transaction.atomic():
        GpuDevice.objects.bulk_create(new, batch_size=BATCH)
        GpuDevice.objects.bulk_update(changed, TRACKED, batch_size=200)
        for ts, pks in seen.items():
            for i in range(0, len(pks), 5000):
                GpuDevice.objects.filter(pk__in=pks[i : i + 5000]).update(last_seen_at=ts)
        for s in samples:
            s.device_id = s.device.pk
        GpuSample.objects.bulk_create(samples, batch_size=BATCH)
        for e in events:
            e.device_id = e.device.pk
        XidEvent.objects.bulk_create(events, ignore_conflicts=True)
    return len(readings)


TRACKED = [
    "cluster",
    "model_name",
    "gpu_model",
    "hostname",
    "index",
    "source",
    "tenant",
    "workload",
    "kube_cluster",
    "pod",
    "power_limit_w",
    "idle_since",
    "busy_metric",
    "xid_value",
]


def _tracked(d: GpuDevice) -> tuple:
    return tuple(getattr(d, f.attname) for f in (GpuDevice._meta.get_field(n) for n in TRACKED))


def collect_cluster(cluster_id: int) -> dict[str, object]:
    """One collection pass for one cluster; the outcome is kept on its MetricSource row."""
    started = time.monotonic()
    row, _ = MetricSource.objects.get_or_create(cluster_id=cluster_id)
    try:
        # Inside: a credential whose secret is missing is this source's error, shown on it.
        source = source_for(cluster_id)
        readings = source.collect()
    except MetricsError as exc:
        _record(cluster_id, row, error=str(exc), seconds=time.monotonic() - started)
        raise
    n = store(readings, cluster_id, keep_samples=source.kind == "direct")
    errors = getattr(source, "errors", [])
    _record(cluster_id, row, error="; ".join(errors[:3]), seconds=time.monotonic() - started)
    return {"cluster": cluster_id, "gpus": n, "errors": len(errors)}


def _record(cluster_id: int, row: MetricSource, error: str, seconds: float) -> None:
    """Remember the last pass on the cluster's source row: pages show it."""
    if not error:
        row.last_collected_at = timezone.now()
    row.last_error, row.last_seconds = error, seconds
    row.save(update_fields=["last_collected_at", "last_error", "last_seconds"])


def cluster_ids() -> list[int]:
    return list(Cluster.objects.values_list("pk", flat=True))
