"""Checkpoint errors: every bad checkpoint raises a typed error whose message names the offending file, key or
value (tests modify a copy in their own ``tmp_path``)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rgpt4d_sdk.errors import CheckpointError
from rgpt4d_sdk.model.checkpoint import read_checkpoint, read_safetensors_header, resolve
from rgpt4d_sdk.model.nvila import NvilaModel
from rgpt4d_sdk.model.tiny import inspect_checkpoint

from checkpoint_helpers import SHARDS, copy_ckpt, edit_json, edit_safetensors, header_len


# -------------------------------------------------------------------------------------------------------- errors
def test_missing_subfolder(tiny_ckpt_dir, tmp_path):
    ckpt = copy_ckpt(tiny_ckpt_dir, tmp_path)
    shutil.rmtree(ckpt / "mm_projector")
    with pytest.raises(CheckpointError, match=r"has no mm_projector/ subfolder"):
        read_checkpoint(ckpt)
    with pytest.raises(CheckpointError, match="mm_projector"):
        NvilaModel.from_pretrained(ckpt)


@pytest.mark.parametrize("sub", ["llm", "vision_tower"])
def test_missing_other_subfolders(tiny_ckpt_dir, tmp_path, sub):
    ckpt = copy_ckpt(tiny_ckpt_dir, tmp_path)
    shutil.rmtree(ckpt / sub)
    with pytest.raises(CheckpointError, match=rf"has no {sub}/ subfolder"):
        read_checkpoint(ckpt)


def test_missing_shard(tiny_ckpt_dir, tmp_path):
    ckpt = copy_ckpt(tiny_ckpt_dir, tmp_path)
    (ckpt / "llm" / SHARDS[1]).unlink()
    with pytest.raises(CheckpointError, match=rf"shard .*{SHARDS[1]}.* is missing") as ei:
        NvilaModel.from_pretrained(ckpt)
    assert "model.safetensors.index.json" in str(ei.value)


def test_corrupt_safetensors_header(tiny_ckpt_dir, tmp_path):
    ckpt = copy_ckpt(tiny_ckpt_dir, tmp_path)
    path = ckpt / "llm" / SHARDS[0]
    data = bytearray(path.read_bytes())
    data[8:40] = b"\xff\xfe garbage \x00\x01\x02 not json!!\x9c\x80\x81"[:32].ljust(32, b"#")
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="not a valid safetensors file") as ei:
        read_checkpoint(ckpt)
    assert SHARDS[0] in str(ei.value)


def test_corrupt_safetensors_length_prefix(tiny_ckpt_dir, tmp_path):
    ckpt = copy_ckpt(tiny_ckpt_dir, tmp_path)
    path = ckpt / "vision_tower" / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[0:8] = b"\xde\xad\xbe\xef\xde\xad\xbe\xef"
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"vision_tower.model\.safetensors: not a valid safetensors file"):
        read_checkpoint(ckpt)


@pytest.mark.parametrize("header", [b"[1, 2, 3]", b'{"layers.2.weight": {"dtype": "F32"}}', b'{"x": 5}', b"7"])
def test_header_that_is_json_but_not_safetensors(tiny_ckpt_dir, tmp_path, header):
    ckpt = copy_ckpt(tiny_ckpt_dir, tmp_path)
    path = ckpt / "mm_projector" / "model.safetensors"
    data = bytearray(path.read_bytes())
    n = header_len(path)
    data[8:8 + n] = header.ljust(n, b" ")
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"mm_projector.model\.safetensors: not a valid safetensors file"):
        read_safetensors_header(path)
    with pytest.raises(CheckpointError, match="mm_projector"):
        inspect_checkpoint(ckpt)


def test_truncated_safetensors(tiny_ckpt_dir, tmp_path):
    ckpt = copy_ckpt(tiny_ckpt_dir, tmp_path)
    path = ckpt / "llm" / SHARDS[1]
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    with pytest.raises(CheckpointError, match="truncated safetensors file") as ei:
        NvilaModel.from_pretrained(ckpt)
    msg = str(ei.value)
    assert SHARDS[1] in msg and str(len(data) - 100) in msg


def test_file_shorter_than_length_prefix(tiny_ckpt_dir, tmp_path):
    ckpt = copy_ckpt(tiny_ckpt_dir, tmp_path)
    path = ckpt / "mm_projector" / "model.safetensors"
    path.write_bytes(path.read_bytes()[:5])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: not a valid safetensors file"):
        read_checkpoint(ckpt)


def test_projector_shape_does_not_match_type(tiny_ckpt_dir, tmp_path):
    ckpt = copy_ckpt(tiny_ckpt_dir, tmp_path)
    path = ckpt / "mm_projector" / "model.safetensors"
    assert tuple(load_file(str(path))["layers.2.weight"].shape) == (192, 576)  # Linear(9 * 64, 3 * 64)
    edit_safetensors(path, lambda state: state.update({"layers.2.weight": torch.zeros(576, 192)}))
    with pytest.raises(CheckpointError, match=r"'layers\.2\.weight' has shape \(576, 192\).*needs \(192, 576\)"):
        NvilaModel.from_pretrained(ckpt)


def test_projector_missing_key(tiny_ckpt_dir, tmp_path):
    ckpt = copy_ckpt(tiny_ckpt_dir, tmp_path)
    edit_safetensors(ckpt / "mm_projector" / "model.safetensors", lambda state: state.pop("layers.7.bias"))
    with pytest.raises(CheckpointError, match=r"projector keys do not match.*missing \['layers\.7\.bias'\]"):
        NvilaModel.from_pretrained(ckpt)


def test_unknown_projector_type(tiny_ckpt_dir, tmp_path):
    ckpt = copy_ckpt(tiny_ckpt_dir, tmp_path)
    edit_json(ckpt / "mm_projector" / "config.json", mm_projector_type="mlp2x_gelu")
    with pytest.raises(CheckpointError, match=r"'mlp2x_gelu' is not supported.*mlp_downsample_3x3_fix") as ei:
        NvilaModel.from_pretrained(ckpt)
    assert "mm_projector/config.json" in str(ei.value)
    with pytest.raises(CheckpointError, match="mlp2x_gelu"):
        inspect_checkpoint(ckpt)


def test_missing_root_config(tiny_ckpt_dir, tmp_path):
    ckpt = copy_ckpt(tiny_ckpt_dir, tmp_path)
    (ckpt / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"config\.json is missing") as ei:
        NvilaModel.from_pretrained(ckpt)
    assert str(ckpt / "config.json") in str(ei.value)


@pytest.mark.parametrize("where", ["config.json", "llm/config.json", "vision_tower/config.json",
                                   "mm_projector/config.json", "llm/model.safetensors.index.json"])
def test_invalid_json_config(tiny_ckpt_dir, tmp_path, where):
    ckpt = copy_ckpt(tiny_ckpt_dir, tmp_path)
    (ckpt / where).write_text('{"architectures": ["LlavaLlamaModel"], ', encoding="utf-8")
    with pytest.raises(CheckpointError, match="is not valid JSON") as ei:
        read_checkpoint(ckpt)
    assert str(ckpt / where) in str(ei.value)


def test_config_that_is_not_an_object(tiny_ckpt_dir, tmp_path):
    ckpt = copy_ckpt(tiny_ckpt_dir, tmp_path)
    (ckpt / "config.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(CheckpointError, match=r"config\.json must hold a JSON object, found list"):
        read_checkpoint(ckpt)


def test_pickle_only_weights(tiny_ckpt_dir, tmp_path):
    ckpt = copy_ckpt(tiny_ckpt_dir, tmp_path)
    folder = ckpt / "mm_projector"
    state = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    torch.save(state, str(folder / "pytorch_model.bin"))
    with pytest.raises(CheckpointError, match=r"pickle weights.*safetensors only") as ei:
        NvilaModel.from_pretrained(ckpt)
    assert str(folder) in str(ei.value)


def test_pickle_file_is_never_unpickled(tiny_ckpt_dir, tmp_path):
    """A .bin that is not even a valid pickle still gives the safetensors-only message (it is never opened)."""
    ckpt = copy_ckpt(tiny_ckpt_dir, tmp_path)
    folder = ckpt / "llm"
    for p in list(folder.glob("model*.safetensors*")):
        p.unlink()
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04 this is not a pickle")
    with pytest.raises(CheckpointError, match="safetensors only"):
        read_checkpoint(ckpt)


def test_no_weights_at_all(tiny_ckpt_dir, tmp_path):
    ckpt = copy_ckpt(tiny_ckpt_dir, tmp_path)
    (ckpt / "vision_tower" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"vision_tower has no model\.safetensors nor model\.safetensors\.index"):
        read_checkpoint(ckpt)


def test_index_without_weight_map(tiny_ckpt_dir, tmp_path):
    ckpt = copy_ckpt(tiny_ckpt_dir, tmp_path)
    (ckpt / "llm" / "model.safetensors.index.json").write_text('{"metadata": {}}', encoding="utf-8")
    with pytest.raises(CheckpointError, match=r"model\.safetensors\.index\.json has no weight_map"):
        read_checkpoint(ckpt)


def _drop_llm_tensor(ckpt: Path, name: str, update_index: bool) -> None:
    index_path = ckpt / "llm" / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    shard = ckpt / "llm" / index["weight_map"][name]
    edit_safetensors(shard, lambda state: state.pop(name))
    if update_index:
        del index["weight_map"][name]
        index_path.write_text(json.dumps(index))


def test_llm_tensor_listed_in_index_but_absent(tiny_ckpt_dir, tmp_path):
    ckpt = copy_ckpt(tiny_ckpt_dir, tmp_path)
    name = "model.norm.weight"
    _drop_llm_tensor(ckpt, name, update_index=False)
    with pytest.raises(CheckpointError, match=rf"tensors \['{name}'\] are listed but absent"):
        NvilaModel.from_pretrained(ckpt)


def test_llm_weights_missing_a_tensor(tiny_ckpt_dir, tmp_path):
    ckpt = copy_ckpt(tiny_ckpt_dir, tmp_path)
    name = "model.layers.1.mlp.down_proj.weight"
    _drop_llm_tensor(ckpt, name, update_index=True)
    read_checkpoint(ckpt)  # the files themselves are consistent
    with pytest.raises(CheckpointError, match=rf"weights do not match config\.json \(missing \['{name}'\]") as ei:
        NvilaModel.from_pretrained(ckpt)
    assert str(ckpt / "llm") in str(ei.value)


def test_llm_tensor_with_wrong_shape(tiny_ckpt_dir, tmp_path):
    ckpt = copy_ckpt(tiny_ckpt_dir, tmp_path)
    edit_json(ckpt / "llm" / "config.json", intermediate_size=96)  # weights were saved with 160
    with pytest.raises(CheckpointError, match=r"mlp\.\w+_proj\.weight has shape .*config\.json implies"):
        NvilaModel.from_pretrained(ckpt)


def test_vision_weights_missing_a_tensor(tiny_ckpt_dir, tmp_path):
    ckpt = copy_ckpt(tiny_ckpt_dir, tmp_path)
    victim = "vision_model.encoder.layers.0.self_attn.q_proj.weight"  # the released key layout
    edit_safetensors(ckpt / "vision_tower" / "model.safetensors", lambda state: state.pop(victim))
    with pytest.raises(CheckpointError, match=r"vision_tower: weights do not match config\.json.*q_proj\.weight"):
        NvilaModel.from_pretrained(ckpt)


def test_nonexistent_path(tmp_path):
    missing = tmp_path / "nowhere" / "ckpt"
    with pytest.raises(CheckpointError, match=r"does not exist.*not a hub id") as ei:
        NvilaModel.from_pretrained(missing)
    assert str(missing) in str(ei.value)
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint("./relative/but/missing")


def test_path_that_is_a_file(tiny_ckpt_dir):
    with pytest.raises(CheckpointError, match=r"is a file; point --model at the checkpoint folder"):
        read_checkpoint(tiny_ckpt_dir / "config.json")


def test_hub_id_goes_to_the_hub_without_network(tmp_path, monkeypatch):
    """A hub id is passed to huggingface_hub (replaced here by a fake: no network), safetensors/configs only."""
    hub = pytest.importorskip("huggingface_hub")
    monkeypatch.chdir(tmp_path)  # no local folder named like the id
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    calls = []

    def fake_snapshot_download(repo_id, revision=None, allow_patterns=None, **kw):
        calls.append((repo_id, revision, allow_patterns))
        raise OSError("offline in tests")

    monkeypatch.setattr(hub, "snapshot_download", fake_snapshot_download)
    with pytest.raises(CheckpointError, match=r"could not download 'some-org/Some_Model-8B' from the hub.*OSError"):
        resolve("some-org/Some_Model-8B", revision="abc123")
    assert len(calls) == 1
    repo_id, revision, patterns = calls[0]
    assert (repo_id, revision) == ("some-org/Some_Model-8B", "abc123")
    assert "*.safetensors" in patterns and "*.json" in patterns
    assert not any(p.endswith((".bin", ".pt", ".pth", ".ckpt")) or p == "*" for p in patterns)

    # A successful (fake) download is then read like a local folder.
    def fake_ok(repo_id, revision=None, allow_patterns=None, **kw):
        return str(tmp_path / "does-not-matter")

    (tmp_path / "does-not-matter").mkdir()
    monkeypatch.setattr(hub, "snapshot_download", fake_ok)
    assert resolve("org/name") == tmp_path / "does-not-matter"
    with pytest.raises(CheckpointError, match=r"config\.json is missing"):
        read_checkpoint("org/name")
