from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class CatalogConfig(AppConfig):
    name = "gpus.catalog"
    label = "catalog"
    verbose_name = _("GPU catalog")
    default_auto_field = "django.db.models.BigAutoField"
