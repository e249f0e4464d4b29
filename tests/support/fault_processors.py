"""Processors that only tests load (through BATCHHUB_PROCESSORS), to break workers on purpose."""

from __future__ import annotations

import os
import signal
import time

from jobs.processors import Processor


class CrashProcessor(Processor):
    """Echoes the name column; a row named "poison" kills its worker process every time."""

    name = "crash_test"
    title = "Crash test"
    description = "Test only: a row named poison SIGKILLs the worker process."
    inputs = ["name"]
    outputs = ["echo"]
    params_schema = {
        "type": "object",
        "properties": {
            "delay": {"type": "number", "minimum": 0, "default": 0},
            # CPU seconds a row costs (busy, unlike `delay`): a baseline that competes for the
            # CPU like the recovery it is compared with.
            "spin": {"type": "number", "minimum": 0, "default": 0},
        },
        "additionalProperties": False,
    }

    def process_row(self, row):
        if row.inputs["name"] == "poison":
            os.kill(os.getpid(), signal.SIGKILL)
        if self.params["delay"]:
            time.sleep(self.params["delay"])
        if self.params.get("spin"):
            until = time.thread_time() + self.params["spin"]
            while time.thread_time() < until:
                pass
        return {"echo": row.inputs["name"]}
