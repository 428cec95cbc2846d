"""Tenants (Cozystack tenant namespaces) and the people in them."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.utils.translation import gettext_lazy as _

from gpus.tenancy.choices import MembershipRole

# Cozystack tenant namespaces: tenant-root and its children tenant-<name> (DNS-1123, <= 63).
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
        constraints = [models.UniqueConstraint(fields=["user", "tenant"], name="unique_membership")]
        verbose_name = _("membership")
        verbose_name_plural = _("memberships")

    def __str__(self) -> str:
        return f"{self.user} in {self.tenant} ({self.role})"

    @property
    def can_operate(self) -> bool:
        return self.role == MembershipRole.OPERATOR
