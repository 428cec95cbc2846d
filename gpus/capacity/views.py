"""Capacity pages: the admin review (/capacity/), its chart and exports; a tenant's quotas
(set by admins), waitlist and notifications. Thin: selectors read, services write."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.translation import get_language
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from gpus.capacity import exports, pricing, rightsizing, selectors, services
from gpus.capacity.forms import (
    ExportForm,
    OperationFilterForm,
    PriceListForm,
    QuotaForm,
    WaitlistForm,
)
from gpus.catalog.models import GpuModel
from gpus.tenancy.selectors import get_tenant_for_user
from gpus.web.access import require_may_operate, require_platform_admin
from gpus.web.paging import PageRequest


def capacity_page(request: HttpRequest) -> HttpResponse:
    require_platform_admin(request.user)
    days = request.GET.get("range", "30")
    if days not in selectors.RANGES:
        days = "30"
    cards = selectors.model_cards()
    model = request.GET.get("model", "")
    if model and not any(str(c.model_id) == model for c in cards):
        model = ""
    context = {
        "cards": cards,
        "range": days,
        "ranges": list(selectors.RANGES),
        "model": model,
        "top_tenants": selectors.top_tenants(),
        "quota_pressure": selectors.quota_pressure(),
        "waiting": selectors.waiting_requests(),
        "refused": selectors.refused_requests(),
        "export_form": ExportForm(),
    }
    return render(request, "capacity/capacity.html", context)


def fleet_operations(request: HttpRequest) -> HttpResponse:
    """Every tenant's operations, newest first, filtered and keyset-paged (admins only)."""
    require_platform_admin(request.user)
    form = OperationFilterForm(request.GET or None)
    filters = form.filters()
    page = selectors.fleet_operations(filters, PageRequest.from_query(request.GET))
    # The pager's links keep the filters (and drop the previous cursor).
    query = request.GET.copy()
    for key in ("after", "before", "page"):
        query.pop(key, None)
    return render(
        request,
        "capacity/operations.html",
        {"form": form, "page": page, "query": query.urlencode(), "filtered": bool(filters)},
    )


def capacity_chart(request: HttpRequest) -> JsonResponse:
    """The history as a Plotly figure: allocated and free stacked, demand as a line."""
    require_platform_admin(request.user)
    days, bucket = selectors.RANGES.get(request.GET.get("range", ""), selectors.RANGES["30"])
    model_id = request.GET.get("model", "")
    model = int(model_id) if model_id.isdigit() and len(model_id) < 18 else None
    # The rollups change only when the rollup task runs: one figure per range, model and
    # language until then (the 30-day chart sums ~150,000 rows).
    step = int(settings.CAPACITY_ROLLUP_SECONDS) or 300
    now = timezone.now()
    key = f"capacity:chart:{days}:{model}:{get_language()}:{int(now.timestamp()) // step}"
    payload = cache.get(key)
    if payload is None:
        payload = _chart(days, bucket, model, now)
        cache.set(key, payload, step)
    return JsonResponse(payload)


def _chart(days: int, bucket: str, model: int | None, now: dt.datetime) -> dict[str, Any]:
    points = selectors.history_points(days, bucket, model, now)
    if not points:
        return {"empty": _("No capacity history in this range yet.")}
    x = [timezone.localtime(p["ts"]).strftime("%Y-%m-%d %H:%M") for p in points]
    figure = {
        "data": [
            {
                "type": "scatter",
                "mode": "lines",
                "name": _("allocated"),
                "x": x,
                "y": [round(p["allocated"], 2) for p in points],
                "stackgroup": "gpus",
                "line": {"color": "#d9534f"},
            },
            {
                "type": "scatter",
                "mode": "lines",
                "name": _("free"),
                "x": x,
                "y": [round(p["free"], 2) for p in points],
                "stackgroup": "gpus",
                "line": {"color": "#5cb85c"},
            },
            {
                "type": "scatter",
                "mode": "lines",
                "name": _("demand (waiting + refused)"),
                "x": x,
                "y": [p["queued"] + p["refused"] for p in points],
                "line": {"color": "#333", "dash": "dot"},
            },
        ],
        "layout": {
            "title": {"text": _("Allocated and free GPUs, and unmet demand")},
            "xaxis": {"type": "date"},
            "yaxis": {"title": {"text": _("GPUs")}, "rangemode": "tozero"},
            "legend": {"orientation": "h"},
            "margin": {"l": 50, "r": 10, "t": 40, "b": 40},
            "hovermode": "x unified",
        },
    }
    return {"figure": figure, "points": len(points)}


def export_csv(request: HttpRequest, what: str) -> HttpResponse:
    require_platform_admin(request.user)
    form = ExportForm(request.GET)
    if not form.is_valid():
        return HttpResponse(
            json.dumps(form.errors.get_json_data()), status=400, content_type="application/json"
        )
    start, end = form.period()
    if what == "history":
        return exports.history_csv(start, end, form.cleaned_data["bucket"])
    if what == "spend":
        return exports.spend_csv(start, end)
    return exports.gpu_hours_csv(start, end)


# --- prices and spend -------------------------------------------------------------------


def prices(request: HttpRequest) -> HttpResponse:
    """Admins keep the price list: a new list from a day on (today or later); the lists in
    force and before, with who saved them."""
    require_platform_admin(request.user)
    today = timezone.now().astimezone(dt.UTC).date()
    models = list(GpuModel.objects.order_by("sort_order", "display_name"))
    current = pricing.rates_at(today)
    initial: dict[str, Any] = {"valid_from": today}
    if current is not None:
        initial.update(
            currency=current.currency,
            vcpu_hour=current.vcpu_hour,
            memory_gib_hour=current.memory_gib_hour,
            disk_gib_month=current.disk_gib_month,
            **{f"gpu_{pk}": hour for pk, hour in current.gpu_hour.items()},
        )
    form = PriceListForm(request.POST or None, models=models, today=today, initial=initial)
    if request.method == "POST" and form.is_valid():
        d = form.cleaned_data
        saved = services.set_price_list(
            request.user,
            d["valid_from"],
            d["currency"],
            d["vcpu_hour"],
            d["memory_gib_hour"],
            d["disk_gib_month"],
            form.gpu_prices(),
            today=today,
        )
        if saved is None:
            messages.info(request, _("Nothing changed: these are the prices in force that day."))
        else:
            messages.success(request, _("Price list saved."))
        return redirect("gpus:capacity_prices")
    names = {m.pk: m.display_name for m in models}
    lists = pricing.price_lists()
    in_force = next((r.pk for r in lists if r.valid_from <= today), None)
    return render(
        request,
        "capacity/prices.html",
        {
            "form": form,
            "lists": [
                {
                    "rates": r,
                    "gpus": sorted((names.get(pk, "?"), hour) for pk, hour in r.gpu_hour.items()),
                    "in_force": r.pk == in_force,
                    "scheduled": r.valid_from > today,
                }
                for r in lists
            ],
            "today": today,
        },
    )


def fleet_spend(request: HttpRequest) -> HttpResponse:
    """Admins: every tenant's spend this month and its forecast."""
    require_platform_admin(request.user)
    return render(
        request,
        "capacity/fleet_spend.html",
        {"lines": pricing.fleet_spend(), "export_form": ExportForm()},
    )


def tenant_spend(request: HttpRequest, namespace: str) -> HttpResponse:
    """A tenant's spend this month, its forecast, per model and per month; its energy (the
    chart loads after the page). Members and admins; a 404 for anyone else."""
    tenant = get_tenant_for_user(request.user, namespace)
    now = timezone.now()
    month = pricing.month_start(now)
    energy = selectors.tenant_energy(tenant, month)
    return render(
        request,
        "capacity/spend.html",
        {
            "tenant": tenant,
            "spend": pricing.tenant_spend(tenant, now),
            "month_kwh": sum(e["kwh"] for e in energy),
            "export_form": ExportForm(),
            "hours_per_month": pricing.HOURS_PER_MONTH,
        },
    )


def tenant_energy_chart(request: HttpRequest, namespace: str) -> JsonResponse:
    """The tenant's kWh per day over 30 days as a Plotly figure."""
    tenant = get_tenant_for_user(request.user, namespace)
    now = timezone.now()
    start = (now - dt.timedelta(days=29)).astimezone(dt.UTC)
    days = selectors.tenant_energy(tenant, start.replace(hour=0, minute=0, second=0, microsecond=0))
    if not days:
        return JsonResponse(
            {"empty": _("No energy reported yet: only GPUs with telemetry report it.")}
        )
    figure = {
        "data": [
            {
                "type": "bar",
                "name": _("kWh"),
                "x": [d["day"].strftime("%Y-%m-%d") for d in days],
                "y": [round(d["kwh"], 3) for d in days],
                "marker": {"color": "#f0ad4e"},
            }
        ],
        "layout": {
            "title": {"text": _("Energy of your GPUs per day (kWh)")},
            # The whole 30 days, a tick per date: one day alone would otherwise be ticked in
            # fractions of a second, with English month names.
            "xaxis": {
                "type": "date",
                "range": [
                    (start - dt.timedelta(hours=12)).strftime("%Y-%m-%d %H:%M"),
                    (now.astimezone(dt.UTC) + dt.timedelta(hours=12)).strftime("%Y-%m-%d %H:%M"),
                ],
                "tickformat": "%Y-%m-%d",
            },
            "yaxis": {"title": {"text": _("kWh")}, "rangemode": "tozero"},
            "margin": {"l": 50, "r": 10, "t": 40, "b": 40},
        },
    }
    return JsonResponse({"figure": figure, "points": len(days)})


def tenant_spend_csv(request: HttpRequest, namespace: str) -> HttpResponse:
    """The tenant's own spend per cluster and model for a period (a 404 for other tenants)."""
    tenant = get_tenant_for_user(request.user, namespace)
    form = ExportForm(request.GET)
    if not form.is_valid():
        return HttpResponse(
            json.dumps(form.errors.get_json_data()), status=400, content_type="application/json"
        )
    start, end = form.period()
    return exports.spend_csv(start, end, tenant)


# --- quotas, set by admins on the tenant ------------------------------------------------


def tenant_quotas(request: HttpRequest, namespace: str) -> HttpResponse:
    """Admins set per-model GPU quotas; members of the tenant see them (read-only)."""
    tenant = get_tenant_for_user(request.user, namespace)
    admin = request.user.is_staff
    form = QuotaForm(request.POST or None) if admin else None
    if request.method == "POST":
        require_platform_admin(request.user)
        assert form is not None
        if form.is_valid():
            changed = services.set_quota(
                request.user, tenant, form.cleaned_data["gpu_model"], form.cleaned_data["limit"]
            )
            if changed:
                messages.success(request, _("Quota saved."))
            return redirect("gpus:capacity_quotas", tenant.namespace)
    return render(
        request,
        "capacity/quotas.html",
        {
            "tenant": tenant,
            "headroom": selectors.headroom(tenant),
            "form": form,
            "usage": selectors.tenant_gpu_hours(tenant),
        },
    )


# --- waitlist and notifications ---------------------------------------------------------


def waitlist(request: HttpRequest, namespace: str) -> HttpResponse:
    tenant = get_tenant_for_user(request.user, namespace)
    form = WaitlistForm(request.POST or None, initial=request.GET.dict())
    if request.method == "POST":
        require_may_operate(request.user, tenant)
        if form.is_valid():
            services.join_waitlist(
                request.user,
                tenant,
                form.cleaned_data["gpu_model"],
                form.cleaned_data["count"],
                form.cleaned_data["one_server"],
                form.cleaned_data["days"],
            )
            messages.success(
                request, _("You will be told here and by email when the GPUs are free.")
            )
            return redirect("gpus:capacity_waitlist", tenant.namespace)
    return render(
        request,
        "capacity/waitlist.html",
        {"tenant": tenant, "form": form, "entries": selectors.waitlist_of(tenant)},
    )


@require_POST
def waitlist_leave(request: HttpRequest, namespace: str, pk: int) -> HttpResponse:
    tenant = get_tenant_for_user(request.user, namespace)
    require_may_operate(request.user, tenant)
    entry = selectors.get_waitlist_entry(tenant, pk)
    services.leave_waitlist(tenant, entry.pk)
    return redirect("gpus:capacity_waitlist", tenant.namespace)


def notifications(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "capacity/notifications.html",
        {"notifications": selectors.notifications_of(request.user)},
    )


def notifications_unread(request: HttpRequest) -> HttpResponse:
    """The in-page banner (loaded by htmx after the page, so no page pays a query for it)."""
    return render(
        request,
        "capacity/_unread.html",
        {"unread": selectors.unread_notifications(request.user)},
    )


@require_POST
def notifications_read(request: HttpRequest) -> HttpResponse:
    pk = request.POST.get("pk", "")
    services.mark_read(request.user, int(pk) if pk.isdigit() else None)
    if request.htmx:
        return HttpResponse("")
    return redirect("gpus:notifications")


def headroom_fragment(request: HttpRequest) -> HttpResponse:
    """The quota headroom box the catalog, My GPUs and both forms load after the page (so
    their own query counts do not change): one tenant (404 if not the user's), or the user's
    own tenants."""
    namespace = request.GET.get("tenant", "")
    if namespace:
        tenants = [get_tenant_for_user(request.user, namespace)]
    else:
        tenants = list(request.user.tenants.order_by("namespace")[:5])
    return render(
        request,
        "capacity/_headroom_fragment.html",
        {"boxes": [(t, selectors.headroom(t)) for t in tenants]},
    )


# --- right-sizing -------------------------------------------------------------------------

RIGHTSIZING_ROWS = 50


def rightsizing_page(request: HttpRequest) -> HttpResponse:
    """Fleet-wide right-sizing (admins): GPUs held but idle, VMs and groups that would fit a
    cheaper model, the biggest saving first."""
    require_platform_admin(request.user)
    found = rightsizing.suggestions(limit=RIGHTSIZING_ROWS)
    return render(
        request,
        "capacity/rightsizing.html",
        {"suggestions": found, "rules": rightsizing_rules()},
    )


def rightsizing_fragment(request: HttpRequest) -> HttpResponse:
    """One tenant's right-sizing box on My GPUs (404 when not the user's tenant)."""
    tenant = get_tenant_for_user(request.user, request.GET.get("tenant", ""))
    return render(
        request,
        "capacity/_rightsizing_fragment.html",
        {
            "tenant": tenant,
            "suggestions": rightsizing.suggestions(tenant),
            "rules": rightsizing_rules(),
        },
    )


def rightsizing_rules() -> dict[str, Any]:
    return {
        "days": rightsizing.WINDOW_DAYS,
        "idle": int(rightsizing.IDLE_BUSY_PCT),
        "smaller": int(rightsizing.SMALLER_BUSY_PCT),
        "margin": int(rightsizing.MEMORY_MARGIN * 100),
    }
