"""The typed configuration of a batch analysis, read from YAML and checked before any work starts.

A YAML file has the sections of `AnalyzeConfig`; every key is checked (a typo is an error that lists the valid
keys). Command-line options override the file. The resolved configuration is written as ``config.yaml`` beside
the results, so any output folder can be reproduced from itself.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any, Dict, Mapping, Optional, Tuple

import yaml
from pydantic import Field

from ..config import from_mapping, load_yaml_file
from ..schema import SchemaError, in_config_file
from ..engine.config import EngineConfig  # noqa: F401 - the engine section; declared with the engine
from ..errors import ConfigError
from ..eval.questions import QuestionConfig
from ..fileio import atomic_write_text
from ..sources import source_class, source_names


EXECUTORS = ("local", "ray")


@dataclass
class ExecutorConfig:
    """Where clips are processed. ``kind`` "local": this process; "ray": an actor pool on a Ray cluster, each actor
    loading the engine once (``address``: None starts a local Ray, "auto" joins the running cluster, or
    "ray://host:10001"). The model and data paths must be readable on every node. Results, resume and shards are
    the same whichever executor ran them, so the executor is not part of the run's fingerprint."""

    kind: str = "local"
    address: Optional[str] = None
    num_workers: Annotated[int, Field(ge=1)] = 1
    gpus_per_worker: Annotated[float, Field(ge=0)] = 0.0
    cpus_per_worker: Annotated[float, Field(gt=0)] = 1.0

    def __post_init__(self) -> None:
        if self.kind not in EXECUTORS:
            raise ConfigError(f"executor {self.kind!r} is unknown; choose one of {EXECUTORS}.")
        if int(self.num_workers) < 1 or float(self.gpus_per_worker) < 0 or float(self.cpus_per_worker) <= 0:
            raise ConfigError("executor: num_workers must be >= 1, gpus_per_worker >= 0 and cpus_per_worker > 0.")


def parse_shard(text: str) -> Tuple[int, int]:
    """"i/N" -> (i, N) with 0 <= i < N."""
    try:
        i, n = (int(p) for p in str(text).split("/"))
    except ValueError:
        raise ConfigError(f"shard {text!r} must look like i/N (e.g. 0/4 for the first of four shards).") from None
    if n < 1 or not 0 <= i < n:
        raise ConfigError(f"shard {text!r}: need 0 <= i < N.")
    return i, n


@dataclass
class AnalyzeConfig:
    """Everything one `analyze` run needs. ``source`` picks the data section (``nuscenes`` or ``rosbag``: one field
    per source registered in `rgpt4d_sdk.sources`; only that one, and ``questions`` only where the source uses it,
    are written to config.yaml). ``out``: the output folder. ``shard``: "i/N" takes every N-th clip.
    ``retry_errors``: on resume, redo clips that failed before. ``progress``: None shows a bar on terminals."""

    source: str = "nuscenes"
    out: str = "rgpt4d-out"
    nuscenes: Any = None
    rosbag: Any = None
    questions: QuestionConfig = field(default_factory=QuestionConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    shard: str = "0/1"
    retry_errors: bool = False
    progress: Optional[bool] = None
    title: str = "rgpt4d-sdk analysis"
    notice: str = ""

    def __post_init__(self) -> None:
        if self.source not in source_names():
            raise ConfigError(f"source {self.source!r} is unknown; choose one of {source_names()}.")
        sections = tuple(s for s in source_names() if s in self.__dataclass_fields__)  # a field per source
        if self.source not in sections:
            raise ConfigError(f"source {self.source!r} has no section in AnalyzeConfig; add the field "
                              f"`{self.source}: Any = None` to it (see docs/adding-a-source.md).")
        for name in (*sections, "questions", "engine", "executor"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Mapping) and not dataclasses.is_dataclass(value):
                raise ConfigError(f"{name} must be a mapping of options (a YAML section), got "
                                  f"{type(value).__name__} ({value!r}).")
        for name in sections:  # each source's section as its config class (the readers load later)
            kind, value = source_class(name), getattr(self, name)
            if value is None and kind.config_required is None:
                value = kind.config_type()
            elif isinstance(value, Mapping):
                value = kind.config_type.from_dict(value)
            setattr(self, name, value)
            if name == self.source and value is None:
                raise ConfigError(f"source {name} needs a {name} section: {kind.config_required}.")
        if isinstance(self.questions, Mapping):
            self.questions = QuestionConfig.from_dict(self.questions)
        if isinstance(self.engine, Mapping):
            self.engine = from_mapping(EngineConfig, self.engine, "engine")
        if isinstance(self.executor, Mapping):
            self.executor = from_mapping(ExecutorConfig, self.executor, "executor")
        parse_shard(self.shard)
        if not str(self.out).strip():
            raise ConfigError("out is empty; give an output folder.")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "AnalyzeConfig":
        """An `AnalyzeConfig` from a mapping (a config file's content); unknown keys and wrong types raise ConfigError
        naming the key."""
        return from_mapping(cls, data, "analyze config")

    @classmethod
    def load(cls, path: "Optional[str | Path]", overrides: Mapping[str, Any]) -> "AnalyzeConfig":
        """The YAML file at ``path`` (if any) with command-line ``overrides`` on top, checked; a value of the wrong
        type or range is a `SchemaError` that names the file when the value came from it."""
        data = read_yaml(path) if path else {}
        with in_config_file(path, data):
            return cls.from_dict(merge(data, overrides))

    def to_dict(self) -> Dict[str, Any]:
        """The configuration as plain values, as config.yaml records it: only the chosen source's section, and
        ``questions`` only when that source uses it."""
        skip = ({s for s in source_names() if s != self.source}
                | ({"questions"} if source_class(self.source).own_questions else set()))
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}
        for key in (self.source, "questions", "engine", "executor"):
            if key in out:
                out[key] = plain(out[key])
        return out

    def fingerprint(self, shard: bool = True) -> str:
        """A digest of what decides the results (data, questions, model, device, dtype): a resume must not mix
        runs. ``shard=False`` leaves the shard out, so the shards of one run can be checked against each other.
        A data section with a ``content_digest()`` (rosbag: the queries file) adds the digest of those files."""
        d = self.to_dict()
        keep = {"source": d["source"], "data": d[d["source"]], "questions": d.get("questions"),
                "model": d["engine"]["model"], "backend": d["engine"]["backend"], "dtype": d["engine"]["dtype"],
                "device": d["engine"]["device"], "max_frames": d["engine"]["max_frames"]}
        if d["engine"].get("compiled"):
            keep["compiled"] = d["engine"]["compiled"]
        section = getattr(self, self.source)
        if hasattr(section, "content_digest"):
            keep["content"] = section.content_digest()
        if shard:
            keep["shard"] = d["shard"]
        return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


def plain(value: Any) -> Any:
    """Dataclass instances -> dicts and tuples -> lists, recursively, so a YAML or JSON dump is plain."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain(asdict(value))
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def read_yaml(path: "str | Path") -> Dict[str, Any]:
    """A YAML mapping from ``path``; malformed files raise `ConfigError` naming the file and the line."""
    data = load_yaml_file(path, "config file")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections (nuscenes: or rosbag:, engine:, ...), "
                          f"not a {type(data).__name__}.")
    return data


def merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> Dict[str, Any]:
    """``overrides`` on top of ``base``, section by section (None values in overrides are ignored)."""
    out = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in base.items()}
    for key, value in overrides.items():
        if value is None:
            continue
        if isinstance(value, Mapping):
            if out.get(key) is not None and not isinstance(out[key], Mapping):
                raise SchemaError(f"{key} = {out[key]!r} is invalid: it must be a mapping of options (a YAML "
                                  f"section).", key, out[key])
            out[key] = merge(out.get(key) or {}, value)
        else:
            out[key] = value
    return out


def write_yaml(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` as YAML (keys in the given order), atomically."""
    atomic_write_text(path, yaml.safe_dump(dict(data), sort_keys=False))
