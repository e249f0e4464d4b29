"""batchhub.jsonsafe and half characters (lone surrogates): refused in input, replaced in output."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from batchhub import jsonsafe


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('{"a": "x\\ud800"}', "at a"),
        ('{"a": [1, {"b": "\\udc00"}]}', "at a[1].b"),
        ('{"\\ud800": 1}', "in a key"),
    ],
)
def test_a_lone_half_is_refused_saying_where(text, where):
    with pytest.raises(jsonsafe.JSONLimitError) as caught:
        jsonsafe.loads(text)
    assert where in str(caught.value) and "lone surrogate" in str(caught.value)


def test_pairs_and_escaped_backslashes_are_text():
    assert jsonsafe.loads('"\\ud83d\\ude00"') == "\N{GRINNING FACE}"
    assert jsonsafe.loads('"\\\\ud800"') == "\\ud800"  # a backslash, then letters


def test_an_answer_gets_its_halves_replaced():
    value = jsonsafe.loads('{"\\ud800k": ["x\\udc00", "\\ud83d\\ude00"]}', replace_halves=True)
    assert value == {"\ufffdk": ["x\ufffd", "\N{GRINNING FACE}"]}


def test_an_output_holding_a_half_is_written_as_orjson_writes_the_rest():
    when = datetime(2026, 12, 7, 11, 0, tzinfo=UTC)
    text = jsonsafe.dumps({"at": when, "name": "b\ud800d"})
    assert json.loads(text) == {"at": "2026-12-07T11:00:00+00:00", "name": "b\ufffdd"}


def test_escaped_pairs_cost_a_c_parse_not_a_walk(monkeypatch):
    # Python's json.dumps writes every emoji as an escaped pair, so such JSONL lines are common:
    # they are checked by orjson's parse, far cheaper than a walk in Python, and only a
    # line orjson refuses is walked.
    walked = []
    monkeypatch.setattr(jsonsafe, "check_value", lambda value, **_: walked.append(value))
    line = json.dumps({"name": "Zoë 😀", "text": "great 👍", "n": [1, 2, 3]})
    assert jsonsafe.loads(line)["name"] == "Zoë 😀"
    assert walked == []
    jsonsafe.loads('{"a": "\\ud800"}')
    assert walked == [{"a": "\ud800"}]


def test_values_built_in_python_are_walked_once_and_take_any_key():
    jsonsafe.check_value({1: "a", "b": ["c"]})  # an int key is no text to check
    with pytest.raises(jsonsafe.JSONLimitError, match="at b\\[0\\]"):
        jsonsafe.check_value({"b": ["x\ud800"]})


class _Odd:
    def __str__(self) -> str:
        return "odd\x00one"


@pytest.mark.parametrize("big", [1, 2**64])  # an integer past 64 bits: the stdlib's writer
def test_a_nul_is_replaced_whichever_writer_writes_the_output(big):
    # jsonb refuses the escape \u0000 as it refuses the character itself.
    text = jsonsafe.dumps({"n": big, "s": "a\x00b", "k\x00": [_Odd()]})
    assert "\\u0000" not in text
    assert json.loads(text) == {"n": big, "s": "a\ufffdb", "k\ufffd": ["odd\ufffdone"]}


def test_nan_is_written_as_null_whichever_writer_writes_the_output():
    # orjson writes null; the stdlib's writer (an integer past 64 bits beside it) wrote NaN,
    # which jsonb refuses: the same value failed a row or not depending on its neighbours.
    for big in (1, 2**64):
        value = {"n": big, "x": float("nan"), "y": [float("inf"), -float("inf"), 1.5]}
        value["t"] = (float("nan"), 2)
        assert json.loads(jsonsafe.dumps(value)) == {
            "n": big, "x": None, "y": [None, None, 1.5], "t": [None, 2]
        }  # fmt: skip


def test_a_repeated_key_is_refused_unless_the_text_is_an_outside_answer():
    with pytest.raises(jsonsafe.JSONLimitError, match='"a" twice'):
        jsonsafe.loads('{"a": 1, "a": 2}')
    # A service's answer cannot be fixed by the person running the job: read as parsers do.
    assert jsonsafe.loads('{"a": 1, "a": 2}', unique_keys=False) == {"a": 2}
