"""Reading the released checkpoint layout (NVILA-Lite-8B / 4D-RGPT-8B).

    <root>/config.json        LlavaLlamaModel root config (projector/vision/LLM sub-configs, select layer, TPE keys)
    <root>/llm/               Qwen2ForCausalLM config, (sharded) safetensors, tokenizer (either form)
    <root>/vision_tower/      SiglipVisionModel config, safetensors, preprocessor_config.json
    <root>/mm_projector/      projector config and safetensors

Unknown subfolders (training-only heads, optimizer states) are ignored. Only safetensors are read.
Every file is checked before any weight is loaded, so a bad folder fails fast with the file's name.
"""
from __future__ import annotations

import json
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from ..errors import CheckpointError, NonFiniteWeightsError, UnsupportedDtypeError

SUBFOLDERS = ("llm", "vision_tower", "mm_projector")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
DTYPES = {
    "float32": torch.float32, "fp32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16,
}


def parse_dtype(name: "str | torch.dtype | None", device: str = "cpu") -> torch.dtype:
    """"auto" -> bfloat16 on CUDA when supported, else float32. Unknown names raise `UnsupportedDtypeError`."""
    if isinstance(name, torch.dtype):
        if name in DTYPES.values():
            return name
        raise UnsupportedDtypeError(f"dtype {name} is not supported; use one of float32, bfloat16, float16.")
    if name is None or name == "auto":
        if str(device).startswith("cuda") and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    key = str(name).lower().replace("torch.", "")
    if key not in DTYPES:
        raise UnsupportedDtypeError(
            f"dtype {name!r} is not supported; use one of auto, float32, bfloat16, float16 (or fp32/bf16/fp16)."
        )
    return DTYPES[key]


@dataclass
class WeightFile:
    """One safetensors file of a sub-model and its header: {tensor name: {"dtype", "shape"}}, read without loading
    the weights."""

    path: Path
    tensors: Dict[str, Dict[str, Any]]  # name -> {"dtype": "F32", "shape": [...]} from the header

    @property
    def nbytes(self) -> int:
        return self.path.stat().st_size


@dataclass
class SubModel:
    """One subfolder: its config and its checked weight files."""

    folder: Path
    config: Dict[str, Any]
    files: List[WeightFile] = field(default_factory=list)
    sharded: bool = False

    def tensor_names(self) -> List[str]:
        """Every tensor name in the sub-model's safetensors files (from their headers; no weights are read)."""
        return [n for f in self.files for n in f.tensors]

    def num_params(self) -> int:
        """The number of parameters, from the tensor shapes in the file headers (no weights are read)."""
        total = 0
        for f in self.files:
            for meta in f.tensors.values():
                n = 1
                for d in meta["shape"]:
                    n *= int(d)
                total += n
        return total

    def load_state_dict(self, dtype: Optional[torch.dtype] = None) -> Dict[str, torch.Tensor]:
        """All tensors of the sub-model by name, cast to ``dtype`` when given (floating-point tensors only).

        Raises:
            CheckpointError: a file cannot be read as safetensors.
            NonFiniteWeightsError: a tensor holds NaN or inf (`check_finite`).
        """
        from safetensors.torch import load_file

        state: Dict[str, torch.Tensor] = {}
        for f in self.files:
            try:
                part = load_file(str(f.path))
            except Exception as e:  # safetensors raises several types for corrupt data
                raise CheckpointError(f"{f.path}: cannot read safetensors data ({e}); re-download this file.") from e
            check_finite(part, f.path)
            state.update(part)
        if dtype is not None:
            state = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in state.items()}
        return state


def check_finite(tensors: Dict[str, torch.Tensor], where: "Path | str") -> None:
    """`NonFiniteWeightsError` naming the first floating-point tensor that holds NaN or inf.

    One reduction per tensor (``aminmax``: NaN propagates to both ends, inf shows at one; no temporary as large as
    the tensor), about as fast as reading the bytes, so every load checks every weight."""
    for name, t in tensors.items():
        if not t.is_floating_point() or t.numel() == 0:
            continue
        lo, hi = torch.aminmax(t.detach().reshape(-1))
        if bool(torch.isfinite(lo)) and bool(torch.isfinite(hi)):
            continue
        bad = int((~torch.isfinite(t)).sum())  # only on the failure path
        raise NonFiniteWeightsError(
            f"{where}: tensor {name!r} holds {bad} non-finite value(s) (NaN or inf) of {t.numel()}; the file is "
            "corrupt or the run that wrote it diverged. Re-download it, or export the weights again from a good "
            "training checkpoint."
        )


@dataclass
class CheckpointFiles:
    """A checked checkpoint folder: the root config and the three sub-models."""

    root: Path
    config: Dict[str, Any]
    llm: SubModel
    vision_tower: SubModel
    mm_projector: SubModel
    preprocessor: Dict[str, Any]
    ignored: List[str]

    @property
    def tokenizer_form(self) -> str:
        has_fast = (self.llm.folder / "tokenizer.json").is_file()
        has_slow = all((self.llm.folder / n).is_file() for n in ("vocab.json", "merges.txt"))
        if has_fast and has_slow:
            return "tokenizer.json + vocab.json/merges.txt"
        if has_fast:
            return "tokenizer.json"
        if has_slow:
            return "vocab.json/merges.txt"
        return "missing"

    def size_bytes(self) -> int:
        """Bytes of every file under the checkpoint folder (weights, configs, tokenizer)."""
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())


def resolve(path_or_id: "str | os.PathLike", revision: Optional[str] = None) -> Path:
    """A local folder, or a Hugging Face hub id (downloaded with huggingface_hub, safetensors and configs only)."""
    p = Path(path_or_id).expanduser()
    if p.exists():
        if not p.is_dir():
            raise CheckpointError(f"{p} is a file; point --model at the checkpoint folder that holds config.json.")
        return p
    text = str(path_or_id)
    if HUB_ID.match(text) and not text.startswith((".", "/", "~")):
        try:
            from huggingface_hub import snapshot_download
        except ImportError as e:
            raise CheckpointError(f"{text!r} is not a local folder and huggingface_hub is not installed.") from e
        try:
            local = snapshot_download(
                repo_id=text,
                revision=revision,
                allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja"],
            )
        except Exception as e:
            raise CheckpointError(
                f"could not download {text!r} from the hub ({type(e).__name__}: {e}); download it yourself "
                "(the 4D-RGPT weights are CC-BY-NC-4.0) and pass the local folder."
            ) from e
        return Path(local)
    raise CheckpointError(f"checkpoint folder {p} does not exist (and {text!r} is not a hub id of the form org/name).")


def read_json(path: Path) -> Dict[str, Any]:
    """A checkpoint's JSON config as a dict; CheckpointError (naming the file) when it is missing, not JSON or not
    an object."""
    if not path.is_file():
        raise CheckpointError(f"{path} is missing; the checkpoint is incomplete (expected the released layout).")
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}); re-download it.") from e
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a JSON object, found {type(data).__name__}.")
    return data


def read_safetensors_header(path: Path) -> Dict[str, Dict[str, Any]]:
    """Parse a safetensors header and check that the file holds every byte it declares (detects truncation)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise ValueError("file shorter than the 8-byte header length")
            (n,) = struct.unpack("<Q", head)
            if n <= 0 or n > min(size - 8, 100_000_000):
                raise ValueError(f"header length {n} does not fit in a {size}-byte file")
            header = json.loads(fh.read(n).decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError(f"header is a JSON {type(header).__name__}, not an object")
        header.pop("__metadata__", None)
        for name, m in header.items():
            if not (isinstance(m, dict) and isinstance(m.get("dtype"), str) and isinstance(m.get("shape"), list)
                    and isinstance(m.get("data_offsets"), list) and len(m["data_offsets"]) == 2):
                raise ValueError(f"header entry {name!r} lacks dtype/shape/data_offsets")
        end = max((int(m["data_offsets"][1]) for m in header.values()), default=0)
    except (OSError, ValueError, TypeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not a valid safetensors file ({e}); re-download it.") from e
    if 8 + n + end > size:
        raise CheckpointError(
            f"{path}: truncated safetensors file ({size} bytes, header declares {8 + n + end}); re-download it."
        )
    return header


def read_submodel(folder: Path) -> SubModel:
    """Check a subfolder's config and weights (single file, or shards listed by model.safetensors.index.json)."""
    config = read_json(folder / "config.json")
    index = folder / "model.safetensors.index.json"
    single = folder / "model.safetensors"
    if index.is_file():
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"{index} has no weight_map; re-download the index file.")
        files = []
        for shard in sorted(set(weight_map.values())):
            path = folder / shard
            if not path.is_file():
                raise CheckpointError(f"shard {path} listed in {index.name} is missing; download every shard.")
            files.append(WeightFile(path, read_safetensors_header(path)))
        names = {n for f in files for n in f.tensors}
        lost = sorted(set(weight_map) - names)
        if lost:
            raise CheckpointError(f"{index}: tensors {lost[:5]} are listed but absent from their shards.")
        return SubModel(folder, config, files, sharded=True)
    if single.is_file():
        return SubModel(folder, config, [WeightFile(single, read_safetensors_header(single))])
    if any(folder.glob("*.bin")) or any(folder.glob("*.pt")):
        raise CheckpointError(
            f"{folder} holds only pickle weights (.bin/.pt); this SDK reads safetensors only. Convert them once "
            "with a trusted tool (e.g. transformers save_pretrained(..., safe_serialization=True))."
        )
    raise CheckpointError(f"{folder} has no model.safetensors nor model.safetensors.index.json.")


def read_checkpoint(path_or_id: "str | os.PathLike", revision: Optional[str] = None) -> CheckpointFiles:
    """Locate and check a checkpoint in the released layout; loads no weights."""
    root = resolve(path_or_id, revision)
    config = read_json(root / "config.json")
    for name in SUBFOLDERS:
        if not (root / name).is_dir():
            raise CheckpointError(
                f"{root} has no {name}/ subfolder; a 4D-RGPT / NVILA-Lite checkpoint holds config.json, "
                f"llm/, vision_tower/ and mm_projector/."
            )
    subs = {name: read_submodel(root / name) for name in SUBFOLDERS}
    pre_path = root / "vision_tower" / "preprocessor_config.json"
    preprocessor = read_json(pre_path) if pre_path.is_file() else {}
    ignored = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name not in SUBFOLDERS)
    return CheckpointFiles(root, config, subs["llm"], subs["vision_tower"], subs["mm_projector"], preprocessor, ignored)
