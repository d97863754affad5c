"""Every registered analyze source meets the contract of `rgpt4d_sdk.sources`: its members and their signatures,
unit and clip classes that extend `WorkUnit`/`LoadedClip` without declaring their fields again, a config type, and
a section in `AnalyzeConfig`. Then each is opened on small data, and the worked example of docs/adding-a-source.md
is registered and run end to end."""
from __future__ import annotations

import dataclasses
import inspect
import json
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any, List

import numpy as np
import pytest
import yaml
from PIL import Image

from rgpt4d_sdk.adapters.nuscenes import sample as S
from rgpt4d_sdk.analyze.config import AnalyzeConfig
from rgpt4d_sdk.analyze.runner import run_analysis
from rgpt4d_sdk.errors import ConfigError
from rgpt4d_sdk.eval.questions import QuestionConfig, QuestionSpec
from rgpt4d_sdk.sources import SOURCES, LoadedClip, Source, WorkUnit, source_class, source_names

ROOT = Path(__file__).resolve().parent.parent
METHODS = ("open", "units", "load", "questions")


def _params(fn) -> List[tuple]:
    return [(p.name, p.kind) for p in inspect.signature(fn).parameters.values() if p.name not in ("self", "cls")]


def _own_annotations(cls: type, base: type) -> set:
    """Field names annotated by ``cls`` and its bases below ``base``."""
    return {n for k in cls.__mro__[: cls.__mro__.index(base)] for n in k.__dict__.get("__annotations__", {})}


def contract_problems(name: str, cls: type, config_class: type = AnalyzeConfig) -> List[str]:
    """What ``cls`` (registered as ``name``) gets wrong about the contract; [] when nothing."""
    problems = []
    data_members = typing.get_type_hints(Source)
    assert set(data_members) == {"name", "config_type", "config_required", "own_questions"}  # the contract itself
    missing = [m for m in (*data_members, *METHODS) if not hasattr(cls, m)]
    if missing:
        return [f"{cls.__name__} lacks {missing}"]
    if cls.name != name:
        problems.append(f"name {cls.name!r} is not its registered name {name!r}")
    if not (isinstance(cls.config_type, type) and dataclasses.is_dataclass(cls.config_type)
            and callable(getattr(cls.config_type, "from_dict", None))):
        problems.append("config_type is not a dataclass with from_dict")
    elif cls.config_required is None:
        cls.config_type()  # the default section must build
    elif not (isinstance(cls.config_required, str) and cls.config_required.strip()):
        problems.append("config_required is neither None nor a hint")
    if not isinstance(cls.own_questions, bool):
        problems.append("own_questions is not a bool")
    if not isinstance(inspect.getattr_static(cls, "open"), classmethod):
        problems.append("open is not a classmethod")
    for method in METHODS:
        if _params(getattr(cls, method)) != _params(getattr(Source, method)):
            problems.append(f"{method}{inspect.signature(getattr(cls, method))} does not match "
                            f"{method}{inspect.signature(getattr(Source, method))}")
    if problems:
        return problems
    unit_type = typing.get_args(typing.get_type_hints(cls.units)["return"])[0]
    hints = typing.get_type_hints(cls.load)
    clip_type = hints["return"]
    for kind, base in ((unit_type, WorkUnit), (clip_type, LoadedClip)):
        if not (isinstance(kind, type) and issubclass(kind, base) and dataclasses.is_dataclass(kind)):
            problems.append(f"{kind} is not a dataclass extending {base.__name__}")
            continue
        again = {f.name for f in dataclasses.fields(base)} & _own_annotations(kind, base)
        if again:
            problems.append(f"{kind.__name__} declares {sorted(again)} again (declared in {base.__name__})")
    if not problems and not unit_type.__dataclass_params__.frozen:
        problems.append(f"{unit_type.__name__} is not frozen (units are keys of the run)")
    if hints.get("unit") not in (unit_type, WorkUnit):
        problems.append(f"load takes {hints.get('unit')}, units() gives {unit_type}")
    if name not in {f.name for f in dataclasses.fields(config_class)}:
        problems.append(f"{config_class.__name__} has no {name} section field")
    return problems


@pytest.mark.parametrize("name", source_names())
def test_registered_sources_meet_the_contract(name):
    assert contract_problems(name, source_class(name)) == []


@dataclasses.dataclass(frozen=True)
class _Unit(WorkUnit):
    id: str  # declared again


@dataclasses.dataclass
class _Clip(LoadedClip):
    extra: int = 0


class _Bad:
    name, config_type, config_required, own_questions = "bad", dict, None, False

    @classmethod
    def open(cls, config): ...

    def units(self) -> List[_Unit]: ...

    def load(self, unit: _Unit) -> _Clip: ...

    def questions(self, data): ...  # config missing


def test_the_contract_check_catches_mistakes():
    Bad = type("Bad", (_Bad,), {})
    assert any("questions(self, data)" in p for p in contract_problems("bad", Bad))
    Bad.questions = lambda self, data, config: []
    found = contract_problems("bad", Bad)
    assert "config_type is not a dataclass with from_dict" in found
    Bad.config_type = QuestionConfig
    found = contract_problems("bad", Bad)
    assert any("declares ['id'] again" in p for p in found) and "AnalyzeConfig has no bad section field" in found


def test_unknown_or_unconfigured_sources_are_config_errors(monkeypatch):
    with pytest.raises(ConfigError, match=r"source 'csv' is unknown; choose one of \('nuscenes', 'rosbag'\)"):
        AnalyzeConfig(source="csv")
    with pytest.raises(ConfigError, match="source rosbag needs a rosbag section: pass BAG"):
        AnalyzeConfig(source="rosbag")
    monkeypatch.setitem(SOURCES, "csv", "nowhere:Csv")
    assert AnalyzeConfig().nuscenes is not None  # a registered source without a section leaves the others alone
    with pytest.raises(ConfigError, match="has no section in AnalyzeConfig; add the field `csv: Any = None`"):
        AnalyzeConfig(source="csv")


def check_live(source: Any) -> List[QuestionSpec]:
    """Units and one loaded clip of an opened source have the contract's types; its questions for that clip."""
    assert isinstance(source, Source)
    units = source.units()
    assert units and all(isinstance(u, WorkUnit) for u in units) and len({u.id for u in units}) == len(units)
    unit = next(u for u in units if not u.problem)
    data = source.load(unit)
    assert isinstance(data, LoadedClip) and data.unit == unit and len(data.clip.frames) >= 2
    assert [r["id"] for r in data.region_info] == [r.id for r in data.regions]
    specs = source.questions(data, QuestionConfig())
    assert specs and all(isinstance(s, QuestionSpec) for s in specs)
    return specs


def test_nuscenes_source_live(tmp_path):
    scene = S.SampleScene("scene-0001", [S.SampleObject("lead", "vehicle.car", (1.9, 4.6, 1.6), (16.0, 0.0, 0.8),
                                                        (9.0, 0.0, 0.0))], ego_velocity=(5.0, 0.0, 0.0),
                          num_keyframes=3)
    root = S.write_sample_log(tmp_path / "data", "v1.0-mini", [scene], image_size=(320, 180))
    cls = source_class("nuscenes")
    with pytest.raises(ConfigError, match="nuscenes.dataroot is empty"):
        cls.open(cls.config_type())
    specs = check_live(cls.open(cls.config_type(dataroot=str(root), version="v1.0-mini", num_frames=6)))
    assert any(s.task == "distance" for s in specs)


def test_rosbag_source_live(tmp_path):
    bags = pytest.importorskip("test_analyze_rosbag")  # its bag writer (skips without rosbags)
    bags.write_bag(tmp_path, "sqlite3")
    (tmp_path / "queries.yaml").write_text(yaml.safe_dump({"queries": bags.QUERIES}, sort_keys=False))
    cls = source_class("rosbag")
    source = cls.open(cls.config_type(bag=str(tmp_path / "bag_sqlite3"), camera=bags.KINDS["sqlite3"],
                                      queries=str(tmp_path / "queries.yaml")))
    assert [s.question for s in check_live(source)] == [bags.QUERIES[0]["question"]]


# ---------------------------------------------------------------------------------------------- the docs example
def docs_example() -> types.ModuleType:
    text = (ROOT / "docs" / "adding-a-source.md").read_text(encoding="utf-8")
    code = re.search(r"## A worked example.*?```python\n(.*?)```", text, re.S).group(1)
    module = types.ModuleType("docs_folders_source")
    sys.modules[module.__name__] = module  # dataclasses and type hints look their module up
    exec(compile(code, "docs/adding-a-source.md", "exec"), module.__dict__)
    return module


def write_folder_clips(root: Path, n: int) -> None:
    for k in range(n):
        folder = root / f"clip-{k}"
        folder.mkdir(parents=True)
        for i in range(4):
            img = np.full((48, 64, 3), 40 * i, np.uint8)
            img[10:30, 8 + 4 * i: 28 + 4 * i] = 255  # the object moves right
            Image.fromarray(img).save(folder / f"frame_{i}.png")
        (folder / "times.txt").write_text("\n".join(f"{10 + 0.1 * i:.1f}" for i in range(4)) + "\n")
        (folder / "question.yaml").write_text(yaml.safe_dump({
            "question": "Which way does <obj_1> move?", "options": ["left", "right"], "truth": "B",
            "box": [8, 10, 28, 30], "label": "box", "task": "direction"}))


def test_the_worked_example_in_the_docs_runs(monkeypatch, tmp_path, tiny_ckpt_dir):
    module = docs_example()
    try:
        monkeypatch.setitem(SOURCES, "folders", f"{module.__name__}:FoldersSource")
        with_folders = dataclasses.make_dataclass(  # step 3 of the page: the config's section field
            "AnalyzeConfigWithFolders", [("folders", Any, dataclasses.field(default=None))], bases=(AnalyzeConfig,))
        assert contract_problems("folders", module.FoldersSource, with_folders) == []
        write_folder_clips(tmp_path / "clips", 2)
        check_live(module.FoldersSource.open(module.FoldersConfig(root=str(tmp_path / "clips"))))
        with pytest.raises(ConfigError, match="source folders needs a folders section: give folders"):
            with_folders(source="folders")
        out = tmp_path / "out"
        cfg = with_folders(source="folders", folders={"root": str(tmp_path / "clips")}, out=str(out), progress=False,
                           engine={"model": str(tiny_ckpt_dir), "device": "cpu", "dtype": "float32"})
        stats = run_analysis(cfg)
    finally:
        sys.modules.pop(module.__name__, None)
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert stats.units_run == 2 and [r["unit_id"] for r in rows] == ["clips/clip-0", "clips/clip-1"]
    assert all(r["source"] == "folders" and r["status"] == "ok" and r["truth"] == "B" for r in rows)
    assert all(isinstance(r["answer_text"], str) and r["timestamps_s"] == [0.0, 0.1, 0.2, 0.3] for r in rows)
    written = yaml.safe_load((out / "config.yaml").read_text())
    assert written["folders"] == {"root": str(tmp_path / "clips")} and "questions" not in written
    assert {"nuscenes", "rosbag"}.isdisjoint(written) and (out / "report.html").is_file()
