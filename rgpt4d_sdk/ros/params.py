"""ROS parameters declared from typed settings: a dataclass field's default, help text (``metadata["help"]``) and
range (pydantic ``Field`` bounds in its annotation) become the parameter's default and its `ParameterDescriptor`
(description, `IntegerRange` / `FloatingPointRange`), so ``ros2 param describe`` shows them and ROS refuses a value
out of range. Used by the node for the `rgpt4d_sdk.engine.config.EngineConfig` fields it declares."""
from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any, Optional, Tuple

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

from ..engine.config import HELP
from ..schema import bounds, describe

INT64 = (-(2 ** 63), 2 ** 63 - 1)


def field_parameter(cls: type, name: str) -> Tuple[Any, str]:
    """(default, description) of field ``name`` of dataclass ``cls``."""
    f = cls.__dataclass_fields__[name]  # type: ignore[attr-defined]
    if f.default is dataclasses.MISSING:
        raise TypeError(f"{cls.__name__}.{name} has no plain default; a ROS parameter needs one.")
    return f.default, str(f.metadata.get(HELP, ""))


def descriptor(description: str, hint: Any = None, dynamic_typing: bool = False) -> ParameterDescriptor:
    """The descriptor of a parameter with ``description``. An ``Annotated`` ``hint`` adds what the value must be, in
    words (``additional_constraints``), and an integer or float one with bounds its range (ROS ranges are closed: an
    open integer bound moves by one, an open float bound to the next float)."""
    d = ParameterDescriptor(description=description, dynamic_typing=dynamic_typing)
    if typing.get_origin(hint) is not typing.Annotated:
        return d
    d.additional_constraints = f"must be {describe(hint)}"  # e.g. "must be an integer >= 1"
    b = bounds(hint)
    if not b:
        return d
    base = typing.get_args(hint)[0]
    if base is int:
        lo = b["gt"] + 1 if "gt" in b else b.get("ge", INT64[0])
        hi = b["lt"] - 1 if "lt" in b else b.get("le", INT64[1])
        d.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=0)]
    elif base is float:
        lo = math.nextafter(b["gt"], math.inf) if "gt" in b else b.get("ge", -math.inf)
        hi = math.nextafter(b["lt"], -math.inf) if "lt" in b else b.get("le", math.inf)
        d.floating_point_range = [FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)]
    return d


def field_descriptor(cls: type, name: str, description: Optional[str] = None) -> ParameterDescriptor:
    """The descriptor of field ``name`` of dataclass ``cls``: its help text and its range."""
    hint = typing.get_type_hints(cls, include_extras=True)[name]
    return descriptor(field_parameter(cls, name)[1] if description is None else description, hint)
