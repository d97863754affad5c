"""Helpers for typed configuration dataclasses: unknown keys are errors that list the valid ones."""
from __future__ import annotations

from typing import Any, Mapping, Type, TypeVar

from .errors import ConfigError

T = TypeVar("T")


def from_mapping(cls: Type[T], data: Mapping[str, Any], what: str) -> T:
    """Build dataclass ``cls`` from ``data``, raising `ConfigError` on keys it does not have."""
    known = set(cls.__dataclass_fields__)  # type: ignore[attr-defined]
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown {what} option(s) {unknown}; valid options are {sorted(known)}.")
    return cls(**dict(data))
