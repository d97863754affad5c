"""A normal (non-editable) install maps adapters/, calib/ and training/ into rgpt4d_sdk.* and ships no top-level
packages of those generic names."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_maps_folders_into_the_package(tmp_path):
    pytest.importorskip("wheel", reason="building a wheel without isolation needs the 'wheel' package")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path)],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = tmp_path.glob("rgpt4d_sdk-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for pkg in ("adapters", "adapters/nuscenes", "calib", "training", "model", "engine", "prompt", "eval", "analyze",
                "compiled"):
        assert f"rgpt4d_sdk/{pkg}/__init__.py" in names
    assert "rgpt4d_sdk/adapters/nuscenes/source.py" in names and "rgpt4d_sdk/calib/boxes.py" in names
    assert "rgpt4d_sdk/configs/analyze_nuscenes.yaml" in names
    assert "rgpt4d_sdk/training/configs/demo_tiny.yaml" in names and "rgpt4d_sdk/demo_train/pipeline.py" in names
    shipped = "rgpt4d_sdk/assets/tiny-finetuned/"  # the embedded default's fine-tuned tiny model
    for name in ("config.json", "llm/tokenizer.json", "mm_projector/model.safetensors"):
        assert shipped + name in names
    assert not any(n.split("/")[0] in ("adapters", "calib", "training", "tests", "bench") for n in names)
    entry = [n for n in names if n.endswith("entry_points.txt")]
    assert entry and "rgpt4d-sdk = rgpt4d_sdk.cli:main" in zipfile.ZipFile(wheel).read(entry[0]).decode()
