"""Forms parse and convert input; they never act."""

from __future__ import annotations

from django import forms
from django.utils.translation import gettext_lazy as _

from .choices import Workload
from .models import GpuModel


class CompareForm(forms.Form):
    models = forms.ModelMultipleChoiceField(
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
