"""`rgpt4d-sdk query` on an image folder, and its error paths (exit code 2, an 'error:' line, no traceback)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from rgpt4d_sdk.cli import app, parse_region
from rgpt4d_sdk.errors import QueryError

runner = CliRunner()


@pytest.fixture()
def frames_dir(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)).save(folder / f"f_{i}.png")
    times = tmp_path / "times.txt"
    times.write_text("\n".join(str(100.0 + 0.2 * i) for i in range(5)) + "\n")
    return folder, times


def test_query_on_image_folder_json(tiny_ckpt_dir, frames_dir):
    folder, times = frames_dir
    res = runner.invoke(app, ["query", "--model", str(tiny_ckpt_dir), "--images", str(folder), "--timestamps",
                              str(times), "--region", "1:10,10,50,40", "--region", "2:poly=60,10,100,10,80,60",
                              "--question", "Is <obj_1> left of <obj_2>?", "--option", "yes", "--option", "no",
                              "--device", "cpu", "--dtype", "float32", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["timestamps_s"] == pytest.approx([100.0, 100.2, 100.4, 100.6, 100.8])
    assert out["generated_tokens"] >= 1


@pytest.mark.parametrize("args,phrase", [
    (["--question", "q?"], "exactly one of --video"),
    (["--images", "FOLDER", "--question", "q?"], "--timestamps"),
    (["--images", "FOLDER", "--timestamps", "TIMES", "--region", "x:1,2,3,4", "--question", "<obj_1>?"], "region"),
    (["--images", "FOLDER", "--timestamps", "TIMES", "--region", "1:0,0,500,40", "--question", "<obj_1>?"],
     "leaves the 120x90"),
    (["--images", "FOLDER", "--timestamps", "TIMES", "--question", "Where is <obj_3>?"], "<obj_3>"),
    (["--images", "FOLDER", "--timestamps", "TIMES", "--question", "   "], "question is empty"),
])
def test_query_errors_exit_2(tiny_ckpt_dir, frames_dir, args, phrase):
    folder, times = frames_dir
    args = [a.replace("FOLDER", str(folder)).replace("TIMES", str(times)) for a in args]
    res = runner.invoke(app, ["query", "--model", str(tiny_ckpt_dir), *args])
    assert res.exit_code == 2
    assert "error:" in res.output and phrase in res.output


def test_parse_region_forms():
    assert parse_region("3:1,2,30,40").box == (1.0, 2.0, 30.0, 40.0)
    assert parse_region("2:poly=0,0,10,0,5,5").polygon == [(0, 0), (10, 0), (5, 5)]
    with pytest.raises(QueryError, match="4 numbers|cannot be read"):
        parse_region("1:1,2,3")
