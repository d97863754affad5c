"""Issue 16 part A regressions outside the CLI table: the schema helper, device names, generation limits, a corrupt
parquet annotation file, and normal runs that print no Python warnings."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Annotated, List, Optional

import numpy as np
import pytest
import torch
from pydantic import Field

from rgpt4d_sdk.errors import ConfigError, QueryError
from rgpt4d_sdk.schema import SchemaError, check_value, describe

NO_CUDA = not torch.cuda.is_available()


# ------------------------------------------------------------------------------------------------ schema
@pytest.mark.parametrize("hint,value,words", [
    (int, "2", "an integer"),
    (int, 2.0, "an integer"),
    (int, True, "an integer"),
    (Annotated[float, Field(gt=0, le=1)], -0.5, "a number in (0, 1]"),
    (Annotated[int, Field(ge=2)], 1, "an integer >= 2"),
    (List[str], "scene-1", "a list of strings"),
    (Optional[Annotated[int, Field(ge=1)]], 0, "an integer >= 1 or null"),
    (bool, 1, "true or false"),
])
def test_schema_refuses_coercions_and_names_the_allowed_range(hint, value, words):
    with pytest.raises(SchemaError) as err:
        check_value(hint, value, "section.key")
    assert err.value.key == "section.key" and err.value.value == value
    assert f"section.key = {value!r}" in str(err.value) and words in str(err.value)
    assert isinstance(err.value, ConfigError)


@pytest.mark.parametrize("hint,value", [(float, 3), (List[float], [0.9, 1]), (Optional[int], None),
                                        (tuple[str, ...], ["a", "b"]), (str, "x")])
def test_schema_accepts_what_yaml_writes(hint, value):
    check_value(hint, value, "k")


def test_describe_reads_like_a_sentence():
    assert describe(Annotated[int, Field(ge=1, le=4)]) == "an integer in [1, 4]"
    assert describe(Annotated[str, Field(pattern="^x$", description="x or y")]) == "a string (x or y)"


def test_train_config_is_checked_before_the_model_loads(tmp_path):
    """lr < 0 used to fail inside torch.optim after the model had loaded; now the config refuses it."""
    from rgpt4d_sdk.training.config import OptimConfig, TrainConfig

    with pytest.raises(SchemaError, match=r"optim.lr = -0.002"):
        TrainConfig.from_dict({"model": str(tmp_path / "never-read"), "data": {"train": "c.json"},
                               "optim": {"lr": -0.002}})
    with pytest.raises(SchemaError, match="optim.warmup_ratio"):
        OptimConfig(warmup_ratio=5)  # built directly from Python: checked too


# ------------------------------------------------------------------------------------------------ devices
@pytest.mark.parametrize("device", ["gpu", "cuda:x", "mps", ""])
def test_unknown_device_names_are_typed_errors(tiny_ckpt_dir, device):
    from rgpt4d_sdk import Engine

    with pytest.raises(ConfigError, match="unknown"):
        Engine.from_pretrained(tiny_ckpt_dir, device=device)


@pytest.mark.skipif(not NO_CUDA, reason="checks the error on a machine without CUDA")
def test_cuda_without_cuda_is_a_typed_error(tiny_ckpt_dir):
    from rgpt4d_sdk import Engine
    from rgpt4d_sdk.model.nvila import NvilaModel

    with pytest.raises(ConfigError, match="'cuda' is not available"):
        Engine.from_pretrained(tiny_ckpt_dir, device="cuda")
    with pytest.raises(ConfigError, match="'cuda:0' is not available"):
        NvilaModel.from_pretrained(tiny_ckpt_dir, device="cuda:0")


# ---------------------------------------------------------------------------------------- generation limits
@pytest.fixture(scope="module")
def engine(tiny_ckpt_dir):
    from rgpt4d_sdk import Engine

    return Engine.from_pretrained(tiny_ckpt_dir, device="cpu", dtype="float32")


def _query():
    from rgpt4d_sdk.types import Clip, Region, RegionQuery

    images = [np.full((48, 64, 3), 40 * i, np.uint8) for i in range(3)]
    return RegionQuery(Clip.from_arrays(images, [0.0, 0.1, 0.2], source="cam.mp4"),
                       [Region(1, box=(2, 2, 20, 20))], "How fast is <obj_1>?", options=["slow", "fast"])


@pytest.mark.parametrize("limit", [0, -5, 2.5, True, "16"])
def test_max_new_tokens_must_be_a_positive_integer(engine, limit):
    with pytest.raises(QueryError, match=f"max_new_tokens={limit!r}"):
        engine.answer(_query(), max_new_tokens=limit)


def test_max_new_tokens_one_gives_one_token(engine):
    assert len(engine.answer(_query(), max_new_tokens=1).token_ids) == 1


def test_too_many_frames_names_the_clip_and_the_cli_flag(engine):
    from rgpt4d_sdk.types import Clip, RegionQuery

    clip = Clip.from_arrays([np.zeros((48, 64, 3), np.uint8)] * 20, [0.1 * i for i in range(20)], source="long.mp4")
    with pytest.raises(QueryError) as err:
        engine.answer(RegionQuery(clip, [], "What happens?", prompt_mode="plain"))
    assert "long.mp4" in str(err.value) and f"--num-frames {engine.max_frames}" in str(err.value)


# ---------------------------------------------------------------------------------------- data files
def test_a_corrupt_parquet_file_is_one_error_row_and_the_others_are_read(tmp_path):
    from rgpt4d_sdk.adapters.r4d_bench.records import ItemError, load_records

    rec = {"id": "a", "task": "speed", "video": "v.mp4", "som_image": "s.png", "question": "How fast?",
           "options": ["1 m/s", "2 m/s"], "answer": "1 m/s"}
    (tmp_path / "test.jsonl").write_text(json.dumps(rec) + "\n")  # declared record file names (RECORD_FILES)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "test-00001.parquet").write_bytes(b"PAR1 this is not parquet")
    items = load_records(tmp_path)
    errors = [i for i in items if isinstance(i, ItemError)]
    assert len(items) == 2 and len(errors) == 1
    assert errors[0].reason == "malformed_record" and "test-00001.parquet" in errors[0].message


# ---------------------------------------------------------------------------------------- no warnings
def _run(args, cwd, timeout=600):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONWARNINGS", "RGPT4D_DEBUG")}
    return subprocess.run([sys.executable, "-m", "rgpt4d_sdk.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def _no_warnings(text: str) -> None:
    lines = [line for line in text.splitlines() if "Warning" in line or "deprecated" in line.lower()]
    assert not lines, "\n".join(lines)


def test_a_normal_query_prints_no_warnings(tiny_ckpt_dir, tmp_path):
    from rgpt4d_sdk.demo import write_demo_video

    video = write_demo_video(tmp_path / "v.mp4", num_frames=8)
    proc = _run(["query", "--model", str(tiny_ckpt_dir), "--video", str(video), "--question",
                 "How fast is <obj_1>?", "--region", "1:10,50,40,80", "--option", "slow", "--option", "fast",
                 "--device", "cpu"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    _no_warnings(proc.stdout + proc.stderr)


def test_a_normal_analyze_prints_no_warnings(tiny_ckpt_dir, tmp_path):
    from rgpt4d_sdk.adapters.nuscenes import sample as S

    root = S.write_sample_log(tmp_path / "nus", image_size=(160, 90))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"nuscenes: {{dataroot: {root}, version: v1.0-mini, num_frames: 4, max_clips_per_scene: 1}}\n"
                   "questions: {families: [distance], formats: [mc]}\n")
    proc = _run(["analyze", "nuscenes", "--config", str(cfg), "--model", str(tiny_ckpt_dir), "--out",
                 str(tmp_path / "out"), "--device", "cpu", "--no-progress"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "rows: answered" in proc.stdout
    _no_warnings(proc.stdout + proc.stderr)


def test_decoding_uses_the_cache_keyword_of_the_installed_transformers():
    import inspect

    from transformers import Qwen2ForCausalLM

    from rgpt4d_sdk.engine.generate import cache_keyword

    params = inspect.signature(Qwen2ForCausalLM.forward).parameters
    assert cache_keyword(Qwen2ForCausalLM) == ("cache" if "cache" in params else "past_key_values")


def test_ros_serve_answers_a_goal_without_printing_warnings(tiny_ckpt_dir, tmp_path):
    """`ros serve` as users run it: start, answer two goals, stop on SIGINT; the log holds no Python warning."""
    from ros_harness import require_ros, served_node

    require_ros()
    from rgpt4d_interfaces.action import RegionQuery
    from rgpt4d_interfaces.msg import Region

    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    with served_node(tiny_ckpt_dir, tmp_path / "node.log", "rgpt4d_nowarn", "/nowarn/image_raw/compressed",
                     env=env) as served:
        for _ in range(2):  # the warnings came once per goal
            goal = RegionQuery.Goal(camera="cam", question="Where is <obj_1> going?", num_frames=4, duration_s=0.3)
            goal.regions = [Region(id=1, kind=Region.KIND_BOX, box=[10.0, 10.0, 40.0, 30.0])]
            out = served.ask(goal)
            assert out.code == 0, out.reason
    _no_warnings(served.log.read_text())
