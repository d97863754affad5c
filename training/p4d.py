"""P4D: the training-only modules (4D perception decoder, explicit heads) and the losses.

Student features are the LLM's last hidden states (after the final norm) at each frame's visual tokens, on the
frame's token grid (g x g, 11 x 11 for 448 px), resized bilinearly to the teacher grid (16 x 16): S (F, D, h, w).

Two decoder variants (MODEL.md, "P4D"):
- ``"code"`` (default, the released code): one ``Linear(D -> C)`` per teacher hook, weights N(0, 0.1), zero bias;
- ``"paper"``: per hook a 3-layer MLP ``D -> 2560 -> 2560 -> C`` with GELU, Xavier-uniform weights, zero bias.
Explicit heads map student features to depth (1, predicted as log-depth), backward flow (2), dynamic-mask logits
(1) and Plücker rays (6) per cell. (The released code decodes student latents with the frozen L4P heads; those
weights are not distributable, so the heads here are small trainable linear maps, removed at export like the rest.)

Losses (all masked means; a term with no valid cell is 0 and contributes no gradient):
- latent distillation: MSE ("code") or Smooth-L1 ("paper") between decoded student latents and teacher latents;
- explicit distillation: depth on log scale, flow, rays: L1 ("code") or Smooth-L1 ("paper"); dynamic: BCE;
- SFT: cross-entropy on answer tokens only (labels -100 elsewhere), averaged per sample, then over samples.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from rgpt4d_sdk.errors import ConfigError

from .teachers.base import MAPS

L4P_HOOKS = (14, 21, 28, 36)
L4P_WIDTH = 1408

# Defaults of the two recipes (MODEL.md table): latent weight, explicit weights, and the scale on all explicit terms.
VARIANTS = {
    "code": {"latent_weight": 0.01, "latent_loss": "mse", "explicit_loss": "l1", "explicit_scale": 1.0,
             "explicit_weights": {"depth": 0.1, "flow": 0.001, "dynamic": 0.01, "rays": 1e-5}},
    "paper": {"latent_weight": 0.5, "latent_loss": "smooth_l1", "explicit_loss": "smooth_l1", "explicit_scale": 0.1,
              "explicit_weights": {"depth": 1.0, "flow": 0.1, "dynamic": 0.05, "rays": 0.05}},
}


@dataclass
class P4DConfig:
    """P4D switches. ``variant`` picks the decoder and the loss defaults; any field set explicitly wins."""

    enabled: bool = True
    variant: str = "code"  # "code" | "paper"
    grid: Tuple[int, int] = (16, 16)
    hooks: Tuple[int, ...] = L4P_HOOKS
    latent_dim: int = L4P_WIDTH
    tubelet: int = 2
    paper_hidden: int = 2560
    latent_weight: Optional[float] = None
    latent_loss: Optional[str] = None
    explicit_loss: Optional[str] = None
    explicit_scale: Optional[float] = None
    explicit_weights: Dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ConfigError(f"p4d.variant {self.variant!r} is unknown; choose one of {sorted(VARIANTS)}.")
        d = VARIANTS[self.variant]
        for key in ("latent_weight", "latent_loss", "explicit_loss", "explicit_scale"):
            if getattr(self, key) is None:
                setattr(self, key, d[key])
        unknown = sorted(set(self.explicit_weights) - set(MAPS))
        if unknown:
            raise ConfigError(f"p4d.explicit_weights has unknown maps {unknown}; maps are {sorted(MAPS)}.")
        self.explicit_weights = {**d["explicit_weights"], **self.explicit_weights}
        self.grid = tuple(int(v) for v in self.grid)  # type: ignore[assignment]
        self.hooks = tuple(int(v) for v in self.hooks)
        if self.latent_loss not in ("mse", "smooth_l1") or self.explicit_loss not in ("l1", "smooth_l1"):
            raise ConfigError("p4d.latent_loss must be mse or smooth_l1 and p4d.explicit_loss l1 or smooth_l1.")
        if len(self.grid) != 2 or min(self.grid) < 1 or self.tubelet < 1:
            raise ConfigError(f"p4d.grid must be [h, w] >= 1 and tubelet >= 1, got {self.grid}, {self.tubelet}.")


class LatentDecoder(nn.Module):
    """Student features (..., D) -> one teacher latent (..., C) per hook."""

    def __init__(self, hidden: int, cfg: P4DConfig) -> None:
        super().__init__()
        self.hooks = cfg.hooks
        if cfg.variant == "code":
            self.heads = nn.ModuleList(nn.Linear(hidden, cfg.latent_dim) for _ in cfg.hooks)
            for lin in self.heads:
                nn.init.normal_(lin.weight, mean=0.0, std=0.1)
                nn.init.zeros_(lin.bias)
        else:
            self.heads = nn.ModuleList(
                nn.Sequential(nn.Linear(hidden, cfg.paper_hidden), nn.GELU(), nn.Linear(cfg.paper_hidden,
                              cfg.paper_hidden), nn.GELU(), nn.Linear(cfg.paper_hidden, cfg.latent_dim))
                for _ in cfg.hooks)
            for mod in self.heads.modules():
                if isinstance(mod, nn.Linear):
                    nn.init.xavier_uniform_(mod.weight)
                    nn.init.zeros_(mod.bias)

    def forward(self, feats: torch.Tensor) -> Dict[int, torch.Tensor]:
        """{hook: (..., C)} decoded latents of student features (..., D), one per teacher hook."""
        return {hook: head(feats) for hook, head in zip(self.hooks, self.heads)}


class ExplicitHeads(nn.Module):
    """Student features (F, h, w, D) -> {"depth": (F, h, w) log-depth, "flow": (F, 2, h, w), "dynamic": (F, h, w)
    logits, "rays": (F, 6, h, w)}."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.heads = nn.ModuleDict({name: nn.Linear(hidden, c) for name, c in MAPS.items()})

    def forward(self, feats: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The explicit predictions of student features (F, h, w, D), shaped as the teacher's maps (see the class)."""
        out = {}
        for name, head in self.heads.items():
            y = head(feats)  # (F, h, w, c)
            out[name] = y[..., 0] if MAPS[name] == 1 else y.permute(0, 3, 1, 2)
        return out


class P4DModules(nn.Module):
    """Everything P4D adds to the model (and export removes)."""

    def __init__(self, hidden: int, cfg: P4DConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.decoder = LatentDecoder(hidden, cfg)
        self.heads = ExplicitHeads(hidden)


def student_grid(hidden: torch.Tensor, spans: Sequence[Tuple[int, int]], tokens_per_image: int,
                 grid: Tuple[int, int]) -> torch.Tensor:
    """Last hidden states (L, D) of one sample -> (F, h, w, D) per-frame features on the teacher grid.

    ``spans``: [(start, end)) of each frame's visual tokens + "\\n" in the sequence (the "\\n" is dropped)."""
    g = int(round(tokens_per_image ** 0.5))
    frames = torch.stack([hidden[s:s + tokens_per_image] for s, _ in spans])  # (F, T, D)
    f, _, d = frames.shape
    x = frames.transpose(1, 2).reshape(f, d, g, g)
    if (g, g) != tuple(grid):
        x = F.interpolate(x.float(), size=tuple(grid), mode="bilinear", align_corners=False).to(hidden.dtype)
    return x.permute(0, 2, 3, 1)


# ------------------------------------------------------------------------------------------------ losses
def masked_mean(values: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` (broadcastable, bool) is True; 0 (with a graph) when nothing is valid."""
    if mask is None:
        return values.mean()
    m = mask.to(values.dtype)
    while m.dim() < values.dim():
        m = m.unsqueeze(1)
    m = m.expand_as(values)
    count = m.sum()
    return (values * m).sum() / count.clamp_min(1.0)


class LatentDistillLoss(nn.Module):
    """Mean over hooks of the mean elementwise MSE or Smooth-L1 between decoded student and teacher latents."""

    def __init__(self, kind: str = "mse") -> None:
        super().__init__()
        self.kind = kind

    def forward(self, student: Mapping[int, torch.Tensor], teacher: Mapping[int, torch.Tensor]) -> torch.Tensor:
        """Mean over the hooks of ``student`` of the loss against ``teacher``'s latent of the same hook; raises
        ConfigError when a shape differs."""
        losses = []
        for hook, s in student.items():
            t = teacher[hook].to(s.dtype)
            if s.shape != t.shape:
                raise ConfigError(f"hook {hook}: decoded student latent {tuple(s.shape)} vs teacher {tuple(t.shape)}.")
            if self.kind == "mse":
                losses.append(F.mse_loss(s.float(), t.float()))
            else:
                losses.append(F.smooth_l1_loss(s.float(), t.float(), beta=1.0))
        return torch.stack(losses).mean()


class ExplicitDistillLoss(nn.Module):
    """Per-map masked losses. Depth: |log d_pred - log d_target| (pred is log-depth; targets <= 0 are invalid);
    flow and rays: L1 or Smooth-L1 summed over channels; dynamic: binary cross-entropy with logits."""

    def __init__(self, kind: str = "l1") -> None:
        super().__init__()
        self.kind = kind

    def _dist(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a - b).abs() if self.kind == "l1" else F.smooth_l1_loss(a, b, reduction="none", beta=1.0)

    def forward(self, pred: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor],
                mask: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """{map name: masked mean loss} for every map in ``target``; a map without a mask counts every cell, and depth
        also drops cells whose target is <= 0 or not finite."""
        out: Dict[str, torch.Tensor] = {}
        for name, t in target.items():
            p = pred[name].float()
            t = t.to(p.device).float()
            m = mask.get(name)
            m = torch.ones(t.shape[0], *t.shape[-2:], dtype=torch.bool, device=p.device) if m is None else \
                m.to(p.device).bool()
            if name == "depth":
                m = m & (t > 0) & torch.isfinite(t)
                log_t = torch.log(torch.where(m, t, torch.ones_like(t)))
                out[name] = masked_mean(self._dist(p, log_t), m)
            elif name == "dynamic":
                out[name] = masked_mean(F.binary_cross_entropy_with_logits(p, t, reduction="none"), m)
            else:
                m = m & torch.isfinite(t).all(dim=1)
                t = torch.nan_to_num(t)
                out[name] = masked_mean(self._dist(p, t).sum(dim=1), m)  # channels summed per cell
        return out


def sft_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy on answer tokens. logits (B, L, V), labels (B, L) with -100 outside answers.

    Averaged per sample (over its answer tokens), then over samples: the same value whichever way a global batch is
    split across processes."""
    logits, labels = logits[:, :-1].float(), labels[:, 1:]
    tok = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100,
                          reduction="none").view(labels.shape)
    valid = (labels != -100).float()
    per_sample = (tok * valid).sum(1) / valid.sum(1).clamp_min(1.0)
    has = (valid.sum(1) > 0).float()
    return (per_sample * has).sum() / has.sum().clamp_min(1.0)
