"""Exception hierarchy of the SDK.

Every error raised on bad user input derives from `RGPT4DError`, so a server or a batch job can catch one class,
record the message and go on. Messages name the problem and the fix.
"""
from __future__ import annotations


class RGPT4DError(Exception):
    """Base class of every error the SDK raises on purpose."""


class ConfigError(RGPT4DError, ValueError):
    """A configuration value or key is wrong (unknown key, bad type, out of range)."""


class CheckpointError(RGPT4DError):
    """A checkpoint folder cannot be read: missing file, missing shard, corrupt or mismatched weights."""


class UnsupportedDtypeError(ConfigError):
    """A dtype name that the SDK does not know."""


class QueryError(RGPT4DError, ValueError):
    """A `RegionQuery` is malformed: no frames, empty question, unknown region, ..."""


class TimestampError(QueryError):
    """Frame timestamps are missing, NaN, duplicated or decreasing."""


class RegionError(QueryError):
    """A region is invalid: box outside the image, empty mask, mark id mentioned but not given."""


class ImageError(QueryError):
    """An image cannot be used: corrupt file, unsupported mode or depth, frames of different sizes."""


class MediaError(RGPT4DError):
    """A video or image folder cannot be read."""


class BackendError(RGPT4DError):
    """A backend is unknown or its optional dependency is not installed."""


class GenerationError(RGPT4DError):
    """Decoding failed (for example the prompt does not fit in the model's context)."""


class CalibrationError(RGPT4DError, ValueError):
    """A camera model, pose or clock offset is invalid: bad K, unknown distortion model, non-unit quaternion,
    transforms chained through mismatched frames, unreadable calibration file."""


class DatasetError(RGPT4DError):
    """A data set cannot be used: missing table or file, unknown scene or camera, corrupt record."""


class GoalError(RGPT4DError):
    """A live or replayed region query cannot be served. ``code`` is one of `rgpt4d_sdk.live.REASONS`
    (e.g. "UNKNOWN_CAMERA", "END_STAMP_IN_FUTURE"); ROS results carry it as a number and a name."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class RuntimeMissingError(BackendError, ImportError):
    """A compiled backend needs a runtime that is not installed (onnx, onnxruntime, tensorrt); the message names the
    pip extra that installs it."""


class ExportError(RGPT4DError):
    """A checkpoint cannot be exported to ONNX or built into a TensorRT engine."""


class CompiledModelError(BackendError):
    """A compiled artefact (ONNX file, engine, manifest) is missing, truncated or corrupt."""


class EngineKeyMismatch(CompiledModelError):
    """A compiled engine was built for something else (other weights, runtime version, GPU, precision or shapes).
    Engines are never rebuilt implicitly: the message names the differing part of the key and the rebuild command."""


class ShapeProfileError(QueryError):
    """An input is outside the shape profile a compiled engine was built for (too many frames, too long a prompt)."""


class ParityError(BackendError):
    """A compiled engine has not passed the parity gate against the torch path (or failed it); pass force=True to
    load it anyway."""


class PathOutsideRootError(DatasetError):
    """A path read from a data record (a video, image, mask or frame file) leaves the data root the user gave.
    ``record`` names the record and ``path`` the offending path; pass the allow flag (``--allow-outside-data-root``
    or ``allow_outside_root=True``) to read such paths on purpose."""

    def __init__(self, message: str, record: str = "", path: str = "") -> None:
        super().__init__(message)
        self.record, self.path = record, path


class TimestampUnitError(TimestampError):
    """Frame times do not look like seconds (a median frame gap outside [0.1 ms, 10 s], or epoch values of
    milliseconds to nanoseconds). ``unit`` is the unit the times look like ("ms", "us", "ns", or "" if unknown)."""

    def __init__(self, message: str, unit: str = "") -> None:
        super().__init__(message)
        self.unit = unit


class NonFiniteWeightsError(CheckpointError):
    """A weight tensor holds NaN or infinite values (a corrupt download or a diverged training run)."""
