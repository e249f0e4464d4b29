"""A processor's row methods as the engine and the sample call them: a processor that overrides
`run_one` or `process` (the documented method is `process_row`, which `run_one` guards) may
raise or return what is no result; its rows then fail with its own error instead of the whole
step failing, which held them for a lease and ended them as a worker's death."""

from __future__ import annotations

from .base import Processor, RowInput, RowResult, as_result, guarded_run_one, raised

run_one = guarded_run_one


def process(processor: Processor, batch: list[RowInput]) -> list[RowResult]:
    """processor.process(batch), never raising: which row made a batch's call raise cannot be
    told, so every row of the batch gets the error; a count of results that is not the batch's
    fails them all too, as no result can be matched to its row."""
    try:
        results = list(processor.process(batch))
    except Exception as exc:
        return [raised(processor, exc, f"a batch of {len(batch)} rows")] * len(batch)
    if len(results) != len(batch):
        message = (
            f"The processor returned {len(results)} results for {len(batch)} rows: "
            "none can be matched to its row."
        )
        return [
            RowResult(error=message, reason="The processor returned too few or too many results")
        ] * len(batch)
    return [as_result(result) for result in results]
