"""The one walk that places a CSV problem in its column (jobs/ingest/fields.py)."""

from __future__ import annotations

import io

import pytest

from jobs.ingest.fields import problem_field


def walk(text: str, **kwargs) -> int | None:
    return problem_field(io.StringIO(text, newline=""), ",", 10, **kwargs)


@pytest.mark.parametrize(
    ("text", "column"),
    [
        ('a,"b""c"x,d\n', 2),  # text after the closing quote; a doubled quote is no close
        ('a,b,"never closed\nstill\n', 3),
        ("a,b,cccccccccccc\n", 3),  # over the limit of 10
        ('a,"ccccc""cccc",d\n', None),  # 11 characters as written, 10 as read
        ('a,"x\ny\x00z",d\n', 2),  # a NUL inside a quoted field spanning lines
        ("a,b\r\nc,\udcffd\r\n", 2),  # a marked bad byte in the second record
        ('a,"b",c\n', None),
    ],
)
def test_the_first_problem_names_its_field(text, column):
    assert walk(text) == column


def test_lenient_walk_finds_only_bad_characters():
    assert walk('a,"b"x,cccccccccccc,\x00\n', bad_char_only=True) == 4


def test_one_record_stops_at_its_end():
    # The csv module's complaint was about the first record: nothing after it is read.
    lines = iter(["a,b\n", "c,\x00\n"])
    assert problem_field(lines, ",", 10, one_record=True) is None
    assert next(lines) == "c,\x00\n"
