"""The parts of `gpu_acceptance.py`. Each part runs in its own process, records every figure as soon as it is
measured (``rec.set``), and takes ``ctx``: device ("cuda" or "cpu"), smoke (the tiny model everywhere), workdir.

Reused, not duplicated: the naive `transformers` baseline of batch_questions.py, the training step of train_step.py,
the R4D query of _common.py, the planner (rgpt4d_sdk.plan), the CPU/CUDA memory tracer (rgpt4d_sdk.memtrace), the
parity gate (rgpt4d_sdk.compiled.verify).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Dict, List

from _common import REPO_ROOT, r4d_query, summarize, write_json


class Recorder:
    """A JSON file rewritten (atomically) after every figure, so a part killed at its time limit keeps its results."""

    def __init__(self, path: Path) -> None:
        self.path, self.data = Path(path), {}

    def set(self, key: str, value: Any) -> Any:
        self.data[key] = value
        write_json(self.path, self.data)
        return value


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def varied_queries(frames: int = 8):
    """Clips of 2..frames frames in both prompt modes, six questions on one marked clip (choice, text, number), the
    same clip with other marks and a plain query on it: the set the engine tests use."""
    from rgpt4d_sdk.compiled.samples import sample_clip, sample_queries
    from rgpt4d_sdk.types import Region, RegionQuery

    qs = sample_queries(max_frames=frames, count=6)
    clip = sample_clip(frames, 11)
    marks = [Region(1, box=(10, 40, 60, 80)), Region(2, box=(160, 100, 204, 140))]
    questions = ["How fast is <obj_1> moving?", "How far is <obj_1> from <obj_2>?", "Is <obj_2> approaching?",
                 "What colour is <obj_1>?", "Describe <obj_1> and <obj_2>.", "Which is larger, <obj_1> or <obj_2>?"]
    for i, q in enumerate(questions):
        kind = ("choice", "text", "number")[i % 3]
        qs.append(RegionQuery(clip, marks, q, options=["0 m/s", "5 m/s", "9 m/s"] if kind == "choice" else [],
                              answer_type=kind, id=f"same-{i}"))
    qs.append(RegionQuery(clip, [Region(1, box=(5, 5, 50, 50)), marks[1]], questions[0], id="other-marks"))
    qs.append(RegionQuery(clip, [], "What is happening?", prompt_mode="plain", answer_type="text", id="plain"))
    return qs


def prefill_peak_vs_plan(engine, query, arch, precision: str, attn: str) -> Dict[str, Any]:
    """Measured peak of one prefill (CPU: profiler trace; CUDA: max_memory_allocated) against the planner's
    prefill activations + prompt KV cache."""
    import torch

    from rgpt4d_sdk import plan
    from rgpt4d_sdk.engine.generate import hf_step
    from rgpt4d_sdk.memtrace import peak_bytes

    prep = engine.prepare(query, max_new_tokens=4)
    embeds = engine._prefill_inputs(prep)[None]
    step = hf_step(engine.model.llm)
    with torch.no_grad():
        _, measured = peak_bytes(lambda: step(embeds, None, None, None, None), embeds.device)
    positions = int(embeds.shape[1])
    predicted = (plan.prefill_activation_bytes(arch, positions, 1, precision, attn)
                 + plan.kv_bytes(arch, positions, 1, precision))
    return {"positions": positions, "measured_bytes": measured, "predicted_bytes": predicted,
            "ratio": predicted / measured if measured else None,
            "tracer": "torch.profiler CPU memory events" if embeds.device.type == "cpu"
            else "torch.cuda.max_memory_allocated"}


# ------------------------------------------------------------------------------------------------ parts
def part_doctor(rec: Recorder, ctx: Dict[str, Any]) -> None:
    from rgpt4d_sdk.doctor import diagnose

    rec.set("doctor", diagnose())


def part_tiny(rec: Recorder, ctx: Dict[str, Any]) -> None:
    """Tiny checkpoint on the device: fp32 = CPU reference, static/CUDA-graph = dynamic, cache + prefix reuse = plain,
    bf16 runs; prefill peak vs the planner."""
    from rgpt4d_sdk import plan
    from rgpt4d_sdk.engine.torch_backend import TorchEngine
    from rgpt4d_sdk.model.tiny import make_tiny

    dev = ctx["device"]
    ckpt = make_tiny(Path(ctx["workdir"]) / "tiny", seed=0)
    plain = dict(vision_cache_mb=0, prefix_reuse=False, decode="dynamic")
    queries = varied_queries()
    if ctx["smoke"]:
        queries = queries[:2] + queries[6:8] + queries[-1:]  # both modes, a shared clip, plain: the same paths
    n = 12 if ctx["smoke"] else 32  # tokens per answer (random weights rarely stop by themselves)
    ref = TorchEngine.load(ckpt, device="cpu", dtype="float32", **plain)
    want = [ref.answer(q, max_new_tokens=n).token_ids for q in queries]
    on_dev = TorchEngine.load(ckpt, device=dev, dtype="float32", **plain)
    got = [on_dev.answer(q, max_new_tokens=n).token_ids for q in queries]
    rec.set("fp32_equals_cpu_reference", {"identical": got == want, "queries": len(queries),
                                          "same": sum(a == b for a, b in zip(got, want))})
    static = TorchEngine.load(ckpt, device=dev, dtype="float32", vision_cache_mb=0, prefix_reuse=False,
                              decode="static")
    st = [static.answer(q, max_new_tokens=n).token_ids for q in queries]
    rec.set("static_equals_dynamic", {"identical": st == got, "cuda_graph": bool(static._static.use_graph),
                                      "same": sum(a == b for a, b in zip(st, got))})
    cached = TorchEngine.load(ckpt, device=dev, dtype="float32")
    first = [a.token_ids for a in cached.answer_many(queries, batch_size=8, max_new_tokens=n)]
    again = [a.token_ids for a in cached.answer_many(queries, batch_size=8, max_new_tokens=n)]
    rec.set("cache_and_prefix_reuse_equal_plain", {"identical": first == got and again == got,
                                                   "stats": cached.stats()})
    bf16 = TorchEngine.load(ckpt, device=dev, dtype="bfloat16", **plain)
    b = [bf16.answer(q, max_new_tokens=n) for q in queries]
    rec.set("bf16_runs", {"answered": len(b), "same_as_fp32": sum(a.token_ids == w for a, w in zip(b, want)),
                          "dtype": str(bf16.model.dtype)})
    arch = plan.arch_of(model=str(ckpt))
    q16 = r4d_query(16, size=(224, 168))
    for attn in ("sdpa", "eager"):
        eng = TorchEngine.load(ckpt, device=dev, dtype="float32", attn_implementation=attn, max_frames=16, **plain)
        rec.set(f"prefill_peak_{attn}", prefill_peak_vs_plan(eng, q16, arch, "fp32", attn))


def random_tokenizer(workdir: Path):
    """The tiny trained tokenizer (ids < 488; the full vocabulary's other rows are never looked up)."""
    from transformers import AutoTokenizer

    from rgpt4d_sdk.model.tiny import build_tokenizer

    build_tokenizer(workdir / "tok")
    return AutoTokenizer.from_pretrained(str(workdir / "tok"))


def build_random(cfgs: Dict[str, Dict[str, Any]], device: str, dtype, tokenizer, attn: str = "sdpa"):
    """NvilaModel with random weights: modules built on the meta device (no memory, no download), moved to
    ``device`` uninitialised, then filled (normal(0, 0.02); norms 1, biases 0; rotary and position buffers
    recomputed from the configs). Time does not depend on weight values."""
    import torch

    from rgpt4d_sdk.model.nvila import NvilaModel
    from rgpt4d_sdk.model.spec import ModelSpec
    from rgpt4d_sdk.model.tiny import build_modules

    vision, projector, llm = build_modules(cfgs, attn=attn, device="meta", dtype=dtype)
    gen = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for module in (vision, projector, llm):
            module.to_empty(device=device)
            for name, p in module.named_parameters():
                if p.ndim == 1 and ("norm" in name or name.startswith(("layers.1.", "layers.4."))):
                    p.fill_(1.0 if name.endswith("weight") else 0.0)
                elif p.ndim == 1:
                    p.zero_()
                else:
                    p.normal_(0.0, 0.02, generator=gen)
            for mod in module.modules():
                for bname, buf in list(mod._buffers.items()):
                    if buf is None:
                        continue
                    if hasattr(mod, "config"):
                        fresh = type(mod)(config=mod.config)  # on the CPU: computes the buffer as transformers does
                        buf.copy_(fresh._buffers[bname])
                    elif bname == "position_ids":
                        buf.copy_(torch.arange(buf.shape[-1], device=buf.device).expand(buf.shape))
    spec = ModelSpec.from_configs(cfgs["root"], cfgs["vision"], cfgs["projector"], cfgs["llm"])
    return NvilaModel(spec, vision, projector, llm, tokenizer).eval()


def part_full(rec: Recorder, ctx: Dict[str, Any]) -> None:
    """The 8B architecture with random bf16 weights (smoke: the tiny configs, fp32, same code)."""
    import torch

    from batch_questions import naive_answers
    from rgpt4d_sdk import plan
    from rgpt4d_sdk.engine.torch_backend import TorchEngine
    from rgpt4d_sdk.model.tiny import full_size_configs, tiny_configs

    dev, smoke, work = ctx["device"], ctx["smoke"], Path(ctx["workdir"])
    dtype, precision = (torch.float32, "fp32") if smoke else (torch.bfloat16, "bf16")
    tokenizer = random_tokenizer(work)
    cfgs = tiny_configs(len(tokenizer)) if smoke else full_size_configs()
    frames, new_tokens, repeats, n_questions = (8, 8, 1, 4) if smoke else (16, 64, 3, 8)
    arch = plan.Arch.from_configs(cfgs, label="tiny" if smoke else "4D-RGPT-8B")
    device = plan.detect_device(dev)
    _sync(dev)
    t0 = time.perf_counter()
    model = build_random(cfgs, dev, dtype, tokenizer)
    _sync(dev)
    load_s = time.perf_counter() - t0
    weights = plan.weight_bytes(arch, precision)
    resident = torch.cuda.memory_allocated() if dev.startswith("cuda") else None
    rec.set("load", {"seconds": load_s, "model": arch.label, "dtype": precision, "planned_weight_bytes": weights,
                     "allocated_bytes": resident, "real_parameter_bytes": sum(p.numel() * p.element_size()
                                                                            for p in model.parameters())})
    engines = {m: TorchEngine(model, max_frames=frames, decode=m) for m in ("dynamic", "static")}
    for e in engines.values():
        e.stop_ids = [-1]  # random weights stop anywhere: every answer decodes exactly new_tokens
    warm_q, query = r4d_query(frames, seed=1), r4d_query(frames, seed=0)
    eng = engines["dynamic"]
    eng.answer(warm_q, max_new_tokens=4)  # kernels and allocator warm, the measured clip not yet cached
    if dev.startswith("cuda"):
        _sync(dev)
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    ttft = lambda a: sum(a.timings[k] for k in ("preprocess", "vision", "projector", "prefill"))  # noqa: E731
    cold = eng.answer(query, max_new_tokens=new_tokens)
    warm = eng.answer(query, max_new_tokens=new_tokens)
    row = {"ttft_cold_ms": ttft(cold) * 1e3, "ttft_warm_vision_cache_ms": ttft(warm) * 1e3,
           "prompt_positions": cold.prompt_tokens,
           "prefill_tok_s": cold.prompt_tokens / max(cold.timings["prefill"], 1e-9)}
    if dev.startswith("cuda"):
        p = plan.plan_memory(arch, device, precision, frames, 1, new_tokens, decode="dynamic",
                             text_tokens=cold.prompt_tokens - (frames + 1) * arch.positions_per_frame)
        row["memory"] = {"measured_peak_bytes": torch.cuda.max_memory_allocated(), "before_bytes": base,
                         "planned_peak_bytes": p.peak_bytes - p.bytes["workspace"], "planned_stages": p.stages,
                         "ratio": (p.peak_bytes - p.bytes["workspace"]) / torch.cuda.max_memory_allocated()}
    rec.set("ttft", row)
    # the planner's bound (weights and KV cache read per step, averaged over the answer), not a copy of its sum
    from rgpt4d_sdk.weight_plan import decode_bound, weight_spec

    db = decode_bound(arch, weight_spec(precision), device.bandwidth_Bps, cold.prompt_tokens, new_tokens)
    bytes_per_token, bound = db.step_bytes, db.tok_s
    decode = {}
    for mode, e in engines.items():
        e.answer(query, max_new_tokens=new_tokens)  # warm (captures the CUDA graph for "static")
        rates = []
        for _ in range(repeats):
            a = e.answer(query, max_new_tokens=new_tokens)
            rates.append((len(a.token_ids) - 1) / max(a.timings["decode"], 1e-9))
        med = summarize(rates)["median"]
        decode[mode] = {"tok_s": med, "of_bandwidth_bound": med / bound if bound else None,
                        "tokens": len(a.token_ids)}
        rec.set("decode", {"bound_tok_s": bound, "bytes_per_token": bytes_per_token, "device": device.name,
                           **decode})
    marks = query.regions
    from rgpt4d_sdk.types import RegionQuery

    questions = [RegionQuery(query.clip, marks, f"Question {k}: how fast is <obj_1> moving?",
                             options=query.options, id=f"q{k}") for k in range(n_questions)]
    engine = TorchEngine(model, max_frames=frames, decode="dynamic")
    engine.answer_many(questions, batch_size=n_questions)  # warm
    _sync(dev)
    t0 = time.perf_counter()
    naive = naive_answers(model, engine, questions)
    _sync(dev)
    naive_s = time.perf_counter() - t0
    fresh = TorchEngine(model, max_frames=frames, decode="dynamic")  # cold vision cache, like the naive path
    t0 = time.perf_counter()
    ours = fresh.answer_many(questions, batch_size=n_questions)
    _sync(dev)
    ours_s = time.perf_counter() - t0
    rec.set("batch_questions", {"questions": n_questions, "naive_transformers_s": naive_s, "answer_many_s": ours_s,
                                  "ratio": naive_s / ours_s,
                                  "answers_identical": sum(a.token_ids == b for a, b in zip(ours, naive["tokens"]))})


def part_lora(rec: Recorder, ctx: Dict[str, Any]) -> None:
    """One LoRA training step with gradient checkpointing (train_step.py's step) against the planner."""
    import importlib.util

    import train_step

    from rgpt4d_sdk import plan

    if importlib.util.find_spec("peft") is None:
        rec.set("missing", "peft is not installed: the LoRA step is skipped (pip install 'rgpt4d-sdk[train]')")
        return
    smoke = ctx["smoke"]
    ns = argparse.Namespace(full_size=not smoke, lora=True, frames=4 if smoke else 16, micro_batch=1, steps=1,
                            warmup=1, gradient_checkpointing=True, llm_layers=None, out=None)
    r = train_step.run(ns)
    row = {"step_s": r["step_s"].get("median"), "peak_memory_gb": r["peak_memory_gb"],
           "peak_memory_kind": r["peak_memory_kind"], "trainable": r["params"]["trainable"],
           "losses": r["losses"]}
    if not smoke:
        p = plan.plan_lora_step(plan.arch_of(arch="8b"), plan.detect_device("cuda"), num_frames=16)
        row["planned"] = p
        row["ratio"] = (p["peak"] - p["workspace"]) / (r["peak_memory_gb"] * 1e9)
    rec.set("lora_step", row)


def part_compiled(rec: Recorder, ctx: Dict[str, Any]) -> None:
    """ONNX Runtime CUDA / TensorRT providers and TensorRT engines on the tiny model, each through the parity gate
    where installed; otherwise what is missing (smoke: the CPU provider, the same code)."""
    import importlib.util

    from rgpt4d_sdk.compiled.verify import verify_cli
    from rgpt4d_sdk.model.tiny import make_tiny

    missing = [m for m in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        rec.set("missing", f"{', '.join(missing)} not installed: ONNX export and ONNX Runtime skipped "
                           "(pip install 'rgpt4d-sdk[onnx-gpu]')")
        return
    import onnxruntime as ort

    from rgpt4d_sdk.compiled.onnx_export import export_onnx

    providers = ort.get_available_providers()
    rec.set("onnxruntime", {"version": ort.__version__, "providers": providers})
    wanted = [("cuda", "CUDAExecutionProvider"), ("tensorrt", "TensorrtExecutionProvider")]
    if ctx["smoke"]:
        wanted = [("cpu", "CPUExecutionProvider")]
    work = Path(ctx["workdir"])
    ckpt = make_tiny(work / "tiny", seed=0)
    t0 = time.perf_counter()
    onnx_dir = export_onnx(ckpt, work / "onnx", max_frames=8, progress=lambda m: None)
    rec.set("export_s", time.perf_counter() - t0)
    for name, prov in wanted:
        if prov not in providers:
            rec.set(f"ort_{name}", f"missing: {prov} is not available (install onnxruntime-gpu)")
            continue
        t0 = time.perf_counter()
        report = verify_cli(str(ckpt), onnx=onnx_dir, provider=name, queries=2 if ctx["smoke"] else 4,
                            log=lambda m: None)
        rec.set(f"ort_{name}", {"passed": report["passed"], "failed": report["failed"],
                                "metrics": report["metrics"], "seconds": time.perf_counter() - t0})
    if importlib.util.find_spec("tensorrt") is None:
        rec.set("tensorrt", "missing: TensorRT is not installed (pip install 'rgpt4d-sdk[tensorrt]')")
    elif not ctx["device"].startswith("cuda"):
        rec.set("tensorrt", "skipped: TensorRT engines need a CUDA GPU")
    else:
        from rgpt4d_sdk.compiled.trt_build import build_engines

        t0 = time.perf_counter()
        engines = build_engines(onnx_dir, work / "trt", log=lambda m: None)
        build_s = time.perf_counter() - t0
        report = verify_cli(str(ckpt), engine=engines, queries=4, log=lambda m: None)
        rec.set("tensorrt", {"build_s": build_s, "passed": report["passed"], "failed": report["failed"],
                             "metrics": report["metrics"]})


def gpu_test_files() -> List[str]:
    """Test files holding gpu-marked tests."""
    return sorted(str(p.relative_to(REPO_ROOT)) for p in (REPO_ROOT / "tests").glob("test_*.py")
                  if "mark.gpu" in p.read_text(encoding="utf-8", errors="replace"))


def part_gpu_tests(rec: Recorder, ctx: Dict[str, Any]) -> None:
    """pytest -m gpu, one test file after the other (results recorded after each file, so a cut-off run keeps the
    files it finished): counts, failures and skip reasons."""
    import importlib.util

    if importlib.util.find_spec("pytest") is None:
        rec.set("missing", "pytest is not installed: carry it (pure Python) or pip install pytest")
        return
    files = gpu_test_files()
    rec.set("files", files)
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    deadline = time.monotonic() + float(ctx.get("limit_s", 600))
    cases: List[Dict[str, Any]] = []
    tails: Dict[str, str] = {}
    for path in files:
        junit = Path(ctx["workdir"]) / (Path(path).stem + ".xml")
        cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-rs", "-p", "no:cacheprovider",
               f"--junitxml={junit}", path]
        try:
            proc = subprocess.run(cmd, cwd=str(REPO_ROOT), env=env, capture_output=True, text=True, check=False,
                                  timeout=max(1.0, deadline - time.monotonic()))
            tails[path] = (proc.stdout[-1500:] + proc.stderr[-500:]) if proc.returncode not in (0, 5) else ""
        except subprocess.TimeoutExpired:
            tails[path] = "cut off at the part's time limit"
            cases.append({"test": path, "outcome": "error", "reason": "time limit"})
        if junit.is_file():
            for case in ET.parse(junit).getroot().iter("testcase"):
                outcome, reason = "passed", None
                for child in case:
                    if child.tag in ("failure", "error", "skipped"):
                        outcome, reason = child.tag, (child.get("message") or "")[:300]
                cases.append({"test": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome,
                              "reason": reason})
        rec.set("cases", cases)
        rec.set("counts", {k: sum(c["outcome"] == k for c in cases) for k in ("passed", "failure", "error",
                                                                               "skipped")})
        rec.set("tails", {k: v for k, v in tails.items() if v})


PARTS = {"doctor": part_doctor, "tiny": part_tiny, "full": part_full, "lora": part_lora,
         "compiled": part_compiled, "gpu_tests": part_gpu_tests}


def summary_line(name: str, result: Dict[str, Any]) -> str:
    """The key figures of a part, for the Markdown table."""
    r = result or {}
    if name == "doctor" and "doctor" in r:
        rec = r["doctor"].get("recommendation", {})
        bad = [c["name"] for c in r["doctor"]["checks"] if c["status"] in ("missing", "incompatible")]
        return f"recommendation {json.dumps({k: rec.get(k) for k in ('backend', 'precision', 'max_frames')})}; " \
               f"missing/incompatible: {', '.join(bad) or 'none'}"
    if name == "tiny":
        keys = ("fp32_equals_cpu_reference", "static_equals_dynamic", "cache_and_prefix_reuse_equal_plain")
        parts = [f"{k}: {r[k]['identical']}" for k in keys if k in r]
        parts += [f"prefill peak {a} plan/measured {r[f'prefill_peak_{a}']['ratio']:.3f}"
                  for a in ("sdpa", "eager") if f"prefill_peak_{a}" in r]
        return "; ".join(parts)
    if name == "full":
        out = []
        if "load" in r:
            out.append(f"load {r['load']['seconds']:.1f} s")
        if "ttft" in r:
            t = r["ttft"]
            out.append(f"TTFT cold {t['ttft_cold_ms']:.0f} ms, warm {t['ttft_warm_vision_cache_ms']:.0f} ms, "
                       f"prefill {t['prefill_tok_s']:.0f} tok/s")
            if "memory" in t:
                out.append(f"peak plan/measured {t['memory']['ratio']:.3f}")
        for mode in ("dynamic", "static"):
            d = r.get("decode", {}).get(mode)
            if d:
                frac = f" ({d['of_bandwidth_bound']:.0%} of bound)" if d["of_bandwidth_bound"] else ""
                out.append(f"decode {mode} {d['tok_s']:.1f} tok/s{frac}")
        if "batch_questions" in r:
            b = r["batch_questions"]
            out.append(f"{b['questions']} questions on one clip vs naive {b['ratio']:.2f}x")
        return "; ".join(out)
    if name == "lora" and "missing" in r:
        return r["missing"]
    if name == "lora" and "lora_step" in r:
        s = r["lora_step"]
        ratio = f", plan/measured {s['ratio']:.2f}" if "ratio" in s else ""
        return f"step {s['step_s']:.2f} s, peak {s['peak_memory_gb']:.2f} GB ({s['peak_memory_kind']}){ratio}"
    if name == "compiled":
        return "; ".join(f"{k}: {v if isinstance(v, str) else ('passed' if v.get('passed') else 'FAILED')}"
                         for k, v in r.items() if k.startswith(("ort_", "tensorrt")) or k == "missing")
    if name == "gpu_tests":
        if "counts" in r:
            return ", ".join(f"{k} {v}" for k, v in r["counts"].items()) + f" ({len(r.get('files', []))} files)"
        return r.get("missing", "")
    return re.sub(r"\s+", " ", json.dumps(r))[:200]
