"""Where reading stopped: the rows before a bad byte are counted and checked, and the column of
every CSV problem is named, from at most one more read of the file.

The read decodes a block of bytes at a time: a bad byte thousands of lines into a block lost
the lines before it in that block (a file whose line 80,001 held one was "77,692 rows"), and a
NUL, found by a pass before any row was read, left the count at 0.
"""

from __future__ import annotations

import io

import pytest

from jobs.ingest import validate

ROWS = 80_000  # lines 2 to 80,000; the problem is on line 80,001


def _csv(last_line: bytes) -> bytes:
    lines = ["id,name,city"] + [f"{i},person {i},Zurich" for i in range(1, ROWS)]
    return ("\n".join(lines) + "\n").encode() + last_line + b"\n"


class _Counting(io.BytesIO):
    def __init__(self, data: bytes):
        super().__init__(data)
        self.bytes_read = 0

    def read(self, size=-1):
        data = super().read(size)
        self.bytes_read += len(data)
        return data

    def read1(self, size=-1):
        data = super().read1(size)
        self.bytes_read += len(data)
        return data

    def readinto(self, buffer):
        n = super().readinto(buffer)
        self.bytes_read += n
        return n


@pytest.mark.parametrize(
    ("last_line", "column", "words"),
    [
        (b"80000,bad \xff byte,x", 2, "not valid utf-8 text (0xFF at character 11)"),
        (b"80000,bad \x00 byte,x", 2, "NUL character (at character 11)"),
        (b'80000,"ab"x,y', 2, "quoted field followed by more text"),
        (b"80000,y," + b"z" * 140_000, 3, "field longer than the limit"),
        (b'80000,x,"never closed', 3, "never closed"),
        (b'80000,"spans\nlines \xff",x', 2, "not valid utf-8"),
    ],
)
def test_the_rows_before_the_problem_are_counted_and_its_column_named(last_line, column, words):
    body = _csv(last_line)
    source = _Counting(body)
    report = validate(source, filename="in.csv")
    first = report.errors[0]
    # A record spanning lines: the bad byte's own line is named.
    line = 80_002 if b"\n" in last_line else 80_001
    assert (first["line"], first["column"]) == (line, column), first
    assert words in first["message"], first
    assert report.row_count == ROWS - 1
    # The detection sample, the NUL check, the rows, and one read to place the problem.
    assert source.bytes_read <= 3 * len(body) + 128 * 1024, source.bytes_read / len(body)


def test_a_problem_row_in_the_lost_block_is_reported_too():
    lines = ["id,name"] + [f"{i},Zoë {i}" for i in range(1, 10_000)]
    lines[9990] = "9990,p,extra"
    body = ("\n".join(lines) + "\n").encode() + b"10000,bad \xff\n"
    report = validate(io.BytesIO(body), filename="in.csv")
    assert [(e["line"], e["column"]) for e in report.errors] == [(9991, 3), (10_001, 2)]
    assert report.row_count == 9999


def test_jsonl_rows_before_a_bad_byte_are_counted():
    lines = [f'{{"id": {i}, "name": "p"}}' for i in range(1, ROWS + 1)]
    body = ("\n".join(lines) + "\n").encode() + b'{"id": 0, "name": "b\xffd"}\n'
    report = validate(io.BytesIO(body), filename="in.jsonl")
    assert report.errors[0]["line"] == ROWS + 1, report.errors
    assert report.row_count == ROWS


def test_a_nul_in_the_header_names_its_column():
    report = validate(io.BytesIO(b"id,na\x00me\n1,a\n"), filename="in.csv")
    assert (report.errors[0]["line"], report.errors[0]["column"]) == (1, 2), report.errors
    assert report.row_count == 0
