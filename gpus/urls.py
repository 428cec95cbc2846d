"""Every page of the portal under one namespace, `gpus:` (URL names predate the domain apps)."""

from gpus.capacity import urls as capacity
from gpus.catalog import urls as catalog
from gpus.inventory import urls as inventory
from gpus.provisioning import urls as provisioning
from gpus.utilization import urls as utilization

app_name = "gpus"

urlpatterns = [
    *inventory.urlpatterns,
    *catalog.urlpatterns,
    *provisioning.urlpatterns,
    *utilization.urlpatterns,
    *capacity.urlpatterns,
]
