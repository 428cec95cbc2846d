from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class CapacityConfig(AppConfig):
    name = "gpus.capacity"
    label = "capacity"
    verbose_name = _("Capacity")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # The inventory and provisioning signal; capacity listens (they never import it).
        from gpus.capacity import receivers  # noqa: F401
