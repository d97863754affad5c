"""The training model: NVILA (vision tower, projector, LLM) + the P4D modules, returning every loss term.

The forward path is the inference path with gradients: SigLIP features (``hidden_states[-2]``), TPE, projector,
media fusion with the same function the engines use, then the LLM on right-padded fused embeddings. P4D reads the
LLM's last hidden states at each video frame's visual tokens.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from rgpt4d_sdk.model.nvila import NvilaModel, fuse_embeddings

from .data import TrainSample
from .p4d import (
    ExplicitDistillLoss,
    LatentDistillLoss,
    P4DConfig,
    P4DModules,
    sft_loss,
    student_grid,
)
from .teachers.base import TeacherTargets


class P4DStudent(nn.Module):
    """The model being trained: the NVILA base model plus, when ``p4d.enabled``, the P4D modules (latent decoder
    and explicit heads), with the loss modules of ``p4d``'s variant. ``freeze_vision`` runs the vision tower without
    gradients. `forward` returns the loss terms of a micro-batch; `total` weighs them into one."""

    def __init__(self, base: NvilaModel, p4d: P4DConfig, freeze_vision: bool = True) -> None:
        super().__init__()
        self.base = base
        self.p4d_cfg = p4d
        self.freeze_vision = freeze_vision
        self.p4d = P4DModules(base.spec.hidden_size, p4d) if p4d.enabled else None
        self.latent_loss = LatentDistillLoss(p4d.latent_loss)
        self.explicit_loss = ExplicitDistillLoss(p4d.explicit_loss)

    # ---------------------------------------------------------------------------------------------- pieces
    def image_embeds(self, sample: TrainSample, device: torch.device) -> torch.Tensor:
        """Projected visual tokens of a sample's images (SoM image, then the video frames): vision tower, TPE at
        the spec's site, projector; (images, tokens per image, D)."""
        base = self.base
        pixels = sample.pixels.to(device, base.dtype)
        ctx = torch.no_grad() if self.freeze_vision else nullcontext()
        with ctx:
            feats = base.vision(pixels)
        tpe = base.spec.tpe
        if tpe.enabled and tpe.site == "pre_projector":
            feats = base._add_tpe(feats, sample.image_times)
        out = base.projector(feats)
        if tpe.enabled and tpe.site == "post_projector":
            out = base._add_tpe(out, sample.image_times)
        return out

    def fused(self, sample: TrainSample, device: torch.device):
        """The sample's LLM input: text embeddings with each image's visual tokens put at its media token (the
        engines' `fuse_embeddings`), with the span of every image."""
        embed = self.base.llm.get_input_embeddings()

        def embed_ids(ids: List[int]) -> torch.Tensor:
            return embed(torch.tensor(ids, dtype=torch.long, device=device))

        return fuse_embeddings(sample.input_ids, self.image_embeds(sample, device), embed_ids,
                               self.base.image_token_id, self.base.newline_id)

    # ---------------------------------------------------------------------------------------------- forward
    def forward(self, samples: List[TrainSample], targets: Optional[List[Optional[TeacherTargets]]] = None
                ) -> Dict[str, torch.Tensor]:
        """Loss terms of a micro-batch: "sft", and with P4D "latent", "depth", "flow", "dynamic", "rays" (each
        averaged over the samples that have it)."""
        device = next(self.base.projector.parameters()).device
        fused = [self.fused(s, device) for s in samples]
        lengths = [f.inputs_embeds.shape[0] for f in fused]
        width, dim = max(lengths), fused[0].inputs_embeds.shape[1]
        embeds = fused[0].inputs_embeds.new_zeros(len(samples), width, dim)
        mask = torch.zeros(len(samples), width, dtype=torch.long, device=device)
        labels = torch.full((len(samples), width), -100, dtype=torch.long, device=device)
        for i, (f, s) in enumerate(zip(fused, samples)):
            n = lengths[i]
            embeds[i, :n] = f.inputs_embeds
            mask[i, :n] = 1
            labels[i, n - s.answer_len:n] = torch.tensor(s.input_ids[-s.answer_len:], device=device)
        out = self.base.llm.model(inputs_embeds=embeds, attention_mask=mask, use_cache=False)
        hidden = out.last_hidden_state  # (B, L, D), after the final norm
        logits = self.base.llm.lm_head(hidden)
        losses = {"sft": sft_loss(logits, labels)}
        if self.p4d is not None and targets is not None:
            losses.update(self._p4d_losses(hidden, fused, samples, targets))
        return losses

    def _p4d_losses(self, hidden, fused, samples, targets) -> Dict[str, torch.Tensor]:
        cfg = self.p4d_cfg
        sums: Dict[str, List[torch.Tensor]] = {}
        for i, (f, s, t) in enumerate(zip(fused, samples, targets)):
            if t is None:
                continue
            spans = f.media_spans[s.first_frame_image:]  # video frames only (not the SoM image)
            feats = student_grid(hidden[i], spans, self.base.spec.tokens_per_image, cfg.grid)  # (F, h, w, D)
            if t.latents:
                picked = feats[::cfg.tubelet]  # the first frame of each teacher tubelet
                student = self.p4d.decoder(picked)
                sums.setdefault("latent", []).append(self.latent_loss(student, t.latents))
            if t.maps:
                pred = self.p4d.heads(feats)
                for name, value in self.explicit_loss(pred, t.maps, t.masks).items():
                    sums.setdefault(name, []).append(value)
        return {k: torch.stack(v).mean() for k, v in sums.items()}

    def total(self, losses: Dict[str, torch.Tensor]) -> torch.Tensor:
        """The loss to back-propagate: SFT + ``latent_weight`` x latent + ``explicit_scale`` x the weighted explicit
        terms (each only when present in ``losses``)."""
        cfg = self.p4d_cfg
        total = losses["sft"]
        if "latent" in losses:
            total = total + cfg.latent_weight * losses["latent"]
        for name, w in cfg.explicit_weights.items():
            if name in losses:
                total = total + cfg.explicit_scale * w * losses[name]
        return total


def trainable_summary(model: nn.Module) -> Tuple[int, int]:
    """(trainable parameters, all parameters) of ``model``."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
