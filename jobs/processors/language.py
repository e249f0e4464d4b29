"""Offline language identification with py3langid (langid.py's model, shipped in the package)."""

from __future__ import annotations

import copy
import threading
from functools import cache
from typing import Any

from .base import ParamsError, Processor, RowError, RowInput

_LOAD_LOCK = threading.RLock()


@cache
def _identifier(languages: tuple[str, ...] | None):
    # Loading the model takes most of a second: once per process. A language subset is a shallow
    # copy: set_languages rebinds the copy's arrays and leaves the full model's alone.
    with _LOAD_LOCK:
        if languages:
            subset = copy.copy(_identifier(None))
            subset.set_languages(list(languages))
            return subset
        from py3langid.langid import MODEL_DIR, MODEL_FILE, LanguageIdentifier

        return LanguageIdentifier.from_modelpath(MODEL_DIR / MODEL_FILE, norm_probs=True)


@cache
def known_languages() -> frozenset[str]:
    return frozenset(_identifier(None).nb_classes)


class LanguageProcessor(Processor):
    name = "language"
    title = "Language identification"
    description = (
        "Identifies the language of a text column offline with py3langid (its model ships with "
        "the package): the ISO 639-1 code and a confidence from 0 to 1. Short or mixed texts "
        "get low confidence; min_confidence turns those into an empty language."
    )
    inputs = ["text"]
    outputs = ["language", "confidence"]
    params_schema = {
        "type": "object",
        "properties": {
            "languages": {
                "type": "array",
                "title": "Only these languages",
                "items": {"type": "string", "pattern": "^[a-z]{2,3}$"},
                "uniqueItems": True,
                "maxItems": 200,
                "default": [],
                "description": "Restrict the answer to these ISO 639-1 codes, "
                'e.g. ["en", "fr", "de"]; more accurate when you know the candidates. '
                "Empty: every language the model knows.",
            },
            "min_confidence": {
                "type": "number",
                "title": "Minimum confidence",
                "minimum": 0,
                "maximum": 1,
                "default": 0,
                "description": "Below this confidence the language column is left empty.",
            },
            "max_chars": {
                "type": "integer",
                "title": "Characters read",
                "minimum": 10,
                "maximum": 1_000_000,
                "default": 10_000,
                "description": "Only the start of long texts is read "
                "(enough to tell the language).",
            },
        },
        "additionalProperties": False,
    }

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        unknown = [code for code in params["languages"] if code not in known_languages()]
        if unknown:
            raise ParamsError(
                f"params.languages: {unknown[0]!r} is not a language the model knows."
            )

    def __init__(self, params: dict[str, Any] | None = None, **kwargs: Any):
        super().__init__(params, **kwargs)
        self.identifier = _identifier(tuple(sorted(self.params["languages"])) or None)

    def process_row(self, row: RowInput) -> dict[str, Any]:
        text = row.inputs.get("text")
        text = "" if text is None else str(text)
        text = text[: self.params["max_chars"]]
        if not any(ch.isalpha() for ch in text):
            raise RowError("The text has no letters to identify a language from.")
        language, probability = self.identifier.classify(text)
        confidence = round(float(probability), 4)
        if confidence < self.params["min_confidence"]:
            language = None
        return {"language": language, "confidence": confidence}
