"""GPU models as Hikube documents them, keyed by the resource name the cluster advertises."""

from __future__ import annotations

from django.db import models
from django.utils import translation
from django.utils.translation import gettext_lazy as _

from gpus.catalog.choices import GpuUse


class GpuModel(models.Model):
    """A GPU model, keyed by the Kubernetes resource name the cluster advertises it under.

    Figures are stored only where Hikube documents them; an empty figure means "not documented".
    Models seen in the cluster but absent from the catalog are recorded with is_known=False.
    """

    resource_name = models.CharField(_("resource name"), max_length=253, unique=True)
    display_name = models.CharField(_("display name"), max_length=100)
    architecture = models.CharField(_("architecture"), max_length=50, blank=True)
    memory_gb = models.DecimalField(
        _("memory (GB)"), max_digits=6, decimal_places=1, null=True, blank=True
    )
    memory_type = models.CharField(_("memory type"), max_length=50, blank=True)
    int8_tops = models.DecimalField(
        _("INT8 (TOPS)"), max_digits=8, decimal_places=1, null=True, blank=True
    )
    fp32_tflops = models.DecimalField(
        _("FP32 (TFLOPS)"), max_digits=8, decimal_places=1, null=True, blank=True
    )
    tensor_tflops = models.DecimalField(
        _("Tensor (TFLOPS)"), max_digits=8, decimal_places=1, null=True, blank=True
    )
    uses = models.JSONField(_("typical uses"), default=list, blank=True)
    # Notes by language code ({"en": "...", "fr": "..."}): catalog content, not interface text.
    notes = models.JSONField(_("notes"), default=dict, blank=True)
    offered = models.BooleanField(
        _("offered by Hikube"), default=False, help_text=_("Shown first in the catalog.")
    )
    is_known = models.BooleanField(
        _("known model"),
        default=True,
        help_text=_("False for resource names first seen in the cluster, not in the catalog."),
    )
    sort_order = models.PositiveSmallIntegerField(_("sort order"), default=100)

    class Meta:
        ordering = ["-offered", "sort_order", "display_name"]
        verbose_name = _("GPU model")
        verbose_name_plural = _("GPU models")

    def __str__(self) -> str:
        return self.display_name

    def use_labels(self) -> list[str]:
        labels = dict(GpuUse.choices)
        return [str(labels.get(use, use)) for use in self.uses]

    def localized_notes(self) -> str:
        """The notes in the active language, falling back to English."""
        language = (translation.get_language() or "en").split("-")[0]
        return self.notes.get(language) or self.notes.get("en", "")
