"""A compiled model's weight file changed in place with its size, inode and mtime kept (issue 16): the digest cache
trusts it (documented in docs/compiled.md), `Engine.from_pretrained(..., verify_digests=True)` and `export verify`
catch it, and the CLI verbs that load compiled models take --verify-digests."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("onnx", reason="the [onnx] extra is not installed")
pytest.importorskip("onnxruntime", reason="the [onnx] extra is not installed")

from rgpt4d_sdk import Engine  # noqa: E402
from rgpt4d_sdk.compiled.onnx_export import export_onnx  # noqa: E402
from rgpt4d_sdk.compiled.verify import verify_cli  # noqa: E402
from rgpt4d_sdk.errors import CompiledModelError  # noqa: E402


@pytest.fixture(autouse=True)
def _hash_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RGPT4D_CACHE", str(tmp_path / "cache"))


def _sha_all(folder: Path) -> dict:
    import hashlib

    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_in_place_change_with_mtime_restored_is_caught_only_when_digests_are_verified(tiny_ckpt_dir, tmp_path):
    folder = export_onnx(tiny_ckpt_dir, tmp_path / "onnx", max_frames=4)
    Engine.from_pretrained(tiny_ckpt_dir, backend="onnxruntime", compiled=folder, force=True)  # fills the cache
    target = folder / "vision.onnx.data"
    st = target.stat()
    with open(target, "r+b") as f:  # same size, same inode: bytes of a weight flipped
        f.seek(st.st_size // 2)
        chunk = f.read(64)
        f.seek(st.st_size // 2)
        f.write(bytes(b ^ 0x5A for b in chunk))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert target.stat().st_ino == st.st_ino and target.stat().st_mtime_ns == st.st_mtime_ns
    before = _sha_all(folder)

    Engine.from_pretrained(tiny_ckpt_dir, backend="onnxruntime", compiled=folder, force=True)  # the cache trusts it
    with pytest.raises(CompiledModelError, match=r"vision\.onnx\.data does not match its recorded sha256"):
        Engine.from_pretrained(tiny_ckpt_dir, backend="onnxruntime", compiled=folder, force=True,
                               verify_digests=True)
    with pytest.raises(CompiledModelError, match=r"vision\.onnx\.data does not match its recorded sha256"):
        verify_cli(str(tiny_ckpt_dir), onnx=folder, queries=1, log=lambda s: None)  # always re-hashes
    assert _sha_all(folder) == before  # nothing was rewritten


def test_cli_verbs_that_load_compiled_models_take_verify_digests():
    from typer.testing import CliRunner

    from rgpt4d_sdk.cli import app

    runner = CliRunner()
    for verb in (["analyze", "nuscenes"], ["analyze", "rosbag"], ["ros", "serve"]):
        out = runner.invoke(app, [*verb, "--help"], terminal_width=200).output
        assert "--verify-digests" in out, verb


def test_analyze_passes_verify_digests_to_the_engine(monkeypatch, tmp_path):
    from rgpt4d_sdk.analyze import runner as R
    from rgpt4d_sdk.analyze.config import AnalyzeConfig

    seen = {}

    def fake(path, **kwargs):
        seen.update(kwargs)
        return "engine"

    monkeypatch.setattr(Engine, "from_pretrained", staticmethod(fake))
    cfg = AnalyzeConfig.from_dict({"source": "nuscenes", "nuscenes": {"dataroot": str(tmp_path), "version": "v1.0-mini"},
                                   "engine": {"model": "/m", "backend": "onnxruntime", "compiled": "/c",
                                              "verify_digests": True}})
    assert R.LazyEngine(cfg.engine).get() == "engine" and seen["verify_digests"] is True
    shutil.rmtree(tmp_path, ignore_errors=True)
