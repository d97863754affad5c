"""Tests of checkpoint reading and writing: `make_tiny`, `read_checkpoint`, `NvilaModel.from_pretrained`,
`inspect_checkpoint` and the `checkpoint` CLI commands.

Every error test checks the exception type and that the message names the offending file, key or value.
Tests that modify a checkpoint work on a copy in their own ``tmp_path``.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from rgpt4d_sdk.errors import CheckpointError, ConfigError, RGPT4DError, UnsupportedDtypeError
from rgpt4d_sdk.model.checkpoint import parse_dtype, read_checkpoint
from rgpt4d_sdk.model.nvila import NvilaModel
from rgpt4d_sdk.model.tiny import SPECIAL_TOKENS, inspect_checkpoint, make_tiny
from rgpt4d_sdk.prompt.template import chat_prompt, user_content

from checkpoint_helpers import (
    SHARDS,
    SLOW_FILES,
    TOKENIZER_JSON,
    all_bytes,
    cli_text,
    copy_ckpt,
    edit_json,
    param_dtypes,
    run_cli,
)


# ------------------------------------------------------------------------------------------- make_tiny layout
def test_make_tiny_layout(tiny_ckpt_dir):
    root = tiny_ckpt_dir
    assert (root / "config.json").is_file()
    config = json.loads((root / "config.json").read_text())
    assert config["architectures"] == ["LlavaLlamaModel"]
    assert config["model_type"] == "llava_llama"
    assert config["mm_vision_select_layer"] == -2

    llm = root / "llm"
    for name in ("config.json", "model.safetensors.index.json", *SHARDS, TOKENIZER_JSON, *SLOW_FILES,
                 "added_tokens.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"):
        assert (llm / name).is_file(), f"llm/{name} missing"
    assert not (llm / "model.safetensors").exists()
    shard_files = sorted(p.name for p in llm.glob("*.safetensors"))
    assert shard_files == list(SHARDS)
    index = json.loads((llm / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(SHARDS)
    in_shards = set()
    for shard in SHARDS:
        in_shards |= set(load_file(str(llm / shard)))
    assert set(index["weight_map"]) == in_shards
    assert index["metadata"]["total_size"] > 0

    vt = root / "vision_tower"
    for name in ("config.json", "model.safetensors", "preprocessor_config.json"):
        assert (vt / name).is_file(), f"vision_tower/{name} missing"
    pre = json.loads((vt / "preprocessor_config.json").read_text())
    assert pre["size"] == {"height": 112, "width": 112}

    mp = root / "mm_projector"
    assert (mp / "config.json").is_file() and (mp / "model.safetensors").is_file()
    assert json.loads((mp / "config.json").read_text())["mm_projector_type"] == "mlp_downsample_3x3_fix"
    # Nothing but the released layout at the root.
    assert sorted(p.name for p in root.iterdir()) == ["config.json", "llm", "mm_projector", "vision_tower"]


def test_make_tiny_is_deterministic(tiny_ckpt_dir, tmp_path):
    again = all_bytes(make_tiny(tmp_path / "same", seed=0))
    first = all_bytes(tiny_ckpt_dir)
    assert sorted(again) == sorted(first)
    differing = [name for name in first if first[name] != again[name]]
    assert differing == [], f"same seed, different bytes in {differing}"

    other = all_bytes(make_tiny(tmp_path / "other", seed=1))
    assert sorted(other) == sorted(first)
    weights = [n for n in first if n.endswith(".safetensors")]
    assert len(weights) == 4
    for name in weights:
        assert other[name] != first[name], f"seed 1 wrote the same {name} as seed 0"


def test_make_tiny_refuses_to_overwrite(tiny_ckpt_dir, tmp_path):
    ckpt = copy_ckpt(tiny_ckpt_dir, tmp_path)
    before = all_bytes(ckpt)
    with pytest.raises(CheckpointError, match="already holds a checkpoint"):
        make_tiny(ckpt, seed=5)
    assert all_bytes(ckpt) == before


# ------------------------------------------------------------------------------------------------------ loading
def assert_weights_match_files(model: NvilaModel, root: Path, dtype: torch.dtype = torch.float32) -> None:
    """Every tensor of the loaded model equals the one stored on disk (cast to ``dtype``)."""
    llm_state = {}
    for p in sorted((root / "llm").glob("*.safetensors")):
        llm_state.update(load_file(str(p)))
    loaded = model.llm.state_dict()
    assert set(llm_state) <= set(loaded)
    for k, v in llm_state.items():
        assert torch.equal(loaded[k], v.to(dtype)), k
    proj = load_file(str(root / "mm_projector" / "model.safetensors"))
    for k, v in model.projector.state_dict().items():
        assert torch.equal(v, proj[k].to(dtype)), k
    vision = load_file(str(root / "vision_tower" / "model.safetensors"))
    loaded_v = {k.split("vision_model.")[-1]: v for k, v in model.vision.tower.state_dict().items()}
    stored_v = {k.split("vision_model.")[-1]: v for k, v in vision.items()}
    assert set(stored_v) == set(loaded_v)
    for k, v in stored_v.items():
        assert torch.equal(loaded_v[k], v.to(dtype)), k


def test_sharded_checkpoint_loads(tiny_ckpt_dir):
    model = NvilaModel.from_pretrained(tiny_ckpt_dir, dtype="float32")
    assert model.files.llm.sharded and len(model.files.llm.files) == 2
    assert model.spec.tokens_per_image == 9
    assert_weights_match_files(model, tiny_ckpt_dir)
    assert model.tokenizer.convert_ids_to_tokens(model.image_token_id) == "<image>"
    assert model.tokenizer.decode([model.newline_id]) == "\n"


def test_single_file_checkpoint_loads(tmp_path):
    root = make_tiny(tmp_path / "single", seed=0, llm_shards=1)
    llm = root / "llm"
    assert (llm / "model.safetensors").is_file()
    assert not (llm / "model.safetensors.index.json").exists()
    assert not list(llm.glob("model-*-of-*.safetensors"))
    model = NvilaModel.from_pretrained(root, dtype="float32")
    assert not model.files.llm.sharded and len(model.files.llm.files) == 1
    assert_weights_match_files(model, root)


def test_unknown_subfolder_is_ignored_and_listed(tiny_ckpt_dir, tmp_path):
    ckpt = copy_ckpt(tiny_ckpt_dir, tmp_path)
    heads = ckpt / "p4d_heads"
    heads.mkdir()
    save_file({"proj.weight": torch.zeros(3, 4)}, str(heads / "model.safetensors"))
    (heads / "config.json").write_text("{ not json")  # never read
    files = read_checkpoint(ckpt)
    assert files.ignored == ["p4d_heads"]
    model = NvilaModel.from_pretrained(ckpt, dtype="float32")
    assert model.spec.tokens_per_image == 9
    assert inspect_checkpoint(ckpt)["ignored_subfolders"] == ["p4d_heads"]
    result = run_cli("checkpoint", "inspect", str(ckpt))
    assert result.exit_code == 0, cli_text(result)
    assert "ignored subfolders: p4d_heads" in result.output


def test_official_reference_checkpoint_loads(reference_dir):
    root = reference_dir / "tiny_ckpt"
    model = NvilaModel.from_pretrained(root, dtype="float32")
    assert param_dtypes(model) == {torch.float32}
    assert model.spec.tokens_per_image == 9 and model.spec.positions_per_frame == 10
    assert model.spec.num_video_frames == 4
    assert model.spec.tpe.enabled is False  # the official NVILA config declares no TPE
    assert model.image_token_id == 486 and model.newline_id == 198
    assert model.llm.config.vocab_size == 488
    assert_weights_match_files(model, root)
    info = inspect_checkpoint(root)
    assert info["llm"]["shards"] == 1
    assert info["tokenizer_form"] == "tokenizer.json + vocab.json/merges.txt"
    assert info["ignored_subfolders"] == []


# --------------------------------------------------------------------------------------------- tokenizer forms
@pytest.fixture(scope="module")
def tokenizer_forms(tiny_ckpt_dir, tmp_path_factory):
    """The tiny checkpoint twice: with only vocab.json + merges.txt, and with only tokenizer.json."""
    base = tmp_path_factory.mktemp("tokforms")
    slow = copy_ckpt(tiny_ckpt_dir, base, "slow")
    (slow / "llm" / TOKENIZER_JSON).unlink()
    fast = copy_ckpt(tiny_ckpt_dir, base, "fast")
    for name in SLOW_FILES:
        (fast / "llm" / name).unlink()
    return slow, fast


def test_tokenizer_forms_are_reported(tiny_ckpt_dir, tokenizer_forms):
    slow, fast = tokenizer_forms
    assert read_checkpoint(tiny_ckpt_dir).tokenizer_form == "tokenizer.json + vocab.json/merges.txt"
    assert read_checkpoint(slow).tokenizer_form == "vocab.json/merges.txt"
    assert read_checkpoint(fast).tokenizer_form == "tokenizer.json"
    assert inspect_checkpoint(slow)["tokenizer_form"] == "vocab.json/merges.txt"
    assert inspect_checkpoint(fast)["tokenizer_form"] == "tokenizer.json"


def test_both_tokenizer_forms_give_identical_ids(tokenizer_forms):
    slow, fast = tokenizer_forms
    a = NvilaModel.from_pretrained(slow, dtype="float32")
    b = NvilaModel.from_pretrained(fast, dtype="float32")
    assert a.image_token_id == b.image_token_id
    assert a.newline_id == b.newline_id
    prompt_a = chat_prompt(a.tokenizer, user_content(2, "How far is <obj_1>?"))
    prompt_b = chat_prompt(b.tokenizer, user_content(2, "How far is <obj_1>?"))
    assert prompt_a == prompt_b
    assert prompt_a.startswith("<|im_start|>system\n") and prompt_a.endswith("<|im_start|>assistant\n")
    texts = [
        "<image><image>How far is <obj_1>?\n",
        prompt_a,
        "What is the speed of <obj_2>? (A) 0 m/s (B) 4 m/s",
        "  leading spaces,\ttabs\r\nand 23.5 metres; héllo 你好 🚗",
        "".join(SPECIAL_TOKENS),
    ]
    for text in texts:
        ids_a = a.tokenizer.encode(text, add_special_tokens=False)
        ids_b = b.tokenizer.encode(text, add_special_tokens=False)
        assert ids_a == ids_b, text
        assert a.tokenizer.decode(ids_a) == text
    ids = a.tokenizer.encode(texts[0], add_special_tokens=False)
    assert ids[:2] == [a.image_token_id, a.image_token_id]
    assert ids[-1] == a.newline_id
    for tok in SPECIAL_TOKENS:  # every special token is one id in both forms
        assert a.tokenizer.encode(tok, add_special_tokens=False) == [a.tokenizer.convert_tokens_to_ids(tok)]
        assert b.tokenizer.encode(tok, add_special_tokens=False) == [b.tokenizer.convert_tokens_to_ids(tok)]


def test_no_tokenizer_is_an_error(tiny_ckpt_dir, tmp_path):
    ckpt = copy_ckpt(tiny_ckpt_dir, tmp_path)
    for name in (TOKENIZER_JSON, *SLOW_FILES):
        (ckpt / "llm" / name).unlink()
    assert read_checkpoint(ckpt).tokenizer_form == "missing"
    with pytest.raises(CheckpointError, match=r"no tokenizer.*tokenizer\.json.*vocab\.json \+ merges\.txt") as ei:
        NvilaModel.from_pretrained(ckpt, dtype="float32")
    assert str(ckpt / "llm") in str(ei.value)


def test_only_merges_without_vocab_is_missing(tiny_ckpt_dir, tmp_path):
    ckpt = copy_ckpt(tiny_ckpt_dir, tmp_path)
    (ckpt / "llm" / TOKENIZER_JSON).unlink()
    (ckpt / "llm" / "vocab.json").unlink()
    assert read_checkpoint(ckpt).tokenizer_form == "missing"
    with pytest.raises(CheckpointError, match="no tokenizer"):
        NvilaModel.from_pretrained(ckpt, dtype="float32")


# -------------------------------------------------------------------------------------------------------- dtypes
@pytest.mark.parametrize("name", ["float32", "fp32", torch.float32])
def test_fp32_loading(tiny_ckpt_dir, name):
    model = NvilaModel.from_pretrained(tiny_ckpt_dir, dtype=name)
    assert model.dtype == torch.float32
    for part in (model.vision, model.projector, model.llm):
        assert param_dtypes(part) == {torch.float32}


@pytest.mark.parametrize("name", ["bfloat16", "bf16", torch.bfloat16])
def test_bf16_loading(tiny_ckpt_dir, name):
    model = NvilaModel.from_pretrained(tiny_ckpt_dir, dtype=name)
    assert model.dtype == torch.bfloat16
    for part in (model.vision, model.projector, model.llm):
        assert param_dtypes(part) == {torch.bfloat16}
    assert_weights_match_files(model, tiny_ckpt_dir, torch.bfloat16)


def test_auto_dtype_is_float32_on_cpu(tiny_ckpt_dir):
    assert parse_dtype("auto", "cpu") == torch.float32
    assert parse_dtype(None, "cpu") == torch.float32
    model = NvilaModel.from_pretrained(tiny_ckpt_dir, device="cpu", dtype="auto")
    assert param_dtypes(model) == {torch.float32}


@pytest.mark.parametrize("name", ["float8", "int4", "float64", "half-ish"])
def test_unknown_dtype_name(name):
    with pytest.raises(UnsupportedDtypeError) as ei:
        parse_dtype(name)
    msg = str(ei.value)
    assert repr(name) in msg
    for valid in ("float32", "bfloat16", "float16"):
        assert valid in msg
    assert isinstance(ei.value, ConfigError) and isinstance(ei.value, RGPT4DError)


@pytest.mark.parametrize("dtype", [torch.float64, torch.int8])
def test_unknown_torch_dtype(dtype):
    with pytest.raises(UnsupportedDtypeError, match="float32, bfloat16, float16") as ei:
        parse_dtype(dtype)
    assert str(dtype) in str(ei.value)


@pytest.mark.parametrize("name", ["float8", "int4"])
def test_from_pretrained_unknown_dtype(tiny_ckpt_dir, name):
    with pytest.raises(UnsupportedDtypeError, match=rf"'{name}' is not supported.*float32, bfloat16, float16"):
        NvilaModel.from_pretrained(tiny_ckpt_dir, dtype=name)


# ------------------------------------------------------------------------------------------------------- inspect
def test_inspect_values(tiny_ckpt_dir):
    info = inspect_checkpoint(tiny_ckpt_dir)
    assert info["path"] == str(tiny_ckpt_dir)
    assert info["architecture"] == "LlavaLlamaModel"
    assert info["tokens_per_frame"] == 9
    assert info["positions_per_frame"] == 10
    assert info["tpe"] == {"enabled": True, "base": 10000.0, "site": "pre_projector", "origin": "first_frame"}
    assert info["tokenizer_form"] == "tokenizer.json + vocab.json/merges.txt"
    assert info["llm"]["shards"] == 2
    assert info["llm"]["layers"] == 2 and info["llm"]["hidden_size"] == 64 and info["llm"]["kv_heads"] == 2
    assert info["vision_tower"]["image_size"] == 112 and info["vision_tower"]["patch_size"] == 14
    assert info["vision_tower"]["feature_layer"] == -2 and info["vision_tower"]["layers"] == 3
    assert info["projector"]["type"] == "mlp_downsample_3x3_fix"
    assert info["weight_dtypes"] == ["F32"]
    assert info["ignored_subfolders"] == []
    assert info["size_bytes"] == sum(len(b) for b in all_bytes(tiny_ckpt_dir).values())
    for part in ("vision_tower", "projector", "llm"):
        assert info[part]["params"] > 0
    # Parameter counts come from the headers and match the loaded modules.
    model = NvilaModel.from_pretrained(tiny_ckpt_dir, dtype="float32")
    assert info["llm"]["params"] == sum(p.numel() for p in model.llm.parameters())
    assert info["projector"]["params"] == sum(p.numel() for p in model.projector.parameters())
    assert info["vision_tower"]["params"] == sum(p.numel() for p in model.vision.tower.parameters())
    assert info["llm"]["vocab_size"] == len(model.tokenizer)


def test_inspect_tpe_off_and_bf16_weights(tiny_ckpt_dir, tmp_path):
    ckpt = copy_ckpt(tiny_ckpt_dir, tmp_path)
    edit_json(ckpt / "config.json", use_time_pe=False)
    path = ckpt / "mm_projector" / "model.safetensors"
    save_file({k: v.to(torch.bfloat16) for k, v in load_file(str(path)).items()}, str(path))
    info = inspect_checkpoint(ckpt)
    assert info["tpe"]["enabled"] is False
    assert info["weight_dtypes"] == ["BF16", "F32"]
    model = NvilaModel.from_pretrained(ckpt, dtype="float32")  # stored bf16 projector is cast on load
    assert model.spec.tpe.enabled is False
    assert param_dtypes(model.projector) == {torch.float32}


def test_cli_inspect_text(tiny_ckpt_dir):
    result = run_cli("checkpoint", "inspect", str(tiny_ckpt_dir))
    assert result.exit_code == 0, cli_text(result)
    out = result.output
    assert f"checkpoint: {tiny_ckpt_dir} (LlavaLlamaModel, " in out
    assert "vision tower: SigLIP 112 px, patch 14, width 64, 3 layers, features from hidden_states[-2]" in out
    assert "projector: mlp_downsample_3x3_fix" in out
    assert "llm: Qwen2 hidden 64, 2 layers, 4 heads / 2 KV, vocab 488" in out
    assert "in 2 file(s)" in out
    assert "tokens per frame: 9 visual + 1 newline = 10" in out
    assert "TPE: on (base 10000, pre_projector, first_frame)" in out
    assert "tokenizer: tokenizer.json + vocab.json/merges.txt; weight dtypes: F32" in out
    assert "ignored subfolders" not in out


def test_cli_inspect_json(tiny_ckpt_dir):
    result = run_cli("checkpoint", "inspect", str(tiny_ckpt_dir), "--json")
    assert result.exit_code == 0, cli_text(result)
    data = json.loads(result.output)
    assert data == inspect_checkpoint(tiny_ckpt_dir)
    assert data["tokens_per_frame"] == 9 and data["positions_per_frame"] == 10
    assert data["tpe"]["enabled"] is True and data["llm"]["shards"] == 2


def test_cli_make_tiny_writes_a_loadable_checkpoint(tmp_path):
    out = tmp_path / "cli_tiny"
    result = run_cli("checkpoint", "make-tiny", "--out", str(out), "--seed", "3", "--no-tpe", "--shards", "1")
    assert result.exit_code == 0, cli_text(result)
    assert f"wrote tiny checkpoint to {out}" in result.output
    assert "untrained demo model" in result.output
    info = inspect_checkpoint(out)
    assert info["tpe"]["enabled"] is False and info["llm"]["shards"] == 1
    model = NvilaModel.from_pretrained(out, dtype="float32")
    assert model.spec.tokens_per_image == 9
    # Running it again on the same folder refuses to overwrite.
    again = run_cli("checkpoint", "make-tiny", "--out", str(out))
    assert again.exit_code == 2
    assert "error:" in cli_text(again) and "already holds a checkpoint" in cli_text(again)


def test_cli_inspect_bad_folder(tiny_ckpt_dir, tmp_path):
    ckpt = copy_ckpt(tiny_ckpt_dir, tmp_path)
    shutil.rmtree(ckpt / "mm_projector")
    result = run_cli("checkpoint", "inspect", str(ckpt))
    assert result.exit_code == 2
    text = cli_text(result)
    assert "error:" in text and "mm_projector" in text
    assert "Traceback" not in text


def test_cli_inspect_missing_path(tmp_path):
    result = run_cli("checkpoint", "inspect", str(tmp_path / "missing"), "--json")
    assert result.exit_code == 2
    assert "error:" in cli_text(result) and "does not exist" in cli_text(result)
