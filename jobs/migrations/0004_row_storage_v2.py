"""Row storage v2: rows keyed by (job, index) without a surrogate id, inputs and outputs as text.

Django cannot alter a table to or from a composite primary key, so the table is rebuilt: the
old one is renamed aside (with the index names the new one takes), the new one is created from
the model of its state, the rows are copied over in one statement, and the old table dropped.
Unapplying does the same the other way. Existing jobs keep every row, input and output.
"""

from django.db import migrations, models

import jobs.models

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


def _rebuild(apps, schema_editor, *, to_jsonb: bool) -> None:
    """Create the table of this state's Row model and move every row into it."""
    qn = schema_editor.quote_name
    schema_editor.create_model(apps.get_model("jobs", "Row"))
    targets = ", ".join(qn(c) for c in COLUMNS)
    sources = []
    for column in COLUMNS:
        if column in ("data", "output") and schema_editor.connection.vendor == "postgresql":
            sources.append(f"{qn(column)}::{'jsonb' if to_jsonb else 'text'}")
        else:
            sources.append(qn(column))
    schema_editor.execute(
        f"INSERT INTO {qn(TABLE)} ({targets}) SELECT {', '.join(sources)} FROM {qn(ASIDE)}"
    )
    schema_editor.execute(f"DROP TABLE {qn(ASIDE)}")


def forwards(apps, schema_editor) -> None:
    _rebuild(apps, schema_editor, to_jsonb=False)


def backwards(apps, schema_editor) -> None:
    _rebuild(apps, schema_editor, to_jsonb=True)


class Migration(migrations.Migration):
    dependencies = [("jobs", "0003_faults_chunk_holder")]

    operations = [
        # Forwards: set the v1 table aside (this state), switch the state, rebuild (new state).
        # Backwards the three run in reverse: set v2 aside, switch back, rebuild as v1.
        migrations.RunPython(_set_aside, backwards),
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
                migrations.AlterField(
                    model_name="row", name="data", field=jobs.models.JSONText()
                ),
                migrations.AlterField(
                    model_name="row",
                    name="output",
                    field=jobs.models.JSONText(blank=True, null=True),
                ),
                migrations.RemoveField(model_name="row", name="id"),
            ]
        ),
        migrations.RunPython(forwards, _set_aside),
    ]
