"""Row storage v2: rows keyed by (job, index), without the surrogate id beside that unique pair.

Django cannot alter a table to or from a composite primary key, so the table is rebuilt: the
old one is renamed aside (with the index names the new one takes), the new one is created from
the model of its state, the rows are copied over in one statement, and the old table dropped.
Unapplying does the same the other way. Existing jobs keep every row, input and output.
"""

from django.db import migrations, models

TABLE = "jobs_row"
ASIDE = "jobs_row_aside"
COLUMNS = ("job_id", "index", "ref", "data", "status", "output", "error", "attempts")


def _set_aside(apps, schema_editor) -> None:
    """Rename the current table and the index names the rebuilt one will take."""
    qn = schema_editor.quote_name
    schema_editor.execute(f"ALTER TABLE {qn(TABLE)} RENAME TO {qn(ASIDE)}")
    schema_editor.execute(f"DROP INDEX IF EXISTS {qn('row_failed_idx')}")
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"ALTER INDEX {qn(TABLE + '_pkey')} RENAME TO {qn(ASIDE + '_pkey')}")
        # Its constraints' names too (the unique pair, the attempts check): the rebuilt table
        # takes them.
        with schema_editor.connection.cursor() as cursor:
            cursor.execute(
                "SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass "
                "AND contype IN ('u', 'c')",
                [ASIDE],
            )
            names = [name for (name,) in cursor.fetchall()]
        for name in names:
            schema_editor.execute(f"ALTER TABLE {qn(ASIDE)} DROP CONSTRAINT {qn(name)}")


def rebuild(apps, schema_editor) -> None:
    """Create the table of this state's Row model and move every row into it."""
    qn = schema_editor.quote_name
    schema_editor.create_model(apps.get_model("jobs", "Row"))
    columns = ", ".join(qn(c) for c in COLUMNS)
    schema_editor.execute(f"INSERT INTO {qn(TABLE)} ({columns}) SELECT {columns} FROM {qn(ASIDE)}")
    schema_editor.execute(f"DROP TABLE {qn(ASIDE)}")


class Migration(migrations.Migration):
    dependencies = [("jobs", "0003_faults_chunk_holder")]

    operations = [
        # Forwards: set the v1 table aside (this state), switch the state, rebuild (new state).
        # Backwards the three run in reverse: set v2 aside, switch back, rebuild as v1.
        migrations.RunPython(_set_aside, rebuild),
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.RemoveConstraint(model_name="row", name="row_unique_index"),
                migrations.AddField(
                    model_name="row",
                    name="pk",
                    field=models.CompositePrimaryKey(
                        "job",
                        "index",
                        blank=True,
                        editable=False,
                        primary_key=True,
                        serialize=False,
                    ),
                ),
                migrations.RemoveField(model_name="row", name="id"),
            ]
        ),
        migrations.RunPython(rebuild, _set_aside),
    ]
