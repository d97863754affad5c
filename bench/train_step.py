"""Time and peak memory of one P4D training step (forward, backward, optimizer), on synthetic samples.

    python bench/train_step.py                         # CPU, tiny checkpoint, full fine-tuning
    python bench/train_step.py --full-size --lora      # GPU: 8B architecture, random bf16 weights, LoRA, P4D on

The step is the recipe's own: `P4DStudent` losses (SFT + latent + explicit) with teacher targets of the real shapes
(16 frames, tubelet 2, 16 x 16 grid, hooks 14/21/28/36 of width 1408 on the full-size model).
"""
from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from _common import (
    bench_parser,
    ensure_importable,
    finish,
    format_table,
    summarize,
)

ensure_importable()

import torch  # noqa: E402


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = bench_parser(__doc__, threads=False)
    p.add_argument("--full-size", action="store_true", help="8B architecture with random bf16 weights (GPU)")
    p.add_argument("--lora", action="store_true", help="LoRA (r 16) instead of full fine-tuning of the LLM")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--micro-batch", type=int, default=1)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--llm-layers", type=int, default=None, help="--full-size: fewer LLM layers (smoke checks only)")
    return p.parse_args(argv)


def build(args: argparse.Namespace, device: str, workdir: Path):
    """(NvilaModel, label, notes) in fp32 (CPU tiny) or bf16 weights (full size)."""
    from rgpt4d_sdk.model.nvila import NvilaModel

    if not args.full_size:
        from rgpt4d_sdk.model.tiny import make_tiny

        ckpt = make_tiny(workdir / "tiny")
        return NvilaModel.from_pretrained(ckpt, device=device, dtype="float32"), "tiny", [
            "tiny random checkpoint: step time measures the recipe's overhead, not the 8B model"]
    from query_latency import build_engine

    ns = argparse.Namespace(model=None, full_size=True, frames=args.frames, attn="sdpa", seed=0,
                            llm_layers=args.llm_layers, vision_layers=None)
    engine, label, notes = build_engine(ns, device, torch.bfloat16, workdir)
    return engine.model, label, notes


def synthetic_batch(model, args, p4d) -> List[Any]:
    """Samples with the real shapes: SoM image + frames, an R4D prompt, a short answer, and teacher targets."""
    import math

    from rgpt4d_sdk.training.data import TrainSample
    from rgpt4d_sdk.training.teachers.base import TeacherTargets, TrainClip

    from rgpt4d_sdk.prompt.template import chat_prompt, user_content

    spec, tok = model.spec, model.tokenizer
    n = args.frames + 1
    text = ("These images are uniformly sampled from a video of 1.5 seconds.\nHow fast is <obj_1> moving?\n"
            "Options: \n(A) 0 m/s\n(B) 2 m/s\n(C) 5 m/s\n(D) 9 m/s\nAnswer with the option's letter.")
    ids = tok.encode(chat_prompt(tok, user_content(n, text)), add_special_tokens=False)
    answer = tok.encode("(B) 2 m/s", add_special_tokens=False) + [tok.convert_tokens_to_ids("<|im_end|>")]
    times = torch.cat([torch.tensor([math.nan], dtype=torch.float64), torch.arange(args.frames) * 0.1])
    h, w = p4d.grid
    f = args.frames
    samples, targets = [], []
    for i in range(args.micro_batch):
        samples.append(TrainSample(f"s{i}", torch.rand(n, 3, spec.image_size, spec.image_size) * 2 - 1, times,
                                   ids + answer, len(answer), 1, TrainClip(f"s{i}", [], times[1:].tolist())))
        t = TeacherTargets()
        t.latents = {hk: torch.randn(f // p4d.tubelet, h, w, p4d.latent_dim) for hk in p4d.hooks}
        t.maps = {"depth": torch.rand(f, h, w) * 50 + 1, "flow": torch.randn(f, 2, h, w),
                  "dynamic": (torch.rand(f, h, w) > 0.8).float(), "rays": torch.randn(f, 6, h, w)}
        targets.append(t)
    return [samples, targets]


def run(args: argparse.Namespace) -> Dict[str, Any]:
    from rgpt4d_sdk.training.config import LoraConfig
    from rgpt4d_sdk.training.model import P4DStudent, trainable_summary
    from rgpt4d_sdk.training.p4d import P4DConfig
    from rgpt4d_sdk.training.recipe import apply_lora

    device = "cuda" if args.full_size else "cpu"
    if args.full_size and not torch.cuda.is_available():
        raise SystemExit("--full-size needs a CUDA GPU")
    with tempfile.TemporaryDirectory() as tmp:
        model, label, notes = build(args, device, Path(tmp))
    p4d = P4DConfig() if args.full_size else P4DConfig(hooks=(3, 5), latent_dim=8, grid=(4, 4))
    student = P4DStudent(model, p4d).to(device)
    for p in model.vision.parameters():
        p.requires_grad_(False)
    if args.lora:
        for p in model.llm.parameters():
            p.requires_grad_(False)
        apply_lora(model.llm, LoraConfig())
    if args.gradient_checkpointing:
        model.llm.gradient_checkpointing_enable()
    trainable, total = trainable_summary(student)
    opt = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=1e-5)
    samples, targets = synthetic_batch(model, args, p4d)
    times = []
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for i in range(args.warmup + args.steps):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        ctx = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else torch.autocast("cpu",
                                                                                                   enabled=False)
        with ctx:
            losses = student(samples, targets)
            loss = student.total(losses)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() / 1e9 if device == "cuda" else \
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    return {
        "config": {"model": label, "device": device, "lora": args.lora, "frames": args.frames,
                   "micro_batch": args.micro_batch, "steps": args.steps, "gradient_checkpointing":
                   args.gradient_checkpointing, "p4d": {"grid": list(p4d.grid), "hooks": list(p4d.hooks),
                                                        "latent_dim": p4d.latent_dim}},
        "params": {"total": total, "trainable": trainable},
        "step_s": summarize(times), "peak_memory_gb": peak,
        "peak_memory_kind": "torch.cuda.max_memory_allocated" if device == "cuda" else "process max RSS",
        "losses": {k: float(v.detach()) for k, v in losses.items()},
        "notes": notes,
    }


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    result = run(args)
    device = result["config"]["device"]
    s = result["step_s"]
    table = format_table(["model", "trainable params", "step s (median)", "p90", "peak GB"],
                         [[result["config"]["model"] + (" + LoRA" if args.lora else ""), result["params"]["trainable"],
                           s["median"], s["p90"], result["peak_memory_gb"]]])
    label = result["config"]["model"] + ("-lora" if args.lora else "")
    finish(result, table, "train_step", device, label, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
