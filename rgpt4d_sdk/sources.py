"""What `rgpt4d-sdk analyze` needs from a data source, and the registry of sources (see docs/adding-a-source.md).

A source cuts a data set into work units with stable ids (`WorkUnit`: one clip of one camera, or one query) and
loads one unit at a time into frames with times, marked regions and facts for the report (`LoadedClip`). The runner
(`rgpt4d_sdk.analyze.runner`) asks each loaded clip its questions (`Source.questions`: made from 3D tracks for
nuScenes, the queries file's own for rosbag), answers them with the engine and writes one row per question.

A source is a class with the members of `Source`; its units and loaded clips are dataclasses that extend `WorkUnit`
and `LoadedClip`, so the fields every row is made of are declared here once. ``SOURCES`` maps each ``source:``
name of the analyze config to its class, imported only when a run uses it (like the engine backends); the
analyze config has one section per source, named after it, that holds the source's ``config_type``.
tests/test_sources.py checks every registered source against this contract.

Nothing here imports a source or a package of the SDK but its errors, so the adapters can extend these classes
without an import cycle.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import (TYPE_CHECKING, Any, ClassVar, Dict, List, Optional, Protocol, Sequence, Tuple,
                    runtime_checkable)

from .errors import ConfigError

if TYPE_CHECKING:  # annotations only: importing them here would make this module depend on eval and types
    from .eval.questions import QuestionConfig, QuestionSpec
    from .types import Clip, Region

# source name -> "module:Class"; the name is also the source's section of the analyze config.
SOURCES: Dict[str, str] = {
    "nuscenes": "rgpt4d_sdk.adapters.nuscenes.source:NuScenesSource",
    "rosbag": "rgpt4d_sdk.adapters.rosbag.source:RosbagSource",
}


@dataclass(frozen=True)
class WorkUnit:
    """One unit of work, with a stable id (the same across runs and shards: resume and sharding key on it).

    scene, camera and clip_index go into every row of the unit. ``problem``: why the unit cannot be served (the
    runner writes one row for it without loading it), with ``status`` "error" or "skipped"; None for a good unit.
    A source's unit class adds what its ``load`` needs (frame tokens, a query, ...)."""

    id: str
    scene: str
    camera: str
    clip_index: int
    problem: Optional[str] = field(default=None, kw_only=True)
    status: str = field(default="ok", kw_only=True)


@dataclass
class LoadedClip:
    """A served unit: the frames (times in seconds), the marks drawn on the first frame, one dict of facts per
    region for the report (``region_info``: at least ``id``, ``label`` and ``box``), the first frame's time in µs,
    and ``row_fields`` added to every row of the unit. A source's clip class adds what its questions are made of."""

    unit: WorkUnit
    clip: "Clip"
    regions: List["Region"]
    region_info: List[Dict[str, Any]]
    t0_us: int
    row_fields: Dict[str, Any] = field(default_factory=dict, kw_only=True)


@runtime_checkable
class Source(Protocol):
    """The members a source class has (checked by tests/test_sources.py; no need to inherit from this class).

    name: its key in ``SOURCES`` and the ``source`` field of every row. config_type: the dataclass of its config
    section (built with ``config_type.from_dict(mapping)``, which rejects unknown keys). config_required: None when
    ``config_type()`` is a usable default; else what the user must give, said when the section is missing
    ("source NAME needs a NAME section: <config_required>."). own_questions: True when its units bring their own
    questions (the ``questions`` section of the config does not apply and is left out of config.yaml)."""

    name: ClassVar[str]
    config_type: ClassVar[type]
    config_required: ClassVar[Optional[str]]
    own_questions: ClassVar[bool]

    @classmethod
    def open(cls, config: Any) -> "Source":
        """The source for its config section; reads the data set's index, so bad data fails here, before any unit
        is processed (`ConfigError`, `DatasetError`)."""
        ...

    def units(self) -> Sequence[WorkUnit]:
        """Every unit, in a stable order (the order rows are written and reported in)."""
        ...

    def load(self, unit: WorkUnit) -> LoadedClip:
        """Read and decode one unit. A unit that cannot be served raises an `RGPT4DError` (its message, and its
        ``code`` when it has one, go into the unit's error row); the run goes on with the next unit."""
        ...

    def questions(self, data: LoadedClip, config: "QuestionConfig") -> List["QuestionSpec"]:
        """The questions to ask about a loaded clip, each with its truth (or the reason it has none: a skipped
        row). ``config``: the run's questions section (sources with ``own_questions`` ignore it)."""
        ...


def register_source(name: str, target: str) -> None:
    """Add (or replace) a source: ``target`` is "module:Class", imported when a run uses it. The analyze config
    needs a section field of the same name (`rgpt4d_sdk.analyze.config.AnalyzeConfig`)."""
    if ":" not in target:
        raise ConfigError(f"source {name!r}: target {target!r} must look like 'package.module:Class'.")
    SOURCES[name] = target


def source_names() -> Tuple[str, ...]:
    """The registered source names, in registration order."""
    return tuple(SOURCES)


def source_class(name: str) -> type:
    """The class registered as ``name`` (its module is imported now)."""
    if name not in SOURCES:
        raise ConfigError(f"source {name!r} is unknown; choose one of {source_names()}.")
    module_name, class_name = SOURCES[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)
