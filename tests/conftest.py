"""Shared fixtures: a tiny random checkpoint (written once per session) and the official NVILA reference fixture."""
from __future__ import annotations

from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def tiny_ckpt_dir(tmp_path_factory) -> Path:
    """A tiny random checkpoint in the released layout (seed 0, LLM in 2 shards). Treat it as read-only:
    tests that modify a checkpoint copy it to their own ``tmp_path`` first."""
    from rgpt4d_sdk.model.tiny import make_tiny

    return make_tiny(tmp_path_factory.mktemp("tiny") / "ckpt", seed=0)


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """tests/fixtures/nvila_reference: a tiny checkpoint and outputs written by the official NVILA code (read-only)."""
    path = FIXTURES / "nvila_reference"
    if not (path / "tiny_ckpt" / "config.json").is_file():
        pytest.fail(f"the NVILA reference fixture is missing at {path}")
    return path
