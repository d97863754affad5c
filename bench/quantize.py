"""Quantized exports side by side: fp32, fp16, int8 and int4 (RTN and AWQ) of the fine-tuned tiny checkpoint.

For each precision, in one run: the export's file sizes (all graphs, and the LLM's weight matrices alone: the
embedding table, q/k/v/o, gate/up/down and the lm_head with their scales), ONNX Runtime CPU decode tokens/s and
first-token latency (vision + prefill) on the same sample queries, and the parity gate's metrics against the fp32
torch reference (`rgpt4d-sdk export verify`, 8 sample queries), with its verdict under that precision's thresholds.

    python bench/quantize.py                  # writes bench/results/quantize-cpu-tiny.json

The tiny model (hidden 64, 2 layers) is overhead-bound on the CPU: its speeds measure per-token runtime overhead
and kernels at this size, not what 4-bit weights buy on an 8B model (whose decode is bound by reading the weights).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from _common import bench_parser, ensure_importable, finish, format_table, summarize

ensure_importable()

import torch  # noqa: E402

VARIANTS = {  # name: export options
    "fp32": {"dtype": "float32"},
    "fp16": {"dtype": "float16"},
    "int8": {"dtype": "float32", "quantize": "int8"},
    "int4-rtn (fp32 act.)": {"dtype": "float32", "quantize": "int4"},
    "int4-rtn": {"dtype": "float16", "quantize": "int4"},
    "int4-awq": {"dtype": "float16", "quantize": "int4", "int4_method": "awq"},
    "int4-rtn tensorrt form": {"dtype": "float16", "quantize": "int4", "int4_form": "tensorrt"},
    # the gate's other side: a random-weight checkpoint (make-tiny, seed 0) quantized the same way must fail
    "int4-rtn random weights": {"dtype": "float16", "quantize": "int4", "random": True},
}


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = bench_parser(__doc__)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--queries", type=int, default=6, help="timed queries per round")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds")
    p.add_argument("--gate-queries", type=int, default=8)
    p.add_argument("--block-size", type=int, default=128, help="requested int4 block (the tiny model gets 32)")
    p.add_argument("--only", default=None, help="comma-separated variant names (smoke runs)")
    return p.parse_args(argv)


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.name.endswith((".onnx", ".onnx.data",
                                                                             ".safetensors")))


def run(args: argparse.Namespace) -> Dict[str, Any]:
    from rgpt4d_sdk import Engine
    from rgpt4d_sdk.analyze.default import FINETUNED
    from rgpt4d_sdk.compiled.artifacts import checkpoint_fingerprint
    from rgpt4d_sdk.compiled.int4 import llm_weight_bytes
    from rgpt4d_sdk.compiled.onnx_export import export_onnx
    from rgpt4d_sdk.compiled.samples import sample_queries
    from rgpt4d_sdk.compiled.verify import verify_engine
    from rgpt4d_sdk.engine.torch_backend import TorchEngine
    from rgpt4d_sdk.model.checkpoint import read_checkpoint

    from rgpt4d_sdk.model.tiny import make_tiny

    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    names = args.only.split(",") if args.only else list(VARIANTS)
    gate_qs = sample_queries(max_frames=args.frames, count=args.gate_queries)
    timed_qs = sample_queries(max_frames=args.frames, count=args.queries, seed=50)
    rows: Dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        refs: Dict[Any, Any] = {}
        engines: Dict[str, Any] = {}
        for name in names:
            opts = dict(VARIANTS[name])
            ckpt = make_tiny(Path(tmp) / "random", seed=0) if opts.pop("random", False) else FINETUNED
            if ckpt not in refs:
                refs[ckpt] = (TorchEngine.load(ckpt, device="cpu", dtype="float32", attn_implementation="eager",
                                               max_frames=args.frames), checkpoint_fingerprint(read_checkpoint(ckpt)))
            ref, weights = refs[ckpt]
            if opts.get("quantize") == "int4":
                opts["block_size"] = args.block_size
            t0 = time.perf_counter()
            folder = export_onnx(ckpt, Path(tmp) / name.replace(" ", "_"), max_frames=args.frames, **opts)
            export_s = time.perf_counter() - t0
            eng = Engine.from_pretrained(ckpt, backend="onnxruntime", compiled=folder, force=True,
                                         threads=threads, max_frames=args.frames)
            report = verify_engine(eng, ref, weights, gate_qs, write=False)
            eng.answer(timed_qs[0])  # warm-up
            engines[name] = eng
            manifest = eng.manifest
            int4 = manifest.get("int4") or {}
            rows[name] = {
                "checkpoint": "tiny-finetuned" if ckpt == FINETUNED else "random (make-tiny seed 0)",
                "options": opts, "export_s": round(export_s, 1), "precision": manifest["precision"],
                "files_bytes": folder_bytes(folder), "llm_weight_bytes": llm_weight_bytes(folder),
                "graph_bytes": {g: (folder / f"{g}.onnx").stat().st_size + ((folder / f"{g}.onnx.data").stat().st_size
                                if (folder / f"{g}.onnx.data").exists() else 0) for g in ("vision", "embed", "decoder")},
                "gate": {"passed": report["passed"], "failed": report["failed"], "thresholds": report["thresholds"],
                         "metrics": report["metrics"], "layers": report.get("layers")},
                "int4": {k: int4[k] for k in ("form", "method", "block_size", "block_size_requested") if k in int4},
            }
            if int4.get("awq"):
                rows[name]["int4"]["awq_groups"] = {g: {k: v for k, v in r.items() if k != "layers"}
                                                    for g, r in int4["awq"]["groups"].items()}
            print(f"{name}: gate {'passed' if report['passed'] else 'FAILED ' + str(report['failed'])}", flush=True)
        # timed rounds interleaved over the variants, so load from other processes hits all of them alike; decode
        # speed per round = all decoded tokens / all decode time (answers of 1-2 tokens make per-query rates noise)
        ttft: Dict[str, List[float]] = {n: [] for n in engines}
        tok_s: Dict[str, List[float]] = {n: [] for n in engines}
        for _ in range(args.repeats):
            tokens = {n: 0 for n in engines}
            seconds = {n: 0.0 for n in engines}
            for q in timed_qs:
                for name, eng in engines.items():
                    a = eng.answer(q)
                    ttft[name].append(a.timings["vision"] + a.timings.get("projector", 0.0) + a.timings["prefill"])
                    tokens[name] += len(a.token_ids) - 1
                    seconds[name] += a.timings["decode"]
            for name in engines:
                tok_s[name].append(tokens[name] / max(seconds[name], 1e-9))
        for name in engines:
            rows[name].update(ttft_ms=summarize(ttft[name], 1e3), decode_tok_s=summarize(tok_s[name]))
    fp16 = rows.get("fp16", {}).get("llm_weight_bytes")
    for r in rows.values():
        r["llm_weight_bytes_vs_fp16"] = r["llm_weight_bytes"] / fp16 if fp16 else None
    return {
        "config": {"model": "tiny-finetuned", "device": "cpu", "provider": "onnxruntime:cpu", "threads": threads,
                   "frames": args.frames, "timed_queries": args.queries, "repeats": args.repeats,
                   "gate_queries": args.gate_queries, "block_size_requested": args.block_size},
        "variants": rows,
        "notes": ["llm_weight_bytes: embedding table + q/k/v/o/gate/up/down + lm_head with scales and zero points "
                  "(norms, biases, rotary tables not counted); int4 packs two values per byte",
                  "ttft_ms = vision + prefill of one query; decode_tok_s per round = decoded tokens after the first / decode "
                  "time, over all timed queries",
                  "gate: fp32 eager torch reference, sample queries; int8 is Q/DQ on fp32, int4 weight-only"],
    }


def report(r: Dict[str, Any]) -> str:
    rows = []
    for name, v in r["variants"].items():
        m = v["gate"]["metrics"]
        rows.append([name, v["files_bytes"] / 1e3, v["llm_weight_bytes"] / 1e3, v["llm_weight_bytes_vs_fp16"],
                     v["decode_tok_s"].get("median"), v["ttft_ms"].get("median"), m["logits_rel"], m["answers"],
                     m.get("weights_rel"), "pass" if v["gate"]["passed"] else "FAIL"])
    return format_table(["variant", "files kB", "LLM weights kB", "vs fp16", "decode tok/s", "TTFT ms",
                         "logits rel", "answers", "int4 w rel", "gate"], rows)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    result = run(args)
    try:
        import onnxruntime

        result["versions"] = {"onnxruntime": onnxruntime.__version__}
    except ImportError:
        pass
    finish(result, report(result), "quantize", "cpu", "tiny", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
