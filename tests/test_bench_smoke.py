"""Smoke test of bench/query_latency.py: it runs on the CPU with the tiny model and writes well-formed JSON.

No timing assertions (PERFORMANCE.md: timings belong in bench/ results, never in tests).
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from rgpt4d_sdk.live import REASONS

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "query_latency.py"
STAGES = ("preprocess", "vision", "projector", "prefill", "decode", "total")


def test_query_latency_writes_stage_stats_and_metadata(tmp_path):
    out = tmp_path / "ql.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--repeats", "2", "--out", str(out)],
        cwd=str(ROOT), capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    for stage in STAGES:
        assert stage in proc.stdout  # the printed table names every stage

    data = json.loads(out.read_text(encoding="utf-8"))
    for key in ("machine", "versions", "git", "config", "stages_ms", "ttft_ms", "prompt_tokens",
                "generated_tokens", "decode_tok_s", "bounds", "notes"):
        assert key in data, key
    assert {"platform", "cpu_count", "gpu"} <= set(data["machine"])
    assert {"python", "torch", "transformers"} <= set(data["versions"])
    assert "commit" in data["git"]
    cfg = data["config"]
    assert cfg["model"] == "tiny" and cfg["device"] == "cpu" and cfg["repeats"] == 2 and cfg["frames"] == 16

    for stage in STAGES:
        stats = data["stages_ms"][stage]
        assert stats["n"] == 2
        for k in ("median", "p10", "p90"):
            assert math.isfinite(stats[k]) and stats[k] > 0, (stage, k, stats)
        assert stats["p10"] <= stats["median"] <= stats["p90"]
    assert data["ttft_ms"]["median"] > 0
    assert data["prompt_tokens"] > 16 * 9  # 17 images x (9 visual tokens + "\n") plus text
    assert data["generated_tokens"]["min"] == data["generated_tokens"]["requested"]  # stop tokens disabled
    assert data["decode_tok_s"]["median"] > 0
    assert len(data["runs"]) == 2


def test_analyze_throughput_writes_its_split(tmp_path):
    out = tmp_path / "at.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "analyze_throughput.py"), "--repeats", "1", "--max-clips", "1",
         "--cache", str(tmp_path / "cache"), "--out", str(out)],
        cwd=str(ROOT), capture_output=True, text=True, timeout=600, check=False,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "questions/s" in proc.stdout and "image decode" in proc.stdout
    data = json.loads(out.read_text(encoding="utf-8"))
    for key in ("machine", "versions", "git", "config", "runs", "median", "clips_per_s", "questions_per_s",
                "adapter_stages_s"):
        assert key in data, key
    assert data["median"]["clips"] == 3 and data["median"]["questions"] > 0  # 3 scene/camera pairs, 1 clip each
    assert set(data["adapter_stages_s"]) == {"decode", "projection_tracks", "questions", "som_media"}
    assert data["median"]["adapter_s"] > 0 and data["median"]["engine_s"] > 0


def test_ros_benches_run_and_write_results(tmp_path):
    """bench/ros_ingest.py and bench/ros_soak.py run end to end (short) against a real node process."""
    from ros_harness import require_ros

    require_ros()
    ingest, soak = tmp_path / "ingest.json", tmp_path / "soak.json"
    for cmd, out in (
        (["ros_ingest.py", "--seconds", "2", "--cameras", "2", "--width", "320", "--height", "180",
          "--transports", "default,large_images"], ingest),
        (["ros_soak.py", "--minutes", "0.25", "--sample-s", "5", "--warmup-min", "0.05", "--width", "320",
          "--height", "240", "--memprobe", str(tmp_path / "probe.jsonl"), "--probe-s", "2"], soak),
    ):
        proc = subprocess.run([sys.executable, str(ROOT / "bench" / cmd[0]), *cmd[1:], "--out", str(out),
                               "--log", str(tmp_path / f"{cmd[0]}.log")], cwd=str(ROOT), capture_output=True,
                              text=True, timeout=300, check=False)
        assert proc.returncode == 0, f"{cmd}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    for res in json.loads(ingest.read_text())["results"].values():  # default and large_images transports
        assert len(res["cameras"]) == 2 and res["published_total"] > 0 and res["node_cpu_pct"] >= 0
        assert all(0 <= c["received"] <= c["published"] for c in res["cameras"])
    res = json.loads(soak.read_text())["results"]
    assert len(res["samples"]) >= 3 and res["goals_sent"] >= 5 and res["node_exit_code"] == 0
    assert all(s["rss_mb"] > 0 for s in res["samples"]) and res["rss_after_warmup_mb"] > 0
    # RSS net of the caches' bytes, and the node's memory probe (glibc heap, objects) read into the samples
    last = res["samples"][-1]
    assert last["unaccounted_mb"] <= last["rss_mb"] and last["heap_in_use_mb"] > 0 and last["py_objects"] > 0
    assert {"reached", "rss_slope_mb_per_min", "unaccounted_slope_mb_per_min"} <= set(res["steady_state"])
    assert set(res["goal_outcomes"]) <= set(REASONS) | {"-1"}


def test_backends_cpu_part_writes_ratio_and_equal_answers(tmp_path):
    pytest.importorskip("onnxruntime", reason="the [onnx] extra is not installed")
    out = tmp_path / "backends.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "backends.py"), "--repeats", "1", "--queries", "2", "--frames", "4",
         "--out", str(out)],
        cwd=str(ROOT), capture_output=True, text=True, timeout=600, check=False,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-3000:]}"
    assert "ONNX Runtime / torch speed-up" in proc.stdout
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["same_answers"] is True and set(data["stats"]) == {"torch", "onnxruntime"}
    assert data["speedup_onnxruntime_over_torch"] > 0 and data["config"]["frames"] == 4
    assert {"machine", "versions", "git"} <= set(data) and data["versions"]["onnxruntime"]


def test_train_step_bench_runs_the_recipe_step(tmp_path):
    out = tmp_path / "ts.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "train_step.py"), "--steps", "1", "--warmup", "1", "--frames", "4",
         "--lora", "--out", str(out)],
        cwd=str(ROOT), capture_output=True, text=True, timeout=600, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["config"]["lora"] is True and data["step_s"]["n"] == 1
    assert 0 < data["params"]["trainable"] < data["params"]["total"]
    assert {"sft", "latent", "depth", "flow", "dynamic", "rays"} <= set(data["losses"])


def test_batch_questions_and_streaming_benches_report_the_work_saved(tmp_path):
    outs = {}
    for script, extra in (("batch_questions.py", ["--clips", "2", "--questions", "3", "--frames", "4", "--repeats",
                                                  "1"]),
                          ("streaming.py", ["--window", "4", "--queries", "3", "--max-new-tokens", "2"])):
        out = tmp_path / (script + ".json")
        proc = subprocess.run([sys.executable, str(ROOT / "bench" / script), *extra, "--out", str(out)],
                              cwd=str(ROOT), capture_output=True, text=True, timeout=600, check=False)
        assert proc.returncode == 0, proc.stderr[-3000:]
        outs[script] = json.loads(out.read_text(encoding="utf-8"))
    bq = outs["batch_questions.py"]
    assert bq["naive"]["encoded_images_per_query"] == 5  # 4 frames + SoM, every question
    assert bq["engine"]["encoded_images_per_query"] < 2 and bq["answers_identical"] == 1.0
    assert bq["engine"]["prefill_positions_per_query"] < bq["naive"]["prefill_positions_per_query"]
    st = outs["streaming.py"]
    assert st["naive"]["frame_encodings_per_query"] == 4 and st["engine"]["frame_encodings_per_query"] == 1
    assert st["answers_identical"] == 1.0


def test_engine_gpu_bench_runs_on_the_cpu_tiny_model(tmp_path):
    out = tmp_path / "eg.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "engine_gpu.py"), "--tiny", "--device", "cpu",
                           "--frames", "4", "--new-tokens", "4", "--questions", "3", "--repeats", "1", "--out",
                           str(out)], cwd=str(ROOT), capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text(encoding="utf-8"))
    assert set(data["decode"]) == {"dynamic", "static"} and data["batch"]["ratio"] > 0


def test_analyze_throughput_ray_mode_reports_scaling(tmp_path):
    pytest.importorskip("ray", reason="the [ray] extra is not installed")
    out = tmp_path / "at.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "analyze_throughput.py"), "--executor", "ray",
                           "--num-workers", "2", "--repeats", "1", "--max-clips", "1", "--out", str(out)],
                          cwd=str(ROOT), capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["executor"] == "ray" and set(data["clips_per_s"]) == {"1", "2"} and data["scaling"] > 0
