from __future__ import annotations

from functools import cache
from typing import Any

from .base import Processor, RowError, RowInput


@cache
def _analyzer():
    # Loading the lexicon takes a few ms; one analyzer per process is enough (it is read-only).
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


class SentimentProcessor(Processor):
    name = "sentiment"
    title = "Sentiment (VADER)"
    description = (
        "Scores the sentiment of a text column offline with VADER: a compound score from -1 "
        "(most negative) to 1 (most positive) and a positive / neutral / negative label. "
        "A row whose text is empty fails (\"The text is empty.\") rather than read neutral."
    )
    inputs = ["text"]
    outputs = ["sentiment_label", "sentiment_score"]
    params_schema = {
        "type": "object",
        "properties": {
            "threshold": {
                "type": "number",
                "minimum": 0,
                "maximum": 1,
                "default": 0.05,
                "description": "Scores within ±threshold of 0 are neutral "
                "(VADER's authors use 0.05).",
            }
        },
        "additionalProperties": False,
    }

    def process_row(self, row: RowInput) -> dict[str, Any]:
        text = row.inputs.get("text")
        if text is not None and not isinstance(text, str):
            text = str(text)
        # An empty cell (a CSV has no missing ones) has no sentiment: "neutral 0.0" would be a
        # score made up for a row that has nothing to score.
        if text is None or not text.strip():
            raise RowError("The text is empty.")
        score = _analyzer().polarity_scores(text)["compound"]
        threshold = self.params["threshold"]
        label = (
            "positive" if score >= threshold else "negative" if score <= -threshold else "neutral"
        )
        return {"sentiment_label": label, "sentiment_score": score}
