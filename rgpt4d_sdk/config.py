"""Helpers for typed configuration dataclasses: unknown keys are errors that list the valid ones."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Type, TypeVar

from .errors import ConfigError

T = TypeVar("T")


def from_mapping(cls: Type[T], data: Mapping[str, Any], what: str) -> T:
    """Build dataclass ``cls`` from ``data``, raising `ConfigError` on keys it does not have and
    `rgpt4d_sdk.schema.SchemaError` on values that do not fit the field types (checked before ``cls`` is built)."""
    from .schema import check_mapping, section_of

    if not isinstance(data, Mapping):
        raise ConfigError(f"{what} must be a mapping of options, got {type(data).__name__} ({data!r}).")
    known = set(cls.__dataclass_fields__)  # type: ignore[attr-defined]
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown {what} option(s) {unknown}; valid options are {sorted(known)}.")
    check_mapping(cls, data, section_of(what))
    return cls(**dict(data))


def load_yaml_file(path: "str | Path", what: str, error: Type[Exception] = ConfigError) -> Any:
    """``yaml.safe_load`` of a file; unreadable or malformed files raise ``error`` naming ``what`` and the path."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise error(f"{what} {path} is not a UTF-8 text file ({exc.reason} at byte {exc.start}); give a YAML "
                    f"file (is it a binary file?).") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{what} {path} is not valid YAML: {exc}") from exc
