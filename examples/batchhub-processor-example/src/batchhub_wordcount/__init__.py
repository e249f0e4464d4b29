"""A complete third-party BatchHub processor: word and character counts of a text column.

Installed into the same environment as BatchHub (``pip install batchhub-processor-example``), it
appears in the processor list through the ``batchhub.processors`` entry point in pyproject.toml.
"""

from __future__ import annotations

import re
from typing import Any

from jobs.processors.base import Processor, RowError, RowInput

_WORD = re.compile(r"\w+(?:['’-]\w+)*")


class WordCountProcessor(Processor):
    name = "wordcount"
    title = "Word count"
    description = (
        "Counts the words and characters of a text column, optionally only words of a minimum "
        "length."
    )
    inputs = ["text"]  # the job's column_map may point this at any column
    outputs = ["words", "characters"]
    params_schema = {
        "type": "object",
        "properties": {
            "min_length": {
                "type": "integer",
                "minimum": 1,
                "maximum": 100,
                "default": 1,
                "description": "Only count words at least this long.",
            }
        },
        "additionalProperties": False,
    }

    def process_row(self, row: RowInput) -> dict[str, Any]:
        text = row.inputs.get("text")
        if text is None:
            raise RowError("The text is empty.")  # fails this row only; the job goes on
        text = str(text)
        words = [w for w in _WORD.findall(text) if len(w) >= self.params["min_length"]]
        return {"words": len(words), "characters": len(text)}
