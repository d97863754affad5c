"""The torch model against tensors produced by the official NVILA code (tests/fixtures/nvila_reference).

Plain NVILA video-QA mode, 4 frames, no TPE, float32 on CPU. Expected: pixels, encoder features, projector outputs
and fused embeddings equal; logits within ~1e-5 relative; greedy tokens identical.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from rgpt4d_sdk.engine.generate import greedy_generate
from rgpt4d_sdk.model.nvila import NvilaModel
from rgpt4d_sdk.model.processor import preprocess_images
from rgpt4d_sdk.model.projector import space_to_depth_3x3
from rgpt4d_sdk.prompt.template import chat_prompt, user_content

REF = Path(__file__).parent / "fixtures" / "nvila_reference"


@pytest.fixture(scope="module")
def ref():
    return load_file(str(REF / "reference_outputs" / "reference.safetensors"))


@pytest.fixture(scope="module")
def tokens():
    return json.loads((REF / "reference_outputs" / "tokens.json").read_text())


@pytest.fixture(scope="module", params=["eager", "sdpa"])
def model(request):
    return NvilaModel.from_pretrained(REF / "tiny_ckpt", dtype="float32", attn_implementation=request.param)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach() - b).abs().max() / b.abs().max())


def test_pixels_match_official_processor(model, ref):
    pixels = preprocess_images(list(ref["frames_uint8"].numpy()), model.spec)
    assert torch.equal(pixels, ref["pixel_values"])


def test_frames_png_equal_reference_frames(ref):
    from rgpt4d_sdk.media import load_image

    for i in range(4):
        img = load_image(REF / "reference_outputs" / "frames" / f"frame_{i:03d}.png")
        assert np.array_equal(img, ref["frames_uint8"][i].numpy())


def test_vision_features_are_hidden_states_minus_2(model, ref):
    feats = model.encode_images(ref["pixel_values"])
    assert feats.shape == (4, 64, 64)
    assert rel(feats, ref["vision_hidden_states_minus2"]) < 1e-5
    # The post-layernorm output of the last layer is what NVILA must NOT use.
    assert rel(feats, ref["vision_last_hidden_state_postnorm"]) > 1e-2


def test_projector_and_downsample(model, ref):
    feats = ref["vision_hidden_states_minus2"]
    assert torch.equal(space_to_depth_3x3(feats), ref["projector_downsample_out"])
    out = model.project(feats)
    assert out.shape == (4, 9, 64)
    assert rel(out, ref["projector_out"]) < 1e-6


def plain_space_to_depth(x: torch.Tensor) -> torch.Tensor:
    """An independent loop: pad bottom then right with zeros, walk 3x3 blocks row-major, rows then cols then c."""
    n, p, c = x.shape
    g = int(round(p ** 0.5))
    g3 = -(-g // 3) * 3
    out = torch.zeros(n, (g3 // 3) ** 2, 9 * c)
    for img in range(n):
        for block_row in range(g3 // 3):
            for block_col in range(g3 // 3):
                vec = []
                for m in range(3):
                    for k in range(3):
                        r, col = block_row * 3 + m, block_col * 3 + k
                        vec.append(x[img, r * g + col] if r < g and col < g else torch.zeros(c))
                out[img, block_row * (g3 // 3) + block_col] = torch.cat(vec)
    return out


@pytest.mark.parametrize("grid", [8, 9, 10, 32])
def test_space_to_depth_matches_plain_loop(grid):
    x = torch.randn(2, grid * grid, 5, generator=torch.Generator().manual_seed(grid))
    assert torch.equal(space_to_depth_3x3(x), plain_space_to_depth(x))
    assert space_to_depth_3x3(x).shape[1] == (-(-grid // 3)) ** 2


def test_chat_template_text_and_ids(model, tokens):
    text = chat_prompt(model.tokenizer, user_content(4, tokens["question"]))
    assert text == tokens["prompt_text_after_chat_template"]
    ids = model.tokenizer.encode(text, add_special_tokens=False)
    assert ids == tokens["input_ids_with_placeholders"]
    assert [i for i, t in enumerate(ids) if t == model.image_token_id] == tokens["image_placeholder_positions"]


def test_fused_embeddings_and_token_layout(model, ref, tokens):
    fused = model.fuse(tokens["input_ids_with_placeholders"], model.project(ref["vision_hidden_states_minus2"]))
    assert fused.inputs_embeds.shape == (92, 64)
    assert rel(fused.inputs_embeds, ref["inputs_embeds"]) < 1e-6
    assert fused.media_spans == [(s["start"], s["end"]) for s in tokens["media_spans_in_llm_sequence"]]
    assert fused.expanded_ids == ref["expanded_token_ids"].tolist()
    # Each frame span ends with the "\n" token embedding.
    for start, end in fused.media_spans:
        assert fused.expanded_ids[end - 1] == tokens["newline_token_ids"][0]
        assert torch.equal(fused.inputs_embeds[end - 1], ref["newline_embed"][0])


def test_logits_all_positions_and_first_step(model, ref):
    logits = model.llm(inputs_embeds=ref["inputs_embeds"][None]).logits[0]
    assert rel(logits, ref["logits_all_positions"]) < 1e-5
    assert rel(logits[-1], ref["logits_first_step"]) < 1e-5


def test_greedy_tokens_match_official(model, ref):
    gen = greedy_generate(model.llm, [ref["inputs_embeds"]], stop_ids=[482], max_new_tokens=5)[0]
    greedy = json.loads((REF / "reference_outputs" / "greedy.json").read_text())
    assert gen.token_ids == greedy["official_model_generate_ids"]
    assert rel(gen.first_logits, ref["logits_first_step"]) < 1e-5


def test_full_pipeline_from_uint8_frames(model, ref, tokens):
    """uint8 frames -> pixels -> encoder -> projector -> fusion -> logits, all through the SDK's stages."""
    pixels = preprocess_images(list(ref["frames_uint8"].numpy()), model.spec)
    fused = model.fuse(tokens["input_ids_with_placeholders"], model.project(model.encode_images(pixels)))
    logits = model.llm(inputs_embeds=fused.inputs_embeds[None]).logits[0, -1]
    assert rel(logits, ref["logits_first_step"]) < 1e-5
