"""Right-sizing: the one place its rules are written.

From the last 7 days of per-GPU hourly utilization rollups (``gpus.utilization``), for every
GPU VM and node group that holds GPUs:

- **Enough telemetry.** At least ``MIN_HOURS`` hours of the window with readings, else no
  verdict (a passthrough VM without its guest agent reports nothing: no verdict, never "idle").
- **Busy** is the mean, over the window, of each hour's busy % (the best busy metric the GPU
  reports, else its utilization), averaged over the workload's GPUs.
- **Memory** is the most any of its GPUs used in any hour (each hour's maximum where stored,
  else its mean).
- **Held but idle**: busy under ``IDLE_BUSY_PCT`` (the utilization pages' idle threshold).
  Releasing its GPUs saves what they cost.
- **A smaller model**: busy under ``SMALLER_BUSY_PCT`` and the memory peak within
  ``MEMORY_MARGIN`` of a cheaper offered model's memory: the cheapest such model. The saving is
  the GPU price difference (the VM's vCPU, memory and disk stay as they are).
- **Mostly idle**: busy under ``SMALLER_BUSY_PCT`` with no smaller model that fits: said, with
  no saving.
- **Savings** are per month (730 hours) at the price list in force now (``capacity.pricing``); a
  model without a price gives a suggestion without an amount.

Where the readings come from: per-GPU hourly rollups where the portal keeps them (GPUs scraped
directly, guest agents); otherwise the workload's hourly group rollups, which is all the portal
keeps with a Prometheus or VictoriaMetrics query API as the source. Both carry the same figures
(each hour's mean busy % over the workload's GPUs, and the most memory one of them used, in
MiB), so one workload is judged by the same rules in both modes.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db.models import Avg, Count, Max, Q
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from gpus.capacity import pricing
from gpus.catalog.models import GpuModel
from gpus.inventory.models import GpuWorkload
from gpus.tenancy.models import Tenant
from gpus.utilization.models import Bucket, GpuRollup, GroupRollup, Scope
from gpus.utilization.rollup import workload_label

WINDOW_DAYS = 7
MIN_HOURS = 72  # three days of readings in the week
IDLE_BUSY_PCT = float(getattr(settings, "METRICS_IDLE_THRESHOLD", 5.0))
SMALLER_BUSY_PCT = 30.0
MEMORY_MARGIN = Decimal("0.8")  # the peak must fit in 80 % of the smaller model's memory
HOURS_PER_MONTH = pricing.HOURS_PER_MONTH
MIB = Decimal(1048576)
GB = Decimal(1000000000)


class Verdict(StrEnum):
    IDLE = "idle"
    SMALLER = "smaller"
    MOSTLY_IDLE = "mostly_idle"


@dataclass(frozen=True)
class GpuPrices:
    """What right-sizing needs of the price list: the price of a GPU-hour per model."""

    currency: str
    hour: dict[int, Decimal]

    def month(self, model_id: int) -> Decimal | None:
        price = self.hour.get(model_id)
        return price * HOURS_PER_MONTH if price is not None else None


def gpu_prices(at: dt.datetime | None = None) -> GpuPrices | None:
    """The GPU prices of the list in force (None without one)."""
    rates = pricing.rates_at(at)
    return GpuPrices(rates.currency, dict(rates.gpu_hour)) if rates is not None else None


@dataclass
class Usage:
    """One workload over the window (its row is loaded only for what is shown)."""

    workload_id: int
    model: GpuModel
    gpus: int
    hours: int
    busy_pct: float
    mem_peak_mib: float | None
    workload: GpuWorkload | None = None

    @property
    def mem_peak_gb(self) -> Decimal | None:
        if self.mem_peak_mib is None:
            return None
        return Decimal(str(self.mem_peak_mib)) * MIB / GB


@dataclass(frozen=True)
class Suggestion:
    usage: Usage
    verdict: Verdict
    target: GpuModel | None = None
    saving: Decimal | None = None  # per month
    currency: str = ""

    @property
    def workload(self) -> GpuWorkload:
        assert self.usage.workload is not None
        return self.usage.workload

    @property
    def saving_text(self) -> str:
        return pricing.money(self.saving, self.currency) if self.saving is not None else ""

    def text(self) -> str:
        """The suggestion in plain words, in the active language."""
        w = self.workload
        model = self.usage.model.display_name
        values = {
            "name": _target(w),
            "n": self.usage.gpus,
            "model": model,
            "busy": round(self.usage.busy_pct),
            "saving": self.saving_text,
            "days": WINDOW_DAYS,
        }
        if self.verdict == Verdict.IDLE:
            if self.saving is None:
                return (
                    ngettext(
                        "%(name)s held its %(model)s for %(days)d days and used it %(busy)d %% of "
                        "the time: releasing it would free it for others.",
                        "%(name)s held %(n)d × %(model)s for %(days)d days and used them "
                        "%(busy)d %% of the time: releasing them would free them for others.",
                        self.usage.gpus,
                    )
                    % values
                )
            return (
                ngettext(
                    "%(name)s held its %(model)s for %(days)d days and used it %(busy)d %% of the "
                    "time: releasing it would save %(saving)s a month.",
                    "%(name)s held %(n)d × %(model)s for %(days)d days and used them "
                    "%(busy)d %% of the time: releasing them would save %(saving)s a month.",
                    self.usage.gpus,
                )
                % values
            )
        peak = self.usage.mem_peak_gb
        values |= {
            "used": int(peak.to_integral_value()) if peak is not None else 0,
            "size": int(self.usage.model.memory_gb or 0),
        }
        if self.verdict == Verdict.SMALLER:
            assert self.target is not None
            values["target"] = self.target.display_name
            if self.saving is None:
                return (
                    _(
                        "%(name)s used at most %(used)d GB of its %(model)s's %(size)d GB and "
                        "%(busy)d %% of its time: an %(target)s would do."
                    )
                    % values
                )
            return (
                _(
                    "%(name)s used at most %(used)d GB of its %(model)s's %(size)d GB and "
                    "%(busy)d %% of its time: an %(target)s would save %(saving)s a month."
                )
                % values
            )
        return (
            _(
                "%(name)s was busy %(busy)d %% of its time but used up to %(used)d GB of its "
                "%(model)s's %(size)d GB: no cheaper model has the memory."
            )
            % values
        )


def _target(w: GpuWorkload) -> str:
    return f"{w.name}/{w.node_group}" if w.node_group else w.name


def decide(usage: Usage, models: list[GpuModel], prices: GpuPrices | None) -> Suggestion | None:
    """The rules above, for one workload (None: nothing to suggest)."""
    held = usage.model
    if usage.hours < MIN_HOURS or usage.gpus <= 0:
        return None
    currency = prices.currency if prices else ""
    current = prices.month(held.pk) if prices else None
    if usage.busy_pct < IDLE_BUSY_PCT:
        saving = current * usage.gpus if current is not None else None
        return Suggestion(usage, Verdict.IDLE, saving=saving, currency=currency)
    if usage.busy_pct >= SMALLER_BUSY_PCT:
        return None
    peak = usage.mem_peak_gb
    if peak is not None and held.memory_gb:
        fitting = []
        for m in models:
            if m.pk == held.pk or not m.memory_gb or m.memory_gb >= held.memory_gb:
                continue
            if peak > MEMORY_MARGIN * m.memory_gb:
                continue
            price = prices.month(m.pk) if prices else None
            if current is not None and price is not None and price >= current:
                continue  # not cheaper: nothing to gain
            fitting.append((price if price is not None else Decimal("Infinity"), m))
        if fitting:
            price, target = min(fitting, key=lambda p: (p[0], p[1].sort_order))
            saving = None
            if current is not None and price != Decimal("Infinity"):
                saving = (current - price) * usage.gpus
            return Suggestion(usage, Verdict.SMALLER, target, saving, currency)
    if peak is None:
        return None
    return Suggestion(usage, Verdict.MOSTLY_IDLE, currency=currency)


Stat = tuple[int, int, int, int, float, Any]


def _stats(tenant: Tenant | None, now: dt.datetime) -> list[Stat]:
    """Per workload still holding GPUs, over the window's hourly rollups: (workload, its model,
    GPUs held, hours with readings, mean busy %, memory peak). Fleet-wide it is kept in the
    cache until the next hour's rollups (a week of a large fleet's hourly rows is millions); one
    tenant's reads its own index."""
    end = now.replace(minute=0, second=0, microsecond=0)
    key = f"capacity:rightsizing:3:{int(end.timestamp())}"  # :3: per-GPU and group rows
    if tenant is None and (cached := cache.get(key)) is not None:
        return cached
    since = end - dt.timedelta(days=WINDOW_DAYS)
    per_gpu = {s[0]: s for s in _per_gpu_stats(tenant, since, end)}
    stats = list(per_gpu.values()) + [
        s for s in _group_stats(tenant, since, end) if s[0] not in per_gpu
    ]
    if tenant is None:
        cache.set(key, stats, 3600)
    return stats


def _per_gpu_stats(tenant: Tenant | None, since: dt.datetime, end: dt.datetime) -> list[Stat]:
    """From per-GPU rows: one aggregate, the busy % averaged over the workload's GPU-hours."""
    rows = GpuRollup.objects.filter(
        bucket=Bucket.HOUR,
        ts__gte=since,
        ts__lt=end,
        allocated=True,
        workload__gpus_held__gt=0,
        workload__gpu_model__isnull=False,
    ).filter(Q(busy_avg__isnull=False) | Q(util_avg__isnull=False))
    if tenant is not None:
        rows = rows.filter(tenant=tenant, workload__tenant=tenant)
    return [
        (
            r["workload_id"],
            r["workload__gpu_model_id"],
            r["workload__gpus_held"],
            r["hours"],
            float(r["busy"] or 0.0),
            r["mem"],
        )
        for r in rows.values("workload_id", "workload__gpu_model_id", "workload__gpus_held")
        .annotate(
            hours=Count("ts", distinct=True),
            busy=Avg(Coalesce("busy_avg", "util_avg")),
            mem=Max(Coalesce("mem_used_max", "mem_used_avg")),
        )
        .order_by()
    ]


def _group_stats(tenant: Tenant | None, since: dt.datetime, end: dt.datetime) -> list[Stat]:
    """From the workloads' group rows (keyed "<tenant>|<workload label>"): one aggregate per
    key, matched to the workloads holding GPUs. Each hour's busy % is already the mean over the
    workload's GPUs, and its memory peak the highest of them."""
    workloads = GpuWorkload.objects.filter(gpus_held__gt=0, gpu_model__isnull=False)
    rows = GroupRollup.objects.filter(
        bucket=Bucket.HOUR, scope=Scope.WORKLOAD, ts__gte=since, ts__lt=end, allocated__gt=0
    ).filter(Q(busy_avg__isnull=False) | Q(util_avg__isnull=False))
    if tenant is not None:
        workloads = workloads.filter(tenant=tenant)
        rows = rows.filter(key__startswith=f"{tenant.namespace}|")
    by_key = {
        f"{ns}|{workload_label(name, group, None)}": (pk, model_id, held)
        for pk, ns, name, group, model_id, held in workloads.values_list(
            "pk", "tenant__namespace", "name", "node_group", "gpu_model_id", "gpus_held"
        )
    }
    out = []
    for r in (
        rows.values("key")
        .annotate(
            hours=Count("ts"),
            busy=Avg(Coalesce("busy_avg", "util_avg")),
            mem=Max("mem_used_max"),
        )
        .order_by()
    ):
        if (w := by_key.get(r["key"])) is not None:
            out.append((*w, r["hours"], float(r["busy"] or 0.0), r["mem"]))
    return out


def suggestions(
    tenant: Tenant | None = None, now: dt.datetime | None = None, limit: int | None = None
) -> list[Suggestion]:
    """Right-sizing for one tenant (My GPUs) or the whole fleet (admins), the biggest saving
    first, then the idlest: decided on the aggregate, and only the rows shown are loaded."""
    now = now or timezone.now()
    stats = _stats(tenant, now)
    if not stats:
        return []
    models = {
        m.pk: m
        for m in GpuModel.objects.filter(
            Q(offered=True, memory_gb__isnull=False) | Q(pk__in={r[1] for r in stats})
        )
    }
    offered = [m for m in models.values() if m.offered and m.memory_gb is not None]
    prices = gpu_prices(now)
    found = []
    for workload_id, model_id, gpus, hours, busy, mem in stats:
        usage = Usage(workload_id, models[model_id], gpus, hours, busy, mem)
        if (s := decide(usage, offered, prices)) is not None:
            found.append(s)
    found.sort(key=lambda s: (-(s.saving or Decimal(0)), s.usage.busy_pct, s.usage.workload_id))
    if limit:
        found = found[:limit]
    shown = GpuWorkload.objects.filter(pk__in=[s.usage.workload_id for s in found])
    rows = {w.pk: w for w in shown.select_related("tenant", "cluster")}
    for s in found:
        s.usage.workload = rows.get(s.usage.workload_id)
    return [s for s in found if s.usage.workload is not None]
