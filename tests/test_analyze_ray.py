"""`analyze --executor ray`: the same rows as the local executor, resume after a killed driver without duplicates,
error rows for failing clips, and Ray only imported when chosen. Runs on a local Ray with 2 CPU workers."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rgpt4d_sdk.analyze.runner import run_analysis
from rgpt4d_sdk.errors import RuntimeMissingError

ray = pytest.importorskip("ray", reason="the [ray] extra is not installed")

sys.path.insert(0, str(Path(__file__).parent))
from test_analyze import (  # noqa: E402
    _first_clip_files,
    analyze_cfg,
    broken_root,  # noqa: F401  (fixture)
    dataroot,  # noqa: F401  (fixture)
    full_run,  # noqa: F401  (fixture)
    read_rows,
    without_timings,
)


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


def _ray_cfg(root, ckpt, out, **kw):
    return analyze_cfg(root, ckpt, out, executor={"kind": "ray", "num_workers": 2}, **kw)


def test_ray_executor_gives_exactly_the_local_rows(dataroot, tiny_ckpt_dir, tmp_path, full_run, local_ray):  # noqa: F811
    ref_out, ref_stats = full_run
    stats = run_analysis(_ray_cfg(dataroot, tiny_ckpt_dir, tmp_path / "ray"))
    rows = read_rows(tmp_path / "ray" / "results.jsonl")
    assert len({r["id"] for r in rows}) == len(rows)
    assert without_timings(rows) == without_timings(read_rows(ref_out / "results.jsonl"))
    assert (stats.queries_answered, stats.errors, stats.skipped) == (ref_stats.queries_answered, ref_stats.errors,
                                                                     ref_stats.skipped)
    assert json.loads((tmp_path / "ray" / "metrics.json").read_text()) == \
        json.loads((ref_out / "metrics.json").read_text())
    again = run_analysis(_ray_cfg(dataroot, tiny_ckpt_dir, tmp_path / "ray"))  # a finished run: nothing to redo
    assert again.units_run == 0 and len(read_rows(tmp_path / "ray" / "results.jsonl")) == len(rows)


def test_a_failing_clip_becomes_an_error_row_and_the_job_completes(broken_root, tiny_ckpt_dir, tmp_path,  # noqa: F811
                                                                  local_ray):
    unit, files = _first_clip_files(broken_root)
    files[2].write_bytes(files[2].read_bytes()[:200] + b"\x00garbage" * 50)
    stats = run_analysis(_ray_cfg(broken_root, tiny_ckpt_dir, tmp_path / "out",
                                  questions={"families": ["ego_speed"], "formats": ["mc"]}))
    rows = read_rows(tmp_path / "out" / "results.jsonl")
    errors = [r for r in rows if r["status"] == "error"]
    assert [r["unit_id"] for r in errors] == [unit.id] and "cannot decode" in errors[0]["error"]
    assert stats.queries_answered == 3 and (tmp_path / "out" / "report.html").exists()


def test_killed_driver_resumes_without_duplicates(tmp_path):
    """The embedded sample (10 clips): a local run, then a ray run whose driver (and the Ray it started) is killed
    mid-run, then the same command again."""
    env = dict(os.environ, RGPT4D_CACHE=str(tmp_path / "cache"))
    cli = [sys.executable, "-m", "rgpt4d_sdk.cli", "analyze", "--no-progress"]
    ref = subprocess.run(cli + ["--out", str(tmp_path / "local")], env=env, capture_output=True, text=True,
                         timeout=600)
    assert ref.returncode == 0, ref.stderr[-2000:]
    out = tmp_path / "ray"
    args = cli + ["--out", str(out), "--executor", "ray", "--num-workers", "2"]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    results = out / "results.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if results.exists() and results.stat().st_size > 0:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run finished before it could be killed: " + proc.stderr.read().decode()[-2000:]
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray it started, all at once
    proc.wait()
    assert not (out / "report.html").exists()
    partial = read_rows(results)
    reference = read_rows(tmp_path / "local" / "results.jsonl")
    assert 0 < len(partial) < len(reference)
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming" in done.stderr
    rows = read_rows(results)
    assert len({r["id"] for r in rows}) == len(rows)  # no duplicates
    assert without_timings(rows) == without_timings(reference)


def test_ray_is_imported_only_when_chosen(monkeypatch, tmp_path):
    code = ("import sys, rgpt4d_sdk.cli, rgpt4d_sdk.analyze.runner, rgpt4d_sdk.analyze.default; "
            "assert 'ray' not in sys.modules, 'ray imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    from rgpt4d_sdk.analyze.ray_executor import ray_unit_rows

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(RuntimeMissingError, match=r"rgpt4d-sdk\[ray\]"):
        next(ray_unit_rows(None, tmp_path, ["unit"], None, print))
