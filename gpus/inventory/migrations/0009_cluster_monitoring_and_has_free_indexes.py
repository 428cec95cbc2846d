import django.db.models.deletion
from django.db import migrations, models


def copy_monitoring(apps, schema_editor):
    """Each cluster's map moves to its own row (the next sync would write it anyway)."""
    Cluster = apps.get_model("inventory", "Cluster")
    ClusterMonitoring = apps.get_model("inventory", "ClusterMonitoring")
    ClusterMonitoring.objects.bulk_create(
        ClusterMonitoring(cluster_id=pk, tenants=tenants)
        for pk, tenants in Cluster.objects.exclude(tenant_monitoring={}).values_list(
            "pk", "tenant_monitoring"
        )
    )


class Migration(migrations.Migration):
    dependencies = [
        ("inventory", "0008_node_name_grams"),
    ]

    operations = [
        migrations.CreateModel(
            name="ClusterMonitoring",
            fields=[
                (
                    "cluster",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="monitoring",
                        serialize=False,
                        to="inventory.cluster",
                    ),
                ),
                (
                    "tenants",
                    models.JSONField(
                        blank=True, default=dict, verbose_name="monitoring tenant per tenant"
                    ),
                ),
            ],
        ),
        migrations.RunPython(copy_monitoring, migrations.RunPython.noop),
        migrations.RemoveField(
            model_name="cluster",
            name="tenant_monitoring",
        ),
        migrations.AddIndex(
            model_name="node",
            index=models.Index(
                condition=models.Q(("gpu_free__gt", 0)),
                fields=["name", "id"],
                name="node_has_free_key_idx",
            ),
        ),
        migrations.AddIndex(
            model_name="node",
            index=models.Index(
                condition=models.Q(("gpu_free__gt", 0)),
                fields=["health", "name", "id"],
                name="node_has_free_health_key_idx",
            ),
        ),
    ]
