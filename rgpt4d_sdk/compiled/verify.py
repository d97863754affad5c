"""The parity gate: a compiled engine against the fp32 eager torch path, on the same queries.

Three measures, each with a threshold per precision:
- ``vision_rel``: relative L2 error of the visual embeddings (SigLIP + TPE + projector), worst query;
- ``logits_rel``: relative L2 error of the first generated position's logits, worst query;
- ``answers``: share of queries whose greedy token ids are identical (and ``first_token``, whose first token is),
  also per question family (``answers_by_family``: the query's task, else its answer type);
- int4 exports also get ``weights_rel``: the relative L2 error of every quantized LLM weight as the graph
  dequantizes it (AWQ scales divided out) against the checkpoint's, worst layer, with the per-layer list.
A report is written to the compiled folder's verify.json for the target it ran on; loaders refuse an engine without
a passing report for exactly its files and weights (unless forced). The weights key is part of the verdict: an engine
built from another checkpoint fails even if its numbers happen to be close.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

from ..engine.generate import greedy_generate
from ..types import RegionQuery
from .artifacts import files_digest, write_verdict
from .samples import sample_queries

# Worst-query limits. fp32 must match the reference to float rounding; lower precisions are held to what a
# faithful build reaches (the official code lost ~8 R4D points to an attention-backend change: greedy answers are
# the measure that catches that, so their floor stays high).
THRESHOLDS: Dict[str, Dict[str, float]] = {
    "fp32": {"vision_rel": 1e-4, "logits_rel": 1e-3, "answers": 1.0},
    "fp16": {"vision_rel": 1e-2, "logits_rel": 2e-2, "answers": 0.9},
    "bf16": {"vision_rel": 3e-2, "logits_rel": 5e-2, "answers": 0.85},
    "int8": {"vision_rel": 1e-1, "logits_rel": 1e-1, "answers": 0.75},
    "fp8": {"vision_rel": 1e-1, "logits_rel": 1e-1, "answers": 0.75},
    # weight-only 4-bit LLM (vision stays in the float type); docs/compiled.md gives the measurements behind these
    "int4": {"vision_rel": 1e-2, "logits_rel": 1.5e-1, "answers": 0.6, "weights_rel": 0.15},
}


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def verify_engine(engine, reference, weights: str, queries: Optional[Sequence[RegionQuery]] = None,
                  precision: Optional[str] = None, thresholds: Optional[Dict[str, float]] = None,
                  write: bool = True, progress: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
    """Compare ``engine`` (a CompiledEngine loaded with force=True) with ``reference`` (a TorchEngine in fp32).

    ``weights``: the fingerprint of the checkpoint the reference was loaded from. Returns the report (and writes
    it to the engine's folder unless ``write`` is False)."""
    say = progress or (lambda msg: None)
    precision = precision or engine.manifest["precision"]
    limits = {**THRESHOLDS[precision], **(thresholds or {})}
    qs = list(queries) if queries else sample_queries(max_frames=min(engine.max_frames, reference.max_frames))
    t0 = time.perf_counter()
    rows: List[Dict[str, Any]] = []
    for q in qs:
        prep = engine.prepare(q)
        vis, gen = engine.probe(prep)
        ref_prep = reference.prepare(q)
        ref_vis = reference._image_embeds(ref_prep)
        ref_fused = reference.model.fuse(ref_prep.input_ids, ref_vis).inputs_embeds
        ref_gen = greedy_generate(reference.model.llm, [ref_fused], reference.stop_ids, ref_prep.max_new_tokens)[0]
        rows.append({
            "id": q.id, "images": len(prep.images),
            "vision_rel": _rel(vis.float().cpu(), ref_vis.float().cpu()),
            "logits_rel": _rel(gen.first_logits, ref_gen.first_logits),
            "first_token": int(gen.first_logits.argmax()) == int(ref_gen.first_logits.argmax()),
            "answer_equal": gen.token_ids == ref_gen.token_ids,
            "tokens": len(ref_gen.token_ids), "prompt_positions": int(ref_fused.shape[0]),
            "family": q.task or q.answer_type,
        })
        say(f"  {q.id}: vision {rows[-1]['vision_rel']:.2e}  logits {rows[-1]['logits_rel']:.2e}  "
            f"answer {'same' if rows[-1]['answer_equal'] else 'DIFFERENT'}")
    metrics = {
        "vision_rel": max(r["vision_rel"] for r in rows),
        "logits_rel": max(r["logits_rel"] for r in rows),
        "answers": sum(r["answer_equal"] for r in rows) / len(rows),
        "first_token": sum(r["first_token"] for r in rows) / len(rows),
        "answers_by_family": {f: sum(r["answer_equal"] for r in rows if r["family"] == f) /
                              sum(1 for r in rows if r["family"] == f) for f in sorted({r["family"] for r in rows})},
    }
    layers = None
    if engine.manifest.get("int4"):
        # a TensorRT engine folder records the ONNX export it was built from, whose graphs hold the weights
        layers = int4_weight_errors(engine.manifest.get("onnx_dir") or engine.folder, engine.manifest,
                                    reference.model)
        metrics["weights_rel"] = max(layers.values())
    failed = [k for k in ("vision_rel", "logits_rel", "weights_rel") if k in limits and k in metrics
              and not metrics[k] <= limits[k]]
    if metrics["answers"] < limits["answers"]:
        failed.append("answers")
    built_from = engine.manifest["source"]["weights"]
    if built_from != weights:
        failed.insert(0, "weights")
    report = {
        "passed": not failed, "failed": failed, "precision": precision, "thresholds": limits, "metrics": metrics,
        "queries": rows, "weights": weights, **({"layers": layers} if layers is not None else {}),
        "built_from_weights": built_from,
        "files_digest": files_digest(engine.manifest["files"]), "target": engine.runner.target,
        "reference": reference.engine_id, "seconds": round(time.perf_counter() - t0, 3),
    }
    if write:
        write_verdict(engine.folder, engine.runner.target, report)
    return report


def int4_weight_errors(folder, manifest: Dict[str, Any], model) -> Dict[str, float]:
    """{layer: relative L2 error of its weight as the int4 graph dequantizes it, against ``model``'s} (the fp32
    reference). AWQ exports multiplied each layer's input rows by a scale; it is divided out here."""
    from .int4 import dequantized_weights, read_awq_scales

    graph_w = dequantized_weights(folder)
    scales = read_awq_scales(folder, manifest)
    modules = dict(model.llm.named_modules())
    out = {}
    for layer, info in manifest["int4"]["layers"].items():
        w = torch.from_numpy(graph_w[info["node"]])
        if layer == "embed_tokens":
            ref = model.llm.get_input_embeddings().weight.detach()
        else:
            ref = modules[layer].weight.detach().t()  # [in, out] as the graph multiplies
            if layer in scales:
                s_in, s_out = scales[layer]
                w = w / s_in.double()[:, None] * s_out.double()[None, :]
        out[layer] = _rel(w, ref.cpu())
    return out


def format_report(report: Dict[str, Any]) -> str:
    """The parity report as the lines `rgpt4d-sdk export verify` prints: each metric against its limit, and what
    failed."""
    m, t = report["metrics"], report["thresholds"]
    lines = [
        f"parity gate on {report['target']} ({report['precision']}), {len(report['queries'])} queries:",
        f"  vision features  rel. error {m['vision_rel']:.3e}  (limit {t['vision_rel']:.0e})",
        f"  first logits     rel. error {m['logits_rel']:.3e}  (limit {t['logits_rel']:.2g})",
        f"  greedy answers   {m['answers'] * 100:.1f} % identical (limit {t['answers'] * 100:.0f} %), "
        f"first token {m['first_token'] * 100:.1f} %",
        "  per family       " + ", ".join(f"{f} {v * 100:.0f} %" for f, v in m.get("answers_by_family", {}).items()),
    ]
    if "weights_rel" in m:
        worst = max(report["layers"], key=report["layers"].get)
        lines.append(f"  int4 weights     rel. error {m['weights_rel']:.3e} worst ({worst}; limit "
                     f"{t['weights_rel']:.2f}), {len(report['layers'])} layers")
    if "weights" in report["failed"]:
        lines.append("  weights          the engine was built from ANOTHER checkpoint than the reference")
    lines.append("PASSED: the engine is marked valid." if report["passed"] else
                 f"FAILED ({', '.join(report['failed'])}): the engine is not valid and will not load unless forced.")
    return "\n".join(lines)


def verify_cli(model: str, onnx=None, engine=None, provider: str = "cpu", queries: int = 8,
               reference_device: str = "cpu", ort_cache_dir=None, log: Callable[[str], None] = print
               ) -> Dict[str, Any]:
    """Load the reference and the compiled engine (even an unverified one, even one from other weights), compare.
    Every file is hashed afresh (the digest cache is never trusted here)."""
    from ..digests import verify_digests

    with verify_digests():
        return _verify_cli(model, onnx, engine, provider, queries, reference_device, ort_cache_dir, log)


def _verify_cli(model: str, onnx, engine, provider: str, queries: int, reference_device: str, ort_cache_dir,
                log: Callable[[str], None]) -> Dict[str, Any]:
    from ..engine.torch_backend import TorchEngine
    from ..model.checkpoint import read_checkpoint
    from .artifacts import checkpoint_fingerprint

    weights = checkpoint_fingerprint(read_checkpoint(model))
    if onnx is not None:
        from .ort_backend import OnnxRuntimeEngine

        compiled = OnnxRuntimeEngine.load(model, compiled=onnx, provider=provider, force=True, check_weights=False,
                                          ort_cache_dir=str(ort_cache_dir) if ort_cache_dir else None)
    else:
        from .trt_backend import TensorRTEngine

        compiled = TensorRTEngine.load(model, compiled=engine, force=True, check_weights=False)
    log(f"reference: torch fp32 eager on {reference_device}; checking {compiled.engine_id}")
    reference = TorchEngine.load(model, device=reference_device, dtype="float32", attn_implementation="eager",
                                 max_frames=compiled.max_frames, decode="dynamic", vision_cache_mb=0,
                                 prefix_reuse=False)  # the plain path: no cache, no static decoding
    qs = sample_queries(max_frames=compiled.max_frames, count=queries)
    return verify_engine(compiled, reference, weights, qs, progress=log)
