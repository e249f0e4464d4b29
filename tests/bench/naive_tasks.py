"""The naive design the engine is measured against: one Celery task per row.

A worker loads this module only when started with `--include tests.bench.naive_tasks` (the engine
benchmark does so). Each task does what a per-row design must: read its row, apply the template,
write the row back — one broker round trip and three queries per row.
"""

from __future__ import annotations

from batchhub.celery import app


@app.task(name="bench.naive_row", ignore_result=True)
def naive_row(row_pk: int | list[int], columns: list[str], template: str) -> None:
    from jobs.models import Row, RowStatus

    if isinstance(row_pk, list):  # the (job, index) key, a list once through JSON
        row_pk = tuple(row_pk)
    row = Row.objects.get(pk=row_pk)
    # Not strict: a JSONL row's data may be shorter than the job's columns (readers pad them).
    values = dict(zip(columns, row.data, strict=False))
    Row.objects.filter(pk=row_pk).update(
        output={"text": template.format_map(values)}, status=RowStatus.SUCCEEDED, attempts=1
    )
