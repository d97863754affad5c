"""Bad inputs through the command line (issue 16): every case exits with the documented code, prints one
``error:`` line that names the offending file, key or value, prints no traceback, and leaves every file that
existed before the command byte-for-byte unchanged.

Cases are built by small functions of a per-case workspace (`Ws`), so each one writes only its own files. Most
fail before a model is loaded; the few that need a loaded model use the session's tiny checkpoint.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

from rgpt4d_sdk.cli import app

runner = CliRunner()
NO_CUDA = not torch.cuda.is_available()
GOOD_QUERIES = {"queries": [{"id": "speed", "question": "How fast is <obj_1> moving?",
                             "regions": [{"id": 1, "box": [2, 2, 20, 20]}]}]}


@dataclass
class Ws:
    """One case's workspace: its own folder, plus the session's read-only checkpoint, video and frames."""

    root: Path
    ckpt: Path
    video: Path
    frames: Path
    times: Path
    nus: Path

    def p(self, name: str) -> str:
        return str(self.root / name)

    def write(self, name: str, text: "str | bytes") -> str:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return str(path)

    def yaml(self, name: str, data) -> str:
        return self.write(name, yaml.safe_dump(data))

    def ckpt_copy(self) -> Path:
        dst = self.root / "ck"
        shutil.copytree(self.ckpt, dst)
        return dst

    def query(self, *extra: str, video: "str | None" = None) -> List[str]:
        return ["query", "--model", str(self.ckpt), "--video", video or str(self.video), "--device", "cpu",
                "--question", "How fast is <obj_1> moving?", "--region", "1:10,50,40,80", *extra]

    def query_frames(self, *extra: str, frames: "str | None" = None, times: "str | None" = None) -> List[str]:
        return ["query", "--model", str(self.ckpt), "--frames", frames or str(self.frames), "--timestamps",
                times or str(self.times), "--device", "cpu", "--question", "Where is <obj_1>?", *extra]

    def train_cfg(self, **sections) -> str:
        data = {"model": str(self.root / "no-model-loaded"), "data": {"train": self.p("conv.json")},
                "run": {"out": self.p("run")}}
        for key, value in sections.items():
            if isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        return self.yaml("train.yaml", data)

    def nus_cfg(self, **sections) -> str:
        data = {"nuscenes": {"dataroot": self.p("no-data")}}
        for key, value in sections.items():
            data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
        return self.yaml("cfg.yaml", data)

    def bag_args(self, bag: str, queries: "str | None" = None) -> List[str]:
        return ["analyze", "rosbag", bag, "--camera", "/cam/image_raw", "--queries",
                queries or self.yaml("q.yaml", GOOD_QUERIES), "--model", str(self.ckpt), "--out", self.p("out"),
                "--device", "cpu", "--no-progress"]


Case = Callable[[Ws], Tuple[List[str], int, Sequence[str]]]


def _png(path: Path, size=(160, 120), mode="RGB", value=128) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path, format="PNG")
    return path


def _one_frame_video(ws: Ws) -> str:
    from rgpt4d_sdk.media import write_video

    return str(write_video(ws.root / "one.mp4", [np.full((120, 160, 3), 90, np.uint8)], [0.0]))


def _frames(ws: Ws, sizes, name="fr") -> str:
    for i, size in enumerate(sizes):
        _png(ws.root / name / f"frame_{i:03d}.png", size=size)
    return ws.p(name)


def _ckpt_json(ws: Ws, rel: str, edit) -> Path:
    ck = ws.ckpt_copy()
    path = ck / rel
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    return ck


def _with_model(args: List[str], ck: Path) -> List[str]:
    return [str(ck) if a == args[args.index("--model") + 1] else a for a in args]


def _inspect(ck) -> List[str]:
    return ["checkpoint", "inspect", str(ck)]


def _remove(path: Path) -> Path:
    shutil.rmtree(path) if path.is_dir() else path.unlink()
    return path


def _truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def _first(folder: Path, pattern: str) -> Path:
    return sorted(folder.glob(pattern))[0]


# ----------------------------------------------------------------------------------------------------- query
QUERY: Dict[str, Case] = {
    "device-gpu": lambda ws: (ws.query("--device", "gpu"), 2, ["'gpu'", "cuda:N"]),
    "device-cuda-index-text": lambda ws: (ws.query("--device", "cuda:x"), 2, ["'cuda:x'"]),
    "png-renamed-mp4": lambda ws: (ws.query(video=str(_png(ws.root / "still.mp4"))), 2, ["still.mp4", "1 frame"]),
    "one-frame-video": lambda ws: (ws.query(video=_one_frame_video(ws)), 2, ["one.mp4", "1 frame"]),
    "num-frames-500": lambda ws: (ws.query("--num-frames", "500"), 2, ["--num-frames 16", "24 frames"]),
    "num-frames-0": lambda ws: (ws.query("--num-frames", "0"), 2, ["num_frames=0"]),
    "num-frames-negative": lambda ws: (ws.query("--num-frames", "-3"), 2, ["num_frames=-3"]),
    "zero-byte-video": lambda ws: (ws.query(video=ws.write("empty.mp4", b"")), 2, ["empty.mp4"]),
    "text-as-video": lambda ws: (ws.query(video=ws.write("notes.mp4", "hello")), 2, ["notes.mp4"]),
    "truncated-video": lambda ws: (ws.query(video=ws.write("half.mp4", ws.video.read_bytes()[:200])), 2,
                                   ["half.mp4"]),
    "missing-video": lambda ws: (ws.query(video=ws.p("nope.mp4")), 2, ["nope.mp4"]),
    "frames-without-timestamps": lambda ws: (["query", "--model", str(ws.ckpt), "--frames", str(ws.frames),
                                              "--question", "q?"], 2, ["--timestamps"]),
    "timestamps-not-a-number": lambda ws: (ws.query_frames(times=ws.write("ts.txt", "0\n0.1\nabc\n0.3\n0.4\n")), 2,
                                           ["ts.txt", "'abc'"]),
    "timestamps-empty": lambda ws: (ws.query_frames(times=ws.write("ts.txt", "")), 2, ["ts.txt", "empty"]),
    "timestamps-nan": lambda ws: (ws.query_frames(times=ws.write("ts.txt", "0\n0.1\nnan\n0.3\n0.4\n")), 2,
                                  ["nan"]),
    "timestamps-decreasing": lambda ws: (ws.query_frames(times=ws.write("ts.txt", "0\n0.2\n0.1\n0.3\n0.4\n")), 2,
                                         ["do not increase"]),
    "timestamps-too-few": lambda ws: (ws.query_frames(times=ws.write("ts.txt", "0\n0.1\n")), 2, ["ts.txt", "2"]),
    "timestamps-bad-json": lambda ws: (ws.query_frames(times=ws.write("ts.json", "[0, 0.1,")), 2, ["ts.json"]),
    "frames-mixed-sizes": lambda ws: (ws.query_frames(frames=_frames(ws, [(160, 120), (128, 96), (160, 120)]),
                                                      times=ws.write("ts.txt", "0\n0.1\n0.2\n")), 2, ["128x96"]),
    "frames-16-bit": lambda ws: (ws.query_frames(frames=str(_png(ws.root / "f16" / "a.png", mode="I;16").parent),
                                                 times=ws.write("ts.txt", "0\n")), 2, ["a.png"]),
    "region-not-numbers": lambda ws: (ws.query("--region", "2:abc"), 2, ["'2:abc'"]),
    "region-three-numbers": lambda ws: (ws.query("--region", "2:1,2,3"), 2, ["'2:1,2,3'"]),
    "region-id-zero": lambda ws: (ws.query("--region", "0:1,2,3,4"), 2, ["region id 0"]),
    "region-id-not-a-number": lambda ws: (ws.query("--region", "x:1,2,3,4"), 2, ["'x:1,2,3,4'"]),
    "region-outside-image": lambda ws: (ws.query("--region", "2:10,50,400,80"), 2, ["400.0", "160x120"]),
    "region-inverted": lambda ws: (ws.query("--region", "2:40,50,10,80"), 2, ["(40.0, 50.0, 10.0, 80.0)"]),
    "region-duplicate-id": lambda ws: (ws.query("--region", "1:1,2,30,40"), 2, ["[1]"]),
    "mask-wrong-size": lambda ws: (ws.query("--region", f"2:mask={_png(ws.root / 'm.png', (50, 50), 'L', 255)}"),
                                   2, ["50x50"]),
    "mask-missing": lambda ws: (ws.query("--region", f"2:mask={ws.p('nomask.png')}"), 2, ["nomask.png"]),
    "unknown-mark": lambda ws: (["query", "--model", str(ws.ckpt), "--video", str(ws.video), "--question",
                                 "Where is <obj_3>?", "--region", "1:1,2,30,40"], 2, ["<obj_3>"]),
    "empty-question": lambda ws: (["query", "--model", str(ws.ckpt), "--video", str(ws.video), "--question", "  "],
                                  2, ["question is empty"]),
    "dtype-float8": lambda ws: (ws.query("--dtype", "float8"), 2, ["'float8'"]),
    "answer-type-bogus": lambda ws: (ws.query("--answer-type", "bogus"), 2, ["'bogus'"]),
    "mode-bogus": lambda ws: (ws.query("--mode", "bogus"), 2, ["'bogus'"]),
    "empty-option": lambda ws: (ws.query("--option", "a", "--option", ""), 2, ["option is empty"]),
}
if NO_CUDA:
    QUERY["device-cuda-without-cuda"] = lambda ws: (ws.query("--device", "cuda"), 2, ["'cuda'", "not available"])

# ----------------------------------------------------------------------------------------------- checkpoints
CHECKPOINT: Dict[str, Case] = {
    "missing-root-config": lambda ws: (_inspect(_remove(ws.ckpt_copy() / "config.json").parent), 2,
                                       ["config.json"]),
    "missing-projector-folder": lambda ws: (_inspect(_remove(ws.ckpt_copy() / "mm_projector").parent), 2,
                                            ["mm_projector"]),
    "missing-llm-shard": lambda ws: (_inspect(_remove(_first(ws.ckpt_copy() / "llm",
                                                             "model-00002-*.safetensors")).parent.parent), 2,
                                     ["model-00002-of-00002.safetensors"]),
    "truncated-vision-weights": lambda ws: (_inspect(_truncate(ws.ckpt_copy() / "vision_tower" /
                                                               "model.safetensors").parent.parent), 2,
                                            ["vision_tower/model.safetensors", "truncated"]),
    "garbage-weights-header": lambda ws: (_inspect(_garbage_header(ws.ckpt_copy())), 2,
                                          ["mm_projector/model.safetensors"]),
    "hidden-size-string": lambda ws: (_inspect(_ckpt_json(ws, "llm/config.json",
                                                          lambda d: d.update(hidden_size="sixty-four"))), 2,
                                      ["llm/config.json", "hidden_size", "'sixty-four'"]),
    "image-size-float": lambda ws: (_inspect(_ckpt_json(ws, "vision_tower/config.json",
                                                        lambda d: d.update(image_size=44.5))), 2,
                                    ["vision_tower/config.json", "image_size", "44.5"]),
    "llm-config-not-json": lambda ws: (_inspect(_write_in(ws.ckpt_copy(), "llm/config.json", "{bad")), 2,
                                       ["llm/config.json"]),
    "tokenizer-removed": lambda ws: (_with_model(ws.query(), _no_tokenizer(ws.ckpt_copy())), 2, ["tokenizer"]),
    "pickle-only-llm": lambda ws: (_inspect(_pickle_only(ws.ckpt_copy())), 2, ["pickle"]),
    "unknown-projector": lambda ws: (_inspect(_ckpt_json(ws, "mm_projector/config.json",
                                                         lambda d: d.update(mm_projector_type="linear"))), 2,
                                     ["'linear'"]),
    "model-is-a-file": lambda ws: (ws.query()[:2] + [str(ws.ckpt / "config.json")] + ws.query()[3:], 2,
                                   ["config.json"]),
    "model-folder-missing": lambda ws: (_inspect(ws.p("nope")), 2, ["nope"]),
    "make-tiny-into-checkpoint": lambda ws: (["checkpoint", "make-tiny", str(ws.ckpt_copy())], 2,
                                             ["already holds a checkpoint"]),
}


def _write_in(root: Path, rel: str, text: str) -> Path:
    (root / rel).write_text(text)
    return root


def _garbage_header(ck: Path) -> Path:
    path = ck / "mm_projector" / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[8:40] = b"\x9f" * 32
    path.write_bytes(bytes(data))
    return ck


def _no_tokenizer(ck: Path) -> Path:
    for name in ("tokenizer.json", "vocab.json", "merges.txt"):
        if (ck / "llm" / name).exists():
            (ck / "llm" / name).unlink()
    return ck


def _pickle_only(ck: Path) -> Path:
    for p in (ck / "llm").glob("*.safetensors*"):
        p.unlink()
    for p in (ck / "llm").glob("model.safetensors.index.json"):
        p.unlink()
    (ck / "llm" / "pytorch_model.bin").write_bytes(b"not loaded")
    return ck


# ---------------------------------------------------------------------------------------- analyze configs
def _nus(ws: Ws, *extra: str, **sections) -> List[str]:
    return ["analyze", "nuscenes", "--config", ws.nus_cfg(**sections), "--out", ws.p("out"), "--no-progress",
            *extra]


CONFIGS: Dict[str, Case] = {
    "num-frames-sixteen": lambda ws: (_nus(ws, nuscenes={"num_frames": "sixteen"}), 2,
                                      ["cfg.yaml", "nuscenes.num_frames", "'sixteen'", ">= 2"]),
    "batch-size-eight": lambda ws: (_nus(ws, engine={"batch_size": "eight"}), 2,
                                    ["cfg.yaml", "engine.batch_size", "'eight'", ">= 1"]),
    "min-distance-far": lambda ws: (_nus(ws, nuscenes={"min_distance_m": "far"}), 2,
                                    ["cfg.yaml", "nuscenes.min_distance_m", "'far'"]),
    "scenes-int": lambda ws: (_nus(ws, nuscenes={"scenes": 5}), 2, ["cfg.yaml", "nuscenes.scenes", "= 5"]),
    "min-visibility-string": lambda ws: (_nus(ws, nuscenes={"min_visibility": "2"}), 2,
                                         ["cfg.yaml", "nuscenes.min_visibility", "'2'", "[1, 4]"]),
    "min-visibility-7": lambda ws: (_nus(ws, nuscenes={"min_visibility": 7}), 2,
                                    ["nuscenes.min_visibility", "7", "[1, 4]"]),
    "max-regions-negative": lambda ws: (_nus(ws, nuscenes={"max_regions": -1}), 2, ["nuscenes.max_regions", "-1"]),
    "clock-offset-text": lambda ws: (_nus(ws, nuscenes={"clock_offsets_s": {"CAM_FRONT": "x"}}), 2,
                                     ["nuscenes.clock_offsets_s", "'CAM_FRONT'", "'x'"]),
    "engine-device-gpu": lambda ws: (_nus(ws, engine={"device": "gpu"}), 2, ["engine.device", "'gpu'", "cuda:N"]),
    "engine-section-int": lambda ws: (_nus(ws, engine=5), 2, ["cfg.yaml", "engine", "5", "mapping"]),
    "executor-workers-0": lambda ws: (_nus(ws, executor={"num_workers": 0}), 2, ["executor.num_workers", "0"]),
    "questions-seed-negative": lambda ws: (_nus(ws, questions={"seed": -1}), 2, ["seed", "-1"]),
    "unknown-top-key": lambda ws: (_nus(ws, outdir={"x": 1}), 2, ["'outdir'"]),
    "unknown-nuscenes-key": lambda ws: (_nus(ws, nuscenes={"scenez": ["a"]}), 2, ["'scenez'"]),
    "cli-num-frames-1": lambda ws: (_nus(ws, "--num-frames", "1"), 2, ["nuscenes.num_frames", "1", ">= 2"]),
    "cli-batch-size-0": lambda ws: (_nus(ws, "--batch-size", "0"), 2, ["engine.batch_size", "0"]),
    "cli-device-gpu": lambda ws: (_nus(ws, "--device", "gpu"), 2, ["engine.device", "'gpu'"]),
    "cli-shard-3-of-2": lambda ws: (_nus(ws, "--shard", "3/2"), 2, ["'3/2'"]),
    "binary-config": lambda ws: (["analyze", "nuscenes", "--config", ws.write("cfg.yaml", bytes(range(256)) * 4)],
                                 2, ["cfg.yaml", "UTF-8"]),
    "config-is-a-list": lambda ws: (["analyze", "nuscenes", "--config", ws.write("cfg.yaml", "- a\n- b\n")], 2,
                                    ["cfg.yaml", "list"]),
    "config-python-tag": lambda ws: (["analyze", "nuscenes", "--config",
                                      ws.write("cfg.yaml", "x: !!python/object/apply:os.system ['true']\n")], 2,
                                     ["cfg.yaml", "python/object/apply"]),
    "config-malformed": lambda ws: (["analyze", "nuscenes", "--config", ws.write("cfg.yaml", "a: [1, 2\n")], 2,
                                    ["cfg.yaml", "not valid YAML"]),
    "config-missing": lambda ws: (["analyze", "nuscenes", "--config", ws.p("none.yaml")], 2, ["none.yaml"]),
    "analyze-out-is-a-file": lambda ws: (["analyze", "nuscenes", "--config", ws.nus_cfg(), "--out",
                                          ws.write("outfile", "keep me")], 2, ["outfile", "is a file"]),
    "analyze-out-under-a-file": lambda ws: (["analyze", "nuscenes", "--config", ws.nus_cfg(), "--out",
                                             ws.write("outfile", "keep me") + "/sub"], 2, ["outfile", "is a file"]),
    "analyze-default-out-is-a-file": lambda ws: (["analyze", "--out", ws.write("outfile", "keep me"),
                                                  "--no-progress"], 2, ["outfile", "is a file"]),
    "demo-out-is-a-file": lambda ws: (["demo", "--out", ws.write("outfile", "keep me")], 2, ["outfile", "--out"]),
    "options-before-subcommand": lambda ws: (["analyze", "--out", ws.p("o"), "rosbag"], 2,
                                             ["analyze rosbag --out"]),
    "rosbag-tolerance-negative": lambda ws: (["analyze", "rosbag", "--config",
                                              ws.yaml("cfg.yaml", {"rosbag": {"bag": "b", "camera": "/c",
                                                                              "queries": "q.yaml",
                                                                              "tolerance_ms": -1}})], 2,
                                             ["rosbag.tolerance_ms", "-1"]),
    "rosbag-tolerance-text": lambda ws: (["analyze", "rosbag", "--config",
                                          ws.yaml("cfg.yaml", {"rosbag": {"bag": "b", "camera": "/c",
                                                                          "queries": "q.yaml",
                                                                          "tolerance_ms": "one"}})], 2,
                                         ["cfg.yaml", "rosbag.tolerance_ms", "'one'"]),
}

if NO_CUDA:
    CONFIGS["analyze-device-cuda-without-cuda"] = lambda ws: (_nus_run(ws, str(ws.nus), "--device", "cuda"), 2,
                                                              ["engine.device", "'cuda'", "not available"])

# -------------------------------------------------------------------------------------- data sets via the CLI
DATASETS: Dict[str, Case] = {
    "rosbag-garbage-metadata": lambda ws: (ws.bag_args(_garbage_bag(ws)), 2, ["bag", "metadata.yaml", "UTF-8"]),
    "rosbag-not-a-bag": lambda ws: (ws.bag_args(ws.write("notabag.bag", "hello")), 2, ["notabag.bag"]),
    "rosbag-folder-without-metadata": lambda ws: (ws.bag_args(str(_mkdir(ws.root / "emptybag"))), 2,
                                                  ["emptybag", "metadata.yaml"]),
    "rosbag-missing": lambda ws: (ws.bag_args(ws.p("nobag")), 2, ["nobag"]),
    "queries-unknown-key": lambda ws: (ws.bag_args(_garbage_bag(ws), ws.yaml("q.yaml", {"queries": [
        {"id": "a", "questoin": "x"}]})), 2, ["q.yaml", "'questoin'"]),
    "queries-num-frames-text": lambda ws: (ws.bag_args(_garbage_bag(ws), ws.yaml("q.yaml", {"queries": [
        {"id": "a", "question": "q?", "window": {"num_frames": "ten"}}]})), 2, ["q.yaml", "num_frames", "'ten'"]),
    "queries-duplicate-id": lambda ws: (ws.bag_args(_garbage_bag(ws), ws.yaml("q.yaml", {"queries": [
        {"id": "a", "question": "q?"}, {"id": "a", "question": "q?"}]})), 2, ["q.yaml", "'a'"]),
    "queries-empty-file": lambda ws: (ws.bag_args(_garbage_bag(ws), ws.write("q.yaml", "")), 2, ["q.yaml"]),
    "queries-binary": lambda ws: (ws.bag_args(_garbage_bag(ws), ws.write("q.yaml", bytes(range(128, 256)))), 2,
                                  ["q.yaml", "UTF-8"]),
    "queries-truth-letter": lambda ws: (ws.bag_args(_garbage_bag(ws), ws.yaml("q.yaml", {"queries": [
        {"id": "a", "question": "q?", "options": ["x", "y"], "truth": "E"}]})), 2, ["q.yaml", "'E'"]),
    "nuscenes-broken-scene-table": lambda ws: (_nus_run(ws, _broken_table(ws, "scene")), 2,
                                               ["scene.json", "not valid JSON"]),
    "nuscenes-broken-sample-data-table": lambda ws: (_nus_run(ws, _broken_table(ws, "sample_data")), 2,
                                                     ["sample_data.json", "not valid JSON"]),
    "nuscenes-unknown-scene": lambda ws: (_nus_run(ws, str(ws.nus), "--scenes", "scene-9999"), 2, ["scene-9999"]),
    "nuscenes-unknown-camera": lambda ws: (_nus_run(ws, str(ws.nus), "--camera", "CAM_TOP"), 2, ["CAM_TOP"]),
    "nuscenes-unknown-version": lambda ws: (_nus_run(ws, str(ws.nus), "--version", "v9.9"), 2, ["v9.9"]),
    "nuscenes-missing-table": lambda ws: (_nus_run(ws, _broken_table(ws, "sample_annotation", remove=True)), 2,
                                          ["sample_annotation"]),
    "r4d-missing-data": lambda ws: (_r4d(ws, ws.p("nodata")), 2, ["nodata"]),
    "r4d-frames-1": lambda ws: (_r4d(ws, ws.p("nodata"), "--frames", "1"), 2, ["frames must be >= 2"]),
    "r4d-corrupt-run-json": lambda ws: (_r4d(ws, ws.p("nodata"), out=_out_with(ws, "run.json", "{broken")), 2,
                                        ["run.json", "not valid JSON"]),
    "r4d-run-json-list": lambda ws: (_r4d(ws, ws.p("nodata"), out=_out_with(ws, "run.json", "[1, 2]")), 2,
                                     ["run.json", "not a JSON object"]),
    "r4d-out-is-a-file": lambda ws: (_r4d(ws, ws.p("nodata"), out=ws.write("outfile", "x")), 2, ["outfile"]),
    "r4d-broken-json-records": lambda ws: (_r4d(ws, ws.write("data/records.json", "{\"a\": 1,\n")), 2,
                                           ["records.json"]),
}


def _nus_run(ws: Ws, dataroot: str, *extra: str) -> List[str]:
    args = ["analyze", "nuscenes", "--dataroot", dataroot, "--version", "v1.0-mini", "--model", str(ws.ckpt),
            "--out", ws.p("out"), "--device", "cpu", "--no-progress", *extra]
    if "--version" in extra:
        del args[4:6]
    return args


def _broken_table(ws: Ws, table: str, remove: bool = False) -> str:
    root = ws.root / "nus"
    shutil.copytree(ws.nus, root)
    path = root / "v1.0-mini" / f"{table}.json"
    path.unlink() if remove else path.write_text('[{"token": "x", "name": "unterminated')
    return str(root)


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _garbage_bag(ws: Ws) -> str:
    bag = _mkdir(ws.root / "bag")
    (bag / "metadata.yaml").write_bytes(bytes([0xAA, 0xFF, 0xFE]) * 40)
    return str(bag)


def _r4d(ws: Ws, data: str, *extra: str, out: "str | None" = None) -> List[str]:
    return ["eval", "r4d-bench", "--data", data, "--model", str(ws.ckpt), "--out", out or ws.p("r4d-out"),
            "--device", "cpu", *extra]


def _out_with(ws: Ws, name: str, text: str) -> str:
    ws.write(f"r4d-out/{name}", text)
    ws.write("r4d-out/results.jsonl", "")
    return ws.p("r4d-out")


# ----------------------------------------------------------------------------------------------- train
def _train(ws: Ws, *extra: str, **sections) -> List[str]:
    return ["train", "--config", ws.train_cfg(**sections), *extra]


TRAIN: Dict[str, Case] = {
    "lr-negative": lambda ws: (_train(ws, optim={"lr": -0.002}), 2, ["train.yaml", "optim.lr", "-0.002", "(0, 1]"]),
    "lr-text": lambda ws: (_train(ws, optim={"lr": "fast"}), 2, ["train.yaml", "optim.lr", "'fast'"]),
    "micro-batch-0": lambda ws: (_train(ws, batch={"micro_batch": 0}), 2, ["batch.micro_batch", "0", ">= 1"]),
    "global-batch-not-multiple": lambda ws: (_train(ws, batch={"global_batch": 8, "micro_batch": 3}), 2,
                                             ["batch.global_batch", "8", "multiple"]),
    "max-steps-negative": lambda ws: (_train(ws, run={"max_steps": -5}), 2, ["run.max_steps", "-5", ">= 1"]),
    "warmup-ratio-5": lambda ws: (_train(ws, optim={"warmup_ratio": 5}), 2, ["optim.warmup_ratio", "5", "[0, 1]"]),
    "betas-one-number": lambda ws: (_train(ws, optim={"betas": [0.9]}), 2, ["optim.betas", "[0.9]"]),
    "weight-decay-negative": lambda ws: (_train(ws, optim={"weight_decay": -1}), 2, ["optim.weight_decay", "-1"]),
    "epochs-0": lambda ws: (_train(ws, run={"epochs": 0}), 2, ["run.epochs", "0"]),
    "run-device-gpu": lambda ws: (_train(ws, run={"device": "gpu"}), 2, ["run.device", "'gpu'", "auto, cpu"]),
    "data-num-frames-1": lambda ws: (_train(ws, data={"num_frames": 1}), 2, ["data.num_frames", "1"]),
    "lora-rank-0": lambda ws: (_train(ws, finetune={"lora": {"r": 0}}), 2, ["finetune.lora.r", "0"]),
    "set-lr-negative": lambda ws: (_train(ws, "--set", "optim.lr=-1"), 2, ["--set optim.lr=-1", "optim.lr"]),
    "set-micro-batch-text": lambda ws: (_train(ws, "--set", "batch.micro_batch=two"), 2,
                                        ["batch.micro_batch", "'two'"]),
    "unknown-section": lambda ws: (_train(ws, optimizer={"lr": 1}), 2, ["'optimizer'"]),
    "unknown-optim-key": lambda ws: (_train(ws, optim={"lrr": 1}), 2, ["'lrr'"]),
    "section-not-mapping": lambda ws: (_train(ws, optim=3), 2, ["'optim'"]),
    "model-not-text": lambda ws: (_train(ws, model=5), 2, ["model", "5"]),
    "binary-train-config": lambda ws: (["train", "--config", ws.write("train.yaml", bytes(range(256)))], 2,
                                       ["train.yaml", "UTF-8"]),
    "train-config-list": lambda ws: (["train", "--config", ws.write("train.yaml", "- 1\n")], 2,
                                     ["train.yaml", "list"]),
    "train-export-no-run": lambda ws: (["train", "export", str(_mkdir(ws.root / "norun")), "--out", ws.p("x")], 2,
                                       ["norun", "run.json"]),
}
if NO_CUDA:
    TRAIN["run-device-cuda-without-cuda"] = lambda ws: (_train(ws, run={"device": "cuda"}), 2,
                                                        ["run.device", "'cuda'", "not available"])

# ----------------------------------------------------------------------------------------------- export
EXPORT: Dict[str, Case] = {
    "max-frames-0": lambda ws: (_export(ws, "--max-frames", "0"), 2, ["--max-frames", "0", ">= 2"]),
    "max-frames-1": lambda ws: (_export(ws, "--max-frames", "1"), 2, ["--max-frames", "1"]),
    "max-batch-0": lambda ws: (_export(ws, "--max-batch", "0"), 2, ["--max-batch", "0"]),
    "max-seq-0": lambda ws: (_export(ws, "--max-seq", "0"), 2, ["--max-seq", "0"]),
    "export-device-gpu": lambda ws: (_export(ws, "--device", "gpu"), 2, ["'gpu'"]),
    "opset-12": lambda ws: (_export(ws, "--opset", "12"), 2, ["opset 12"]),
    "quantize-bogus": lambda ws: (_export(ws, "--quantize", "int3"), 2, ["'int3'"]),
    "export-dtype-bogus": lambda ws: (_export(ws, "--dtype", "int3"), 2, ["'int3'"]),
    "verify-needs-one-folder": lambda ws: (["export", "verify", "--model", str(ws.ckpt)], 2, ["--onnx"]),
    "verify-folder-without-manifest": lambda ws: (["export", "verify", "--model", str(ws.ckpt), "--onnx",
                                                   str(_mkdir(ws.root / "empty"))], 2, ["manifest.json"]),
}


def _export(ws: Ws, *extra: str) -> List[str]:
    return ["export", "onnx", "--model", str(ws.ckpt), "--out", ws.p("onnx"), *extra]


ALL: Dict[str, Case] = {
    **{f"query/{k}": v for k, v in QUERY.items()},
    **{f"checkpoint/{k}": v for k, v in CHECKPOINT.items()},
    **{f"config/{k}": v for k, v in CONFIGS.items()},
    **{f"dataset/{k}": v for k, v in DATASETS.items()},
    **{f"train/{k}": v for k, v in TRAIN.items()},
    **{f"export/{k}": v for k, v in EXPORT.items()},
}


# ------------------------------------------------------------------------------------------------ the test
@pytest.fixture(scope="session")
def media(tmp_path_factory, tiny_ckpt_dir):
    from rgpt4d_sdk.adapters.nuscenes import sample as S
    from rgpt4d_sdk.demo import write_demo_video

    root = tmp_path_factory.mktemp("bad_inputs_media")
    video = write_demo_video(root / "clip.mp4", num_frames=24)
    for i in range(5):
        _png(root / "frames" / f"f_{i}.png", value=40 * i)
    times = root / "times.txt"
    times.write_text("".join(f"{0.1 * i:.1f}\n" for i in range(5)))
    nus = S.write_sample_log(root / "nus", image_size=(160, 90))
    return tiny_ckpt_dir, video, root / "frames", times, nus


def snapshot(*roots: Path) -> Dict[str, str]:
    """Digest of every file under ``roots`` (what a failed command must leave exactly as it was)."""
    out = {}
    for root in roots:
        for path in sorted(Path(root).rglob("*")):
            if path.is_file() and not path.is_symlink():
                out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def check_result(res, code: int, fragments: Sequence[str]) -> str:
    text = res.output
    assert "Traceback" not in text, text
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert res.exit_code == code, text
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, text
    for fragment in fragments:
        assert fragment in errors[0], f"{fragment!r} not in: {errors[0]}"
    return errors[0]


@pytest.mark.parametrize("name", sorted(ALL))
def test_bad_input_cli(name, media, tmp_path, monkeypatch):
    ckpt, video, frames, times, nus = media
    monkeypatch.chdir(tmp_path)
    ws = Ws(tmp_path / "ws", ckpt, video, frames, times, nus)
    ws.root.mkdir()
    args, code, fragments = ALL[name](ws)
    before = snapshot(ws.root, ckpt, video.parent)
    res = runner.invoke(app, args)
    check_result(res, code, fragments)
    after = snapshot(ws.root, ckpt, video.parent)
    assert {k: after.get(k) for k in before} == before, "a file that existed before the command was changed"


def test_enough_cases():
    assert len(ALL) >= 70


def test_read_only_out_folder_is_a_typed_error(tmp_path, monkeypatch):
    """A read-only file system (simulated: tests run as root, where permission bits do not stop writes)."""
    import errno

    import rgpt4d_sdk.outdir as outdir

    def read_only(folder):
        raise OSError(errno.EROFS, "Read-only file system", str(folder))

    monkeypatch.setattr(outdir, "_check_writable", read_only)
    for args in (["demo", "--out", str(tmp_path / "ro")],
                 ["analyze", "nuscenes", "--data", str(tmp_path), "--nuscenes-version", "v1.0-mini", "--out", str(tmp_path / "ro2")]):
        res = runner.invoke(app, args)
        line = check_result(res, 2, ["ro", "read-only"])
        assert "cannot be written" in line
