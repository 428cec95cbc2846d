from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class WebConfig(AppConfig):
    name = "gpus.web"
    label = "web"
    verbose_name = _("Web")

    def ready(self) -> None:
        from django.urls import register_converter

        from gpus.web.converters import IdConverter

        # Before any URLconf is read: the apps' URLs use <dbid:...>.
        register_converter(IdConverter, "dbid")
