"""Rows rewritten in place: the sync point's UPDATE of a finished row becomes a HOT update.

PostgreSQL rewrites a row without a new entry in every index (and its WAL) only if the new
version fits on the row's page and no column an index reads, its predicate included, changes.
So the row table keeps room on each page (its fill factor; the finished version, with its
output, is larger than the pending one) and the failed rows' partial index is keyed on the
rows with an error instead of on `status`, which every finished row changes. Failed rows all
carry an error (the check constraint); any stored without one get an empty one first.

SQLite has no such updates: there only the index and the constraint change. Existing pages keep
their layout; the fill factor applies to pages written from now on (new jobs' rows).
"""

from django.db import migrations, models

TABLE = "jobs_row"
# Percent of each page the ingest fills: the rest holds the finished versions of its rows.
FILLFACTOR = 50


def _give_failed_rows_an_error(apps, schema_editor) -> None:
    Row = apps.get_model("jobs", "Row")
    # Through the old partial index on failed rows: no scan of the whole table.
    Row.objects.filter(status="failed", error__isnull=True).update(error="")


def _set_fillfactor(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            f"ALTER TABLE {schema_editor.quote_name(TABLE)} SET (fillfactor = {FILLFACTOR})"
        )


def _reset_fillfactor(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"ALTER TABLE {schema_editor.quote_name(TABLE)} RESET (fillfactor)")


class Migration(migrations.Migration):
    dependencies = [("jobs", "0004_row_storage_v2")]

    operations = [
        migrations.RunPython(_give_failed_rows_an_error, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="row",
            constraint=models.CheckConstraint(
                condition=models.Q(("status", "failed"), _negated=True)
                | models.Q(("error__isnull", False)),
                name="row_failed_has_error",
            ),
        ),
        migrations.AddIndex(
            model_name="row",
            index=models.Index(
                condition=models.Q(("error__isnull", False)),
                fields=["job", "index"],
                name="row_error_idx",
            ),
        ),
        migrations.RemoveIndex(model_name="row", name="row_failed_idx"),
        migrations.RunPython(_set_fillfactor, _reset_fillfactor),
    ]
