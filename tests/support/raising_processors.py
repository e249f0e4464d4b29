"""Processors written the way a user might, overriding `run_one` or `process` (not the
documented `process_row`), that raise on some rows: loaded by tests through the registry."""

from __future__ import annotations

from jobs.processors import Processor, RetryableError, RowResult

BAD = "person7"  # the row that makes each of them raise


class _Echo(Processor):
    inputs = ["name"]
    outputs = ["echo"]


class RaisingRunOne(_Echo):
    """run_one of its own, raising on the bad row; a dict of outputs for the others."""

    name = "raising-run-one"

    def run_one(self, row):
        if row.inputs["name"] == BAD:
            raise ValueError(f"cannot echo {row.inputs['name']}")
        return {"echo": row.inputs["name"]}


class RaisingIORunOne(RaisingRunOne):
    """The same, called from the I/O loop's threads."""

    name = "raising-io-run-one"
    io_bound = True


class RaisingProcess(_Echo):
    """process of its own, working on the whole batch: a batch holding the bad row raises."""

    name = "raising-process"

    def process(self, batch):
        if any(row.inputs["name"] == BAD for row in batch):
            raise KeyError("the model refused the batch")
        return [RowResult.ok({"echo": row.inputs["name"]}) for row in batch]


class BusyRunOne(_Echo):
    """run_one of its own, whose service is busy for the bad row: a transient error."""

    name = "busy-run-one"

    def run_one(self, row):
        if row.inputs["name"] == BAD:
            raise RetryableError("the service is busy")
        return RowResult.ok({"echo": row.inputs["name"]})


ALL = [RaisingRunOne, RaisingIORunOne, RaisingProcess, BusyRunOne]
