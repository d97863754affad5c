"""Helpers shared by the checkpoint tests (moved unchanged from tests/test_checkpoint.py)."""
from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path
from typing import Dict

import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from rgpt4d_sdk.cli import app

SHARDS = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")
TOKENIZER_JSON = "tokenizer.json"
SLOW_FILES = ("vocab.json", "merges.txt")


# ----------------------------------------------------------------------------------------------------- helpers
def copy_ckpt(src: Path, tmp_path: Path, name: str = "ckpt") -> Path:
    dst = tmp_path / name
    shutil.copytree(src, dst)
    return dst


def all_bytes(root: Path) -> Dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def param_dtypes(model: torch.nn.Module) -> set:
    return {p.dtype for p in model.parameters()}


def edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    data.update(changes)
    path.write_text(json.dumps(data), encoding="utf-8")


def edit_safetensors(path: Path, edit) -> None:
    """Load a safetensors file, let ``edit(state)`` change the dict in place, and write it back."""
    state = load_file(str(path))
    edit(state)
    save_file(state, str(path), {"format": "pt"})


def header_len(path: Path) -> int:
    with open(path, "rb") as fh:
        return struct.unpack("<Q", fh.read(8))[0]


def run_cli(*args: str):
    return CliRunner().invoke(app, list(args))


def cli_text(result) -> str:
    """stdout and stderr together, whatever Click's CliRunner mixes by default."""
    text = result.output or ""
    try:
        err = result.stderr or ""
    except ValueError:  # older Click without separate stderr capture
        err = ""
    return text if err in text else text + err
