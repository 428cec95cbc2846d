"""Issue 17.1: the idle page walks (idle_since, id) instead of sorting every idle GPU; the tenant
chart reads its workloads' rollups ("<namespace>|<workload>" keys) by prefix from an index.

Django's startswith is `key LIKE 'ns|%'`, which a default-collation btree cannot serve (only the
"C" collation can): on PostgreSQL the prefix index uses varchar_pattern_ops on `key`. It is not
in the model's Meta (an operator class on one column of four); SQLite keeps its own plan."""

from django.db import migrations, models

PREFIX_INDEX = "grouprollup_key_prefix_idx"


def create_prefix_index(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(
        f"CREATE INDEX IF NOT EXISTS {PREFIX_INDEX} ON utilization_grouprollup "
        "(bucket, scope, key varchar_pattern_ops, ts)"
    )


def drop_prefix_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX IF EXISTS {PREFIX_INDEX}")


class Migration(migrations.Migration):

    dependencies = [
        ('catalog', '0003_datasheet_figures'),
        ('inventory', '0007_catalogue_entry'),
        ('tenancy', '0001_initial'),
        ('utilization', '0005_grouprollup_energy_rank'),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name='gpudevice',
            name='gpudevice_idle_idx',
        ),
        migrations.AddIndex(
            model_name='gpudevice',
            index=models.Index(fields=['idle_since', 'id'], name='gpudevice_idle_key_idx'),
        ),
        migrations.RunPython(create_prefix_index, drop_prefix_index),
    ]
