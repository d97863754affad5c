"""The `Engine` interface and the backend registry.

Backends are imported only when chosen, so `import rgpt4d_sdk` pulls in no optional runtime.
"""
from __future__ import annotations

import importlib
import os
from typing import Any, Callable, Dict, List, Optional, Sequence

from ..device import check_device
from ..errors import BackendError
from ..types import Answer, RegionQuery

# backend name -> "module:Class".
BACKENDS: Dict[str, str] = {
    "torch": "rgpt4d_sdk.engine.torch_backend:TorchEngine",
    "onnxruntime": "rgpt4d_sdk.compiled.ort_backend:OnnxRuntimeEngine",
    "tensorrt": "rgpt4d_sdk.compiled.trt_backend:TensorRTEngine",
}


class Engine:
    """Answers `RegionQuery`s. Build one with `Engine.from_pretrained`."""

    backend: str = ""
    engine_id: str = ""

    @classmethod
    def from_pretrained(
        cls,
        path: "str | os.PathLike",
        backend: str = "torch",
        device: str = "auto",
        dtype: str = "auto",
        verify_digests: bool = False,
        **options: Any,
    ) -> "Engine":
        """Load a checkpoint in the released layout (local folder or hub id) on the chosen backend.

        device: "auto" (CUDA when available), "cpu", "cuda", "cuda:1". dtype: "auto" (bf16 on CUDA, else fp32),
        "float32", "bfloat16", "float16". options (torch backend): max_frames, prompt (PromptConfig or dict),
        max_new_tokens ({"choice": 16, ...}), attn_implementation ("sdpa" or "eager"), tpe (dict of TPE options).
        verify_digests: hash every compiled file again instead of trusting the digest cache (which trusts a file
        whose size, mtime and inode are unchanged; see docs/compiled.md).
        """
        if backend not in BACKENDS:
            raise BackendError(f"backend {backend!r} is unknown; available backends: {sorted(BACKENDS)}.")
        device = check_device(device)
        module_name, class_name = BACKENDS[backend].split(":")
        try:
            impl = getattr(importlib.import_module(module_name), class_name)
        except ImportError as e:
            raise BackendError(f"backend {backend!r} needs a package that is not installed: {e}.") from e
        if not verify_digests:
            return impl.load(path, device=device, dtype=dtype, **options)
        from ..digests import verify_digests as fresh_digests

        with fresh_digests():
            return impl.load(path, device=device, dtype=dtype, **options)

    def answer(self, query: RegionQuery, max_new_tokens: Optional[int] = None,
               should_stop: Optional[Callable[[], bool]] = None) -> Answer:
        """Answer one region query (greedy decoding); the `Answer` holds the raw text, the parsed choice or value
        and the stage timings. ``should_stop``: polled before every decode step (a cancel or a deadline)."""
        raise NotImplementedError

    def answer_many(
        self, queries: Sequence[RegionQuery], batch_size: int = 8, max_new_tokens: Optional[int] = None,
        errors: str = "return", should_stop: Optional[Callable[[], bool]] = None,
    ) -> List[Any]:
        """Answer many queries in batches of ``batch_size``, in order; shared work (vision cache, one prefill per
        marked clip) is done once and never changes an answer. With errors="return" a query that fails gets its
        typed error (`RGPT4DError`) in its slot and the others are still answered; errors="raise" raises the first.
        ``should_stop``: polled before every decode step (a cancel or a deadline); see `answer`."""
        raise NotImplementedError
