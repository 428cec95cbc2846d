"""Thin views: read through selectors, render one page or fragment each. No view calls the cluster."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from . import selectors
from .advisor import recommend
from .compare import APPROACH_ROWS, compare_rows
from .forms import AdvisorForm, CompareForm


def catalog(request: HttpRequest) -> HttpResponse:
    models = selectors.catalog_models()
    return render(
        request,
        "gpus/catalog.html",
        {
            "offered": [m for m in models if m.offered],
            "others": [m for m in models if not m.offered],
        },
    )


def compare(request: HttpRequest) -> HttpResponse:
    if "models" in request.GET:
        form = CompareForm(request.GET)
    else:
        form = CompareForm(initial={"models": list(selectors.offered_models())[:3]})
    chosen = form.cleaned_data["models"] if form.is_bound and form.is_valid() else None
    if chosen is None and not form.is_bound:
        chosen = list(selectors.offered_models())[:3]
    context = {
        "form": form,
        "chosen": chosen or [],
        "rows": compare_rows(chosen) if chosen else [],
        "approach_rows": APPROACH_ROWS,
    }
    template = "gpus/_compare_table.html" if request.htmx else "gpus/compare.html"
    return render(request, template, context)


def advisor(request: HttpRequest) -> HttpResponse:
    form = AdvisorForm(request.GET or None)
    recommendation = None
    if form.is_valid():
        recommendation = recommend(form.cleaned_data["workload"], selectors.catalog_models())
    template = "gpus/_advice.html" if request.htmx else "gpus/advisor.html"
    return render(request, template, {"form": form, "recommendation": recommendation})


def tenant_detail(request: HttpRequest, namespace: str) -> HttpResponse:
    tenant = selectors.get_tenant_for_user(request.user, namespace)
    return render(
        request,
        "gpus/tenant.html",
        {
            "tenant": tenant,
            "memberships": selectors.memberships_of(tenant),
            "membership": selectors.membership_of(request.user, tenant),
        },
    )
