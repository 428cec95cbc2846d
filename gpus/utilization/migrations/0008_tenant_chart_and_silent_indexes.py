"""Issue 17.1: the tenant chart ranks the tenant's workloads in one bucket. A btree on
(bucket, scope, epoch, key varchar_pattern_ops) INCLUDE (busy) reads exactly the tenant's
workload rows of that bucket ("<namespace>|..." keys), index only; the prefix index walked every
retained bucket of every one of its workloads, the rank index every workload of the fleet.

The fleet page's workloads without telemetry read "a GPU of this workload seen since" from
(workload, last_seen_at), not from every device row.

The rank index is PostgreSQL only, like 0006's prefix index (an operator class and INCLUDE are not in the model's
Meta); SQLite keeps its own plan."""

from django.db import migrations, models

EPOCH_KEY_INDEX = "grouprollup_epoch_key_idx"


def create_index(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(
        f"CREATE INDEX IF NOT EXISTS {EPOCH_KEY_INDEX} ON utilization_grouprollup "
        "(bucket, scope, epoch, key varchar_pattern_ops) INCLUDE (busy)"
    )


def drop_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX IF EXISTS {EPOCH_KEY_INDEX}")


class Migration(migrations.Migration):
    dependencies = [("utilization", "0007_grouprollup_busy_and_memory_peak")]

    operations = [
        migrations.RunPython(create_index, drop_index),
        migrations.AddIndex(
            model_name="gpudevice",
            index=models.Index(
                fields=["workload", "last_seen_at"], name="gpudevice_workload_seen_idx"
            ),
        ),
    ]
