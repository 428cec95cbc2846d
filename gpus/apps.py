from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class GpusConfig(AppConfig):
    name = "gpus"
    verbose_name = _("GPUs")
    default_auto_field = "django.db.models.BigAutoField"
