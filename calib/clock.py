"""Per-sensor clock offsets onto one common clock.

Sensors stamp data with their own clocks (a camera's exposure clock, a PTP-synced lidar, a ROS host clock). Before
frames from several sensors are aligned, each timestamp is moved onto the common clock:
``t_common = t_sensor + offset_s[sensor]``. nuScenes timestamps are integer microseconds on one clock, so its
offsets are all 0; `apply_us` converts them without losing precision.

YAML file, either form::

    offsets_s: {CAM_FRONT: 0.0, CAM_BACK: -0.012}
    strict: true

    # or flat
    CAM_FRONT: 0.0
    CAM_BACK: -0.012
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rgpt4d_sdk.config import load_yaml_file
from rgpt4d_sdk.errors import CalibrationError


def _offset_value(sensor, value) -> float:
    if not isinstance(sensor, str) or not sensor:
        raise CalibrationError(f"clock offset sensor names must be non-empty strings, got {sensor!r}")
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise CalibrationError(f"clock offset of sensor '{sensor}' must be a finite number of seconds, got {value!r}")
    return float(value)


@dataclass
class ClockOffsets:
    """Per-sensor clock offsets: t_common = t_sensor + offset_s[sensor]. Sensors not listed have offset 0 (or raise if
    strict)."""

    offsets_s: dict[str, float] = field(default_factory=dict)
    strict: bool = False  # True: a sensor missing from offsets_s is an error rather than offset 0

    def __post_init__(self) -> None:
        if not isinstance(self.offsets_s, Mapping):
            raise CalibrationError(f"offsets_s must be a mapping sensor -> seconds, got "
                                   f"{type(self.offsets_s).__name__}")
        self.offsets_s = {sensor: _offset_value(sensor, v) for sensor, v in self.offsets_s.items()}
        if not isinstance(self.strict, bool):
            raise CalibrationError(f"strict must be true or false, got {self.strict!r}")

    def offset(self, sensor: str) -> float:
        """Offset of `sensor` in seconds; 0 for unknown sensors unless strict."""
        if sensor in self.offsets_s:
            return self.offsets_s[sensor]
        if self.strict:
            known = ", ".join(sorted(self.offsets_s)) or "none"
            raise CalibrationError(f"no clock offset for sensor '{sensor}' and strict is set; known sensors: {known}. "
                                   "Add it to offsets_s (0.0 if it is already on the common clock)")
        return 0.0

    def apply(self, sensor: str, t_s) -> float | np.ndarray:
        """Sensor time(s) in seconds -> common-clock seconds: a float for a scalar, an array for an array."""
        off = self.offset(sensor)
        if np.ndim(t_s) == 0:
            return float(t_s) + off
        return np.asarray(t_s, dtype=np.float64) + off

    def apply_us(self, sensor: str, t_us: int) -> float:
        """Integer microseconds (nuScenes) -> seconds on the common clock: ``int(t_us) / 1e6 + offset``.

        Python's int / float division is correctly rounded, so no precision is lost before the offset is added.
        """
        if isinstance(t_us, bool) or not isinstance(t_us, numbers.Integral):
            raise CalibrationError(f"apply_us expects integer microseconds (as nuScenes stores), got {t_us!r}; use "
                                   "apply() for seconds")
        return int(t_us) / 1e6 + self.offset(sensor)

    @classmethod
    def from_mapping(cls, data: Mapping) -> ClockOffsets:
        """From {"offsets_s": {...}, "strict": bool} or a flat {sensor: offset_s}."""
        if not isinstance(data, Mapping):
            raise CalibrationError(f"clock offsets must be a mapping, got {type(data).__name__}")
        if "offsets_s" not in data:
            return cls(dict(data))
        unknown = sorted(set(data) - {"offsets_s", "strict"})
        if unknown:
            raise CalibrationError(f"unknown keys {unknown} next to 'offsets_s'; allowed: offsets_s, strict")
        offsets = data["offsets_s"] if data["offsets_s"] is not None else {}
        return cls(offsets, data.get("strict", False))

    @classmethod
    def from_yaml(cls, path) -> ClockOffsets:
        """Read either form of the module docstring from a YAML file."""
        path = Path(path)
        data = load_yaml_file(path, "clock offsets file", CalibrationError)
        if data is None:
            raise CalibrationError(f"clock offsets file {path} is empty; write 'offsets_s: {{}}' for no offsets")
        try:
            return cls.from_mapping(data)
        except CalibrationError as exc:
            raise CalibrationError(f"clock offsets file {path}: {exc}") from exc
