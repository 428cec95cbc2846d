"""Forms of capacity: parse, never act."""

from __future__ import annotations

import datetime as dt

from django import forms
from django.utils import timezone
from django.utils.text import capfirst
from django.utils.translation import gettext_lazy as _

from gpus.capacity.models import Bucket, Currency
from gpus.catalog.models import GpuModel
from gpus.inventory.selectors import most_gpus_on_one_server
from gpus.provisioning.choices import OperationKind, OperationState


def _date_input() -> forms.DateInput:
    """The browser's date picker; its value is always ISO (YYYY-MM-DD), whatever the language."""
    return forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d")


def _models() -> forms.ModelChoiceField:
    return forms.ModelChoiceField(
        queryset=GpuModel.objects.order_by("sort_order", "display_name"),
        label=_("GPU model"),
        empty_label=None,
    )


class QuotaForm(forms.Form):
    gpu_model = _models()
    limit = forms.IntegerField(
        # The model field shares the msgid, lower-case in French (a field name): a label starts
        # with a capital.
        label=capfirst(_("GPU limit")),
        min_value=0,
        max_value=100_000,
        required=False,
        help_text=_("Leave empty to remove the quota (no limit)."),
    )


class WaitlistForm(forms.Form):
    gpu_model = _models()
    count = forms.IntegerField(label=_("GPUs"), min_value=1, max_value=64, initial=1)
    one_server = forms.BooleanField(
        label=_("All on one server (for a VM)"), required=False, initial=True
    )
    days = forms.IntegerField(
        label=_("Forget it after (days)"), min_value=1, max_value=30, initial=7
    )

    def clean(self) -> dict:
        data = super().clean() or {}
        model, count = data.get("gpu_model"), data.get("count")
        if model is not None and count and data.get("one_server"):
            # A wish no server can ever meet would wait until it expires, unsaid.
            most = most_gpus_on_one_server(model)
            if most and count > most:
                self.add_error(
                    "count",
                    _(
                        "A server has at most %(n)d × %(model)s: ask for %(n)d or fewer, or "
                        "untick “All on one server”."
                    )
                    % {"n": most, "model": model.display_name},
                )
        return data


class ExportForm(forms.Form):
    start = forms.DateField(label=_("From"), required=False, widget=_date_input())
    end = forms.DateField(label=_("To (excluded)"), required=False, widget=_date_input())
    bucket = forms.ChoiceField(
        label=_("Resolution"), choices=Bucket.choices, required=False, initial=Bucket.DAY
    )

    def clean_bucket(self) -> str:
        return self.cleaned_data.get("bucket") or Bucket.DAY

    def clean(self) -> dict:
        data = super().clean() or {}
        start, end = data.get("start"), data.get("end")
        if start and end and end <= start:
            self.add_error("end", _("The end must come after the start."))
        if start and end and (end - start).days > 400:
            self.add_error("end", _("At most 400 days at a time."))
        return data

    def period(self) -> tuple[dt.datetime, dt.datetime]:
        """[start, end) as UTC midnights: by default the last 30 days up to tomorrow."""
        today = timezone.now().date()
        end = self.cleaned_data.get("end") or today + dt.timedelta(days=1)
        start = self.cleaned_data.get("start") or end - dt.timedelta(days=30)

        def midnight(d: dt.date) -> dt.datetime:
            return dt.datetime(d.year, d.month, d.day, tzinfo=dt.UTC)

        return midnight(start), midnight(end)


def _amount(label: str, help_text: str = "", required: bool = True) -> forms.DecimalField:
    return forms.DecimalField(
        label=label,
        min_value=0,
        max_value=1_000_000,
        max_digits=12,
        decimal_places=4,
        required=required,
        help_text=help_text,
    )


class PriceListForm(forms.Form):
    """A new price list: the general prices, then one field per GPU model (`gpu_<id>`; empty:
    the model has no price)."""

    valid_from = forms.DateField(
        label=_("Valid from"),
        widget=_date_input(),
        help_text=_("A UTC day, today or later: spend already counted keeps its prices."),
    )
    currency = forms.ChoiceField(label=_("Currency"), choices=Currency.choices)
    vcpu_hour = _amount(_("Per vCPU-hour"))
    memory_gib_hour = _amount(_("Per GiB of memory-hour"))
    disk_gib_month = _amount(_("Per GiB of disk-month"), _("A month is 730 hours (365 × 24 / 12)."))

    def __init__(self, *args: object, models: list[GpuModel], today: dt.date, **kwargs: object):
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.today = today
        self.models = models
        for model in models:
            self.fields[f"gpu_{model.pk}"] = _amount(
                _("%(model)s per GPU-hour") % {"model": model.display_name}, required=False
            )

    def gpu_fields(self) -> list[forms.BoundField]:
        return [self[f"gpu_{m.pk}"] for m in self.models]

    def clean_valid_from(self) -> dt.date:
        day = self.cleaned_data["valid_from"]
        if day < self.today:
            raise forms.ValidationError(
                _(
                    "A price list applies from today (%(today)s, UTC) or later: spend already "
                    "counted keeps its prices."
                )
                % {"today": self.today.isoformat()},
                code="past",
            )
        return day

    def gpu_prices(self) -> dict[GpuModel, object]:
        return {
            m: self.cleaned_data[f"gpu_{m.pk}"]
            for m in self.models
            if self.cleaned_data.get(f"gpu_{m.pk}") is not None
        }


class OperationFilterForm(forms.Form):
    """The fleet-wide operations list's filters: each one optional, a bad one is ignored (and
    said next to its field) while the others still apply."""

    tenant = forms.SlugField(label=_("Tenant (namespace)"), max_length=63, required=False)
    kind = forms.ChoiceField(label=_("Operation"), required=False)
    state = forms.ChoiceField(label=_("State"), required=False)
    gpu_model = forms.ModelChoiceField(
        queryset=GpuModel.objects.order_by("sort_order", "display_name"),
        label=_("GPU model"),
        required=False,
        empty_label=_("All models"),
    )
    start = forms.DateField(label=_("Submitted from"), required=False, widget=_date_input())
    end = forms.DateField(
        label=_("Submitted up to (included)"), required=False, widget=_date_input()
    )

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        every = [("", _("All"))]
        self.fields["kind"].choices = every + list(OperationKind.choices)
        self.fields["state"].choices = every + list(OperationState.choices)

    def clean(self) -> dict:
        data = super().clean() or {}
        start, end = data.get("start"), data.get("end")
        if start and end and end < start:
            self.add_error("end", _("The end must not come before the start."))
        return data

    def filters(self) -> dict[str, object]:
        """The valid filters only (an unbound or wholly invalid form filters nothing)."""
        if self.is_bound:
            self.is_valid()
        data = getattr(self, "cleaned_data", {})
        return {k: v for k, v in data.items() if v not in (None, "")}
