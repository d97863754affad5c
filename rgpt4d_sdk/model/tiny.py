"""Writing checkpoints in the released layout, a tiny random one for tests and demos, and `inspect`.

`make_tiny` builds a 2-layer Qwen2 (hidden 64), a 3-layer SigLIP (112 px, patch 14 -> 9 visual tokens per frame)
and the 3x3 projector, fills every parameter with seeded noise, and saves them exactly as the official code does
(LLM sharded with an index, tokenizer in both forms). Its answers are meaningless: it is an untrained demo model.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from torch import nn

from ..errors import CheckpointError
from ..fileio import write_json
from .checkpoint import read_checkpoint
from .projector import MultimodalProjector
from .spec import ModelSpec

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "[BOS]", "[PAD]", "<vila/sentinel>", "<image>",
                  "<vila/video>"]
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
               r"\s*[\r\n]+|\s+(?!\S)|\s+")
_CORPUS = """You are a helpful assistant. What is happening in this video? Describe it briefly.
These images are uniformly sampled from a video of 4.5 seconds. How far is the car from the camera?
What is the speed of <obj_1>? Is <obj_2> approaching or receding? How many pedestrians are crossing the street?
Options: (A) 0 m/s (B) 4 m/s (C) 9 m/s (D) 15 m/s. Answer with only the letter of the correct option.
The truck on the left is moving towards the camera at about 12 meters per second, while the bicycle is static.
Which object is nearer, the bus or the traffic cone? The robot arm picks up the red cube and places it in the box.
Did the gripper fail to grasp the object? The distance between the two vehicles is 23.5 metres over 3 seconds.
"""


def qwen2_chat_template() -> str:
    """The Qwen2 chat template (Jinja) that tiny checkpoints ship in their tokenizer config."""
    from ..prompt.template import QWEN2_TEMPLATE

    return QWEN2_TEMPLATE


def build_tokenizer(out_dir: Path, vocab_size: int = 480) -> int:
    """Train a small byte-level BPE (Qwen2 pre-tokenizer) and save it in both forms; returns len(tokenizer)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False, special_tokens=[])
    tok.train_from_iterator(_CORPUS.splitlines() * 4, trainer=trainer)
    base = tok.get_vocab_size()
    tok.add_special_tokens(SPECIAL_TOKENS)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save(str(out_dir / "tokenizer.json"))
    tok.model.save(str(out_dir))  # vocab.json + merges.txt, the form transformers 4.46 reads
    ids = {t: base + i for i, t in enumerate(SPECIAL_TOKENS)}
    write_json(out_dir / "added_tokens.json", ids)
    special = {"bos_token": "[BOS]", "eos_token": "<|im_end|>", "pad_token": "[PAD]"}
    write_json(out_dir / "special_tokens_map.json", {
        k: {"content": v, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False}
        for k, v in special.items()
    })
    write_json(out_dir / "tokenizer_config.json", {
        "added_tokens_decoder": {str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                                          "single_word": False, "special": True} for t, i in ids.items()},
        **special, "chat_template": qwen2_chat_template(), "clean_up_tokenization_spaces": False,
        "model_max_length": 4096, "padding_side": "right", "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer", "unk_token": None,
    })
    return base + len(SPECIAL_TOKENS)


def tiny_configs(vocab: int, tpe: bool = True, image_size: int = 112) -> Dict[str, Dict[str, Any]]:
    """Configs of the tiny model, in the released keys."""
    vision = {"architectures": ["SiglipVisionModel"], "model_type": "siglip_vision_model", "hidden_size": 64,
              "intermediate_size": 128, "num_hidden_layers": 3, "num_attention_heads": 4, "num_channels": 3,
              "image_size": image_size, "patch_size": 14, "hidden_act": "gelu_pytorch_tanh",
              "layer_norm_eps": 1e-6, "attention_dropout": 0.0, "vision_use_head": False}
    llm = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 64,
           "intermediate_size": 160, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
           "hidden_act": "silu", "max_position_embeddings": 4096, "rms_norm_eps": 1e-6, "rope_theta": 1e6,
           "vocab_size": vocab, "bos_token_id": vocab - 5, "eos_token_id": vocab - 6, "tie_word_embeddings": False,
           "use_sliding_window": False, "sliding_window": None, "attention_dropout": 0.0, "use_cache": True}
    return _with_root(vision, llm, tpe, num_video_frames=16)


def full_size_configs(tpe: bool = True) -> Dict[str, Dict[str, Any]]:
    """Configs of the full NVILA-Lite-8B / 4D-RGPT-8B architecture (SigLIP-so400m 448 px + Qwen2-7B)."""
    vision = {"architectures": ["SiglipVisionModel"], "model_type": "siglip_vision_model", "hidden_size": 1152,
              "intermediate_size": 4304, "num_hidden_layers": 27, "num_attention_heads": 16, "num_channels": 3,
              "image_size": 448, "patch_size": 14, "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6,
              "attention_dropout": 0.0, "vision_use_head": False}
    llm = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 3584,
           "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
           "hidden_act": "silu", "max_position_embeddings": 32768, "rms_norm_eps": 1e-6, "rope_theta": 1e6,
           "vocab_size": 151651, "bos_token_id": 151646, "eos_token_id": 151645, "tie_word_embeddings": False,
           "use_sliding_window": False, "sliding_window": None, "attention_dropout": 0.0, "use_cache": True}
    return _with_root(vision, llm, tpe, num_video_frames=16)


def _with_root(vision: Dict, llm: Dict, tpe: bool, num_video_frames: int) -> Dict[str, Dict[str, Any]]:
    projector = {"architectures": ["MultimodalProjector"], "model_type": "v2l_projector",
                 "mm_projector_type": "mlp_downsample_3x3_fix"}
    root = {"architectures": ["LlavaLlamaModel"], "model_type": "llava_llama", "llm_cfg": llm,
            "vision_tower_cfg": vision, "mm_projector_cfg": projector, "hidden_size": llm["hidden_size"],
            "mm_hidden_size": vision["hidden_size"], "mm_vision_select_layer": -2,
            "mm_vision_select_feature": "cls_patch", "image_aspect_ratio": "dynamic", "chat_template": "qwen2",
            "num_video_frames": num_video_frames, "fps": 0.0, "use_time_pe": bool(tpe)}
    return {"root": root, "vision": vision, "llm": llm, "projector": projector}


def build_modules(cfgs: Dict[str, Dict[str, Any]], attn: str = "sdpa", device: str = "cpu",
                  dtype: torch.dtype = torch.float32):
    """Fresh (randomly initialised) SigLIP, projector and Qwen2 modules for ``cfgs``."""
    from transformers import Qwen2Config, Qwen2ForCausalLM, SiglipVisionConfig, SiglipVisionModel

    strip = ("architectures", "model_type")
    vcfg = SiglipVisionConfig(**{k: v for k, v in cfgs["vision"].items() if k not in strip})
    lcfg = Qwen2Config(**{k: v for k, v in cfgs["llm"].items() if k not in strip})
    vcfg._attn_implementation = lcfg._attn_implementation = attn
    with torch.device(device):
        vision = SiglipVisionModel(vcfg).to(dtype)
        llm = Qwen2ForCausalLM(lcfg).to(dtype)
        projector = MultimodalProjector(cfgs["vision"]["hidden_size"], cfgs["llm"]["hidden_size"]).to(dtype)
    return vision, projector, llm


def fill_seeded_noise(module: nn.Module, seed: int, std: float = 0.05) -> None:
    """Give every parameter (norms and biases too) deterministic noise; norm weights stay near 1."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(module.named_parameters(), key=lambda kv: kv[0]):
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32) * std
            is_norm = ("norm" in name or "layer_norm" in name or name.startswith("layers.1.")
                       or name.startswith("layers.4.")) and p.ndim == 1 and name.endswith("weight")
            p.copy_((noise + 1.0 if is_norm else noise).to(p.dtype))


def write_checkpoint(out: Path, cfgs: Dict[str, Dict[str, Any]], vision: nn.Module, projector: nn.Module,
                     llm: nn.Module, tokenizer_dir: Optional[Path] = None, llm_shards: int = 2) -> Path:
    """Save modules in the released layout; ``tokenizer_dir`` files are copied into llm/."""
    from safetensors.torch import save_file

    from .nvila import checkpoint_state

    out = Path(out)
    (out / "llm").mkdir(parents=True, exist_ok=True)
    for sub in ("vision_tower", "mm_projector"):
        (out / sub).mkdir(exist_ok=True)
    write_json(out / "config.json", cfgs["root"])
    write_json(out / "vision_tower" / "config.json", cfgs["vision"])
    write_json(out / "mm_projector" / "config.json", cfgs["projector"])
    write_json(out / "llm" / "config.json", cfgs["llm"])
    size = cfgs["vision"]["image_size"]
    write_json(out / "vision_tower" / "preprocessor_config.json", {
        "do_convert_rgb": True, "do_normalize": True, "do_rescale": True, "do_resize": True,
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "image_processor_type": "SiglipImageProcessor",
        "resample": 3, "rescale_factor": 1 / 255, "size": {"height": size, "width": size}})
    write_json(out / "llm" / "generation_config.json", {"bos_token_id": cfgs["llm"]["bos_token_id"],
                                                          "eos_token_id": cfgs["llm"]["eos_token_id"]})
    meta = {"format": "pt"}
    save_file(_contiguous(checkpoint_state(vision, "vision_model")), str(out / "vision_tower" / "model.safetensors"), meta)
    save_file(_contiguous(projector.state_dict()), str(out / "mm_projector" / "model.safetensors"), meta)
    _save_sharded(_contiguous(llm.state_dict()), out / "llm", llm_shards)
    if tokenizer_dir is not None:
        for p in Path(tokenizer_dir).iterdir():
            (out / "llm" / p.name).write_bytes(p.read_bytes())
    return out


def make_tiny(out: "str | os.PathLike", seed: int = 0, tpe: bool = True, llm_shards: int = 2,
              image_size: int = 112) -> Path:
    """Write a tiny random checkpoint in the released layout (see module docstring)."""
    out = Path(out)
    if (out / "config.json").exists():
        raise CheckpointError(f"{out} already holds a checkpoint; choose an empty folder.")
    vocab = build_tokenizer(out / "llm")
    cfgs = tiny_configs(vocab, tpe=tpe, image_size=image_size)
    vision, projector, llm = build_modules(cfgs)
    for i, m in enumerate((vision, projector, llm)):
        fill_seeded_noise(m, seed * 1000 + i)
    return write_checkpoint(out, cfgs, vision, projector, llm, tokenizer_dir=None, llm_shards=llm_shards)


def inspect_checkpoint(path: "str | os.PathLike") -> Dict[str, Any]:
    """What a checkpoint folder holds, read from configs and safetensors headers (no weights are loaded)."""
    files = read_checkpoint(path)
    spec = ModelSpec.from_configs(files.config, files.vision_tower.config, files.mm_projector.config,
                                  files.llm.config, files.preprocessor)
    llm = files.llm.config
    dtypes = sorted({m["dtype"] for sub in (files.llm, files.vision_tower, files.mm_projector)
                     for f in sub.files for m in f.tensors.values()})
    return {
        "path": str(files.root),
        "architecture": files.config.get("architectures", ["?"])[0],
        "vision_tower": {"image_size": spec.image_size, "patch_size": spec.patch_size, "width": spec.vision_hidden,
                         "layers": spec.vision_layers, "feature_layer": spec.select_layer,
                         "params": files.vision_tower.num_params()},
        "projector": {"type": spec.projector_type, "params": files.mm_projector.num_params()},
        "llm": {"hidden_size": spec.hidden_size, "layers": llm.get("num_hidden_layers"),
                "heads": llm.get("num_attention_heads"), "kv_heads": llm.get("num_key_value_heads"),
                "vocab_size": llm.get("vocab_size"), "params": files.llm.num_params(),
                "shards": len(files.llm.files)},
        "tokens_per_frame": spec.tokens_per_image,
        "positions_per_frame": spec.positions_per_frame,
        "tpe": {"enabled": spec.tpe.enabled, "base": spec.tpe.base, "site": spec.tpe.site, "origin": spec.tpe.origin},
        "tokenizer_form": files.tokenizer_form,
        "weight_dtypes": dtypes,
        "size_bytes": files.size_bytes(),
        "ignored_subfolders": files.ignored,
    }


def _save_sharded(state: Dict[str, torch.Tensor], folder: Path, shards: int) -> None:
    from safetensors.torch import save_file

    names = sorted(state)
    if shards <= 1:
        save_file(state, str(folder / "model.safetensors"), {"format": "pt"})
        return
    per = -(-len(names) // shards)
    write_shards([{n: state[n] for n in names[s * per:(s + 1) * per]} for s in range(shards)], folder)


def write_shards(parts: List[Dict[str, torch.Tensor]], folder: Path) -> None:
    """``parts`` as model-0000i-of-0000n.safetensors plus model.safetensors.index.json (the sharded layout)."""
    from safetensors.torch import save_file

    weight_map, total = {}, 0
    for i, part in enumerate(parts):
        fname = f"model-{i + 1:05d}-of-{len(parts):05d}.safetensors"
        save_file(part, str(folder / fname), {"format": "pt"})
        weight_map.update({n: fname for n in part})
        total += sum(t.numel() * t.element_size() for t in part.values())
    write_json(folder / "model.safetensors.index.json", {"metadata": {"total_size": total}, "weight_map": weight_map})


def _contiguous(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}
