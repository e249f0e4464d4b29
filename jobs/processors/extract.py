"""Pull emails, phone numbers, URLs or matches of your own regex out of a text column.

A user regex runs on the ``regex`` module with a per-row time limit: Python's ``re`` cannot be
interrupted, and one pattern like ``(a+)+$`` on a long cell would hold a worker for hours.
"""

from __future__ import annotations

import json
import re
from typing import Any

import regex

from .base import ParamsError, Processor, RowError, RowInput

KINDS = ["emails", "phones", "urls"]
MAX_PATTERN_LENGTH = 500
_COLUMN_NAME = r"^[^\s{}][^{}]{0,99}$"

_EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}\b"
)
_URL = re.compile(r"(?i)\b(?:https?://|www\.)[^\s<>\"'`{}|\\^]+")
# Candidates: an optional +country code, then digits with spaces, dots, dashes or one (area code).
_PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{1,5}\)[\s.-]?)?\d(?:[\s.-]?\d){5,16}(?![\w])"
)
_DATE_LIKE = re.compile(r"^\d{4}[-./]\d{1,2}[-./]\d{1,2}$|^\d{1,2}[-./]\d{1,2}[-./]\d{2,4}$")
_URL_TRAILING = ".,;:!?'\")]}>"
# Cheap screen for the classic catastrophic shapes: an innermost group, repeated, whose body
# (or one of its alternatives) itself ends in a repeat, e.g. (a+)+, (\w*)*, (x|x+){2,}, (\d+\s?)+.
# The per-row time limit catches what this misses.
_REPEATED_GROUP = re.compile(r"\(((?:[^()\\]|\\.)*)\)\s*(?:[+*]|\{\d*,\d*\})")
_ENDS_IN_REPEAT = re.compile(r"(?<!\\)(?:[+*]|\{\d*,\d*\})\??$")
_HAS_REPEAT = re.compile(r"(?<!\\)(?:[+*]|\{\d*,\d*\})")


def nested_repeat(pattern: str) -> bool:
    for match in _REPEATED_GROUP.finditer(pattern):
        for alternative in match.group(1).split("|"):
            alternative = alternative.strip()
            if _ENDS_IN_REPEAT.search(alternative):
                return True
            # (\d+\s?)+ : an optional tail after a repeat lets the repeat end anywhere too.
            if alternative.endswith("?") and _HAS_REPEAT.search(alternative[:-1]):
                return True
    return False


def _phones(text: str) -> list[str]:
    found = []
    for match in _PHONE.finditer(text):
        candidate = match.group(0).strip(" .-")
        digits = sum(ch.isdigit() for ch in candidate)
        # 7–15 digits (E.164 allows 15); dates and plain long numbers are not phone numbers.
        if (
            7 <= digits <= 15
            and not _DATE_LIKE.match(candidate)
            and (
                candidate.startswith(("+", "("))
                or any(sep in candidate for sep in " .-")
                or digits >= 10
            )
        ):
            found.append(candidate)
    return found


def _urls(text: str) -> list[str]:
    found = []
    for match in _URL.finditer(text):
        url = match.group(0)
        # Sentence punctuation after a URL is not part of it; a closing bracket is only when it
        # opens in it.
        while url and url[-1] in _URL_TRAILING:
            if url[-1] == ")" and url.count("(") >= url.count(")"):
                break
            url = url[:-1]
        found.append(url)
    return found


class ExtractProcessor(Processor):
    name = "extract"
    title = "Extract emails, phones, URLs or a pattern"
    description = (
        "Finds email addresses, phone numbers and URLs, and/or the matches of your own regular "
        'expression, in a text column. Each kind gets a column: the matches joined with "; " '
        "(the default) or as a JSON list."
    )
    inputs = ["text"]
    outputs = list(KINDS)
    params_schema = {
        "type": "object",
        "properties": {
            "kinds": {
                "type": "array",
                "title": "What to find",
                "items": {"enum": KINDS},
                "uniqueItems": True,
                "description": "Any of emails, phones, urls; each becomes an output column of the "
                "same name. Default: all three, unless you give a pattern (then only the "
                "pattern).",
            },
            "pattern": {
                "type": "string",
                "title": "Regular expression",
                "minLength": 1,
                "maxLength": MAX_PATTERN_LENGTH,
                "description": "A regex (Python syntax). With one capture group its text is "
                "collected, else the whole match. Runs with a time limit per row.",
            },
            "ignore_case": {
                "type": "boolean",
                "title": "Ignore case",
                "default": False,
                "description": "Case-insensitive pattern matching.",
            },
            "pattern_column": {
                "type": "string",
                "title": "Pattern output column",
                "pattern": _COLUMN_NAME,
                "default": "matches",
                "description": "Column for the pattern's matches.",
            },
            "output_format": {
                "type": "string",
                "title": "Output format",
                "enum": ["joined", "json"],
                "default": "joined",
                "description": "joined: 'a@x.org; b@y.org' (reads well in a spreadsheet). json: "
                '["a@x.org", "b@y.org"] (exact, for scripts). No match: an empty cell / [].',
            },
            "unique": {
                "type": "boolean",
                "title": "Drop repeats",
                "default": True,
                "description": "Keep each distinct match once, in order of first appearance.",
            },
            "max_matches": {
                "type": "integer",
                "title": "Matches kept per kind",
                "minimum": 1,
                "maximum": 10_000,
                "default": 100,
                "description": "At most this many matches per kind and row.",
            },
            "max_chars": {
                "type": "integer",
                "title": "Characters searched",
                "minimum": 1,
                "maximum": 1_000_000,
                "default": 200_000,
                "description": "Only the start of longer texts is searched.",
            },
            "timeout": {
                "type": "number",
                "title": "Pattern time limit (seconds)",
                "minimum": 0.01,
                "maximum": 10,
                "default": 1,
                "description": "A pattern that runs longer on a row fails that row.",
            },
        },
        "additionalProperties": False,
    }

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        pattern = params.get("pattern")
        if "kinds" not in params:
            params["kinds"] = [] if pattern else list(KINDS)
        if not params["kinds"] and not pattern:
            raise ParamsError("params: choose at least one of kinds or give a pattern.")
        if pattern:
            if nested_repeat(pattern):
                raise ParamsError(
                    "params.pattern: a repeated group that itself ends in a repeat, like (a+)+, "
                    "can take exponential time; rewrite it without the nested repeat."
                )
            try:
                regex.compile(pattern, regex.IGNORECASE if params["ignore_case"] else 0)
            except regex.error as exc:
                raise ParamsError(
                    f"params.pattern: not a valid regular expression ({exc})."
                ) from None
            if params["pattern_column"] in params["kinds"]:
                raise ParamsError("params.pattern_column: that name is already a kind's column.")

    def __init__(self, params: dict[str, Any] | None = None, **kwargs: Any):
        super().__init__(params, **kwargs)
        pattern = self.params.get("pattern")
        flags = regex.IGNORECASE if self.params["ignore_case"] else 0
        self.pattern = regex.compile(pattern, flags) if pattern else None

    def output_columns(self) -> list[str]:
        columns = list(self.params["kinds"])
        if self.pattern is not None:
            columns.append(self.params["pattern_column"])
        return columns

    def process_row(self, row: RowInput) -> dict[str, Any]:
        text = row.inputs.get("text")
        text = "" if text is None else str(text)
        text = text[: self.params["max_chars"]]
        output: dict[str, Any] = {}
        for kind in self.params["kinds"]:
            found = {"emails": _EMAIL.findall, "phones": _phones, "urls": _urls}[kind](text)
            output[kind] = self._cell(found)
        if self.pattern is not None:
            output[self.params["pattern_column"]] = self._cell(self._matches(text))
        return output

    def _matches(self, text: str) -> list[str]:
        group = 1 if self.pattern.groups == 1 else 0
        found: list[str] = []
        try:
            for match in self.pattern.finditer(text, timeout=self.params["timeout"]):
                value = match.group(group)
                if value:  # empty matches (e.g. from x*) say nothing
                    found.append(value)
                if len(found) >= self.params["max_matches"] * 4:
                    break
        except TimeoutError:
            raise RowError(
                f"The pattern ran longer than {self.params['timeout']:g} s on this row."
            ) from None
        return found

    def _cell(self, found: list[str]) -> str:
        if self.params["unique"]:
            found = list(dict.fromkeys(found))
        found = found[: self.params["max_matches"]]
        if self.params["output_format"] == "json":
            return json.dumps(found, ensure_ascii=False)
        return "; ".join(found)
