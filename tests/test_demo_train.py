"""The fine-tuning demo: random scenes and their split, the baselines, and the whole chain in its smallest size.

`test_demo_train_chain_ci_size` runs `rgpt4d-sdk demo train --size ci` (sample log -> export-conversations ->
make-tiny -> train SFT and SFT + P4D -> train export -> analyze held-out x3 -> metrics) as a user would; it takes a
few minutes on 2 CPU cores, most of it starting the child processes.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from rgpt4d_sdk.adapters.nuscenes.random_scenes import random_scene, split_seeds, write_split_logs
from rgpt4d_sdk.demo_train import baselines as B

from rgpt4d_sdk.errors import ConfigError
from rgpt4d_sdk.eval.questions import FAMILIES

pytest.importorskip("nuscenes")
ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------- scenes
def test_random_scenes_are_seeded_and_varied():
    a, b = random_scene(7), random_scene(7)
    assert a.description == b.description and [o.start for o in a.objects] == [o.start for o in b.objects]
    scenes = [random_scene(s) for s in range(40)]
    counts = Counter(len(s.objects) for s in scenes)
    assert min(counts) >= 2 and max(counts) <= 6 and len(counts) >= 4
    speeds = [float(np.hypot(*o.velocity[:2])) for s in scenes for o in s.objects]
    assert sum(v == 0 for v in speeds) >= 10 and max(speeds) > 8  # static and fast road users
    ego = [float(np.hypot(*s.ego_velocity[:2])) for s in scenes]
    assert min(ego) == 0.0 and max(ego) > 9 and len({round(s.ego_heading, 3) for s in scenes}) == 40
    kinds = {o.category for s in scenes for o in s.objects}
    assert {"vehicle.car", "human.pedestrian.adult", "vehicle.bicycle", "vehicle.truck"} <= kinds


def test_split_seeds_never_overlap_and_bad_sizes_are_refused():
    train, held = split_seeds(100, 30, seed=2)
    assert len(train) == 100 and len(held) == 30 and not set(train) & set(held)
    assert not set(held) & set(split_seeds(400, 1, seed=2)[0])  # a bigger training split still does not reach it
    for bad in (0, -1, True, 2.5):
        with pytest.raises(ConfigError, match="n_train"):
            split_seeds(bad, 3)
    with pytest.raises(ConfigError, match="seed"):
        split_seeds(3, 3, seed=-1)


def test_split_logs_are_written_with_a_manifest(tmp_path):
    roots = write_split_logs(tmp_path, 2, 1, seed=3, image_size=(160, 90), lidar=False)
    manifest = json.loads((tmp_path / "scenes.json").read_text())
    assert [s["seed"] for s in manifest["train"]] == split_seeds(2, 1, 3)[0]
    assert [s["seed"] for s in manifest["heldout"]] == split_seeds(2, 1, 3)[1]
    for split, n in (("train", 2), ("heldout", 1)):
        scenes = json.loads((roots[split] / "v1.0-mini" / "scene.json").read_text())
        assert len(scenes) == n


# ---------------------------------------------------------------------------------------------- baselines
def _row(i, task, fmt, truth, choice=None, value=None, clip="c0", options=4, matched_by=None):
    if fmt == "mc" and matched_by is None:
        matched_by = "letter" if choice else "none"
    return {"id": f"{clip}/{task}/{i}/{fmt}", "unit_id": clip, "status": "ok", "task": task, "format": fmt,
            "truth": truth, "options": [f"o{k}" for k in range(options)] if fmt == "mc" else [],
            "answer_choice": choice, "answer_value": value, "matched_by": matched_by}


def test_family_table_baselines_and_intervals(tmp_path):
    truths = ["A", "B", "B", "C", "B", "D", "B", "A"]
    model = [_row(i, "speed", "mc", t, choice="B", clip=f"c{i % 4}") for i, t in enumerate(truths)]
    model += [_row(i, "distance", "numeric", 10.0 + i, value=10.0 + i, clip=f"c{i % 4}") for i in range(4)]
    model[1]["matched_by"] = "option_text"  # the reply was option B's whole text
    untrained = [dict(r, answer_choice=None, answer_value=None, matched_by="none" if r["format"] == "mc" else None)
                 for r in model]
    conv = [{"task": "speed", "format": "mc", "conversations": [{}, {"value": v}]}
            for v in ("(C) 4 m/s", "(C) 1 m/s", "(A) 2 m/s")]
    conv += [{"task": "distance", "format": "numeric", "conversations": [{}, {"value": f"{v} m"}]}
             for v in (9.0, 11.0, 13.0)]
    path = tmp_path / "conv.json"
    path.write_text(json.dumps(conv))
    priors = B.training_priors(path)
    assert priors["speed"]["letters"] == Counter({"C": 2, "A": 1}) and priors["distance"]["values"] == [9, 11, 13]
    table = B.family_table({"base": untrained, "tuned": model}, priors, resamples=500)
    mc = table["speed/mc"]
    assert mc["n"] == 8 and mc["clips"] == 4 and mc["training_letter"] == "C"
    assert mc["baselines"] == {"always_A": 0.25, "most_frequent_training_letter": 0.125}
    assert mc["best_constant"] == {"name": "always_A", "score": 0.25}
    tuned = mc["models"]["tuned"]
    assert tuned["score"] == 0.5 and tuned["parse_rate"] == 1.0 and tuned["above_best_constant"]
    assert tuned["matched_by"] == {"letter": 7, "option_text": 1, "none": 0}
    assert mc["models"]["base"]["matched_by"] == {"letter": 0, "option_text": 0, "none": 8}
    assert "matched_by" not in table["distance/numeric"]["models"]["tuned"]
    lo, hi = tuned["interval"]
    assert 0.0 <= lo <= 0.5 <= hi <= 1.0 and hi - lo > 0.1
    assert mc["models"]["base"]["score"] == 0.0 and mc["models"]["base"]["parse_rate"] == 0.0
    num = table["distance/numeric"]
    assert num["training_median"] == 11.0 and num["models"]["tuned"]["score"] == 1.0
    assert num["models"]["tuned"]["interval"] == [1.0, 1.0]
    assert num["baselines"]["training_median"] == pytest.approx(np.mean([B.mra(11.0, t) for t in (10, 11, 12, 13)]))
    s = B.summary(table, {"base": untrained, "tuned": model}, "tuned")
    assert s == {"model": "tuned", "parse_rate": 1.0, "mc_matched_by": {"letter": 7, "option_text": 1, "none": 0},
                 "mc_families": 1, "mc_families_above_best_constant": 1, "mc_families_interval_above_best_constant": 0}


def test_parse_rate_counts_only_valid_options_and_numbers():
    assert B.parsed(_row(0, "x", "mc", "A", choice="B", options=2))
    assert not B.parsed(_row(0, "x", "mc", "A", choice="C", options=2))  # no option C
    assert not B.parsed(_row(0, "x", "mc", "A", choice=None))
    assert not B.parsed(_row(0, "x", "mc", "A", choice="A", matched_by="none"))  # the strict scorer picked nothing
    assert B.parsed(_row(0, "x", "numeric", 3.0, value=0.0)) and not B.parsed(_row(0, "x", "numeric", 3.0))


def test_bootstrap_interval_is_seeded_and_clustered():
    scores, clusters = [1, 1, 1, 0, 0, 0], ["a", "a", "a", "b", "b", "b"]
    one = B.bootstrap_interval(scores, clusters, resamples=300, seed=1)
    assert one == B.bootstrap_interval(scores, clusters, resamples=300, seed=1)
    assert one == (0.0, 1.0)  # two clusters: a resample is all of one, all of the other, or half
    assert B.bootstrap_interval([], [], 10) == (None, None)


# ---------------------------------------------------------------------------------------------- the chain
def _demo(out: Path, env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rgpt4d_sdk.cli", "demo", "train", "--size", "ci", "--out", str(out),
                           "--seed", "1"], capture_output=True, text=True, timeout=900, env=env)


def test_demo_train_chain_ci_size(tmp_path):
    env = dict(os.environ, RGPT4D_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    out = tmp_path / "demo"
    proc = _demo(out, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[10/10] analyze held-out (sft_p4d)" in proc.stderr and "above the best constant" in proc.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["summary"]) == {"base", "sft", "sft_p4d"}
    assert metrics["training"]["sft_p4d"]["last"].keys() >= {"sft", "depth", "rays", "dynamic"}
    assert "depth" not in metrics["training"]["sft"]["last"]
    assert not set(metrics["scenes"]["train"]) & set(metrics["scenes"]["heldout"])
    families = metrics["families"]
    assert any(k.endswith("/mc") for k in families) and any(k.endswith("/numeric") for k in families)
    assert "direction/mc" not in families  # issue 15's families: motion_state, radial_motion, crossing
    assert {e["family"] for e in families.values()} <= set(FAMILIES)
    for m in ("base", "sft", "sft_p4d"):
        assert metrics["models"][m]["checkpoint"] == f"models/{m}"  # relative to the run folder
        assert (out / metrics["models"][m]["results"] / "results.jsonl").is_file()
        how = metrics["summary"][m]["mc_matched_by"]
        assert set(how) == {"letter", "option_text", "none"} and sum(how.values()) == sum(
            e["n"] for e in families.values() if e["format"] == "mc")
    for entry in families.values():
        assert entry["best_constant"]["score"] is not None
        for m in ("base", "sft", "sft_p4d"):
            lo, hi = entry["models"][m]["interval"]
            assert lo - 1e-9 <= entry["models"][m]["score"] <= hi + 1e-9
    report = (out / "report.md").read_text()
    assert "not 4D-RGPT" in report and "always A" in report

    base = _layout(out / "models" / "base")
    for name in ("sft", "sft_p4d"):
        assert _layout(out / "models" / name) == base  # exactly the base layout: no P4D tensors, same dtypes
        assert json.loads((out / "models" / name / "TRAINED_FROM.json").read_text())["p4d"] == "removed"

    # Again, through bench/demo_train.py: every step is cached, the numbers are the same, the JSON is written.
    target = tmp_path / "bench.json"
    again = subprocess.run([sys.executable, str(ROOT / "bench" / "demo_train.py"), "--out", str(out), "--size", "ci",
                            "--seed", "1", "--json", str(target)], capture_output=True, text=True, timeout=300,
                           env=env, cwd=str(ROOT))
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count(": cached") == 10 and "best constant" in again.stdout
    assert json.loads((out / "metrics.json").read_text())["families"] == families
    data = json.loads(target.read_text())
    assert {"machine", "versions", "git", "timings", "families", "summary", "training"} <= set(data)
    assert len(data["timings"]) == 6 and all(t["wall_s"] > 0 and t["cpu_s"] > 0 for t in data["timings"].values())


# ---------------------------------------------------------------------------------------------- the shipped model
def _layout(folder: Path) -> dict:
    from safetensors import safe_open

    found = {}
    for f in sorted(Path(folder).rglob("*.safetensors")):
        with safe_open(str(f), "pt") as st:
            for k in st.keys():
                found[(f.parent.name, k)] = (tuple(st.get_slice(k).get_shape()), st.get_slice(k).get_dtype())
    return found


def test_shipped_finetuned_checkpoint_has_the_base_layout(tmp_path):
    from rgpt4d_sdk.analyze.default import FINETUNED, FINETUNED_NOTICE, default_checkpoint, default_notice
    from rgpt4d_sdk.model.tiny import make_tiny

    assert (FINETUNED / "config.json").is_file(), "the fine-tuned tiny checkpoint must ship with the package"
    assert _layout(FINETUNED) == _layout(make_tiny(tmp_path / "base"))  # no P4D tensors, same names and dtypes
    trained = json.loads((FINETUNED / "TRAINED_FROM.json").read_text())
    assert trained["p4d"] == "removed"
    size = sum(p.stat().st_size for p in FINETUNED.rglob("*") if p.is_file())
    assert size < 4e6  # a few MB at most
    assert default_checkpoint(tmp_path) == (FINETUNED, FINETUNED_NOTICE) and "not 4D-RGPT" in default_notice()


def test_shipped_finetuned_checkpoint_answers_identically_on_onnxruntime(tmp_path, monkeypatch):
    """torch vs ONNX Runtime fp32 on the parity gate's queries and on real held-out questions (analyze on a fresh
    random log, row by row); the fp16 export passes the fp16 gate."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from rgpt4d_sdk.analyze.config import AnalyzeConfig
    from rgpt4d_sdk.analyze.default import FINETUNED
    from rgpt4d_sdk.analyze.runner import run_analysis
    from rgpt4d_sdk.compiled.onnx_export import export_onnx
    from rgpt4d_sdk.compiled.verify import verify_cli

    monkeypatch.setenv("RGPT4D_CACHE", str(tmp_path / "hash-cache"))
    fp32 = export_onnx(FINETUNED, tmp_path / "fp32")
    report = verify_cli(str(FINETUNED), onnx=fp32, queries=4, log=lambda m: None)
    assert report["passed"] and report["metrics"]["answers"] == 1.0, report
    roots = write_split_logs(tmp_path / "log", 1, 1, seed=7, lidar=False)
    rows = {}
    for backend, compiled in (("torch", None), ("onnxruntime", str(fp32))):
        out = tmp_path / backend
        cfg = AnalyzeConfig.from_dict({
            "source": "nuscenes", "out": str(out),
            "nuscenes": {"dataroot": str(roots["heldout"]), "version": "v1.0-mini"},
            "engine": {"model": str(FINETUNED), "device": "cpu", "dtype": "float32", "backend": backend,
                       "compiled": compiled}})
        run_analysis(cfg)
        rows[backend] = {r["id"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    assert rows["torch"].keys() == rows["onnxruntime"].keys() and len(rows["torch"]) > 20
    for key, row in rows["torch"].items():
        assert row["status"] == "ok" and row["answer_text"] == rows["onnxruntime"][key]["answer_text"], key
    fp16 = export_onnx(FINETUNED, tmp_path / "fp16", dtype="float16", max_frames=8)
    report = verify_cli(str(FINETUNED), onnx=fp16, queries=4, log=lambda m: None)
    assert report["precision"] == "fp16" and report["passed"], report["failed"]


def test_steps_are_cached_until_an_earlier_step_runs_again(tmp_path):
    from rgpt4d_sdk.demo_train.pipeline import DemoError, _Steps

    def cmd(tag: str, code: str = "pass") -> list:
        return [sys.executable, "-c", code, tag]  # the cache key is everything after the first three items

    def chain(first: str, out_b: Path, fail: bool = False) -> list:
        lines: list = []
        steps = _Steps(tmp_path, lines.append, total=3, jobs=2)
        steps.run("a", cmd(first))
        write_b = f"import os; os.makedirs({str(out_b)!r}, exist_ok=True); open({str(out_b / 'x')!r}, 'w')"
        steps.run_group([("b", cmd("b", write_b), out_b, None, True),
                         ("c", cmd("c", "raise SystemExit(3)" if fail else "pass"), None, None, False)])
        return lines

    out_b = tmp_path / "b-out"
    out_b.mkdir()
    (out_b / "stale").write_text("old")
    first = chain("v1", out_b)
    assert not any(": cached" in line for line in first) and not (out_b / "stale").exists()  # a ran: b from scratch
    assert all(line.endswith(": cached") for line in chain("v1", out_b) if line.startswith("["))
    (out_b / "stale").write_text("partial")
    done = json.loads((tmp_path / "steps.json").read_text())
    del done["b"]  # b was interrupted: it resumes in its folder
    (tmp_path / "steps.json").write_text(json.dumps(done))
    resumed = chain("v1", out_b)
    assert [line.rsplit(": ", 1)[-1] for line in resumed if line.startswith("[")] == ["cached", "rgpt4d-sdk b",
                                                                                       "cached"]
    assert (out_b / "stale").exists()
    again = chain("v2", out_b)  # a changed: b and c run again, b's folder is cleared first
    assert not any(": cached" in line for line in again) and not (out_b / "stale").exists()
    with pytest.raises(DemoError, match="step 'c' failed"):
        chain("v3", out_b, fail=True)
    timings = json.loads((tmp_path / "timings.json").read_text())
    assert set(timings) == {"a", "b", "b + c"}  # wall and CPU seconds of each group of steps that ran


def test_readme_quotes_the_committed_demo_run():
    """The README's demo numbers are exactly those of bench/results/demo_train-cpu-tiny.json."""
    from rgpt4d_sdk.demo_train.report import readme_summary, readme_table

    results = json.loads((ROOT / "bench" / "results" / "demo_train-cpu-tiny.json").read_text())
    readme = (ROOT / "README.md").read_text()
    assert readme_summary(results) in " ".join(readme.split())
    for line in readme_table(results):
        assert line in readme, line
    assert results["size"] == "full" and results["summary"]["sft"]["mc_families"] >= 6
