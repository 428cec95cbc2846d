"""Prices, estimates and spend: the one place their policy is written.

- **Price lists.** A list is in force from its `valid_from` day (00:00 UTC) until a later list's
  (two lists for one day: the one saved last). A new list applies from today or later, never
  before, so spend already counted keeps its prices. Lists are never changed: a change is a new
  list, which records who set it and when (the audit trail).
- **Units.** GPUs, vCPU and memory are priced per hour (per GPU, per vCPU, per GiB); disk per
  GiB-month. A month is 730 hours (365 x 24 / 12) everywhere: disk per GiB-hour is the month's
  price / 730, and a monthly figure is 730 x the hourly one.
- **Estimate** (the VM and node-group forms): what the form asks for x the list in force now,
  per hour and per month. A node group costs its minimum workers, may grow to its maximum, and
  during a roll also pays for its surge workers (the new ones beside the old).
- **Spend**: the tenant's daily usage rows (GPU-hours, and the vCPU-, memory- and disk-GiB-hours
  of the workloads holding the GPUs, written at each sync by capacity.history) x the list in
  force on each row's day. The daily rows are rewritten by each rollup, so spend lags the
  cluster by at most one rollup interval.
- **This month's forecast**: spend so far this month + what the tenant holds now (the snapshot)
  x the current hourly price x the hours left until the month ends (UTC).
- **Currencies** are never added to each other: a period priced by lists in CHF and in EUR has
  a total per currency ("CHF 1,140.00 + EUR 230.00"), and the exports a row per currency.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

from django.db.models import Case, IntegerField, QuerySet, Sum, Value, When
from django.db.models.functions import TruncMonth
from django.utils import formats, timezone

from gpus.capacity.models import Bucket, Currency, GpuPrice, PriceList, TenantUsage
from gpus.catalog.models import GpuModel
from gpus.inventory.choices import WorkloadKind
from gpus.inventory.models import CatalogueEntry, Cluster, GpuWorkload, TenantAllocation
from gpus.provisioning.capacity import gib
from gpus.provisioning.choices import OperationState
from gpus.provisioning.models import Operation
from gpus.tenancy.models import Tenant

UTC = dt.UTC
HOURS_PER_MONTH = Decimal(730)
CENT = Decimal("0.01")


def money(amount: Decimal | float, currency: str) -> str:
    """An amount as people read it in the active language: "CHF 1,140.00", "CHF 1 140,00"."""
    value = Decimal(amount).quantize(CENT)
    return f"{currency}\u00a0{formats.number_format(value, 2, use_l10n=True, force_grouping=True)}"


@dataclass(frozen=True)
class Money:
    amount: Decimal
    currency: str

    def __str__(self) -> str:
        return money(self.amount, self.currency)


# --- price lists ------------------------------------------------------------------------


@dataclass(frozen=True)
class Rates:
    """One price list, read for computing."""

    pk: int
    valid_from: dt.date
    currency: str
    vcpu_hour: Decimal
    memory_gib_hour: Decimal
    disk_gib_month: Decimal
    gpu_hour: dict[int, Decimal] = field(default_factory=dict)
    set_by: str = ""
    created_at: dt.datetime | None = None

    @property
    def disk_gib_hour(self) -> Decimal:
        return self.disk_gib_month / HOURS_PER_MONTH

    @property
    def starts(self) -> dt.datetime:
        return midnight(self.valid_from)

    def gpu_price(self, model_id: int | None) -> Decimal | None:
        return self.gpu_hour.get(model_id) if model_id is not None else None

    def hourly(
        self,
        model_id: int | None,
        gpus: float,
        vcpus: float,
        memory_gib: float,
        disk_gib: float,
    ) -> Decimal:
        """What holding this costs an hour (a model without a price: its GPUs cost nothing)."""
        return (
            (self.gpu_price(model_id) or 0) * Decimal(str(gpus))
            + self.vcpu_hour * Decimal(str(vcpus))
            + self.memory_gib_hour * Decimal(str(memory_gib))
            + self.disk_gib_hour * Decimal(str(disk_gib))
        )


def midnight(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=UTC)


def _rates(lists: Iterable[PriceList]) -> list[Rates]:
    lists = list(lists)
    gpu: dict[int, dict[int, Decimal]] = defaultdict(dict)
    for list_id, model_id, hour in GpuPrice.objects.filter(
        price_list__in=[pl.pk for pl in lists]
    ).values_list("price_list_id", "gpu_model_id", "hour"):
        gpu[list_id][model_id] = hour
    return [
        Rates(
            pk=pl.pk,
            valid_from=pl.valid_from,
            currency=pl.currency,
            vcpu_hour=pl.vcpu_hour,
            memory_gib_hour=pl.memory_gib_hour,
            disk_gib_month=pl.disk_gib_month,
            gpu_hour=gpu[pl.pk],
            set_by=pl.set_by,
            created_at=pl.created_at,
        )
        for pl in lists
    ]


def _day(at: dt.datetime | dt.date | None) -> dt.date:
    if at is None:
        at = timezone.now()
    if isinstance(at, dt.datetime):
        return at.astimezone(UTC).date()
    return at


def rates_at(at: dt.datetime | dt.date | None = None) -> Rates | None:
    """The list in force at a time (now by default), None when no list is: 2 queries."""
    pl = PriceList.objects.filter(valid_from__lte=_day(at)).order_by("-valid_from", "-pk").first()
    return _rates([pl])[0] if pl is not None else None


def price_lists() -> list[Rates]:
    """Every list, the newest valid_from first (a few a year): 2 queries."""
    return _rates(PriceList.objects.order_by("-valid_from", "-pk"))


def scheduled_lists(today: dt.date | None = None) -> list[Rates]:
    """The list in force and every later one, in force order."""
    today = today or _day(None)
    lists = price_lists()
    current = next((r for r in lists if r.valid_from <= today), None)
    later = [r for r in lists if r.valid_from > today]
    return sorted(later, key=lambda r: (r.valid_from, r.pk)) + ([current] if current else [])


def _model_id(model: GpuModel | int | None) -> int | None:
    return model.pk if isinstance(model, GpuModel) else model


def hourly_cost(
    model: GpuModel | int | None,
    gpus: float,
    vcpus: float,
    memory_gib: float,
    disk_gib: float,
    at: dt.datetime | dt.date | None = None,
) -> Money | None:
    """What holding this costs an hour at the list in force at `at` (now); None without a list."""
    rates = rates_at(at)
    if rates is None:
        return None
    return Money(rates.hourly(_model_id(model), gpus, vcpus, memory_gib, disk_gib), rates.currency)


def monthly_cost(
    model: GpuModel | int | None,
    gpus: float,
    vcpus: float,
    memory_gib: float,
    disk_gib: float,
    at: dt.datetime | dt.date | None = None,
) -> Money | None:
    """What holding this costs a month (730 hours) at the list in force at `at` (now); None
    when no list is in force. Disk is priced per GiB-month, the rest per hour."""
    hour = hourly_cost(model, gpus, vcpus, memory_gib, disk_gib, at)
    return Money(hour.amount * HOURS_PER_MONTH, hour.currency) if hour is not None else None


# --- estimates on the forms -------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    """The cost of what a form asks for, per hour and per month, at the list in force."""

    currency: str
    hour: Decimal
    gpu_priced: bool  # False: the model has no price in the list (its GPUs cost nothing here)
    max_hour: Decimal | None = None  # a node group at its maximum workers
    surge_hour: Decimal | None = None  # a node group during a roll: old and new workers
    surge_workers: int = 0
    old_workers: int = 0

    @property
    def month(self) -> Decimal:
        return self.hour * HOURS_PER_MONTH

    @property
    def max_month(self) -> Decimal | None:
        return self.max_hour * HOURS_PER_MONTH if self.max_hour is not None else None

    def text(self, amount: Decimal | None) -> str:
        return money(amount, self.currency) if amount is not None else ""


def instance_sizes(*names: str) -> dict[str, tuple[int, float]]:
    """vCPUs and GiB of memory per instance type, as the clusters serve them (the inventory's
    catalogue; an instance type no cluster serves is not priced)."""
    rows = CatalogueEntry.objects.filter(kind=CatalogueEntry.Kind.INSTANCE_TYPE)
    if names:
        rows = rows.filter(name__in=names)
    return {
        name: (vcpu, memory_mib / 1024)
        for name, vcpu, memory_mib in rows.values_list("name", "vcpu", "memory_mib")
    }


def _sized(
    instance_type: str, sizes: dict[str, tuple[int, float]] | None = None
) -> tuple[int, float]:
    if sizes is None:
        sizes = instance_sizes(instance_type)
    return sizes.get(instance_type, (0, 0))


def vm_estimate(
    model: GpuModel | None, gpus: int, instance_type: str, disk_gib: int, rates: Rates | None
) -> Estimate | None:
    if rates is None:
        return None
    return Estimate(
        currency=rates.currency,
        hour=worker_hour(model, gpus, instance_type, disk_gib, rates),
        gpu_priced=rates.gpu_price(_model_id(model)) is not None,
    )


def node_group_estimate(
    model: GpuModel | None,
    gpus_per_worker: int,
    instance_type: str,
    disk_gib: int,
    min_workers: int,
    max_workers: int,
    rates: Rates | None,
    surge_workers: int = 0,
    old_workers: int = 0,
    old_worker_hour: Decimal = Decimal(0),
) -> Estimate | None:
    """A group at its minimum workers, at its maximum, and during a roll (its `surge_workers`
    new workers beside the `old_workers` it has, each at its old price, until they go)."""
    if rates is None:
        return None
    model_id = _model_id(model)
    worker = worker_hour(model, gpus_per_worker, instance_type, disk_gib, rates)
    surge = old_workers * old_worker_hour + surge_workers * worker if surge_workers else None
    return Estimate(
        currency=rates.currency,
        hour=worker * min_workers,
        gpu_priced=rates.gpu_price(model_id) is not None,
        max_hour=worker * max(max_workers, min_workers),
        surge_hour=surge,
        surge_workers=surge_workers,
        old_workers=old_workers,
    )


def worker_hour(
    model: GpuModel | int | None, gpus: int, instance_type: str, disk_gib: float, rates: Rates
) -> Decimal:
    """One VM or worker of this size an hour."""
    vcpus, memory = _sized(instance_type)
    return rates.hourly(_model_id(model), gpus, vcpus, memory, disk_gib)


# --- what workloads hold besides GPUs ---------------------------------------------------


@dataclass
class Held:
    """What a tenant holds of one GPU model: the GPUs and, per running instance, the vCPU,
    memory and disk of the workloads holding them."""

    gpus: int = 0
    vcpus: float = 0.0
    memory_gib: float = 0.0
    disk_gib: float = 0.0


def held_resources(
    cluster_id: int | None = None, tenant: Tenant | None = None
) -> dict[tuple[int, int], Held]:
    """Per (tenant id, GPU model id): the GPUs held (the pods, as the nodes report) and the
    vCPU, memory and disk of the workloads holding GPUs (instances running = GPUs held /
    GPUs per instance). A node group's size is in its spec; a VM's is what the portal's
    succeeded create asked for (a VM made outside the portal: its GPUs only). 4 queries."""
    scope = {}
    if cluster_id is not None:
        scope["cluster_id"] = cluster_id
    if tenant is not None:
        scope["tenant"] = tenant
    out: dict[tuple[int, int], Held] = defaultdict(Held)
    for tenant_id, model_id, n in TenantAllocation.objects.filter(
        tenant__isnull=False, allocated__gt=0, **scope
    ).values_list("tenant_id", "gpu_model_id", "allocated"):
        out[(tenant_id, model_id)].gpus += n
    workloads = list(
        GpuWorkload.objects.filter(gpus_held__gt=0, gpu_model__isnull=False, **scope).values_list(
            "tenant_id", "gpu_model_id", "kind", "name", "gpus_held", "gpus_per_instance",
            "group_spec",
        )
    )  # fmt: skip
    vm_sizes: dict[tuple[int, str], tuple[str, object]] = {}
    if any(w[2] == WorkloadKind.VM for w in workloads):
        for tenant_id, name, itype, disk in (
            Operation.objects.filter(
                state=OperationState.SUCCEEDED,
                node_group="",
                params__has_key="disk_size_gi",
                **scope,
            )
            .order_by("created_at", "pk")
            .values_list("tenant_id", "name", "params__instance_type", "params__disk_size_gi")
        ):
            vm_sizes[(tenant_id, name)] = (str(itype or ""), disk)
    sizes = instance_sizes() if workloads else {}
    for tenant_id, model_id, kind, name, held, per, spec in workloads:
        running = held // per if per else 0
        if kind == WorkloadKind.VM:
            itype, disk_gi = vm_sizes.get((tenant_id, name), ("", 0))
            disk = float(disk_gi) if isinstance(disk_gi, (int, float)) else 0.0
        else:
            itype = str((spec or {}).get("instance_type", ""))
            disk = float(gib(str((spec or {}).get("disk", ""))) or 0)
        vcpus, memory = _sized(itype, sizes)
        h = out[(tenant_id, model_id)]
        h.vcpus += vcpus * running
        h.memory_gib += memory * running
        h.disk_gib += disk * running
    return dict(out)


# --- spend ------------------------------------------------------------------------------


@dataclass
class Spend:
    """Usage and its cost over a period for one key (tenant, cluster, model, month...)."""

    currency: str = ""
    amount: Decimal = Decimal(0)
    gpu_hours: float = 0.0
    vcpu_hours: float = 0.0
    memory_gib_hours: float = 0.0
    disk_gib_hours: float = 0.0
    unpriced_gpu_hours: float = 0.0  # before any list, or a model without a price

    @property
    def text(self) -> str:
        return money(self.amount, self.currency) if self.currency else "—"

    def add(self, other: Spend) -> None:
        if other.currency and self.currency and other.currency != self.currency:
            raise ValueError("Spend in two currencies cannot be added.")
        self.currency = self.currency or other.currency
        self.amount += other.amount
        self.gpu_hours += other.gpu_hours
        self.vcpu_hours += other.vcpu_hours
        self.memory_gib_hours += other.memory_gib_hours
        self.disk_gib_hours += other.disk_gib_hours
        self.unpriced_gpu_hours += other.unpriced_gpu_hours


@dataclass
class Totals:
    """Spend over a period in each currency it was priced in (usage before any list, or of a
    model without a price, is counted under no currency): never added across currencies."""

    parts: dict[str, Spend] = field(default_factory=dict)

    def add(self, other: Spend | Totals) -> None:
        for part in other.parts.values() if isinstance(other, Totals) else [other]:
            self.parts.setdefault(part.currency, Spend(currency=part.currency)).add(part)

    def add_amount(self, amount: Decimal, currency: str) -> None:
        self.parts.setdefault(currency, Spend(currency=currency)).amount += amount

    @property
    def priced(self) -> list[Spend]:
        """One per currency, in alphabetical order (CHF before EUR)."""
        return [self.parts[c] for c in sorted(self.parts) if c]

    @property
    def amounts(self) -> dict[str, Decimal]:
        return {p.currency: p.amount for p in self.priced}

    def amount_in(self, currency: str) -> Decimal:
        part = self.parts.get(currency)
        return part.amount if part is not None and currency else Decimal(0)

    @property
    def text(self) -> str:
        """ "CHF 1,140.00 + EUR 230.00"; "—" when nothing is priced."""
        return " + ".join(p.text for p in self.priced) or "—"

    def _sum(self, attr: str) -> float:
        return sum(getattr(p, attr) for p in self.parts.values())

    @property
    def gpu_hours(self) -> float:
        return self._sum("gpu_hours")

    @property
    def vcpu_hours(self) -> float:
        return self._sum("vcpu_hours")

    @property
    def memory_gib_hours(self) -> float:
        return self._sum("memory_gib_hours")

    @property
    def disk_gib_hours(self) -> float:
        return self._sum("disk_gib_hours")


USAGE_SUMS = {
    "gpu_hours": Sum("gpu_hours"),
    "vcpu_hours": Sum("vcpu_hours"),
    "memory_gib_hours": Sum("memory_gib_hours"),
    "disk_gib_hours": Sum("disk_gib_hours"),
}


def _list_of_day(lists: list[Rates]) -> Case | Value:
    """The id of the list in force on a usage row's day, computed in the query."""
    ordered = sorted(lists, key=lambda r: (r.valid_from, r.pk), reverse=True)
    if not ordered:
        return Value(None, output_field=IntegerField())
    return Case(
        *(When(ts__gte=r.starts, then=Value(r.pk)) for r in ordered),
        default=Value(None),
        output_field=IntegerField(),
    )


def spend_by(
    usage: QuerySet[TenantUsage], keys: tuple[str, ...], lists: list[Rates] | None = None
) -> dict[tuple, Spend]:
    """Usage rows grouped by `keys` and priced by the list in force on each row's day: one
    query (and 2 for the lists unless given). A key spanning two currencies is split by them
    (the currency is the key's last part)."""
    lists = price_lists() if lists is None else lists
    by_pk = {r.pk: r for r in lists}
    rows = (
        usage.annotate(price_list=_list_of_day(lists))
        .values(*keys, "gpu_model_id", "price_list")
        .annotate(**USAGE_SUMS)
        .order_by()
    )
    out: dict[tuple, Spend] = {}
    for r in rows:
        rates = by_pk.get(r["price_list"])
        currency = rates.currency if rates else ""
        key = (*(r[k] for k in keys), currency)
        part = Spend(
            currency=currency,
            gpu_hours=r["gpu_hours"] or 0.0,
            vcpu_hours=r["vcpu_hours"] or 0.0,
            memory_gib_hours=r["memory_gib_hours"] or 0.0,
            disk_gib_hours=r["disk_gib_hours"] or 0.0,
        )
        gpu_price = rates.gpu_price(r["gpu_model_id"]) if rates else None
        if rates is not None:
            part.amount = rates.hourly(
                r["gpu_model_id"] if gpu_price is not None else None,
                part.gpu_hours,
                part.vcpu_hours,
                part.memory_gib_hours,
                part.disk_gib_hours,
            )
        if gpu_price is None:
            part.unpriced_gpu_hours = part.gpu_hours
        out.setdefault(key, Spend(currency=currency)).add(part)
    return out


def usage_between(
    start: dt.datetime, end: dt.datetime, tenant: Tenant | None = None
) -> QuerySet[TenantUsage]:
    qs = TenantUsage.objects.filter(bucket=Bucket.DAY, ts__gte=start, ts__lt=end)
    return qs.filter(tenant=tenant) if tenant is not None else qs


def month_start(now: dt.datetime) -> dt.datetime:
    return now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_month(start: dt.datetime) -> dt.datetime:
    return (start + dt.timedelta(days=32)).replace(day=1)


@dataclass
class TenantSpend:
    """What a tenant's spend page shows (every amount per currency)."""

    month: Totals
    forecast: Totals | None  # None: no list in force
    hourly_now: Decimal | None
    by_model: list[tuple[str, Totals]]
    by_month: list[tuple[dt.datetime, Totals]]
    rates: Rates | None


def _hours_left(now: dt.datetime) -> Decimal:
    return Decimal(str((next_month(month_start(now)) - now).total_seconds() / 3600))


def forecast_of(month: Totals, hourly: Decimal, rates: Rates, now: dt.datetime) -> Totals:
    """Spent so far (in each currency) + what is held now at the list in force until the month
    ends, in that list's currency."""
    forecast = Totals()
    forecast.add(month)
    forecast.add_amount(hourly * _hours_left(now), rates.currency)
    return forecast


def tenant_spend(tenant: Tenant, now: dt.datetime | None = None, months: int = 12) -> TenantSpend:
    """This month so far, its forecast, per model this month and per month over a year: a
    fixed number of queries (2 for the lists, 1 for the usage, 2 or 3 for what is held now)."""
    now = now or timezone.now()
    this_month = month_start(now)
    first = this_month
    for _ in range(months - 1):
        first = (first - dt.timedelta(days=1)).replace(day=1)
    lists = price_lists()
    priced = spend_by(
        usage_between(first, next_month(this_month), tenant).annotate(
            month=TruncMonth("ts", tzinfo=UTC)
        ),
        ("month", "gpu_model__display_name"),
        lists,
    )
    months_: dict[dt.datetime, Totals] = defaultdict(Totals)
    models_: dict[str, Totals] = defaultdict(Totals)
    month = Totals()
    for (at, name, _currency), s in priced.items():
        months_[at].add(s)
        if at == this_month:
            models_[name].add(s)
            month.add(s)
    by_month = sorted(months_.items(), key=lambda x: x[0], reverse=True)
    by_model = sorted(models_.items(), key=lambda x: x[0])
    rates = next((r for r in lists if r.valid_from <= now.astimezone(UTC).date()), None)
    hourly = forecast = None
    if rates is not None:
        hourly = sum(
            (
                rates.hourly(model_id, h.gpus, h.vcpus, h.memory_gib, h.disk_gib)
                for (_t, model_id), h in held_resources(tenant=tenant).items()
            ),
            Decimal(0),
        )
        forecast = forecast_of(month, hourly, rates, now)
    return TenantSpend(month, forecast, hourly, by_model, by_month, rates)


def spend_rows(start: dt.datetime, end: dt.datetime, tenant: Tenant | None = None) -> list[dict]:
    """Spend per tenant, cluster, GPU model (and currency) over [start, end), for billing: the
    rows of the CSV and JSON exports. 5 queries."""

    priced = spend_by(
        usage_between(start, end, tenant), ("tenant_id", "cluster_id", "gpu_model_id")
    )
    tenants = dict(
        Tenant.objects.filter(pk__in={k[0] for k in priced}).values_list("pk", "namespace")
    )
    clusters = dict(Cluster.objects.values_list("pk", "name"))
    models = dict(GpuModel.objects.values_list("pk", "resource_name"))
    rows = [
        {
            "tenant": tenants.get(k[0], ""),
            "cluster": clusters.get(k[1], ""),
            "gpu_model": models.get(k[2], ""),
            "currency": s.currency,
            "gpu_hours": round(s.gpu_hours, 3),
            "vcpu_hours": round(s.vcpu_hours, 3),
            "memory_gib_hours": round(s.memory_gib_hours, 3),
            "disk_gib_hours": round(s.disk_gib_hours, 3),
            "amount": s.amount.quantize(CENT),
        }
        for k, s in priced.items()
    ]
    return sorted(rows, key=lambda r: (r["tenant"], r["cluster"], r["gpu_model"], r["currency"]))


@dataclass
class TenantLine:
    tenant: Tenant
    month: Totals
    forecast: Totals | None  # None: no list in force

    @property
    def forecast_text(self) -> str:
        return self.forecast.text if self.forecast is not None else "—"


def fleet_spend(now: dt.datetime | None = None) -> list[TenantLine]:
    """Every tenant's spend this month and its forecast (the admins' view), the largest first
    in the currency in force: a fixed number of queries whatever the number of tenants."""
    now = now or timezone.now()
    this_month = month_start(now)
    lists = price_lists()
    month = spend_by(usage_between(this_month, next_month(this_month)), ("tenant_id",), lists)
    rates = next((r for r in lists if r.valid_from <= now.astimezone(UTC).date()), None)
    hourly: dict[int, Decimal] = defaultdict(Decimal)
    if rates is not None:
        for (tenant_id, model_id), h in held_resources().items():
            hourly[tenant_id] += rates.hourly(model_id, h.gpus, h.vcpus, h.memory_gib, h.disk_gib)
    spent: dict[int, Totals] = defaultdict(Totals)
    for (tenant_id, _currency), s in month.items():
        spent[tenant_id].add(s)
    ids = set(spent) | set(hourly)
    tenants = {t.pk: t for t in Tenant.objects.filter(pk__in=ids)}
    lines = []
    for tenant_id in ids:
        if tenant_id not in tenants:
            continue
        s = spent.get(tenant_id, Totals())
        forecast = None
        if rates is not None:
            forecast = forecast_of(s, hourly.get(tenant_id, Decimal(0)), rates, now)
        lines.append(TenantLine(tenants[tenant_id], s, forecast))
    # Compared currency by currency, the one in force first (amounts are never added).
    order = sorted(Currency.values, key=lambda c: c != (rates.currency if rates else ""))

    def largest(line: TenantLine) -> tuple:
        figure = line.forecast if line.forecast is not None else line.month
        return (*(-figure.amount_in(c) for c in order), line.tenant.namespace)

    return sorted(lines, key=largest)
