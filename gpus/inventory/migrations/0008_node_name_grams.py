"""The name search's index (inventory.models.NodeNameGram, inventory.selectors.name_gram_matches):
every three-character piece of each node's name, in a table whose primary key (gram, name, node)
lists, for any piece, the nodes containing it in name order. On PostgreSQL, statement triggers
on the node table keep it right whatever writes nodes (the sync's bulk inserts and deletes, the
benchmarks' INSERT ... SELECT, a flush's TRUNCATE). SQLite gets the table but no triggers: its
search scans the node names (embedded fleets are small)."""

import django.db.models.deletion
from django.db import migrations, models


# The pieces of a name: upper case (the search compares UPPER(name) LIKE UPPER(term), as
# Django's icontains does), each distinct piece once per node.
PIECES = (
    "INSERT INTO inventory_nodenamegram (gram, name, node_id) "
    "SELECT DISTINCT substr(upper(n.name), i, 3), n.name, n.id "
    "FROM {rows}, generate_series(1, length(n.name) - 2) AS i"
)

CREATE = f"""
CREATE FUNCTION inventory_node_grams_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    {PIECES.format(rows="new_rows n")};
    RETURN NULL;
END $$;
CREATE FUNCTION inventory_node_grams_rename() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM inventory_nodenamegram WHERE node_id = OLD.id;
    {PIECES.format(rows="(SELECT NEW.id, NEW.name) AS n (id, name)")};
    RETURN NULL;
END $$;
CREATE FUNCTION inventory_node_grams_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM inventory_nodenamegram g USING old_rows o WHERE g.node_id = o.id;
    RETURN NULL;
END $$;
CREATE FUNCTION inventory_node_grams_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- DELETE, not TRUNCATE: a flush truncates both tables in one statement, which a TRUNCATE
    -- here would find in use. After that flush, there is nothing left to delete.
    DELETE FROM inventory_nodenamegram;
    RETURN NULL;
END $$;
CREATE TRIGGER inventory_node_grams_insert AFTER INSERT ON inventory_node
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION inventory_node_grams_insert();
-- Per row, and only for a new name (rare): the sync's updates of GPU counts run no function.
CREATE TRIGGER inventory_node_grams_rename AFTER UPDATE OF name ON inventory_node
    FOR EACH ROW WHEN (OLD.name IS DISTINCT FROM NEW.name)
    EXECUTE FUNCTION inventory_node_grams_rename();
CREATE TRIGGER inventory_node_grams_delete AFTER DELETE ON inventory_node
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION inventory_node_grams_delete();
CREATE TRIGGER inventory_node_grams_truncate AFTER TRUNCATE ON inventory_node
    FOR EACH STATEMENT EXECUTE FUNCTION inventory_node_grams_truncate();
{PIECES.format(rows="inventory_node n")};
"""

DROP = """
DROP TRIGGER IF EXISTS inventory_node_grams_insert ON inventory_node;
DROP TRIGGER IF EXISTS inventory_node_grams_rename ON inventory_node;
DROP TRIGGER IF EXISTS inventory_node_grams_delete ON inventory_node;
DROP TRIGGER IF EXISTS inventory_node_grams_truncate ON inventory_node;
DROP FUNCTION IF EXISTS inventory_node_grams_insert();
DROP FUNCTION IF EXISTS inventory_node_grams_rename();
DROP FUNCTION IF EXISTS inventory_node_grams_delete();
DROP FUNCTION IF EXISTS inventory_node_grams_truncate();
"""


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):
    dependencies = [
        ("inventory", "0007_catalogue_entry"),
    ]

    operations = [
        migrations.CreateModel(
            name="NodeNameGram",
            fields=[
                (
                    "pk",
                    models.CompositePrimaryKey(
                        "gram",
                        "name",
                        "node",
                        blank=True,
                        editable=False,
                        primary_key=True,
                        serialize=False,
                    ),
                ),
                ("gram", models.CharField(max_length=3)),
                ("name", models.CharField(max_length=253)),
                (
                    "node",
                    models.ForeignKey(
                        db_constraint=False,
                        on_delete=django.db.models.deletion.DO_NOTHING,
                        related_name="+",
                        to="inventory.node",
                    ),
                ),
            ],
        ),
        migrations.RunPython(create, drop),
    ]
