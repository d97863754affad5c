"""The memory probe (glibc heap totals, tensor storages, objects by type) and the soak's analysis
(RSS slopes net of cache bytes, steady state once every cache is full)."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
import torch

from rgpt4d_sdk.live import memprobe

ROOT = Path(__file__).resolve().parents[1]


def test_census_counts_each_tensor_storage_once():
    base = torch.zeros(1000, 1000)  # 4 MB
    one = memprobe.census()
    views = [base[:10], base[5:], base.t()]  # noqa: F841 - kept alive during the second census
    three_more = memprobe.census()
    assert one["tensor_bytes"] >= 4_000_000
    assert three_more["tensor_bytes"] == one["tensor_bytes"]  # views share the storage
    assert three_more["types"]["Tensor"] >= one["types"]["Tensor"] + 3
    assert sum(three_more["types"].values()) == three_more["objects"]


def test_malloc_stats_on_glibc():
    stats = memprobe.malloc_stats()
    if stats is None:
        pytest.skip("not glibc >= 2.33 (no mallinfo2)")
    assert set(stats) >= {"in_use", "free_held", "arenas", "mmapped"}
    assert stats["in_use"] > 0 and all(v >= 0 for v in stats.values())
    blocks = [bytearray(20_000) for _ in range(2000)]  # 40 MB more in live blocks
    assert memprobe.malloc_stats()["in_use"] >= stats["in_use"] + 30_000_000
    del blocks


def test_probe_writes_json_lines_with_extra_and_stops(tmp_path):
    path = tmp_path / "probe.jsonl"
    probe = memprobe.MemProbe(path, period_s=0.05, extra=lambda: {"caches": {"vision": {"bytes": 7}}}).start()
    deadline = time.monotonic() + 30
    while (not path.exists() or len(path.read_text().splitlines()) < 2) and time.monotonic() < deadline:
        time.sleep(0.05)
    probe.stop()
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert len(lines) >= 2
    assert lines[0]["extra"] == {"caches": {"vision": {"bytes": 7}}} and lines[0]["rss"] > 0
    n = len(lines)
    time.sleep(0.2)
    assert len(path.read_text().splitlines()) == n  # stopped: nothing more is written


def test_probe_survives_a_failing_extra(tmp_path):
    def broken():
        raise KeyError("gone")

    line = memprobe.MemProbe(tmp_path / "p.jsonl", extra=broken).sample()
    assert line["extra"] == {"error": "KeyError: 'gone'"}


def test_from_env_is_off_without_the_variable(monkeypatch):
    monkeypatch.delenv(memprobe.ENV, raising=False)
    assert memprobe.from_env() is None


def _soak():
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import ros_soak
    finally:
        sys.path.remove(str(ROOT / "bench"))
    return ros_soak


def _sample(t, rss, vision, prefix=8.0, pre=32.0):
    caches = (vision + prefix + pre) * 2 ** 20 / 1e6
    return dict(t_min=t, rss_mb=rss, unaccounted_mb=round(rss - caches, 3), vision_cache_mb=vision,
                prefix_cache_mb=prefix, preencode_cache_mb=pre)


def test_soak_analysis_separates_cache_filling_from_steady_state():
    budgets = dict(prefix_cache_mb=8.0, preencode_cache_mb=32.0, vision_cache_mb=8.0)
    # the vision cache fills 2 MiB/min until minute 4, RSS follows it exactly; then both are flat
    samples = [_sample(t, 500 + 2 * 1.048576 * min(t, 4), min(2.0 * t, 8.0)) for t in range(11)]
    res = _soak().analyse(samples, budgets, warmup_min=1.0, minutes=10, full_fraction=0.97, min_steady_min=3)
    assert res["caches_full_at_min"] == 4 and res["within_budgets"]
    assert res["slope_after_warmup_mb_per_min"] > 0.5  # RSS rose while the cache filled ...
    assert abs(res["unaccounted_slope_after_warmup_mb_per_min"]) < 1e-6  # ... by exactly the cache's bytes
    st = res["steady_state"]
    assert st["reached"] and st["from_min"] == 4 and st["to_min"] == 10
    assert abs(st["rss_slope_mb_per_min"]) < 1e-9 and abs(st["unaccounted_slope_mb_per_min"]) < 1e-6


def test_soak_analysis_reports_no_steady_state_when_a_cache_never_fills():
    budgets = dict(prefix_cache_mb=8.0, preencode_cache_mb=32.0, vision_cache_mb=32.0)
    samples = [_sample(t, 500 + t, 2.0 * t) for t in range(11)]  # vision reaches 20 of 32 MiB
    res = _soak().analyse(samples, budgets, warmup_min=1.0, minutes=10, full_fraction=0.97, min_steady_min=3)
    assert res["caches_full_at_min"] is None and not res["steady_state"]["reached"]
    assert res["steady_state"]["rss_slope_mb_per_min"] is None
    over = [_sample(t, 500, 40.0) for t in range(5)]
    assert not _soak().analyse(over, budgets, 1.0, 4, 0.97, 3)["within_budgets"]
