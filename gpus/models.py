"""The portal's records. Reads go through selectors.py, writes through services.py."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.utils import translation
from django.utils.translation import gettext_lazy as _

from .choices import GpuUse, MembershipRole

# Cozystack tenant namespaces: tenant-root, its children tenant-<name> (DNS-1123 label, <= 63 chars).
tenant_namespace_validator = RegexValidator(
    r"^tenant-[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
    _("A tenant namespace looks like tenant-<name>: lowercase letters, digits and dashes."),
)


class Tenant(models.Model):
    namespace = models.CharField(
        _("namespace"), max_length=63, unique=True, validators=[tenant_namespace_validator]
    )
    display_name = models.CharField(_("display name"), max_length=100)
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="Membership", related_name="tenants"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["namespace"]
        verbose_name = _("tenant")
        verbose_name_plural = _("tenants")

    def __str__(self) -> str:
        return self.display_name or self.namespace


class Membership(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(
        _("role"), max_length=16, choices=MembershipRole.choices, default=MembershipRole.VIEWER
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "tenant"], name="unique_membership")
        ]
        verbose_name = _("membership")
        verbose_name_plural = _("memberships")

    def __str__(self) -> str:
        return f"{self.user} in {self.tenant} ({self.role})"

    @property
    def can_operate(self) -> bool:
        return self.role == MembershipRole.OPERATOR


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
