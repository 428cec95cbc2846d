"""Utilization pages for ops (fleet, heatmap, one GPU, idle GPUs, health, energy) and tenants
(their own GPUs). Thin: read through selectors.py, draw with charts.py. Charts are
fetched as JSON by static/js/charts.js, which refreshes the short ranges."""

from __future__ import annotations

import datetime as dt
import json

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.translation import get_language
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.gzip import gzip_page
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseStopPolling

from gpus.inventory.choices import WorkloadKind
from gpus.inventory.models import GpuWorkload
from gpus.tenancy.models import Tenant
from gpus.tenancy.selectors import get_tenant_for_user
from gpus.utilization import charts
from gpus.utilization import selectors as u
from gpus.utilization.agent import AgentError, cloud_init_snippet, ingest, issue_token
from gpus.utilization.metrics import history
from gpus.utilization.metrics.dcgm import board_power
from gpus.utilization.models import Scope
from gpus.web.access import may_operate, require_may_operate, require_platform_admin
from gpus.web.exports import csv_response
from gpus.web.paging import PageRequest


def _tenant(request: HttpRequest, namespace: str | None) -> Tenant | None:
    """The tenant asked for (404 if not the user's), or None for ops pages (404 if not ops)."""
    if namespace:
        return get_tenant_for_user(request.user, namespace)
    require_platform_admin(request.user)
    return None


def _context(request: HttpRequest, tenant: Tenant | None, **extra: object) -> dict:
    tr = u.parse_range(request.GET)
    return {
        "tenant": tenant,
        "tr": tr,
        "ranges": list(u.range_labels().items()),
        "refresh_seconds": int(settings.METRICS_COLLECT_SECONDS),
        "idle_threshold": settings.METRICS_IDLE_THRESHOLD,
        "idle_minutes": settings.METRICS_IDLE_MINUTES,
        **extra,
    }


def fleet(request: HttpRequest) -> HttpResponse:
    _tenant(request, None)
    ctx = _context(
        request,
        None,
        summary=u.fleet_summary(),
        sources=u.sources_status(),
        silent=u.silent_workloads(page=PageRequest.from_query(request.GET, "silent_")),
        section="fleet",
        with_charts=True,
    )
    ctx["page_query"] = ctx["tr"].query()
    return render(request, "utilization/fleet.html", ctx)


def _heatmap_params(request: HttpRequest) -> tuple[str, int]:
    scope = Scope.HOST if request.GET.get("by") == "host" else Scope.NODE
    try:
        offset = max(0, min(int(request.GET.get("offset") or 0), 100_000))
    except ValueError:
        offset = 0
    return scope, offset - offset % HEATMAP_ROWS


HEATMAP_ROWS = 60


def heatmap(request: HttpRequest) -> HttpResponse:
    _tenant(request, None)
    scope, offset = _heatmap_params(request)
    by = "host" if scope == Scope.HOST else "node"
    ctx = _context(
        request,
        None,
        section="heatmap",
        with_charts=True,
        by=by,
        offset=offset,
        rows=HEATMAP_ROWS,
        extra_params=[("by", by)],
        chart_params=f"&by={by}&offset={offset}",
        groups=[("node", _("Tenant worker")), ("host", _("Host node"))],
    )
    return render(request, "utilization/heatmap.html", ctx)


def gpu(request: HttpRequest, uuid: str, namespace: str | None = None) -> HttpResponse:
    tenant = _tenant(request, namespace)
    device = u.device_for(request.user, uuid, tenant)
    ctx = _context(
        request,
        tenant,
        device=device,
        section="gpus",
        with_charts=True,
        from_query_api=history.is_query_api(device),
    )
    return render(request, "utilization/gpu.html", ctx)


def _history_key(device: object, tr: u.TimeRange, tenant: Tenant | None) -> str:
    return history.cache_key(device.uuid, tr.query(), tenant.namespace if tenant else "")


def gpu_history(request: HttpRequest, uuid: str, namespace: str | None = None) -> HttpResponse:
    """Query-API mode: the one-GPU chart once a task has read it into the cache. htmx polls
    this fragment; HTTP 286 stops the polling when the chart (or the source's error) is there."""
    tenant = _tenant(request, namespace)
    device = u.device_for(request.user, uuid, tenant)
    ctx = _context(request, tenant, device=device)
    tr = ctx["tr"]
    key = _history_key(device, tr, tenant)
    found = history.cached(key)
    if found is None:
        ns = tenant.namespace if tenant else ""
        history.request(key, device.pk, tr.start.timestamp(), tr.end.timestamp(), ns)
        return render(request, "utilization/_gpu_history.html", ctx)
    ctx |= {"ready": True, "error": found.get("error", "")}
    html = render_to_string("utilization/_gpu_history.html", ctx, request)
    return HttpResponseStopPolling(html)


IDLE_CSV_HEADER = [
    "uuid",
    "model",
    "node",
    "tenant",
    "workload",
    "idle_since",
    "gpu_hours_idle",
    "busy_metric",
]


def idle(request: HttpRequest, namespace: str | None = None) -> HttpResponse:
    tenant = _tenant(request, namespace)
    if request.GET.get("format") == "csv":
        # Every idle GPU, streamed row by row: memory stays flat whatever the fleet.
        rows = (
            [
                d.uuid,
                d.model_name,
                d.hostname,
                d.tenant.namespace if d.tenant else "",
                str(d.workload or d.pod),
                d.idle_since.isoformat(),
                f"{d.idle_hours:.2f}",
                d.busy_metric,
            ]
            for d in u.idle_export(request.user, tenant)
        )
        return csv_response("idle-gpus.csv", IDLE_CSV_HEADER, rows)
    rows = u.idle_gpus(request.user, tenant, PageRequest.from_query(request.GET))
    ctx = _context(request, tenant, rows=rows, section="idle")
    return render(request, "utilization/idle.html", ctx)


def health(request: HttpRequest) -> HttpResponse:
    _tenant(request, None)
    ctx = _context(request, None, section="health")
    found = u.health(ctx["tr"], page=PageRequest.from_query(request.GET))
    ctx |= {
        "rows": found["rows"],
        "page": found["page"],
        "count": found["count"],
        "more": found["more"],
        "count_label": _count_label(found["count"], found["more"]),
        "hot_c": u.HOT_C,
        "cap_share": round(u.POWER_CAP_SHARE * 100),
    }
    return render(request, "utilization/health.html", ctx)


def energy(request: HttpRequest) -> HttpResponse:
    _tenant(request, None)
    by = request.GET.get("by") if request.GET.get("by") in u.ENERGY_GROUPS else "model"
    ctx = _context(request, None, section="energy", by=by, extra_params=[("by", by)])
    found = u.energy(ctx["tr"], by)
    ctx |= {
        "rows": found["rows"],
        "total_kwh": found["total_kwh"],
        "count": found["count"],
        "more": found["more"],
        "count_label": _count_label(found["count"], found["more"]),
    }
    ctx["groups"] = [
        ("model", _("Model")),
        ("tenant", _("Tenant")),
        ("node", _("Node")),
        ("gpu", _("GPU")),
    ]
    return render(request, "utilization/energy.html", ctx)


def tenant_page(request: HttpRequest, namespace: str) -> HttpResponse:
    tenant = _tenant(request, namespace)
    idle_rows = u.idle_gpus(request.user, tenant, per_page=20)
    workloads, workload_page = u.tenant_workloads(tenant, PageRequest.from_query(request.GET))
    shown = [d.uuid for item in workloads for d in item["devices"]]
    ctx = _context(
        request,
        tenant,
        workloads=workloads,
        workload_page=workload_page,
        idle_rows=idle_rows,
        # The badge follows the idle threshold: idle means under it for the whole period.
        idle_uuids=set(
            u.idle_queryset(request.user, tenant)
            .filter(uuid__in=shown)
            .values_list("uuid", flat=True)
        ),
        can_operate=may_operate(request.user, tenant),
        section="tenant",
        with_charts=True,
    )
    ctx["page_query"] = ctx["tr"].query()
    return render(request, "utilization/tenant.html", ctx)


@require_POST
def agent_token(request: HttpRequest, namespace: str, workload_id: int) -> HttpResponse:
    """Issue (or replace) the guest-agent token of one of the tenant's GPU VMs and show the
    cloud-init snippet once."""
    tenant = _tenant(request, namespace)
    require_may_operate(request.user, tenant)
    workload = get_object_or_404(GpuWorkload, pk=workload_id, tenant=tenant, kind=WorkloadKind.VM)
    token = issue_token(workload)
    ctx = _context(request, tenant, workload=workload, snippet=cloud_init_snippet(token))
    return render(request, "utilization/agent.html", ctx)


@csrf_exempt  # machine endpoint: authenticated by the VM's bearer token, no cookies
@login_not_required
@require_POST
def agent_ingest(request: HttpRequest) -> HttpResponse:
    length = int(request.headers.get("Content-Length") or 0)
    if length > settings.METRICS_AGENT_MAX_BYTES:  # refuse before reading the body
        return JsonResponse({"error": "body too large"}, status=413)
    try:
        stored = ingest(request.headers.get("Authorization", ""), request.body)
    except AgentError as exc:
        response = JsonResponse({"error": str(exc)}, status=exc.status)
        if exc.retry_after:
            response["Retry-After"] = str(int(exc.retry_after))
        return response
    return JsonResponse({"stored": stored}, status=202)


# --- chart JSON ----------------------------------------------------------------------------------


def _labels() -> dict[str, str]:
    return {
        "util": _("GPU utilization (%)"),
        "busy": _("busy (%)"),
        "tensor": _("tensor activity (%)"),
        "mem_used": _("memory used (MiB)"),
        "mem_total": _("memory total (MiB)"),
        "power": _("power (W)"),
        "power_limit": _("power limit"),
        "temp": _("temperature (°C)"),
        "sm_clock": _("SM clock (MHz)"),
        "memory": _("Memory (MiB)"),
        "util_title": _("Utilization (%)"),
        "power_title": _("Power (W)"),
        "temp_title": _("Temperature (°C)"),
        "clocks": _("Clocks (MHz)"),
    }


@gzip_page  # figures only: no CSRF token, no secret, nothing reflected (no BREACH oracle)
def chart(request: HttpRequest, kind: str) -> HttpResponse:
    """One figure as JSON, or {"empty": message} when the range holds no data. A range the data
    fills less than half of is cut to where the data starts, and the chart says so ("note")."""
    tenant = _tenant(request, request.GET.get("tenant"))
    tr = u.parse_range(request.GET)
    local_end = timezone.localtime(tr.end)
    offset = local_end.utcoffset().total_seconds()
    empty = _("No data in this range.")
    fig = None
    starts: float | None = None
    # The heatmap says whether rows follow this page, so the page shows "next" only then.
    more: bool | None = None
    if kind == "fleet" and tenant is None:
        per_model, starts = charts.trim_leading_gap(u.fleet_models(tr))
        series = {
            m: charts.Series(
                [t + offset for t in s.ts],
                {
                    "avg": s.lines["util_avg"],
                    "p05": s.lines["util_p05"],
                    "p95": s.lines["util_p95"],
                },
            )
            for m, s in per_model.items()
        }
        if series:
            fig = charts.fleet_by_model(
                series, _("Fleet utilization by model"), _("mean"), _("p5-p95")
            )
    elif kind == "allocation":
        s = u.allocation(tr, tenant)
        if s is not None:
            trimmed, starts = charts.trim_leading_gap({"": s})
            fig = charts.allocation(
                charts.local(trimmed[""], offset),
                _("Allocated and busy GPUs"),
                {
                    "busy": _("busy"),
                    "idle": _("allocated, idle"),
                    "free": _("not allocated"),
                    "axis": _("GPUs"),
                },
            )
    elif kind == "heatmap" and tenant is None:
        scope, first = _heatmap_params(request)
        nodes, axis, z, more = u.heatmap(tr, scope, HEATMAP_ROWS, first)
        if nodes:
            title = (
                _("Utilization by host node") if scope == Scope.HOST else _("Utilization by node")
            )
            fig = charts.heatmap(nodes, [t + offset for t in axis], z, title, "%")
    elif kind == "gpu":
        device = u.device_for(request.user, request.GET.get("uuid", ""), tenant)
        if history.is_query_api(device):
            # Only the cache, never the source: an expired entry is read again by a task.
            key = _history_key(device, tr, tenant)
            found = history.cached(key)
            if found is None:
                ns = tenant.namespace if tenant else ""
                history.request(key, device.pk, tr.start.timestamp(), tr.end.timestamp(), ns)
                return JsonResponse({"loading": _("Loading…")})
            if found.get("error"):
                return JsonResponse({"empty": _source_error(found["error"])})
            lines = found["lines"]
            # Every step is on the axis (gaps are None): empty means no value at all.
            has_data = any(v is not None for line in lines.values() for v in line)
            s = charts.Series(found["ts"] if has_data else [], lines)
            limit = found.get("power_limit") or device.power_limit_w or _board(device)
        else:
            s = u.gpu_series(device, tr, tenant)
            limit = device.power_limit_w or _board(device)
        if s.ts:
            span = (tr.start.timestamp(), tr.end.timestamp())
            first = _first_reading(s)
            if first is not None and (span[1] - first) < 0.5 * (span[1] - span[0]):
                # The axis keeps the range asked for (minutes of readings must not fill a
                # "24 h" chart edge to edge, unlike the others); the note says where data starts.
                starts = first
            fig = charts.gpu_detail(
                charts.local(s, offset),
                _labels(),
                limit,
                (span[0] + offset, span[1] + offset),
            )
    elif kind == "tenant" and tenant is not None:
        per, starts = charts.trim_leading_gap(u.workload_series(tenant, tr))
        if per:
            title = _("Utilization of your GPUs")
            others = per.pop(u.OTHERS, None)
            per = {k: charts.local(v, offset) for k, v in per.items()}
            if others is not None:
                # Said on the chart: which lines are there, and what the last one is.
                said = _(
                    "The %(n)s busiest VMs and node groups now, a line each; all the others "
                    "together as one line (their mean)."
                ) % {"n": len(per)}
                title = f"{title}<br><sub>{said}</sub>"
                per[_("all the others")] = charts.local(others, offset)
            fig = charts.lines(per, "util", title, "%")
    else:
        raise Http404
    if fig is None:
        return JsonResponse({"empty": empty} if more is None else {"empty": empty, "more": more})
    charts.finish(fig, local_end.tzname() or "")
    note = ""
    if starts is not None:
        note = _("Data only since %(time)s: the rest of the range has none.") % {
            "time": date_format(timezone.localtime(_aware(starts)), "DATETIME_FORMAT")
        }
    locale = json.dumps(charts.plotly_locale(get_language() or "en"))
    body = (
        f'{{"points": {charts.points_per_line(fig)}, "locale": {locale},'
        f' "note": {json.dumps(note)},'
        + ("" if more is None else f' "more": {json.dumps(more)},')
        + f' "figure": {charts.to_json(fig)}}}'
    )
    response = HttpResponse(body, content_type="application/json")
    # Private (per user), revalidated: a refresh within the collection period costs nothing
    # more than the request.
    response["Cache-Control"] = "private, max-age=0"
    return response


def _first_reading(s: charts.Series) -> float | None:
    for i, t in enumerate(s.ts):
        if any(line[i] is not None for line in s.lines.values()):
            return float(t)
    return None


def _aware(epoch: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, tz=dt.UTC)


def _count_label(count: int, more: bool) -> str:
    return f"{count}+" if more else str(count)


def _source_error(message: str) -> str:
    return _("The metrics source could not be read: %(error)s") % {"error": message}


def _board(device: object) -> float | None:
    return board_power(getattr(device, "model_name", ""))
