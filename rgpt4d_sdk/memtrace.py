"""Peak tensor memory of a piece of work: torch's profiler on the CPU, the caching allocator's counters on CUDA.

On the CPU, `torch.profiler` with ``profile_memory=True`` records every allocation and free of the CPU allocator
(size and time); the running sum from the start of the trace gives the peak of tensors allocated during the work,
above what was live before it. On CUDA, ``torch.cuda.max_memory_allocated`` after a reset gives the same quantity
(minus what was allocated before). Both count tensor storage only (not the CUDA context or library workspaces
outside torch's allocator).
"""
from __future__ import annotations

import gc
from typing import Any, Callable, Tuple

import torch


def peak_bytes(fn: Callable[[], Any], device: "str | torch.device" = "cpu") -> Tuple[Any, int]:
    """Run ``fn()``; return (its result, peak bytes of tensors allocated during it above the level at the start)."""
    device = torch.device(device)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        out = fn()
        torch.cuda.synchronize(device)
        return out, int(torch.cuda.max_memory_allocated(device) - base)
    from torch.profiler import ProfilerActivity, profile

    gc.disable()  # a collection during the trace would count frees of older tensors
    try:
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            out = fn()
    finally:
        gc.enable()
    events = [(e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
              if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU]
    events.sort(key=lambda x: x[0])
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return out, int(peak)
