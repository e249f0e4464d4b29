"""The processor interface and registry.

A processor turns one row into output columns. Built-ins live beside this module; third-party
packages add their own through the entry-point group ``batchhub.processors`` (the entry point
names a Processor subclass). The engine (jobs/runner.py) calls ``process(batch)`` for CPU-bound
processors and ``run_one(row)`` from a thread pool for I/O-bound ones.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache, partial
from importlib import import_module
from importlib.metadata import entry_points
from typing import Any, ClassVar

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from jsonschema import Draft202012Validator, validators

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "batchhub.processors"


class RowError(Exception):
    """Bad data in this row: the row fails with this message, the job goes on.

    ``reason``: the cause in words that are the same for every row failing for it (no ids, no
    response body), which the job page counts rows by; without it, the message with the parts
    that differ from row to row taken out.
    """

    def __init__(self, message: str = "", *, reason: str | None = None):
        super().__init__(message)
        self.reason = reason


class RetryableError(Exception):
    """A transient failure (timeout, 429, 5xx): the row is tried again later, up to the job's limit.

    ``rate_limited`` marks answers that say "slow down" (429, quota); a run of them auto-pauses
    the job. ``retry_after`` is the wait the service asked for, in seconds.
    """

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        rate_limited: bool = False,
        reason: str | None = None,
    ):
        super().__init__(message)
        self.retry_after = retry_after
        self.rate_limited = rate_limited
        self.reason = reason


class ParamsError(ValueError):
    """The job's params do not fit the processor's schema."""

    def __init__(self, message: str, errors: list[dict[str, str]] | None = None):
        super().__init__(message)
        self.errors = errors or []


@dataclass(slots=True, frozen=True)
class ProcessorContext:
    """Who the processor works for: lets it read the owner's saved provider credentials."""

    owner_id: int | None = None
    job_id: str | None = None  # the job's public id
    concurrency: int = 1  # rows in flight at once for this processor instance


@dataclass(slots=True)
class RowInput:
    index: int  # 0-based position in the input
    ref: str
    values: dict[str, Any]  # every column of the row
    inputs: dict[str, Any]  # the processor's inputs, through the job's column map


@dataclass(slots=True)
class RowResult:
    output: dict[str, Any] | None = None
    error: str | None = None
    retry: bool = False
    retry_after: float | None = None
    rate_limited: bool = False
    usage: dict[str, int] = field(default_factory=dict)
    # Why the row failed, the same for every row failing for it (see RowError).
    reason: str | None = None

    @classmethod
    def ok(cls, output: dict[str, Any], usage: dict[str, int] | None = None) -> RowResult:
        return cls(output=output, usage=usage or {})

    def checked(self) -> RowResult:
        """This result, or a failure when it claims success without a dict of output columns:
        stored as it came, such an output broke its job's page and every CSV download."""
        if self.error is not None or self.retry or isinstance(self.output, dict):
            return self
        got = "None" if self.output is None else f"a {type(self.output).__name__}"
        return RowResult(
            error=f"The processor returned {got}, not a dict of output columns.",
            usage=self.usage,
            reason="The processor returned no dict of output columns",
        )


def raised(processor: Processor, exc: Exception, what: str) -> RowResult:
    """What the rows `what` names come to when the processor raised `exc` on them: a RowError
    fails them with its message, a RetryableError retries them, anything else (a bug, logged)
    fails them with its type and message."""
    if isinstance(exc, RowError):
        return RowResult(error=str(exc) or exc.__class__.__name__, reason=exc.reason)
    if isinstance(exc, RetryableError):
        return RowResult(
            error=str(exc),
            retry=True,
            retry_after=exc.retry_after,
            rate_limited=exc.rate_limited,
            reason=exc.reason,
        )
    logger.error("processor %s raised on %s", processor.name, what, exc_info=exc)
    return RowResult(error=f"{exc.__class__.__name__}: {exc}")


def as_result(value: Any) -> RowResult:
    """A row method's return as a result: a dict of outputs as run_one takes process_row's (a
    value of any other type fails its row when collected: RowResult.checked)."""
    return value if isinstance(value, RowResult) else RowResult.ok(value)


def guarded_run_one(processor: Processor, row: RowInput) -> RowResult:
    """processor.run_one(row), never raising: a run_one of a subclass's own may."""
    try:
        return as_result(processor.run_one(row))
    except Exception as exc:
        return raised(processor, exc, f"row {row.index}")


def _with_defaults(validator_class):
    """A validator that also fills in schema defaults, so processors see complete params."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if isinstance(subschema, dict) and "default" in subschema:
                    instance.setdefault(name, subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return validators.extend(validator_class, {"properties": set_defaults})


_DefaultingValidator = _with_defaults(Draft202012Validator)

# A schema message quotes the value it refused: a 20 MB template came back twice in the 400.
_SHOWN_CHARS = 60
_MESSAGE_CHARS = 300


def _schema_message(error) -> str:
    if error.validator == "maxLength" and isinstance(error.instance, str):
        return (
            f"is {len(error.instance):,} characters long; "
            f"at most {error.validator_value:,} are allowed."
        )
    message = error.message
    shown = repr(error.instance)
    if len(shown) > _SHOWN_CHARS:
        message = message.replace(shown, shown[:_SHOWN_CHARS] + "…")
    return message if len(message) <= _MESSAGE_CHARS else message[:_MESSAGE_CHARS] + "…"


class Processor:
    """Subclass this. Set the class attributes and implement ``process_row`` (or ``process``)."""

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    description: ClassVar[str] = ""
    # Logical inputs, e.g. ["text"]: the job's column_map says which column feeds each one;
    # without a mapping, the column of the same name is used.
    inputs: ClassVar[list[str]] = []
    outputs: ClassVar[list[str]] = []
    params_schema: ClassVar[dict[str, Any]] = {"type": "object", "properties": {}}
    # I/O-bound processors (network calls) run rows concurrently in threads,
    # `concurrency` at a time.
    io_bound: ClassVar[bool] = False

    def __init__(
        self, params: dict[str, Any] | None = None, *, context: ProcessorContext | None = None
    ):
        self.params = self.validate_params(params or {})
        self.context = context or ProcessorContext()

    # --- description -------------------------------------------------------------------------
    @classmethod
    def describe(cls) -> dict[str, Any]:
        return {
            "name": cls.name,
            "title": cls.title,
            "description": cls.description,
            "inputs": list(cls.inputs),
            "outputs": list(cls.outputs),
            "params_schema": cls.params_schema,
        }

    @classmethod
    def validate_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(params, dict):
            raise ParamsError("params must be a JSON object.")
        params = dict(params)
        validator = _DefaultingValidator(cls.params_schema)
        errors = sorted(validator.iter_errors(params), key=lambda e: list(e.absolute_path))
        if errors:
            described = [
                {
                    "param": ".".join(str(p) for p in e.absolute_path) or "(params)",
                    "message": _schema_message(e),
                }
                for e in errors
            ]
            first = described[0]
            raise ParamsError(f"params.{first['param']}: {first['message']}", described)
        cls.check_params(params)
        return params

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        """Checks a JSON Schema cannot express; raise ParamsError."""

    def check_destinations(self) -> None:
        """Raise ParamsError if the params alone name a host the workers may not connect to.

        Called when a job is created (not on the workers), so that a fixed API host on the
        operator's private network is a 400 at once rather than a job whose every row fails.
        URLs that come from the rows are checked at each connection only.
        """

    def credential_refs(self) -> dict[str, str]:
        """The saved credentials these params name, as param path → credential name.

        Called when a job is created, so that a name the owner has no credential under is a 400
        naming the param rather than a job whose every row fails.
        """
        return {}

    def output_columns(self) -> list[str]:
        """The output columns for these params (an LLM in JSON mode names its own)."""
        return list(self.outputs)

    def required_columns(self, column_map: dict[str, str]) -> list[str]:
        """Columns the input must have, after the column map."""
        return [column_map.get(name, name) for name in self.inputs]

    # --- work ------------------------------------------------------------------------------------
    def process_row(self, row: RowInput) -> dict[str, Any]:
        raise NotImplementedError

    def run_one(self, row: RowInput) -> RowResult:
        """One row, with the processor's errors turned into results (never raises)."""
        try:
            output = self.process_row(row)
        except Exception as exc:  # a processor bug must fail the row, not the worker loop
            return raised(self, exc, f"row {row.index}")
        if isinstance(output, RowResult):
            return output
        return RowResult.ok(output)

    def process(self, batch: list[RowInput]) -> list[RowResult]:
        if type(self).run_one is Processor.run_one and "run_one" not in getattr(
            self, "__dict__", ()
        ):
            return [self.run_one(row) for row in batch]
        # A run_one of the subclass's own may raise: each row gets its own error.
        return [guarded_run_one(self, row) for row in batch]

    # --- positional rows (optional) -------------------------------------------------------------
    # A processor that can work on a row's values as they are stored (a list in the order of the
    # job's columns) overrides both methods below; the engine then skips building a RowInput and
    # its dicts for every row. It does so only while the class's process_row/process/run_one are
    # the ones defined next to process_values, so a subclass or a test that replaces them is
    # called exactly as before.
    def bind_columns(self, columns: list[str]) -> None:
        """The job's columns, in the order of every row's values; called before process_values."""

    def process_values(self, values: list[Any]) -> RowResult:
        """One row given as its stored values (possibly shorter than the columns); never raises."""
        raise NotImplementedError

    def positional(self) -> bool:
        """Whether the engine may call bind_columns/process_values instead of process."""
        own = type(self)._positional_methods
        if own is None:
            return False
        instance = vars(self) if hasattr(self, "__dict__") else {}
        return all(
            name not in instance and getattr(type(self), name) is method
            for name, method in own.items()
        )

    # The row methods as they were where process_values was defined (see positional()).
    _positional_methods: ClassVar[dict[str, Any] | None] = None
    _ROW_METHODS: ClassVar[tuple[str, ...]] = ("process_row", "run_one", "process")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "process_values" in vars(cls):
            cls._positional_methods = {name: getattr(cls, name) for name in cls._ROW_METHODS}
        elif cls._positional_methods is not None and any(
            name in vars(cls) for name in cls._ROW_METHODS
        ):
            # A subclass that changes how rows are processed, but not process_values.
            cls._positional_methods = None

    def close(self) -> None:
        """Release what the processor holds (HTTP clients, …) when the worker loop ends."""


@cache
def _registry() -> dict[str, type[Processor]]:
    from . import builtin_processors

    found: dict[str, type[Processor]] = {cls.name: cls for cls in builtin_processors()}
    # Installed packages announce processors through entry points; an operator can also name
    # classes directly (BATCHHUB_PROCESSORS=package.module:Class,…) without packaging them.
    sources = [(ep.value, ep.load) for ep in entry_points(group=ENTRY_POINT_GROUP)]
    sources += [(path, partial(load_configured, path)) for path in settings.BATCHHUB_PROCESSORS]
    for where, load in sources:
        try:
            cls = load()
        except Exception:
            logger.exception("could not load processor %s", where)
            continue
        if not (isinstance(cls, type) and issubclass(cls, Processor) and cls.name):
            logger.error("%s is not a named Processor subclass", where)
            continue
        if cls.name in found:
            logger.warning("processor %s from %s hides an earlier one", cls.name, where)
        found[cls.name] = cls
    return found


def load_configured(path: str) -> type[Processor]:
    """The class a BATCHHUB_PROCESSORS entry names; ImproperlyConfigured, naming it, if none."""
    module_name, colon, attr = path.partition(":")
    if not (colon and module_name and attr):
        raise ImproperlyConfigured(
            f"BATCHHUB_PROCESSORS entry {path!r} is not of the form package.module:Class."
        )
    try:
        module = import_module(module_name)
    except Exception as exc:  # the module's own import errors too: whatever stops it loading
        raise ImproperlyConfigured(
            f"BATCHHUB_PROCESSORS entry {path!r}: cannot import {module_name}: "
            f"{exc.__class__.__name__}: {exc}"
        ) from exc
    cls = getattr(module, attr, None)
    if cls is None:
        raise ImproperlyConfigured(
            f"BATCHHUB_PROCESSORS entry {path!r}: {module_name} has no {attr}."
        )
    if not (isinstance(cls, type) and issubclass(cls, Processor) and cls.name):
        raise ImproperlyConfigured(
            f"BATCHHUB_PROCESSORS entry {path!r} is not a Processor subclass with a name."
        )
    return cls


def check_configured() -> None:
    """Every BATCHHUB_PROCESSORS entry loads, or start-up stops (the jobs app's ready()).

    The registry itself only logs a processor that fails to load, at its first use: one from an
    installed package's entry point may fail for its own reasons, and the others still work. An
    entry the operator wrote is checked at start instead, so a typo is not found by a job.
    """
    for path in settings.BATCHHUB_PROCESSORS:
        load_configured(path)


def registry() -> dict[str, type[Processor]]:
    return _registry()


def reload_registry() -> None:
    _registry.cache_clear()


def get_processor_class(name: str) -> type[Processor] | None:
    return _registry().get(name)


def all_processors() -> Iterable[type[Processor]]:
    return sorted(_registry().values(), key=lambda cls: cls.name)


__all__ = [
    "Processor",
    "ProcessorContext",
    "ParamsError",
    "RetryableError",
    "RowError",
    "RowInput",
    "RowResult",
    "all_processors",
    "get_processor_class",
]
