"""Device names: "auto", "cpu", "cuda" or "cuda:N", checked before anything is loaded.

`check_device` turns the torch errors a bad name gives late and untyped (``AssertionError: Torch not compiled with
CUDA enabled``, ``RuntimeError: Expected one of cpu, cuda, ...``) into a `ConfigError` that names the value and
what this machine offers.
"""
from __future__ import annotations

import re

from .errors import ConfigError

DEVICE_PATTERN = r"^(auto|cpu|cuda(:\d+)?)$"
DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"


def check_device(device: object, what: str = "device", available: bool = True) -> str:
    """Return ``device`` as a string when it is a valid name (and, with ``available``, usable on this machine).

    Raises `ConfigError` for unknown names ("gpu"), for CUDA on a machine without a usable CUDA device, and for a
    CUDA index this machine does not have.
    """
    text = str(device).strip() if device is not None else ""
    if not re.match(DEVICE_PATTERN, text):
        raise ConfigError(f"{what} {device!r} is unknown; use one of {DEVICE_CHOICES} (e.g. cuda:0).")
    if available and text.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            why = ("this torch build has no CUDA support" if torch.version.cuda is None
                   else "no CUDA device is visible (check the driver and CUDA_VISIBLE_DEVICES)")
            raise ConfigError(f"{what} {text!r} is not available: {why}; use {what} cpu (or auto).")
        index = int(text.split(":")[1]) if ":" in text else 0
        count = torch.cuda.device_count()
        if index >= count:
            raise ConfigError(f"{what} {text!r} is not available: this machine has {count} CUDA device(s) "
                              f"(cuda:0..cuda:{count - 1}).")
    return text
