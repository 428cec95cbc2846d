from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class UtilizationConfig(AppConfig):
    name = "gpus.utilization"
    label = "utilization"
    verbose_name = _("Utilization")
    default_auto_field = "django.db.models.BigAutoField"
