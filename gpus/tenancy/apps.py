from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class TenancyConfig(AppConfig):
    name = "gpus.tenancy"
    label = "tenancy"
    verbose_name = _("Tenants")
    default_auto_field = "django.db.models.BigAutoField"
