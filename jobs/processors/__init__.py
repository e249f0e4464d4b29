from __future__ import annotations

from .base import (
    ParamsError,
    Processor,
    ProcessorContext,
    RetryableError,
    RowError,
    RowInput,
    RowResult,
    all_processors,
    get_processor_class,
)


def builtin_processors() -> list[type[Processor]]:
    # Imported here so that a processor module's optional heavy imports load only when asked for.
    from .document import DocumentProcessor
    from .extract import ExtractProcessor
    from .http_api import HTTPProcessor
    from .language import LanguageProcessor
    from .llm import LLMProcessor
    from .scrape import ScrapeProcessor
    from .sentiment import SentimentProcessor
    from .template import TemplateProcessor

    return [
        SentimentProcessor,
        TemplateProcessor,
        LLMProcessor,
        HTTPProcessor,
        ScrapeProcessor,
        LanguageProcessor,
        ExtractProcessor,
        DocumentProcessor,
    ]


__all__ = [
    "ParamsError",
    "Processor",
    "ProcessorContext",
    "RetryableError",
    "RowError",
    "RowInput",
    "RowResult",
    "all_processors",
    "builtin_processors",
    "get_processor_class",
]
