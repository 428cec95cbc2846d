"""The compare page (the catalog page, with live free counts, and the advisor, which sizes from the
cluster's catalogue, are inventory's)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse

from gpus.catalog.compare import APPROACH_ROWS, compare_rows
from gpus.catalog.forms import CompareForm
from gpus.catalog.selectors import offered_models
from gpus.web.htmx import render_page_or_fragment


def compare(request: HttpRequest) -> HttpResponse:
    offered = list(offered_models())
    if "models" in request.GET:
        form = CompareForm(request.GET)
        chosen = form.cleaned_data["models"] if form.is_valid() else []
    else:
        chosen = offered[:3]
        form = CompareForm(initial={"models": chosen})
    context = {
        "form": form,
        "chosen": chosen,
        # Offered models (and any chosen one) are the checkboxes; the rest wait behind "more".
        "primary_ids": {m.pk for m in offered} | {m.pk for m in chosen},
        "rows": compare_rows(chosen) if chosen else [],
        "approach_rows": APPROACH_ROWS,
    }
    return render_page_or_fragment(
        request, "catalog/compare.html", "catalog/_compare_table.html", context
    )
