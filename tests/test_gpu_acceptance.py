"""bench/gpu_acceptance.py --cpu-smoke: every part of the GPU acceptance command runs on the CPU with the tiny model
and reports what it measured; a part cut off at its time limit is reported as such and the results are still
written. Time limits are scaled up here (a loaded CI machine): this checks results, not speed (the run's own JSON
records its duration)."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_acceptance.py"
PARTS = ["doctor", "tiny", "full", "lora", "compiled", "gpu_tests"]


def run(tmp_path, *extra, timeout=3600):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--cpu-smoke", "--out", str(tmp_path), *extra],
                          cwd=str(ROOT), capture_output=True, text=True, timeout=timeout, check=False)
    data = json.loads((tmp_path / "gpu_acceptance-cpu-smoke.json").read_text())
    md = (tmp_path / "gpu_acceptance-cpu-smoke.md").read_text()
    return proc, data, md


def test_cpu_smoke_runs_every_part(tmp_path):
    proc, data, md = run(tmp_path, "--limit-scale", "12")
    parts = data["parts"]
    assert list(parts) == PARTS
    assert proc.returncode == 0, {k: (v["status"], v.get("log_tail")) for k, v in parts.items()}
    assert data["mode"] == "cpu-smoke" and data["git"]["commit"] and data["machine"]["torch"]
    for name in PARTS:
        assert f"| {name} | ok |" in md

    doctor = parts["doctor"]["result"]["doctor"]
    assert {c["name"] for c in doctor["checks"]} >= {"python", "torch", "transformers"} and doctor["recommendation"]

    tiny = parts["tiny"]["result"]
    for key in ("fp32_equals_cpu_reference", "static_equals_dynamic", "cache_and_prefix_reuse_equal_plain"):
        assert tiny[key]["identical"], (key, tiny[key])
    assert tiny["bf16_runs"]["answered"] == tiny["fp32_equals_cpu_reference"]["queries"]
    for attn in ("sdpa", "eager"):
        assert 0.9 <= tiny[f"prefill_peak_{attn}"]["ratio"] <= 1.1, tiny[f"prefill_peak_{attn}"]

    full = parts["full"]["result"]
    assert full["load"]["real_parameter_bytes"] == full["load"]["planned_weight_bytes"]
    assert full["ttft"]["ttft_cold_ms"] > 0 and full["ttft"]["prefill_tok_s"] > 0
    assert full["decode"]["dynamic"]["tokens"] == full["decode"]["static"]["tokens"] == 8
    assert full["batch_questions"]["answers_identical"] == full["batch_questions"]["questions"]

    lora = parts["lora"]["result"]["lora_step"]
    assert lora["step_s"] > 0 and lora["trainable"] > 0 and all(v == v for v in lora["losses"].values())

    compiled = parts["compiled"]["result"]
    if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnx"):
        assert compiled["ort_cpu"]["passed"], compiled["ort_cpu"]
    else:
        assert "missing" in compiled
    assert compiled["tensorrt"].startswith(("missing", "skipped"))

    tests = parts["gpu_tests"]["result"]
    assert "tests/test_gpu_paths.py" in tests["files"]
    assert tests["counts"]["failure"] == tests["counts"]["error"] == 0
    assert tests["counts"]["skipped"] == len(tests["cases"]) > 0  # no GPU here: every gpu test skips with a reason
    assert all(c["reason"] for c in tests["cases"])


def test_a_part_past_its_time_limit_is_cut_off_and_reported(tmp_path):
    proc, data, md = run(tmp_path, "--parts", "doctor,gpu_tests", "--limit-scale", "0.02", "--total-s", "100",
                         timeout=300)
    assert proc.returncode == 1
    assert [p["status"] for p in data["parts"].values()] == ["timeout", "timeout"]
    assert "| doctor | timeout |" in md and "| gpu_tests | timeout |" in md
