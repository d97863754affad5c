"""One cache variable (RGPT4D_CACHE), the deprecated RGPT4D_CACHE_DIR, and the clean-up of interrupted builds."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from rgpt4d_sdk.analyze.default import ensure_tiny_checkpoint, first_run_lines
from rgpt4d_sdk.cache import cache_root, remove_interrupted, temp_name


def test_cache_root_follows_rgpt4d_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("RGPT4D_CACHE", str(tmp_path / "a"))
    monkeypatch.setenv("RGPT4D_CACHE_DIR", str(tmp_path / "b"))
    assert cache_root() == tmp_path / "a"  # the documented name wins


def test_old_variable_still_works_with_a_warning(monkeypatch, tmp_path):
    monkeypatch.delenv("RGPT4D_CACHE", raising=False)
    monkeypatch.setenv("RGPT4D_CACHE_DIR", str(tmp_path / "b"))
    with pytest.warns(FutureWarning, match="RGPT4D_CACHE_DIR is deprecated.*set RGPT4D_CACHE"):
        assert cache_root() == tmp_path / "b"


def test_default_location(monkeypatch, tmp_path):
    for name in ("RGPT4D_CACHE", "RGPT4D_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_root() == tmp_path / "rgpt4d-sdk"


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_interrupted_builds_are_removed_and_running_ones_kept(tmp_path):
    host = socket.gethostname()
    dead = tmp_path / f".x-tmp-{host}-{_dead_pid()}-abc"
    mine = tmp_path / (temp_name(".x-tmp-") + "abc")
    other_host_new = tmp_path / ".x-tmp-elsewhere-1-abc"
    other_host_old = tmp_path / ".x-tmp-elsewhere-2-abc"
    unrelated = tmp_path / "tiny-checkpoint"
    for p in (dead, mine, other_host_new, other_host_old, unrelated):
        p.mkdir()
    old = time.time() - 2 * 3600
    os.utime(other_host_old, (old, old))
    removed = remove_interrupted(tmp_path, ".x-tmp-")
    assert sorted(removed) == sorted([dead, other_host_old])
    assert mine.is_dir() and other_host_new.is_dir() and unrelated.is_dir()


def test_tiny_checkpoint_build_cleans_a_killed_build(tmp_path, monkeypatch):
    import rgpt4d_sdk.analyze.default as default

    monkeypatch.setattr(default, "FINETUNED", tmp_path / "no-shipped-copy")  # the random fallback is what is built
    killed = tmp_path / f".tiny-checkpoint.tmp-{socket.gethostname()}-{_dead_pid()}-build"
    (killed / "llm").mkdir(parents=True)
    assert any("tiny random demo checkpoint" in line for line in first_run_lines(tmp_path))
    path = ensure_tiny_checkpoint(tmp_path)
    assert (path / "config.json").is_file() and not killed.exists()
    assert not any(p.name.startswith(".tiny-checkpoint.tmp-") for p in tmp_path.iterdir())
    assert not any("tiny random demo checkpoint" in line for line in first_run_lines(tmp_path))
