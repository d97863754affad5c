"""The NVILA-Lite / 4D-RGPT model in PyTorch: SigLIP -> (TPE) -> projector -> "\\n" -> media fusion -> Qwen2.

Shapes: N frames, P = grid^2 patches, Dv = vision width, T = visual tokens per frame, D = LLM width, L = sequence.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
from torch import nn

from ..device import check_device
from ..errors import CheckpointError
from ..tpe import timestamp_encoding
from .checkpoint import CheckpointFiles, SubModel, parse_dtype, read_checkpoint
from .projector import MultimodalProjector
from .spec import ModelSpec


class VisionEncoder(nn.Module):
    """SigLIP tower returning ``hidden_states[select_layer]`` (block L-1 of L, before post-layernorm).

    Only the blocks that feed the selected layer run; the full tower is kept so weights round-trip unchanged.
    """

    def __init__(self, tower: nn.Module, spec: ModelSpec) -> None:
        super().__init__()
        self.tower = tower
        self.layers_used = spec.encoder_layers_used
        self.drop_first = spec.select_feature == "patch"  # "patch" drops token 0 (a CLS that SigLIP lacks)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) -> (N, P, Dv)."""
        vm = getattr(self.tower, "vision_model", self.tower)  # transformers 5 flattened SiglipVisionModel
        h = vm.embeddings(pixel_values)
        for layer in vm.encoder.layers[: self.layers_used]:
            out = layer(h, None)  # transformers 4.x returns a tuple, 5.x a tensor
            h = out[0] if isinstance(out, tuple) else out
        return h[:, 1:] if self.drop_first else h


@dataclass
class FusedInputs:
    """The LLM input of one prompt: embeddings (L, D) and where each frame's span lies."""

    inputs_embeds: torch.Tensor
    expanded_ids: List[int]  # text ids, -1 at visual positions (each frame's "\n" keeps its real id)
    media_spans: List[tuple] = field(default_factory=list)  # [(start, end)) per image, "\n" included


class NvilaModel(nn.Module):
    """Vision tower + projector + LLM, with the tokenizer and the spec that describes them."""

    def __init__(self, spec: ModelSpec, vision: nn.Module, projector: MultimodalProjector, llm: nn.Module, tokenizer):
        super().__init__()
        self.spec = spec
        self.vision = VisionEncoder(vision, spec)
        self.projector = projector
        self.llm = llm
        self.tokenizer = tokenizer
        self.image_token_id = special_token_id(tokenizer, "<image>")
        newline = tokenizer.encode("\n", add_special_tokens=False)
        if len(newline) != 1:
            raise CheckpointError(f"the tokenizer encodes '\\n' as {newline}; NVILA needs a single newline token.")
        self.newline_id = newline[0]

    # ----------------------------------------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(
        cls,
        path_or_id: "str | os.PathLike",
        device: str = "cpu",
        dtype: "str | torch.dtype | None" = "auto",
        attn_implementation: str = "sdpa",
        tpe: Optional[Dict[str, Any]] = None,
        revision: Optional[str] = None,
    ) -> "NvilaModel":
        """Load a checkpoint in the released layout (config.json, llm/, vision_tower/, mm_projector/) for inference.

        Args:
            path_or_id: a local folder, or a Hugging Face hub id (org/name; configs and safetensors are downloaded).
            device: "cpu", "cuda", "cuda:N" or "auto" (CUDA when available).
            dtype: "float32", "bfloat16", "float16", a torch dtype, or "auto" (bfloat16 on a CUDA device that supports
                it, else float32).
            attn_implementation: the transformers attention backend of SigLIP and Qwen2 ("sdpa" or "eager").
            tpe: overrides of the checkpoint's timestamp positional encoding (`TPEConfig` fields, e.g.
                ``{"enabled": True, "site": "post_projector"}``).
            revision: the hub revision (branch, tag or commit) when ``path_or_id`` is a hub id.

        Returns:
            The model in eval mode on ``device``, with ``files`` (the checked `CheckpointFiles`) attached.

        Raises:
            CheckpointError: the folder or a file is missing, corrupt, or does not match the architecture its configs
                describe (NonFiniteWeightsError for NaN/inf weights).
            ConfigError: an unknown or unavailable device, or an unknown TPE option.
            UnsupportedDtypeError: an unknown dtype name.
        """
        device = check_device(device)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        files = read_checkpoint(path_or_id, revision)
        torch_dtype = parse_dtype(dtype, device)
        spec = ModelSpec.from_configs(
            files.config, files.vision_tower.config, files.mm_projector.config, files.llm.config,
            files.preprocessor, tpe_override=tpe,
        )
        tokenizer = load_tokenizer(files)
        vision = _load_hf(files.vision_tower, "siglip", torch_dtype, attn_implementation)
        llm = _load_hf(files.llm, "qwen2", torch_dtype, attn_implementation)
        projector = MultimodalProjector(spec.vision_hidden, spec.hidden_size)
        projector.load_checked(files.mm_projector.load_state_dict(), str(files.mm_projector.folder))
        model = cls(spec, vision, projector.to(torch_dtype), llm, tokenizer)
        model.files = files
        return model.to(device).eval()

    @property
    def dtype(self) -> torch.dtype:
        return self.projector.layers[2].weight.dtype

    @property
    def device(self) -> torch.device:
        return self.projector.layers[2].weight.device

    # ----------------------------------------------------------------------------------------------- stages
    @torch.no_grad()
    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) float32 pixels -> (N, P, Dv) encoder features (no TPE)."""
        return self.vision(pixel_values.to(self.device, self.dtype))

    @torch.no_grad()
    def project(self, features: torch.Tensor, times_s: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(N, P, Dv) features -> (N, T, D) embeddings; adds TPE at the configured site when ``times_s`` is given.

        ``times_s`` (N,) float64 seconds, NaN for images that get no TPE (the SoM image by default).
        """
        tpe = self.spec.tpe
        pre = tpe.enabled and times_s is not None and tpe.site == "pre_projector"
        post = tpe.enabled and times_s is not None and tpe.site == "post_projector"
        if pre:
            features = self._add_tpe(features, times_s)
        out = self.projector(features)
        if post:
            out = self._add_tpe(out, times_s)
        return out

    def _add_tpe(self, x: torch.Tensor, times_s: torch.Tensor) -> torch.Tensor:
        """Add the encoding of each image's time to all of its tokens; images with NaN time are left alone."""
        times = times_s.to(torch.float64)
        has_time = torch.isfinite(times)
        pe = timestamp_encoding(torch.where(has_time, times, torch.zeros_like(times)), x.shape[-1], self.spec.tpe.base)
        pe = pe * self.spec.tpe.scale * has_time.to(pe.dtype)[:, None]  # (N, dim); zero rows for untimed images
        return x + pe.to(x.device, x.dtype)[:, None, :]

    @torch.no_grad()
    def embed_tokens(self, ids: Sequence[int]) -> torch.Tensor:
        """(len,) token ids -> (len, D) input embeddings."""
        t = torch.tensor(list(ids), dtype=torch.long, device=self.device)
        return self.llm.get_input_embeddings()(t)

    @torch.no_grad()
    def fuse(self, input_ids: Sequence[int], image_embeds: torch.Tensor) -> FusedInputs:
        """Replace each ``<image>`` id by that image's visual tokens plus the "\\n" embedding.

        input_ids: prompt ids with one ``<image>`` per image; image_embeds: (N, T, D) in prompt order.
        """
        return fuse_embeddings(input_ids, image_embeds, self.embed_tokens, self.image_token_id, self.newline_id)


def fuse_embeddings(input_ids: Sequence[int], image_embeds: torch.Tensor, embed: Callable[[List[int]], torch.Tensor],
                    image_token_id: int, newline_id: int) -> FusedInputs:
    """NVILA media fusion, shared by the torch and compiled engines: text runs are embedded with ``embed``
    (ids -> (len, D)), each ``<image>`` id becomes that image's (T, D) tokens followed by the "\\n" embedding."""
    positions = [i for i, t in enumerate(input_ids) if t == image_token_id]
    if len(positions) != image_embeds.shape[0]:
        raise ValueError(f"prompt has {len(positions)} <image> tokens but {image_embeds.shape[0]} images")
    newline = embed([newline_id])  # (1, D)
    pieces, expanded, spans, start = [], [], [], 0
    for k, pos in enumerate(positions):
        text = list(input_ids[start:pos])
        if text:
            pieces.append(embed(text))
            expanded += text
        span_start = len(expanded)
        pieces += [image_embeds[k].to(newline.dtype), newline]
        expanded += [-1] * image_embeds.shape[1] + [newline_id]
        spans.append((span_start, len(expanded)))
        start = pos + 1
    tail = list(input_ids[start:])
    if tail:
        pieces.append(embed(tail))
        expanded += tail
    return FusedInputs(torch.cat(pieces, dim=0), expanded, spans)


def special_token_id(tokenizer, token: str) -> int:
    """The id of ``token`` in the tokenizer's vocabulary; CheckpointError when the tokenizer lacks it (it maps to
    the unknown token)."""
    tid = tokenizer.convert_tokens_to_ids(token)
    if tid is None or tid == tokenizer.unk_token_id or tokenizer.convert_ids_to_tokens(tid) != token:
        raise CheckpointError(f"the tokenizer has no {token!r} token; check llm/added_tokens.json.")
    return int(tid)


def load_tokenizer(files: CheckpointFiles):
    """The LLM tokenizer from llm/, in either saved form (tokenizer.json, or vocab.json + merges.txt)."""
    from transformers import AutoTokenizer

    if files.tokenizer_form == "missing":
        raise CheckpointError(
            f"{files.llm.folder} has no tokenizer (neither tokenizer.json nor vocab.json + merges.txt)."
        )
    try:
        return AutoTokenizer.from_pretrained(str(files.llm.folder), trust_remote_code=False)
    except Exception as e:
        raise CheckpointError(f"{files.llm.folder}: cannot load the tokenizer ({type(e).__name__}: {e}).") from e


def _load_hf(sub: SubModel, kind: str, dtype: torch.dtype, attn: str) -> nn.Module:
    """Build a transformers model from its config and load the checked weights strictly."""
    from transformers import Qwen2Config, Qwen2ForCausalLM, SiglipVisionConfig, SiglipVisionModel

    cfg_cls, model_cls = (SiglipVisionConfig, SiglipVisionModel) if kind == "siglip" else (Qwen2Config, Qwen2ForCausalLM)
    cfg = dict(sub.config)
    for k in ("_name_or_path", "architectures", "transformers_version", "torch_dtype", "dtype"):
        cfg.pop(k, None)
    config = cfg_cls(**cfg)
    config._attn_implementation = attn
    with torch.device("meta"):
        model = model_cls(config)
    state = align_prefix(sub.load_state_dict(dtype), set(model.state_dict()), model.base_model_prefix)
    expected = set(model.state_dict())
    if kind == "qwen2" and config.tie_word_embeddings:
        expected.discard("lm_head.weight")
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"{sub.folder}: weights do not match config.json (missing {missing[:5]}, unexpected {unexpected[:5]})."
        )
    for name, tensor in model.state_dict().items():
        if name in state and tuple(state[name].shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"{sub.folder}: {name} has shape {tuple(state[name].shape)}, config.json implies {tuple(tensor.shape)}."
            )
    model.load_state_dict(state, strict=False, assign=True)
    if kind == "qwen2" and config.tie_word_embeddings:
        model.tie_weights()
    _materialize_buffers(model)
    return model.eval()


def align_prefix(state: Dict[str, torch.Tensor], model_keys: set, prefix: str) -> Dict[str, torch.Tensor]:
    """Add or strip ``prefix.`` on checkpoint keys so they match the module (the saved layout always has it for
    SiglipVisionModel; some transformers versions keep the prefix in the module, others do not)."""
    if not prefix or set(state) & model_keys:
        return state
    p = prefix + "."
    if all(k.startswith(p) for k in state):
        return {k[len(p):]: v for k, v in state.items()}
    return {p + k: v for k, v in state.items()}


def checkpoint_state(module: nn.Module, saved_prefix: str = "") -> Dict[str, torch.Tensor]:
    """A module's state dict with keys as the released layout stores them (``saved_prefix`` on every key)."""
    state = module.state_dict()
    if saved_prefix and not all(k.startswith(saved_prefix + ".") for k in state):
        state = {f"{saved_prefix}.{k}": v for k, v in state.items()}
    return state


def _materialize_buffers(model: nn.Module) -> None:
    """Re-create non-persistent buffers (rotary inv_freq, position ids) that stayed on the meta device.

    The module is rebuilt from its own config on the CPU, which computes them exactly as transformers does.
    """
    for mod in model.modules():
        metas = [n for n, b in mod._buffers.items() if b is not None and b.is_meta]
        if not metas:
            continue
        if hasattr(mod, "config"):
            fresh = type(mod)(config=mod.config)
            for n in metas:
                mod._buffers[n] = fresh._buffers[n]
            if hasattr(fresh, "attention_scaling"):
                mod.attention_scaling = fresh.attention_scaling
        elif metas == ["position_ids"]:
            buf = mod._buffers["position_ids"]
            mod._buffers["position_ids"] = torch.arange(buf.shape[-1]).expand(buf.shape).contiguous()
        else:
            raise CheckpointError(f"internal: buffers {metas} of {type(mod).__name__} were not initialised")
    for name, p in model.named_parameters():
        if p.is_meta:
            raise CheckpointError(f"parameter {name} has no weights in the checkpoint")
