from django.core.management.base import BaseCommand, CommandParser

from gpus.inventory.models import Cluster
from gpus.inventory.schemas import refresh_served_schemas
from gpus.inventory.services import request_inventory_sync
from gpus.inventory.sync import SyncInProgress, sync_cluster
from gpus.kube.errors import KubeError


class Command(BaseCommand):
    help = (
        "Sync the GPU inventory and the served schemas of every cluster now (or queue the "
        "inventory sync for the Celery worker)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--queue", action="store_true", help="Queue a task per cluster.")

    def handle(self, *args: object, queue: bool = False, **options: object) -> None:
        for cluster in Cluster.objects.all():
            if queue:
                request_inventory_sync(cluster)
                self.stdout.write(f"{cluster.name}: sync queued")
                continue
            try:
                synced = sync_cluster(cluster.pk)
            except SyncInProgress:
                self.stderr.write(f"{cluster.name}: another sync of this cluster is running")
                continue
            except KubeError as exc:
                self.stderr.write(f"{cluster.name}: sync failed: {exc}")
                continue
            # The forms' choices (Kubernetes versions) and their served-schema check read these:
            # without them a first start offers no version until the beat's first refresh.
            try:
                refresh_served_schemas(cluster.pk)
            except KubeError as exc:
                self.stderr.write(f"{cluster.name}: reading the served schemas failed: {exc}")
            self.stdout.write(
                f"{cluster.name}: {synced.nodes.count()} nodes synced in "
                f"{synced.last_sync_seconds:.1f}s, {synced.last_sync_rows} rows written"
            )
