"""A job's processor from its name and params, and its column map checked: API errors if not."""

from __future__ import annotations

from typing import Any

from batchhub.api import APIError

from .processors import ParamsError, Processor, get_processor_class


def processor_for(name: str, params: dict[str, Any] | None) -> Processor:
    cls = get_processor_class(name or "")
    if cls is None:
        raise APIError(
            f"Unknown processor '{name}'.", details={"processor": [f"Unknown processor '{name}'."]}
        )
    try:
        return cls(params or {})
    except ParamsError as exc:
        raise APIError(str(exc), details={"params": exc.errors or [str(exc)]}) from None


def check_column_map(processor: Processor, column_map: dict[str, str] | None) -> dict[str, str]:
    column_map = column_map or {}
    if not isinstance(column_map, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in column_map.items()
    ):
        raise APIError("column_map must map input names to column names.")
    unknown = [k for k in column_map if k not in processor.inputs]
    if unknown:
        raise APIError(
            f"column_map names '{unknown[0]}', which is not an input of {processor.name} "
            f"(inputs: {', '.join(processor.inputs) or 'none'}).",
            details={"column_map": unknown},
        )
    return column_map
