"""`rgpt4d-sdk train export RUN_DIR --out DIR`: a trained run back in the released checkpoint layout.

LoRA adapters are merged into the LLM weights, every P4D module (latent decoder, explicit heads) is dropped, and the
weights are written with the base checkpoint's key names and dtypes next to copies of its configs and tokenizer
files. The result has exactly the base model's parameters (P4D adds zero inference cost) and loads in
`Engine.from_pretrained`.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Dict, Optional

import torch

from rgpt4d_sdk.errors import CheckpointError, ConfigError
from rgpt4d_sdk.model.checkpoint import SUBFOLDERS, read_checkpoint
from rgpt4d_sdk.model.tiny import write_shards

from .config import TrainConfig
from .recipe import apply_lora, latest_checkpoint

_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def export_run(run_dir: "str | Path", out: "str | Path", checkpoint: Optional[str] = None,
               shard_gb: float = 5.0) -> Path:
    """Write a training run's checkpoint as a plain checkpoint in the released layout.

    LoRA adapters are merged, the P4D modules are dropped, and the weights keep the base checkpoint's key names and
    dtypes (the LLM in shards of at most ``shard_gb`` GB); the base's configs and tokenizer files are copied and
    TRAINED_FROM.json says where the weights come from.

    Args:
        run_dir: the run's ``run.out`` folder (with run.json).
        out: a new or empty folder.
        checkpoint: a ``step-NNNNNNN`` folder name; default the latest finished checkpoint.

    Returns:
        ``out``, loadable with `Engine.from_pretrained`.

    Raises:
        ConfigError: ``run_dir`` is not a run or has no finished checkpoint, or ``out`` is not empty.
        CheckpointError: the trained weights do not belong to the run's model, or the export would differ from the
            base architecture.
    """
    from safetensors.torch import load_file

    from rgpt4d_sdk.model.checkpoint import check_finite
    from rgpt4d_sdk.model.nvila import NvilaModel

    from .model import P4DStudent

    run_dir, out = Path(run_dir), Path(out)
    marker = run_dir / "run.json"
    if not marker.is_file():
        raise ConfigError(f"{run_dir} is not a training run (no run.json); pass the run.out folder of a run.")
    cfg = TrainConfig.from_dict(json.loads(marker.read_text())["config"])
    ckpt = run_dir / "checkpoints" / checkpoint if checkpoint else latest_checkpoint(run_dir)
    if ckpt is None or not (ckpt / "trainable.safetensors").is_file():
        raise ConfigError(f"{run_dir} has no finished checkpoint to export.")
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} is not empty; export into a new folder.")
    files = read_checkpoint(cfg.model)
    base = NvilaModel.from_pretrained(cfg.model, device="cpu", dtype="float32")
    peft_model = apply_lora(base.llm, cfg.finetune.lora) if cfg.finetune.method == "lora" else None
    student = P4DStudent(base, cfg.p4d)
    weights = load_file(str(ckpt / "trainable.safetensors"))
    check_finite(weights, ckpt / "trainable.safetensors")
    params = dict(student.named_parameters())
    unknown = sorted(set(weights) - set(params))
    if unknown:
        raise CheckpointError(f"{ckpt}: weights {unknown[:3]} do not belong to this configuration's model.")
    with torch.no_grad():
        for name, t in weights.items():
            params[name].copy_(t)
    if peft_model is not None:
        base.llm = peft_model.merge_and_unload()  # plain Linear layers with W + (alpha / r) B A
    _write_layout(files, base, out, shard_gb)
    (out / "TRAINED_FROM.json").write_text(json.dumps({
        "base": str(files.root), "run": str(run_dir), "checkpoint": ckpt.name,
        "method": cfg.finetune.method, "p4d": "removed"}, indent=2) + "\n")
    return out


def _write_layout(files, model, out: Path, shard_gb: float) -> None:
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    for p in files.root.iterdir():  # root configs (not weights, not unknown subfolders)
        if p.is_file() and not p.name.endswith(".safetensors"):
            shutil.copy2(p, out / p.name)
    for name in SUBFOLDERS:
        (out / name).mkdir(exist_ok=True)
        for p in (files.root / name).iterdir():
            if p.is_file() and not p.name.endswith(".safetensors") and p.name != "model.safetensors.index.json":
                shutil.copy2(p, out / name / p.name)
    subs = {"vision_tower": (files.vision_tower, model.vision.tower), "mm_projector": (files.mm_projector,
                                                                                        model.projector),
            "llm": (files.llm, model.llm)}
    for name, (sub, module) in subs.items():
        state = _like_base(sub, module.state_dict(), name)
        folder = out / name
        if name == "llm":
            _save_shards(state, folder, shard_gb)
        else:
            save_file(state, str(folder / "model.safetensors"), {"format": "pt"})


def _like_base(sub, state: Dict[str, torch.Tensor], what: str) -> Dict[str, torch.Tensor]:
    """Module state renamed to the base file's keys and cast to the base file's dtypes; any other difference in
    the set of tensors is an error (the export must be exactly the base architecture)."""
    from rgpt4d_sdk.model.nvila import align_prefix

    header = {k: v for f in sub.files for k, v in f.tensors.items()}
    state = align_prefix(state, set(header), _prefix(header))
    tied = [k for k in state if k not in header and k.endswith("lm_head.weight")]
    for k in tied:
        state.pop(k)
    if set(state) != set(header):
        extra, missing = sorted(set(state) - set(header))[:3], sorted(set(header) - set(state))[:3]
        raise CheckpointError(f"{what}: exported tensors differ from the base checkpoint (extra {extra}, missing "
                              f"{missing}).")
    return {k: v.detach().to(_DTYPES.get(header[k]["dtype"], v.dtype)).contiguous() for k, v in state.items()}


def _prefix(header) -> str:
    first = next(iter(header))
    return first.split(".", 1)[0] if first.startswith("vision_model.") else ""


def _save_shards(state: Dict[str, torch.Tensor], folder: Path, shard_gb: float) -> None:
    """Shards of at most ``shard_gb`` (a tensor larger than that gets a shard of its own)."""
    limit = int(shard_gb * 1e9)
    shards, current, size = [], {}, 0
    for k in sorted(state):
        n = state[k].numel() * state[k].element_size()
        if current and size + n > limit:
            shards.append(current)
            current, size = {}, 0
        current[k] = state[k]
        size += n
    shards.append(current)
    write_shards(shards, folder)
