"""Schema checks of configuration values: types, ranges and choices, before any work starts.

The configurations stay plain dataclasses (their fields are the schema); a field may carry its allowed range or
choices in its annotation, e.g. ``lr: Annotated[float, Field(gt=0)]`` or ``Annotated[str, Field(pattern=...)]``.
`check_mapping` validates the values of a mapping (a YAML section, command-line overrides) against those
annotations before the dataclass is built, so a value of the wrong type never reaches ``int()`` or a comparison deep
inside a run; `check_instance` does the same for a dataclass built directly from Python.

Validation uses pydantic v2 (``TypeAdapter`` in strict mode over the JSON form of each value). Why pydantic rather
than hand-written checks: it understands every typing form the configurations use (Optional, List/tuple, Dict,
Annotated constraints), strict mode refuses the silent coercions that caused wrong results (the string "2" for an
integer, 1 for true), it reports where inside a nested value the problem is, and it is widely used and maintained.
The dataclasses and their ``__post_init__`` cross-field rules are kept, so the public API does not change.

Errors are `SchemaError` (a `ConfigError`) naming the key, the value and what is allowed; `in_config_file` adds the
file name when the value came from that file.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import typing
from typing import Any, Dict, Iterator, Mapping, Optional, Sequence

from .errors import ConfigError

_NONE = type(None)


class SchemaError(ConfigError):
    """A configuration value has the wrong type or is out of range. ``key``: its dotted path ("optim.lr");
    ``value``: what was given."""

    def __init__(self, message: str, key: str = "", value: Any = None) -> None:
        super().__init__(message)
        self.key = key
        self.value = value


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> Dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


@functools.lru_cache(maxsize=None)
def _adapter(hint: Any):
    from pydantic import TypeAdapter

    return TypeAdapter(hint)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return obj.item()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=str)
    return str(obj)  # paths, dates: their text


def _skipped(hint: Any) -> bool:
    """Fields validated elsewhere: Any, and nested configuration dataclasses (checked when they are built)."""
    if hint is Any:
        return True
    base = typing.get_args(hint)[0] if typing.get_origin(hint) is typing.Annotated else hint
    args = [a for a in typing.get_args(base) if a is not _NONE] if typing.get_origin(base) is typing.Union else [base]
    return any(isinstance(a, type) and dataclasses.is_dataclass(a) for a in args)


def describe(hint: Any) -> str:
    """What a value of ``hint`` must be, in words ("an integer >= 1", "a list of strings", "a number or null")."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:
        return describe(args[0]) + _constraints(args[1:])
    if origin is typing.Union:
        parts = [describe(a) for a in args if a is not _NONE]
        text = " or ".join(parts)
        return text + " or null" if _NONE in args else text
    if origin in (list, tuple, Sequence, set, frozenset):
        inner = [a for a in args if a is not Ellipsis]
        if origin is tuple and inner and Ellipsis not in args:
            return f"a list of {len(inner)} items ({', '.join(describe(a) for a in inner)})"
        return f"a list of {_plural(describe(inner[0]))}" if inner else "a list"
    if origin in (dict, Mapping):
        return f"a mapping of {_plural(describe(args[1]))}" if args else "a mapping"
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        hint, getattr(hint, "__name__", str(hint)))


def _plural(text: str) -> str:
    for word, plural in (("an integer", "integers"), ("a number", "numbers"), ("a string", "strings"),
                         ("true or false", "booleans")):
        if text.startswith(word):
            return plural + text[len(word):]
    return text


def _items(metadata: Sequence[Any]) -> Iterator[Any]:
    """The constraint objects of ``Annotated`` metadata (a pydantic `Field` holds its own in ``.metadata``)."""
    for meta in metadata:
        yield from getattr(meta, "metadata", None) or [meta]


def bounds(hint: Any) -> Dict[str, Any]:
    """The ``gt``/``ge``/``lt``/``le`` bounds of an ``Annotated`` type hint ({} when it has none); what
    `describe` says in words and what the ROS node declares as a parameter's range."""
    if typing.get_origin(hint) is not typing.Annotated:
        return {}
    return _bounds(typing.get_args(hint)[1:])


def _bounds(metadata: Sequence[Any]) -> Dict[str, Any]:
    found: Dict[str, Any] = {}
    for item in _items(metadata):
        for name in ("gt", "ge", "lt", "le"):
            if getattr(item, name, None) is not None:
                found[name] = getattr(item, name)
    return found


def _constraints(metadata: Sequence[Any]) -> str:
    """" >= 1", " in (0, 1]", " matching ^cuda..." from pydantic `Field` / annotated-types metadata."""
    for meta in metadata:
        if getattr(meta, "description", None):  # a Field(description=...) says what is allowed in words
            return f" ({meta.description})"
    limits = _bounds(metadata)
    pattern = None
    for item in _items(metadata):
        if getattr(item, "pattern", None):
            pattern = item.pattern
    lo = ("(", limits["gt"]) if "gt" in limits else ("[", limits["ge"]) if "ge" in limits else None
    hi = (")", limits["lt"]) if "lt" in limits else ("]", limits["le"]) if "le" in limits else None
    text = ""
    if lo and hi:
        text = f" in {lo[0]}{lo[1]}, {hi[1]}{hi[0]}"
    elif lo:
        text = f" {'>' if lo[0] == '(' else '>='} {lo[1]}"
    elif hi:
        text = f" {'<' if hi[0] == ')' else '<='} {hi[1]}"
    if pattern:
        text += f" matching {pattern}"
    return text


def check_value(hint: Any, value: Any, key: str) -> None:
    """Raise `SchemaError` unless ``value`` (a YAML/JSON-like value) fits ``hint`` strictly."""
    from pydantic import ValidationError

    if _skipped(hint):
        return
    try:
        text = json.dumps(value, default=_json_default, allow_nan=True)
        _adapter(hint).validate_json(text, strict=True)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = "".join(f"[{p!r}]" if isinstance(p, str) else f"[{p}]" for p in err.get("loc", ()))
        detail = f" ({key}{where} = {err.get('input')!r})" if where else ""
        raise SchemaError(f"{key} = {value!r}{detail} is invalid: it must be {describe(hint)}.", key, value) from None
    except (TypeError, ValueError) as exc:  # not representable as JSON (e.g. a circular structure)
        raise SchemaError(f"{key} = {value!r} is invalid ({exc}): it must be {describe(hint)}.", key, value) from None


def check_mapping(cls: type, data: Mapping[str, Any], section: str = "") -> None:
    """Check every given key of ``data`` against the annotated field types of dataclass ``cls`` (unknown keys are
    left to the caller, which lists the valid ones). ``section`` prefixes the key in messages ("optim")."""
    hints = _hints(cls)
    for key, value in data.items():
        if key in hints and key in cls.__dataclass_fields__:  # type: ignore[attr-defined]
            check_value(hints[key], value, f"{section}.{key}" if section else str(key))


def check_instance(obj: Any, section: str = "") -> None:
    """Check the field values of dataclass instance ``obj`` (a configuration built directly from Python)."""
    check_mapping(type(obj), {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}, section)


def _has_key(data: Any, dotted: str) -> bool:
    node = data
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


@contextlib.contextmanager
def in_config_file(path: Optional[Any], data: Optional[Mapping[str, Any]]) -> Iterator[None]:
    """Name ``path`` in a `SchemaError` raised inside when its key came from that file's ``data``."""
    try:
        yield
    except SchemaError as exc:
        if path is not None and data is not None and exc.key and _has_key(data, exc.key):
            raise SchemaError(f"config file {path}: {exc}", exc.key, exc.value) from None
        raise


def section_of(what: str) -> str:
    """The dotted section name for messages from a `from_mapping` label ("nuscenes" -> "nuscenes", "analyze
    config" -> "")."""
    return what if all(p.isidentifier() for p in what.split(".")) else ""


__all__ = ["SchemaError", "bounds", "check_mapping", "check_instance", "check_value", "describe", "in_config_file",
           "section_of"]
