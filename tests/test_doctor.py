"""`rgpt4d-sdk doctor`: its JSON matches what Python itself reports on this machine, every check has a status
(and a fix where something is missing), the tested transformers range comes from the installed distribution's
metadata, and it ends with a recommendation from the planner."""
from __future__ import annotations

import importlib.metadata as md
import importlib.util
import json
import platform

import pytest
import torch
from typer.testing import CliRunner

from rgpt4d_sdk.cli import app
from rgpt4d_sdk import doctor as doc
from rgpt4d_sdk.doctor import diagnose, format_report

STATUSES = {"ok", "missing", "incompatible", "info"}


def _version(dist):
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    return diagnose()


def by_name(report):
    return {c["name"]: c for c in report["checks"]}


def test_doctor_json_matches_what_python_reports(report):
    c = by_name(report)
    assert all(x["status"] in STATUSES for x in report["checks"])
    assert all(x["fix"] for x in report["checks"] if x["status"] in ("missing", "incompatible"))
    assert c["python"]["version"] == platform.python_version()
    assert c["torch"]["version"] == torch.__version__ and c["torch"]["cuda"] == torch.version.cuda
    gpus = [x for x in report["checks"] if x["name"].startswith("gpu") and x["name"] != "gpu"]
    assert len(gpus) == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    if not gpus:
        assert c["gpu"]["status"] == "missing"
    import transformers

    assert c["transformers"]["version"] == transformers.__version__
    assert c["transformers"]["tested"] == doc.tested_range("transformers")
    if importlib.util.find_spec("onnxruntime"):
        import onnxruntime

        assert c["onnxruntime"]["version"] == onnxruntime.__version__
        assert c["onnxruntime"]["providers"] == onnxruntime.get_available_providers()
    else:
        assert c["onnxruntime"]["status"] == "missing"
    assert (c["tensorrt"]["status"] == "missing") == (importlib.util.find_spec("tensorrt") is None)
    for dist in ("nuscenes-devkit", "ray", "peft"):
        assert c[dist]["version"] == _version(dist)
        assert (c[dist]["status"] == "ok") == (_version(dist) is not None)
    if importlib.util.find_spec("rclpy") is None:
        assert c["rclpy"]["status"] == "missing"
    else:
        assert c["rclpy"]["version"] in (_version("rclpy"), _version("ros-rclpy"), "unknown")
    assert c["jetson"]["is_jetson"] == __import__("os").path.exists("/etc/nv_tegra_release")
    rec = report["recommendation"]
    assert rec["backend"] in ("torch", "onnxruntime", "tensorrt") and rec["precision"] in ("fp32", "bf16", "fp16")
    assert rec["device"] == ("cpu" if not torch.cuda.is_available() else torch.cuda.get_device_name(0))


def test_tested_range_is_read_from_the_installed_metadata():
    declared = [r for r in md.requires("rgpt4d-sdk") if r.startswith("transformers") and ";" not in r]
    assert declared and doc.tested_range("transformers") == declared[0][len("transformers"):].strip().strip("()")
    assert doc.tested_range("no-such-package") is None


def test_cache_sizes_are_the_files_in_the_cache_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("RGPT4D_CACHE", str(tmp_path / "data"))
    (tmp_path / "data" / "sub").mkdir(parents=True)
    (tmp_path / "data" / "sub" / "a.bin").write_bytes(b"x" * 1000)
    (tmp_path / "data" / "b.bin").write_bytes(b"y" * 234)
    folders = by_name(diagnose())["cache"]["folders"]
    assert folders == {"cache": {"path": str(tmp_path / "data"), "exists": True, "size_bytes": 1234}}


def test_model_and_compiled_checks(tiny_ckpt_dir, tmp_path):
    r = diagnose(model=str(tiny_ckpt_dir), compiled=str(tmp_path), device="H100")
    c = by_name(r)
    assert c["model"]["status"] == "ok" and c["model"]["summary"]["llm"]["layers"] == 2
    assert c["compiled"]["status"] == "incompatible" and "neither" in c["compiled"]["detail"]
    assert r["recommendation"]["device"] == "H100" and r["recommendation"]["precision"] == "bf16"
    assert r["recommendation"]["max_frames"] == 16 and r["recommendation"]["batch_size"] == 8
    # a TensorRT folder built elsewhere: its key names another TensorRT and GPU, and no verdict covers its files
    eng = tmp_path / "trt"
    eng.mkdir()
    (eng / "engine.json").write_text(json.dumps({"format": "rgpt4d-compiled", "format_version": 1, "precision": "fp16",
                                                 "files": {}, "key": {"tensorrt": "10.3.0",
                                                                      "compute_capability": "8.7"}}))
    c = by_name(diagnose(compiled=str(eng)))["compiled"]
    assert c["status"] == "incompatible" and c["kind"] == "tensorrt"
    assert any("compute_capability" in p or "sm 8.7" in p for p in c["problems"])
    assert any("parity" in p for p in c["problems"]) and c["fix"]
    bad = diagnose(model=str(tmp_path / "missing"))
    assert by_name(bad)["model"]["status"] == "incompatible"


def test_doctor_cli_prints_every_check_and_a_recommendation():
    runner = CliRunner()
    r = runner.invoke(app, ["doctor", "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert {c["name"] for c in data["checks"]} >= {"python", "torch", "transformers", "onnxruntime", "tensorrt",
                                                   "rclpy", "nuscenes-devkit", "ray", "peft", "cache", "jetson"}
    r = runner.invoke(app, ["doctor"])
    assert r.exit_code == 0 and "recommendation for" in r.output
    assert format_report(data).splitlines()[-1].startswith("recommendation")
    r = runner.invoke(app, ["doctor", "--device", "TPU-v5"])
    assert r.exit_code == 0 and "recommendation: unavailable" in r.output


def test_stack_check_uses_the_tested_version_matrix():
    from rgpt4d_sdk.doctor import _stack_check

    ort = {"name": "onnxruntime", "version": "1.20.1", "providers": ["TensorrtExecutionProvider", "CPUExecutionProvider"]}
    mismatch = _stack_check([ort, {"name": "tensorrt", "version": "11.1"}], jetson=False)
    assert mismatch["status"] == "incompatible" and "built against TensorRT 10.4" in mismatch["detail"]
    assert _stack_check([dict(ort, providers=["CPUExecutionProvider"]), {"name": "tensorrt", "version": None}],
                        jetson=False) is None
    jetson = _stack_check([dict(ort, providers=[]), {"name": "tensorrt", "version": "11.0"}], jetson=True)
    assert jetson["status"] == "info" and "JetPack" in jetson["detail"]
