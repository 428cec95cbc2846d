"""Forms of the compare and advisor pages: they parse input, never act."""

from __future__ import annotations

from typing import Any

from django import forms
from django.db.models import QuerySet
from django.utils.translation import gettext_lazy as _

from gpus.catalog.choices import Workload
from gpus.catalog.models import GpuModel

# Ids past this never exist, and SQLite cannot even bind them (OverflowError).
MAX_ID_DIGITS = 18


class ModelIdsField(forms.ModelMultipleChoiceField):
    """Model ids from a query string: anything that is not a plausible id is a field error."""

    def _check_values(self, value: Any) -> QuerySet:
        for pk in value:
            text = str(pk)
            if not (text.isascii() and text.isdigit() and len(text) <= MAX_ID_DIGITS):
                raise forms.ValidationError(
                    self.error_messages["invalid_pk_value"],
                    code="invalid_pk_value",
                    params={"pk": text[:40]},
                )
        return super()._check_values(value)


class CompareForm(forms.Form):
    models = ModelIdsField(
        label=_("GPU models to compare"),
        queryset=GpuModel.objects.all(),
        widget=forms.CheckboxSelectMultiple,
        help_text=_("Pick two or three."),
    )

    def clean_models(self) -> list[GpuModel]:
        chosen = list(self.cleaned_data["models"])
        if not 2 <= len(chosen) <= 3:
            raise forms.ValidationError(
                _("Pick two or three models to compare (you picked %(count)d)."),
                params={"count": len(chosen)},
                code="count",
            )
        return chosen


class AdvisorForm(forms.Form):
    workload = forms.ChoiceField(
        label=_("What will the GPU run?"), choices=Workload.choices, widget=forms.RadioSelect
    )
