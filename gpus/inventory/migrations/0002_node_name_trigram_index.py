"""The node list's name search (`q`, a "contains" match) reads a trigram index on PostgreSQL
instead of every node name. SQLite has no such index: it keeps scanning (its fleets are small)."""

from django.db import migrations

INDEX = "node_name_upper_trgm_idx"


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    # pg_trgm is a trusted extension (PostgreSQL 13+): the database owner may create it. In
    # public, so every schema (the benchmark's) finds its operator class.
    schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public")
    # The expression Django's icontains compares: UPPER(name::text) LIKE UPPER(%s).
    schema_editor.execute(
        f"CREATE INDEX IF NOT EXISTS {INDEX} ON inventory_node "
        "USING gin (UPPER(name::text) public.gin_trgm_ops)"
    )


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX IF EXISTS {INDEX}")


class Migration(migrations.Migration):
    dependencies = [("inventory", "0001_initial")]

    operations = [migrations.RunPython(create, drop)]
