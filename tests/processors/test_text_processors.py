from __future__ import annotations

import json

import pytest

from jobs.processors.base import ParamsError
from jobs.processors.extract import ExtractProcessor
from jobs.processors.language import LanguageProcessor

from .conftest import make_row

SENTENCES = {
    "en": "The weather is lovely today and we are going to the park with the children.",
    "fr": "Il fait très beau aujourd'hui et nous allons au parc avec les enfants.",
    "de": "Das Wetter ist heute schön und wir gehen mit den Kindern in den Park.",
    "es": "Hoy hace muy buen tiempo y vamos al parque con los niños y sus amigos.",
    "it": "Oggi il tempo è bellissimo e andiamo al parco con i bambini.",
    "ja": "今日はとても良い天気なので、子供たちと公園に行きます。",
}


def text_row(text, index=0):
    return make_row({"body": text}, inputs={"text": text}, index=index)


def test_language_identifies_sentences():
    proc = LanguageProcessor({})
    results = proc.process([text_row(t, i) for i, t in enumerate(SENTENCES.values())])
    assert [r.output["language"] for r in results] == list(SENTENCES)
    for r in results:
        assert 0.5 < r.output["confidence"] <= 1.0


def test_language_restricted_set_and_min_confidence():
    proc = LanguageProcessor({"languages": ["en", "fr"], "min_confidence": 0.99})
    out = proc.run_one(text_row(SENTENCES["fr"])).output
    assert out["language"] == "fr"
    unsure = proc.run_one(text_row("ok")).output
    assert unsure["language"] is None and unsure["confidence"] < 0.99
    assert (
        proc.run_one(text_row("1234 !!")).error
        == "The text has no letters to identify a language from."
    )
    with pytest.raises(ParamsError):
        LanguageProcessor.validate_params({"languages": ["xx"]})


TEXT = """Contact Jane at jane.doe@example.com or sales@shop.example.co.uk (not a@b).
Call +33 1 42 68 53 00 or (555) 123-4567; order 2024-01-15 ref 12345.
See https://example.com/path?q=1, www.example.org and (https://en.wikipedia.org/wiki/Python_(language)).
Again: jane.doe@example.com."""


def test_extract_all_kinds_joined():
    proc = ExtractProcessor({})
    assert proc.output_columns() == ["emails", "phones", "urls"]
    out = proc.run_one(text_row(TEXT)).output
    assert out["emails"] == "jane.doe@example.com; sales@shop.example.co.uk"
    assert out["phones"] == "+33 1 42 68 53 00; (555) 123-4567"
    assert (
        out["urls"]
        == "https://example.com/path?q=1; www.example.org; https://en.wikipedia.org/wiki/Python_(language)"
    )


def test_extract_pattern_as_json_list():
    proc = ExtractProcessor(
        {"pattern": r"ref (\d+)|order ([\d-]+)", "output_format": "json", "pattern_column": "refs"}
    )
    assert proc.output_columns() == ["refs"]
    assert json.loads(proc.run_one(text_row(TEXT)).output["refs"]) == [
        "order 2024-01-15",
        "ref 12345",
    ]
    one_group = ExtractProcessor(
        {
            "pattern": r"(\w+)@example\.com",
            "kinds": ["emails"],
            "output_format": "json",
            "unique": False,
        }
    )
    out = one_group.run_one(text_row(TEXT)).output
    assert json.loads(out["matches"]) == ["doe", "doe"]
    assert json.loads(out["emails"]) == [
        "jane.doe@example.com",
        "sales@shop.example.co.uk",
        "jane.doe@example.com",
    ]


def test_extract_no_match_is_empty():
    out = (
        ExtractProcessor({"kinds": ["emails"], "output_format": "json"})
        .run_one(text_row("nothing here"))
        .output
    )
    assert out == {"emails": "[]"}


@pytest.mark.parametrize(
    "pattern", [r"(a+)+$", r"(\w*)*x", r"(x|x+){2,}", r"(\d+\s?)+$", r"(?:[a-z]{1,}\.?)*@"]
)
def test_catastrophic_patterns_are_refused(pattern):
    with pytest.raises(ParamsError) as info:
        ExtractProcessor.validate_params({"pattern": pattern})
    assert "exponential" in str(info.value)


@pytest.mark.parametrize("pattern", [r"(ab+c)+", r"colou?r", r"(\d{3})-(\d{4})", r"\(x+\)+"])
def test_ordinary_patterns_pass_the_screen(pattern):
    ExtractProcessor.validate_params({"pattern": pattern})


def test_slow_pattern_fails_the_row_within_its_time_limit():
    # Not caught by the cheap screen (alternation of overlapping words); the time limit stops it.
    proc = ExtractProcessor({"pattern": r"^(\w|\w\w)*$", "timeout": 0.05})
    result = proc.run_one(text_row("a" * 5000 + "!"))
    assert result.error == "The pattern ran longer than 0.05 s on this row."


def test_extract_needs_something_to_find():
    with pytest.raises(ParamsError):
        ExtractProcessor.validate_params({"kinds": []})
    with pytest.raises(ParamsError):
        ExtractProcessor.validate_params({"pattern": "(unclosed"})
