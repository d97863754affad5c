"""Activation-aware scaling for int4 weights (AWQ-style), searched on calibration queries and folded into the model.

For each group of LLM linear layers that read the same input x (q/k/v after the input norm; gate/up after the
post-attention norm; o after v; down after up; the lm_head after the final norm) we collect the mean |x| of every
input channel over the calibration queries (fused prompts of real clips, run through the torch model the export is
traced from) and a sample of input rows. A per-channel scale s = mean|x|^alpha (normalised to geometric mean 1) is
searched over alpha in [0, 1] per group, minimising

    sum over the group's layers of || (x / s) @ Q(diag(s) W) - x @ W ||^2

where Q is exactly the export's block quantizer (`int4.quantize_blocks`). alpha = 0 is plain round-to-nearest, so the
search never ends worse than RTN on its own objective. The chosen s is then folded where the algebra is exact, so the
exported graph has no extra operations: 1/s into the preceding RMSNorm weight (or into the output rows, and bias, of
v_proj / up_proj: the attention and the SiLU gate are linear in those), s into the layer's input columns. With
grouped-query attention one key/value head feeds several query heads, so o_proj's scales are tied across each such
group before folding into v_proj. A tied lm_head (shared with the embedding table) is left alone.

Nothing here needs a library: the search is a few tensor products per group, and ONNX Runtime's AWQ path
(NVAWQWeightOnlyQuantConfig) wraps NVIDIA Model Optimizer and calibrates from a text tokenizer and data set, not from
the multimodal prompts this model answers.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from ..types import RegionQuery
from .int4 import fake_quantize

GRID = tuple(round(0.05 * i, 2) for i in range(21))


@dataclass
class Group:
    """Linear layers that share one input and so one AWQ scale vector ``s``: the ``linears`` get s in their input
    columns, ``prev`` (a norm's weight, or a linear's output rows and bias, per ``prev_kind``) gets 1/s. ``tie``: the
    grouped-query shape over which o_proj's scales are tied."""

    name: str
    prev: str  # module whose output is divided by s
    prev_kind: str  # "norm" (weight) or "rows" (output rows and bias of a linear)
    linears: List[str]
    tie: Optional[tuple] = None  # (kv heads, heads per kv head, head dim) for o_proj
    result: Dict[str, Any] = field(default_factory=dict)


def groups_of(model) -> List[Group]:
    """The AWQ groups of the model's LLM, layer by layer (q/k/v, o, gate/up, down), and the lm_head unless it is
    tied to the embedding table."""
    llm = model.llm
    cfg = llm.config
    from ..model.qwen2_layer import attention_dims

    heads, kv, hd = attention_dims(cfg)
    out = []
    for i in range(int(cfg.num_hidden_layers)):
        p = f"model.layers.{i}"
        out += [
            Group(f"{p}.qkv", f"{p}.input_layernorm", "norm",
                  [f"{p}.self_attn.q_proj", f"{p}.self_attn.k_proj", f"{p}.self_attn.v_proj"]),
            Group(f"{p}.o", f"{p}.self_attn.v_proj", "rows", [f"{p}.self_attn.o_proj"], tie=(kv, heads // kv, hd)),
            Group(f"{p}.gate_up", f"{p}.post_attention_layernorm", "norm", [f"{p}.mlp.gate_proj", f"{p}.mlp.up_proj"]),
            Group(f"{p}.down", f"{p}.mlp.up_proj", "rows", [f"{p}.mlp.down_proj"]),
        ]
    tied = llm.lm_head.weight.data_ptr() == llm.get_input_embeddings().weight.data_ptr()
    if not tied:
        out.append(Group("lm_head", "model.norm", "norm", ["lm_head"]))
    return out


MAX_ROWS = 4096  # input rows kept per group for the error measurement
MAX_ELEMENTS = 1 << 22  # ... and at most this many numbers (16 MB) per group: 1170 rows of the 8B's 3584 channels


def collect_inputs(model, queries: Sequence[RegionQuery], names: Sequence[str], max_rows: int = MAX_ROWS
                   ) -> Dict[str, Dict[str, torch.Tensor]]:
    """{linear: {"mean_abs": (K,), "rows": (<= max_rows, K)}} over the prefill of every query (float32, CPU): the
    mean over every position, and rows spread evenly over the queries and their positions (fewer for wide inputs,
    `MAX_ELEMENTS`). On the tiny model 16 queries x 4096 rows gave clearly better scales than 8 x 256."""
    from ..engine.torch_backend import TorchEngine

    engine = TorchEngine(model, max_frames=max(len(q.clip) for q in queries))
    modules = dict(model.llm.named_modules())
    acc: Dict[str, Dict[str, Any]] = {n: {"sum": None, "count": 0, "rows": []} for n in names}

    def hook(name):
        def fn(_mod, args):
            x = args[0].detach().reshape(-1, args[0].shape[-1]).float().cpu()
            a = acc[name]
            s = x.abs().sum(0)
            a["sum"] = s if a["sum"] is None else a["sum"] + s
            a["count"] += x.shape[0]
            per_query = max(1, min(max_rows, max(64, MAX_ELEMENTS // x.shape[1])) // len(queries))
            step = max(1, x.shape[0] // per_query)
            a["rows"].append(x[::step][:per_query])
        return fn

    handles = [modules[n].register_forward_pre_hook(hook(n)) for n in names]
    try:
        with torch.no_grad():
            for q in queries:
                emb = engine._prefill_inputs(engine.prepare(q))
                model.llm(inputs_embeds=emb[None].to(model.dtype), use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return {n: {"mean_abs": a["sum"] / max(a["count"], 1), "rows": torch.cat(a["rows"])} for n, a in acc.items()}


def _tied(stat: torch.Tensor, tie: Optional[tuple]) -> torch.Tensor:
    if tie is None:
        return stat
    kv, rep, hd = tie
    return stat.view(kv, rep, hd).mean(1, keepdim=True).expand(kv, rep, hd).reshape(-1)


def search_group(weights: List[torch.Tensor], x: torch.Tensor, mean_abs: torch.Tensor, block: int,
                 tie: Optional[tuple] = None, grid: Sequence[float] = GRID) -> Dict[str, Any]:
    """Best alpha for one group: weights [out, in] (torch layout), x [T, in]. Returns alpha, the scale (in,) and
    the relative output error of RTN (alpha 0) and of the chosen scale."""
    x = x.float()
    refs = [x @ w.float().t() for w in weights]
    norm = sum(float((r ** 2).sum()) for r in refs) or 1.0
    stat = _tied(mean_abs.float().clamp_min(1e-8), tie)
    best: Dict[str, Any] = {}
    errors = {}
    for alpha in grid:
        s = stat ** alpha
        s = s / (s.max() * s.min()).sqrt()
        err = 0.0
        for w, r in zip(weights, refs):
            wq = fake_quantize((w.float() * s[None, :]).t(), block, axis=0)  # [in, out], blocks along in
            err += float((((x / s[None, :]) @ wq - r) ** 2).sum())
        errors[alpha] = err / norm
        if not best or errors[alpha] < best["error"]:
            best = {"alpha": alpha, "scale": s, "error": errors[alpha]}
    return {"alpha": best["alpha"], "scale": best["scale"], "error": best["error"], "rtn_error": errors[grid[0]]}


def output_scale(s: torch.Tensor, tie: Optional[Sequence[int]]) -> torch.Tensor:
    """The divisor of the preceding linear's output rows: s itself, or with tied o_proj scales one per key/value
    channel."""
    return s if not tie else s.view(*tie)[:, 0].reshape(-1)


def fold(model, group: Group, s: torch.Tensor) -> None:
    """Divide the preceding op's output by s and multiply the layers' input columns by s (exact in real numbers)."""
    modules = dict(model.llm.named_modules())
    with torch.no_grad():
        prev = modules[group.prev]
        if group.prev_kind == "norm":
            prev.weight.copy_((prev.weight.float() / s).to(prev.weight.dtype))
        else:
            rows = output_scale(s, group.tie)
            prev.weight.copy_((prev.weight.float() / rows[:, None]).to(prev.weight.dtype))
            if prev.bias is not None:
                prev.bias.copy_((prev.bias.float() / rows).to(prev.bias.dtype))
        for name in group.linears:
            lin = modules[name]
            lin.weight.copy_((lin.weight.float() * s[None, :]).to(lin.weight.dtype))


def apply_awq(model, queries: Sequence[RegionQuery], block: int, say: Callable[[str], None] = lambda m: None,
              max_rows: int = MAX_ROWS) -> Tuple[Dict[str, Any], Dict[str, torch.Tensor]]:
    """Search and fold the scales of every group in place. Returns the manifest record (per group: alpha, the
    layers, the relative output errors of RTN and of the chosen scales) and {group: (in,) float32 scales}."""
    groups = groups_of(model)
    firsts = [g.linears[0] for g in groups]
    stats = collect_inputs(model, queries, firsts, max_rows)
    modules = dict(model.llm.named_modules())
    record: Dict[str, Any] = {"grid": [GRID[0], GRID[-1], len(GRID)], "queries": len(queries),
                              "rows": {g.name: int(stats[g.linears[0]]["rows"].shape[0]) for g in groups}, "groups": {}}
    scales: Dict[str, torch.Tensor] = {}
    for g in groups:
        st = stats[g.linears[0]]
        res = search_group([modules[n].weight.detach() for n in g.linears], st["rows"], st["mean_abs"], block, g.tie)
        fold(model, g, res["scale"])
        record["groups"][g.name] = {"alpha": res["alpha"], "rel_error_rtn": res["rtn_error"],
                                    "rel_error_awq": res["error"], "layers": g.linears, "prev": g.prev,
                                    "prev_kind": g.prev_kind, "tie": list(g.tie) if g.tie else None}
        scales[g.name] = res["scale"].float().contiguous()
    alphas = [r["alpha"] for r in record["groups"].values()]
    gain = [r["rel_error_awq"] / r["rel_error_rtn"] for r in record["groups"].values() if r["rel_error_rtn"] > 0]
    say(f"  AWQ: {len(groups)} groups on {len(queries)} calibration queries, alpha {min(alphas):.2f}-"
        f"{max(alphas):.2f}, output error x{sum(gain) / max(len(gain), 1):.2f} of RTN on average")
    return record, scales
