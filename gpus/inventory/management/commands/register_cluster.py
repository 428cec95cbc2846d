from django.core.management.base import BaseCommand

from gpus.inventory.services import register_default_cluster


class Command(BaseCommand):
    help = "Create or update the cluster record from the CLUSTER_* settings."

    def handle(self, *args: object, **options: object) -> None:
        cluster = register_default_cluster()
        where = (
            "in-cluster config"
            if cluster.in_cluster
            else f"{cluster.kubeconfig} ({cluster.context})"
        )
        self.stdout.write(f"Cluster {cluster.name}: {where}")
