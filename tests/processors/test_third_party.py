from __future__ import annotations

import json
import subprocess
import sys

from jobs.processors.base import all_processors, get_processor_class, reload_registry

from .conftest import make_row
from .example_package import EXAMPLE, ensure_example_installed


def test_installed_package_appears_in_the_registry_and_processes_rows():
    ensure_example_installed()
    try:
        cls = get_processor_class("wordcount")
        assert cls is not None, "the entry point was not found"
        assert "wordcount" in [c.name for c in all_processors()]
        assert cls.describe()["outputs"] == ["words", "characters"]
        proc = cls({"min_length": 3})
        results = proc.process(
            [
                make_row(
                    {"t": "The cat sat on the mat, purring."},
                    inputs={"text": "The cat sat on the mat, purring."},
                ),
                make_row({"t": None}, inputs={"text": None}, index=1),
            ]
        )
        assert results[0].output == {"words": 6, "characters": 32}
        assert results[1].error == "The text is empty."
    finally:
        reload_registry()


def test_a_fresh_interpreter_lists_it_through_the_entry_point():
    ensure_example_installed()
    code = (
        "import json; from jobs.processors.base import all_processors; "
        "print(json.dumps([c.name for c in all_processors()]))"
    )
    names = json.loads(
        subprocess.run(
            [sys.executable, "-c", code],
            check=True,
            capture_output=True,
            text=True,
            cwd=EXAMPLE.parents[1],
            timeout=60,
        ).stdout
    )
    assert "wordcount" in names and "llm" in names
