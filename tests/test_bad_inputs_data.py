"""Bad inputs over the Python API, the data sets (nuScenes, R4D-Bench, RoboFAC, rosbag queries, training
conversations), checkpoints, compiled models and resumable outputs (issue 16, part B).

Every case asserts the error type, that the message names the offending file / key / value, and that nothing
already written changed (the watched folders are byte-identical before and after). Positive controls (the allow
flags, the overrides) sit at the end.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence, Tuple

import numpy as np
import pytest
from PIL import Image

from rgpt4d_sdk.adapters.r4d_bench import load_records as load_r4d
from rgpt4d_sdk.adapters.robofac import RoboFACDataset
from rgpt4d_sdk.adapters.rosbag.queries import load_queries, queries_digest
from rgpt4d_sdk.adapters.rosbag.source import _region_spec
from rgpt4d_sdk.fileio import FINGERPRINT_FIELD, ResultStore, check_fingerprint
from rgpt4d_sdk.errors import (CompiledModelError, ConfigError, GoalError, NonFiniteWeightsError, PathOutsideRootError,
                               QueryError, RegionError, RGPT4DError, TimestampError, TimestampUnitError)
from rgpt4d_sdk.live.goals import RegionSpec, build_region
from rgpt4d_sdk.paths import confine
from rgpt4d_sdk.training.data import load_records as load_conversations
from rgpt4d_sdk.types import Clip, Frame, Region, RegionQuery

W, H = 64, 48


# ------------------------------------------------------------------------------------------------ helpers
def snapshot(*roots: Path) -> Dict[str, str]:
    """sha256 of every file under ``roots`` (what must not change)."""
    out = {}
    for root in roots:
        root = Path(root)
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())
        for p in files:
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def image(k: int = 0) -> np.ndarray:
    img = np.full((H, W, 3), 80, np.uint8)
    img[10:20, 5 + k:15 + k] = 220
    return img


def write_png(path: Path, k: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image(k)).save(path)
    return path


def clip(times=(0.0, 0.1, 0.2, 0.3)) -> Clip:
    return Clip.from_arrays([image(k) for k in range(len(times))], list(times))


@dataclass
class Case:
    """make(tmp_path) -> (action, watched folders); the action must raise ``error`` naming every ``names``."""

    id: str
    make: Callable[[Path], Tuple[Callable[[], Any], Sequence[Path]]]
    error: type
    names: Tuple[str, ...]
    check: Callable[[BaseException], bool] = field(default=lambda e: True)


CASES: List[Case] = []


def case(id: str, error: type, *names: str, check: Callable[[BaseException], bool] = lambda e: True):
    def register(make):
        CASES.append(Case(id, make, error, names, check))
        return make
    return register


def images_dir(tmp: Path, n: int = 4) -> Path:
    folder = tmp / "frames"
    for k in range(n):
        write_png(folder / f"frame_{k:03d}.png", k)
    return folder


# ------------------------------------------------------------------------------------------------ API: timestamps
def _arrays(times):
    def make(tmp):
        return (lambda: Clip.from_arrays([image(k) for k in range(len(times))], times)), []
    return make


case("ts-strings", TimestampError, "'a'")(_arrays(["a", "b", "c"]))
case("ts-numeric-strings", TimestampError, "'0.0'", "string")(_arrays(["0.0", "0.1", "0.2"]))
case("ts-none", TimestampError, "None")(_arrays([0.0, None, 0.2]))
case("ts-dict-value", TimestampError, "{'t': 1}")(_arrays([0.0, {"t": 1}, 0.2]))
case("ts-ms-as-s", TimestampUnitError, "ms", "100", check=lambda e: e.unit == "ms")(
    _arrays([0.0, 100.0, 200.0, 300.0]))
case("ts-us-as-s", TimestampUnitError, "us", "33333", check=lambda e: e.unit == "us")(
    _arrays([0.0, 33333.0, 66666.0, 99999.0]))
case("ts-epoch-ns-as-s", TimestampUnitError, "epoch ns", check=lambda e: e.unit == "ns")(
    _arrays([1.7e18, 1.7e18 + 3.3e7, 1.7e18 + 6.6e7]))
case("ts-epoch-ms-as-s", TimestampUnitError, "epoch ms", check=lambda e: e.unit == "ms")(
    _arrays([1.7e12, 1.7e12 + 33.0, 1.7e12 + 66.0]))
case("ts-gap-below-0.1ms", TimestampUnitError, "0.1 ms", "1e-06")(_arrays([0.0, 1e-6, 2e-6, 3e-6]))
case("ts-gap-15s", TimestampUnitError, "ms", "15")(_arrays([0.0, 15.0, 30.0]))


@case("frame-ts-string", TimestampError, "'x'")
def _frame_ts_string(tmp):
    return (lambda: Frame(image(), "x")), []


@case("timestamps-arg-is-a-string", TimestampError, "'0,1'")
def _ts_arg_string(tmp):
    return (lambda: Clip.from_arrays([image(0), image(1)], "0,1")), []


@case("folder-ts-file-in-ms", TimestampUnitError, "ts.txt", "ms")
def _folder_ms(tmp):
    folder = images_dir(tmp)
    ts = folder / "ts.txt"
    ts.write_text("0\n100\n200\n300\n")
    return (lambda: Clip.from_image_folder(folder, ts)), [folder]


@case("folder-ts-epoch-ns", TimestampUnitError, "epoch ns")
def _folder_ns(tmp):
    folder = images_dir(tmp)
    ts = folder / "ts.txt"
    ts.write_text("".join(f"{1_700_000_000_000_000_000 + k * 33_333_333}\n" for k in range(4)))
    return (lambda: Clip.from_image_folder(folder, ts)), [folder]


@case("folder-ts-list-ms-sampled", TimestampUnitError, "ms")
def _folder_list_ms(tmp):
    folder = images_dir(tmp, 6)  # checked over all times, before sampling
    return (lambda: Clip.from_image_folder(folder, [0, 33, 66, 99, 132, 165], num_frames=2)), [folder]


# ------------------------------------------------------------------------------------------------ API: regions
def _region(**kwargs):
    def make(tmp):
        return (lambda: Region(1, **kwargs)), []
    return make


case("box-strings", RegionError, "'a'", "region 1")(_region(box=("a", 50, 40, 80)))
case("box-numeric-strings", RegionError, "'10'", "string")(_region(box=("10", "50", "40", "80")))
case("box-one-string", RegionError, "'10,50,40,80'")(_region(box="10,50,40,80"))
case("box-none-coordinate", RegionError, "None")(_region(box=(10, None, 40, 80)))
case("polygon-collinear", RegionError, "no area", "region 1")(_region(polygon=[(0, 0), (10, 10), (20, 20)]))
case("polygon-repeated-point", RegionError, "no area")(_region(polygon=[(5, 5), (5, 5), (5, 5)]))
case("polygon-flat-horizontal", RegionError, "no area")(_region(polygon=[(0, 5), (30, 5), (12, 5), (3, 5)]))
case("polygon-string-point", RegionError, "'ab'")(_region(polygon=[(0, 0), "ab", (5, 9)]))
case("polygon-string-coordinate", RegionError, "'x'")(_region(polygon=[(0, 0), ("x", 3), (5, 9)]))
case("polygon-nan", RegionError, "nan")(_region(polygon=[(0, 0), (float("nan"), 3), (5, 9)]))
case("polygon-is-a-string", RegionError, "'0,0,5,5,9,9'")(_region(polygon="0,0,5,5,9,9"))


@case("api-box-partly-outside", RegionError, "leaves the 64x48")
def _api_box_outside(tmp):
    return (lambda: RegionQuery(clip(), [Region(1, box=(50, 10, 70, 30))], "Where is <obj_1>?")), []


@case("live-box-partly-outside", GoalError, "leaves the 64x48", "(50.0, 10.0, 70.0, 30.0)",
      check=lambda e: e.code == "REGION_OUTSIDE_IMAGE")
def _live_box_outside(tmp):  # the same box as the API case: the same rule
    return (lambda: build_region(RegionSpec(1, box=(50, 10, 70, 30)), W, H)), []


@case("live-polygon-partly-outside", GoalError, "polygon leaves the 64x48",
      check=lambda e: e.code == "REGION_OUTSIDE_IMAGE")
def _live_polygon_outside(tmp):
    return (lambda: build_region(RegionSpec(1, kind="polygon", polygon=[(-3, 5), (30, 5), (10, 30)]), W, H)), []


@case("live-polygon-zero-area", GoalError, "no area", check=lambda e: e.code == "BAD_REGION")
def _live_polygon_flat(tmp):
    return (lambda: build_region(RegionSpec(1, kind="polygon", polygon=[(1, 1), (5, 5), (9, 9)]), W, H)), []


# ------------------------------------------------------------------------------------------------ API: queries
@case("options-with-none", QueryError, "None")
def _options_none(tmp):
    return (lambda: RegionQuery(clip(), [Region(1, box=(5, 5, 20, 20))], "Is <obj_1> red?", options=["yes", None])), []


@case("options-a-string", QueryError, "'2m/s'", "string")
def _options_string(tmp):
    return (lambda: RegionQuery(clip(), [Region(1, box=(5, 5, 20, 20))], "How fast is <obj_1>?", options="2m/s")), []


def _engine_case(**answer_kwargs):
    def make(tmp):
        engine = _tiny_engine()
        q = RegionQuery(clip(), [Region(1, box=(5, 5, 20, 20))], "How far is <obj_1>?", options=["1 m", "5 m"])
        return (lambda: engine.answer(q, **answer_kwargs)), [_TINY["ckpt"]]
    return make


case("max-new-tokens-0", QueryError, "max_new_tokens=0")(_engine_case(max_new_tokens=0))
case("max-new-tokens-negative", QueryError, "max_new_tokens=-5")(_engine_case(max_new_tokens=-5))
case("max-new-tokens-string", QueryError, "max_new_tokens='8'")(_engine_case(max_new_tokens="8"))


@case("answer-many-errors-mode", QueryError, "'ignore'")
def _answer_many_mode(tmp):
    engine = _tiny_engine()
    return (lambda: engine.answer_many([], errors="ignore")), [_TINY["ckpt"]]


# ------------------------------------------------------------------------------------------------ checkpoints
_TINY: Dict[str, Any] = {}


def _tiny_engine():
    if "engine" not in _TINY:
        from rgpt4d_sdk.engine import Engine

        _TINY["engine"] = Engine.from_pretrained(_TINY["ckpt"], device="cpu", dtype="float32")
    return _TINY["engine"]


def _poisoned(sub: str, value: float, shard: str = "model.safetensors"):
    def make(tmp):
        from safetensors.torch import load_file, save_file

        ckpt = tmp / "ckpt"
        shutil.copytree(_TINY["ckpt"], ckpt)
        path = ckpt / sub / shard
        tensors = load_file(str(path))
        name = sorted(n for n, t in tensors.items() if t.is_floating_point())[-1]
        tensors[name].view(-1)[3] = value
        save_file(tensors, str(path), metadata={"format": "pt"})
        _TINY["poisoned"] = name

        def load():
            from rgpt4d_sdk.engine import Engine

            Engine.from_pretrained(ckpt, device="cpu", dtype="float32")
        return load, [ckpt]
    return make


def _poisoned_name(e: BaseException) -> bool:
    return repr(_TINY["poisoned"]) in str(e)


case("weights-nan-projector", NonFiniteWeightsError, "mm_projector/model.safetensors", "non-finite",
     check=_poisoned_name)(_poisoned("mm_projector", float("nan")))
case("weights-inf-vision", NonFiniteWeightsError, "vision_tower/model.safetensors", "NaN or inf",
     check=_poisoned_name)(_poisoned("vision_tower", float("inf")))
case("weights-nan-llm-shard", NonFiniteWeightsError, "model-00002-of-00002.safetensors",
     check=_poisoned_name)(_poisoned("llm", float("-inf"), "model-00002-of-00002.safetensors"))


# ------------------------------------------------------------------------------------------------ compiled digests
def _tampered_with_mtime_restored(tmp: Path) -> Path:
    """A folder of 'compiled' files with a manifest, hashed once (cache filled), then one file changed in place
    with its size, inode and mtime kept."""
    from rgpt4d_sdk.compiled.artifacts import check_files, describe_files

    folder = tmp / "compiled"
    folder.mkdir()
    (folder / "vision.onnx.data").write_bytes(bytes(range(256)) * 64)
    (folder / "manifest.json").write_text(json.dumps({"files": describe_files(folder, ["vision.onnx.data"])}))
    path = folder / "vision.onnx.data"
    st = path.stat()
    check_files(folder, json.loads((folder / "manifest.json").read_text())["files"], "rebuild")  # cache filled
    with open(path, "r+b") as f:  # same size, same inode
        f.seek(100)
        f.write(b"\xff" * 16)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    return folder


@case("digest-cache-bypass-api", CompiledModelError, "vision.onnx.data", "sha256")
def _digest_bypass(tmp):
    from rgpt4d_sdk.compiled.artifacts import check_files
    from rgpt4d_sdk.digests import verify_digests

    folder = _tampered_with_mtime_restored(tmp)
    files = json.loads((folder / "manifest.json").read_text())["files"]
    check_files(folder, files, "rebuild")  # the cache trusts size/mtime/inode: documented, not caught here

    def verify():
        with verify_digests():
            check_files(folder, files, "rebuild")
    return verify, [folder]


@case("digest-cache-use-cache-false", CompiledModelError, "vision.onnx.data", "does not match")
def _digest_no_cache(tmp):
    from rgpt4d_sdk.compiled.artifacts import file_sha256

    folder = _tampered_with_mtime_restored(tmp)
    files = json.loads((folder / "manifest.json").read_text())["files"]

    def verify():
        if file_sha256(folder / "vision.onnx.data", use_cache=False) != files["vision.onnx.data"]["sha256"]:
            raise CompiledModelError(f"{folder / 'vision.onnx.data'} does not match its recorded sha256")
    return verify, [folder]


# ------------------------------------------------------------------------------------------------ R4D-Bench paths
def _r4d(video: str, som: str = "som/a.png", link: bool = False):
    def make(tmp):
        data, outside = tmp / "bench", tmp / "elsewhere"
        write_png(data / "som" / "a.png")
        write_png(outside / "secret.png")
        (outside / "secret.mp4").write_bytes(b"not really a video")
        if link:
            (data / "videos").mkdir(parents=True, exist_ok=True)
            (data / "videos" / "link.mp4").symlink_to(outside / "secret.mp4")
        rec = {"id": "item-7", "task": "speed & acceleration", "video": video.format(out=outside), "som_image":
               som.format(out=outside), "question": "How fast is <obj_1>?", "options": ["0 m/s", "2 m/s"],
               "answer": "2 m/s"}
        (data / "test.jsonl").write_text(json.dumps(rec) + "\n")

        def run():
            item = load_r4d(data)[0]
            assert item.reason == "path_outside_data", item
            raise PathOutsideRootError(item.message)  # the row's message, checked below
        return run, [data, outside]
    return make


case("r4d-video-dotdot", PathOutsideRootError, "item item-7", "'../elsewhere/secret.mp4'", "video")(
    _r4d("../elsewhere/secret.mp4"))
case("r4d-video-absolute", PathOutsideRootError, "item item-7", "secret.mp4")(_r4d("{out}/secret.mp4"))
case("r4d-som-absolute", PathOutsideRootError, "item item-7", "som_image", "secret.png")(
    _r4d("videos/v.mp4", "{out}/secret.png"))
case("r4d-video-symlink-out", PathOutsideRootError, "item item-7", "'videos/link.mp4'", "secret.mp4")(
    _r4d("videos/link.mp4", link=True))
case("r4d-som-dotdot-deep", PathOutsideRootError, "'som/../../elsewhere/secret.png'")(
    _r4d("videos/v.mp4", "som/../../elsewhere/secret.png"))


# ------------------------------------------------------------------------------------------------ RoboFAC paths
def _robofac(video: str, link: bool = False):
    def make(tmp):
        from robofac_data import write_clip, write_json, qa

        root, outside = tmp / "robofac", tmp / "elsewhere"
        write_clip(outside / "ep.mp4", 0)
        if link:
            (root / "simulation_data").mkdir(parents=True)
            (root / "simulation_data" / "ep.mp4").symlink_to(outside / "ep.mp4")
        write_json(root / "test_qa_sim" / "annos_per_video_split0.json", {
            "k": {"video": video.format(out=outside), "task": "Pick", "annos": {
                "Failure detection": qa("Is the task successful?", "No.")}}})

        def run():
            from rgpt4d_sdk.eval.robofac_run import ItemFailure, build_query

            item = RoboFACDataset(root).items("test_sim")[0]
            try:
                build_query(item, 4)
            except ItemFailure as e:
                assert e.reason == "path_outside_data", e.reason
                raise e.__cause__
        return run, [root, outside]
    return make


case("robofac-video-dotdot", PathOutsideRootError, "item ../elsewhere/ep.mp4#0", "'../elsewhere/ep.mp4'")(
    _robofac("../elsewhere/ep.mp4"))
case("robofac-video-absolute", PathOutsideRootError, "ep.mp4#0", "leaves the data root")(_robofac("{out}/ep.mp4"))
case("robofac-video-symlink-out", PathOutsideRootError, "'simulation_data/ep.mp4'", "elsewhere")(
    _robofac("ep.mp4", link=True))


# ------------------------------------------------------------------------------------------------ nuScenes paths
def _nuscenes(filename: str):
    def make(tmp):
        from rgpt4d_sdk.adapters.nuscenes import sample as S
        from rgpt4d_sdk.adapters.nuscenes.source import NuScenesConfig, NuScenesSource

        root = tmp / "nus"
        scene = S.SampleScene("scene-0001", [S.SampleObject("car", "vehicle.car", (1.9, 4.6, 1.6), (15.0, 0.0, 0.8),
                                                            (5.0, 0.0, 0.0))], num_keyframes=2, sweeps_between=1)
        S.write_sample_log(root, "v1.0-mini", [scene], image_size=(160, 90))
        outside = write_png(tmp / "elsewhere" / "cam.jpg")
        table = root / "v1.0-mini" / "sample_data.json"
        rows = json.loads(table.read_text())
        first = min((r for r in rows if r["filename"].endswith(".jpg")), key=lambda r: r["timestamp"])
        first["filename"] = filename.format(out=tmp / "elsewhere")
        table.write_text(json.dumps(rows))
        source = NuScenesSource(NuScenesConfig(dataroot=str(root), version="v1.0-mini", num_frames=3, frames="sweeps"))
        unit = [u for u in source.units() if not u.problem][0]
        _TINY["sd_token"] = first["token"]
        return (lambda: source.load(unit)), [root, tmp / "elsewhere"]
    return make


case("nuscenes-filename-dotdot", PathOutsideRootError, "sample_data", "'../elsewhere/cam.jpg'", "filename",
     check=lambda e: _TINY["sd_token"] in str(e))(_nuscenes("../elsewhere/cam.jpg"))
case("nuscenes-filename-absolute", PathOutsideRootError, "cam.jpg", "leaves the data root")(
    _nuscenes("{out}/cam.jpg"))


# ------------------------------------------------------------------------------------------------ rosbag query masks
def _rosbag_mask(mask: str, link: bool = False):
    def make(tmp):
        qdir, outside = tmp / "queries", tmp / "elsewhere"
        write_png(outside / "mask.png")
        qdir.mkdir()
        if link:
            (qdir / "mask.png").symlink_to(outside / "mask.png")
        qfile = qdir / "q.yaml"
        qfile.write_text("queries:\n  - id: cone\n    question: Where is <obj_1>?\n    regions:\n"
                         f"      - {{id: 1, mask: '{mask.format(out=outside)}'}}\n")
        queries = load_queries(qfile)
        queries_digest(qfile)  # the digest never reads the outside file either
        return (lambda: _region_spec(queries[0].regions[0])), [qdir, outside]
    return make


case("rosbag-mask-dotdot", PathOutsideRootError, "query 'cone' region 1", "'../elsewhere/mask.png'", "mask")(
    _rosbag_mask("../elsewhere/mask.png"))
case("rosbag-mask-absolute", PathOutsideRootError, "query 'cone'", "mask.png")(_rosbag_mask("{out}/mask.png"))
case("rosbag-mask-symlink-out", PathOutsideRootError, "query 'cone'", "elsewhere")(_rosbag_mask("mask.png", True))


# ------------------------------------------------------------------------------------------------ training frames
def _conversation(frames: List[str], som: str = ""):
    def make(tmp):
        data, outside = tmp / "train", tmp / "elsewhere"
        for k in range(2):
            write_png(data / "clip" / f"{k}.png", k)
        write_png(outside / "other.png")
        rec = {"id": "clip0#q0", "video": [f.format(data=data, out=outside) for f in frames],
               "timestamps_s": [0.0, 0.1], "conversations": [{"from": "human", "value": "<video>\nWhat?"},
                                                             {"from": "gpt", "value": "A car."}]}
        if som:
            rec["som_image"] = som.format(data=data, out=outside)
        conv = data / "conversations.json"
        conv.write_text(json.dumps([rec]))
        return (lambda: load_conversations(conv)), [data, outside]
    return make


case("train-frame-absolute-outside", PathOutsideRootError, "record 'clip0#q0'", "other.png", "frame")(
    _conversation(["{data}/clip/0.png", "{out}/other.png"]))
case("train-frame-dotdot", PathOutsideRootError, "conversations.json", "'../elsewhere/other.png'")(
    _conversation(["clip/0.png", "../elsewhere/other.png"]))
case("train-som-outside", PathOutsideRootError, "record 'clip0#q0'", "som_image")(
    _conversation(["clip/0.png", "clip/1.png"], "{out}/other.png"))
case("train-roots-not-a-list", ConfigError, "data.roots", "'/data'")(
    lambda tmp: ((lambda: load_conversations(tmp / "c.json", roots="/data")), []))


# ------------------------------------------------------------------------------------------------ resume fingerprints
def _results(out: Path, fingerprint: Any, run_json: Any = None) -> Path:
    out.mkdir(parents=True)
    row = {"id": "a", "unit_id": "a", "unit_rows": 1, "status": "ok"}
    if fingerprint is not None:
        row[FINGERPRINT_FIELD] = fingerprint
    ResultStore(out / "results.jsonl").append([row])
    if run_json is not None:
        (out / "run.json").write_text(json.dumps(run_json))
    return out


@case("eval-resume-rows-of-other-settings", ConfigError, "different configuration", "results")
def _eval_resume(tmp):
    from rgpt4d_sdk.eval.runner import settings_fingerprint, start_run

    out = _results(tmp / "out", settings_fingerprint({"model": "m", "frames": 4}))  # run.json was deleted
    return (lambda: start_run(out, {"model": "m", "frames": 8})), [out]


@case("eval-resume-unmarked-rows-no-run-json", ConfigError, "without a configuration fingerprint")
def _eval_unmarked(tmp):
    from rgpt4d_sdk.eval.runner import start_run

    out = _results(tmp / "out", None)
    return (lambda: start_run(out, {"model": "m", "frames": 8})), [out]


@case("eval-resume-corrupt-run-json", ConfigError, "run.json", "cannot be read")
def _eval_corrupt(tmp):
    from rgpt4d_sdk.eval.runner import start_run

    out = _results(tmp / "out", None)
    (out / "run.json").write_text("{broken")
    return (lambda: start_run(out, {"model": "m", "frames": 8})), [out]


@case("analyze-resume-rows-of-other-config", ConfigError, "different configuration", "fingerprint")
def _analyze_resume(tmp):
    from rgpt4d_sdk.analyze.config import AnalyzeConfig
    from rgpt4d_sdk.analyze.runner import _check_out_dir

    def cfg(seed):
        return AnalyzeConfig.from_dict({"source": "nuscenes", "out": str(tmp / "out"),
                                        "nuscenes": {"dataroot": "/nowhere", "version": "v1.0-mini"},
                                        "questions": {"seed": seed}, "engine": {"model": "/m"}})
    out = _results(tmp / "out", cfg(0).fingerprint(shard=False))  # seed-0 rows; run.json deleted
    rows = ResultStore(out / "results.jsonl").load()
    return (lambda: _check_out_dir(out, cfg(7), rows)), [out]


# ------------------------------------------------------------------------------------------------ the runner
@pytest.fixture(scope="module", autouse=True)
def _tiny(tiny_ckpt_dir):
    _TINY.clear()
    _TINY["ckpt"] = tiny_ckpt_dir
    yield
    _TINY.clear()


@pytest.fixture(autouse=True)
def _own_digest_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RGPT4D_CACHE", str(tmp_path / "digest-cache"))


def test_there_are_at_least_fifty_cases():
    assert len(CASES) >= 50 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("bad", CASES, ids=[c.id for c in CASES])
def test_bad_input(bad: Case, tmp_path):
    action, watched = bad.make(tmp_path)
    before = snapshot(*watched)
    with pytest.raises(bad.error) as info:
        action()
    assert isinstance(info.value, RGPT4DError), type(info.value).__mro__
    message = str(info.value)
    for name in bad.names:
        assert name in message, f"{name!r} not named in: {message}"
    assert bad.check(info.value), message
    assert snapshot(*watched) == before, "something already written changed"


# ------------------------------------------------------------------------------------------------ controls
def test_outside_paths_are_read_with_the_allow_flags(tmp_path):
    outside = write_png(tmp_path / "elsewhere" / "x.png")
    assert confine(str(outside), tmp_path / "data", record="r", allow=True) == outside
    with pytest.raises(PathOutsideRootError):
        confine(str(outside), tmp_path / "data", record="r")
    data = tmp_path / "bench"
    write_png(data / "som" / "a.png")
    rec = {"id": "i", "task": "speed", "video": str(tmp_path / "elsewhere" / "v.mp4"), "som_image": "som/a.png",
           "question": "Q <obj_1>?", "options": ["a", "b"], "answer": "a"}
    (data / "test.jsonl").write_text(json.dumps(rec) + "\n")
    assert load_r4d(data, allow_outside_root=True)[0].video == tmp_path / "elsewhere" / "v.mp4"
    conv = tmp_path / "train" / "c.json"
    conv.parent.mkdir()
    conv.write_text(json.dumps([{"id": "r", "video": [str(outside), str(outside)], "timestamps_s": [0, 1],
                                 "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}]))
    assert load_conversations(conv, roots=[str(tmp_path / "elsewhere")])[0]["video"][0] == str(outside)
    assert load_conversations(conv, allow_outside_root=True)


def test_time_unit_check_can_be_overridden(tmp_path):
    ms = Clip.from_arrays([image(k) for k in range(3)], [0.0, 100.0, 200.0], check_units=False)
    assert ms.timestamps == [0.0, 100.0, 200.0]
    folder = images_dir(tmp_path)
    assert len(Clip.from_image_folder(folder, [0, 20, 40, 60], check_units=False)) == 4
    slow = clip((0.0, 2.0, 4.0, 6.0))  # 0.5 Hz: a legitimate slow stream
    assert slow.sample(2).timestamps == [0.0, 6.0]  # a sub-sample's wider gaps are not re-checked


def test_answer_many_answers_the_others_when_one_query_is_too_long():
    engine = _tiny_engine()
    region = [Region(1, box=(5, 5, 20, 20))]
    good = RegionQuery(clip(), region, "How far is <obj_1>?", options=["1 m", "5 m"], id="good")
    long = RegionQuery(clip(), region, "Where is <obj_1>? " + "very " * 3000, id="long")
    answers = engine.answer_many([good, long, good], batch_size=3)
    assert isinstance(answers[1], RGPT4DError) and "long" in str(answers[1]) and "context" in str(answers[1])
    assert answers[0].text == answers[2].text == engine.answer(good).text
    with pytest.raises(RGPT4DError):
        engine.answer_many([good, long], errors="raise")


def test_digest_cache_is_used_without_the_bypass(tmp_path):
    """What the cache trusts (docs/compiled.md): unchanged size, mtime and inode mean unchanged bytes."""
    from rgpt4d_sdk.compiled.artifacts import check_files

    folder = _tampered_with_mtime_restored(tmp_path)
    check_files(folder, json.loads((folder / "manifest.json").read_text())["files"], "rebuild")


def test_rows_carry_the_fingerprint_and_unmarked_rows_need_run_json(tmp_path):
    rows = [{"id": "a", FINGERPRINT_FIELD: "f1"}, {"id": "b"}]
    check_fingerprint(rows, "f1", "f1", tmp_path)  # legacy rows vouched for by run.json
    with pytest.raises(ConfigError):
        check_fingerprint(rows, "f1", None, tmp_path)
