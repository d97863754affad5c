"""The memory planner against real tensors: parameter and weight bytes exactly (tiny model, and the 8B model built on
the meta device), KV-cache bytes exactly (dynamic cache after prefill and decode steps, batched, static buffers),
prompt positions exactly, and the prefill peak within 10 % of a CPU memory trace (torch.profiler's allocator
events), for both attention implementations and two prompt lengths."""
from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from rgpt4d_sdk import plan
from rgpt4d_sdk.cli import app
from rgpt4d_sdk.compiled.samples import sample_clip
from rgpt4d_sdk.engine.generate import cache_tensors, hf_step, left_pad
from rgpt4d_sdk.engine.static_decode import StaticDecoder
from rgpt4d_sdk.engine.torch_backend import TorchEngine
from rgpt4d_sdk.errors import ConfigError
from rgpt4d_sdk.memtrace import peak_bytes
from rgpt4d_sdk.model.nvila import NvilaModel
from rgpt4d_sdk.types import Region, RegionQuery


def query(frames: int, question: str = "How fast is <obj_1> moving?") -> RegionQuery:
    return RegionQuery(sample_clip(frames, 3), [Region(1, box=(10, 40, 60, 80))], question,
                       options=["0 m/s", "5 m/s", "9 m/s"])


def real_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


@pytest.fixture(scope="module")
def arch(tiny_ckpt_dir):
    return plan.arch_of(model=str(tiny_ckpt_dir))


@pytest.mark.parametrize("dtype,precision", [("float32", "fp32"), ("bfloat16", "bf16")])
def test_weight_bytes_equal_the_loaded_tensors(tiny_ckpt_dir, arch, dtype, precision):
    model = NvilaModel.from_pretrained(tiny_ckpt_dir, dtype=dtype)
    counts = plan.param_counts(arch)
    assert counts["llm"] == sum(p.numel() for p in model.llm.parameters())
    assert counts["vision"] == sum(p.numel() for p in model.vision.parameters())
    assert counts["projector"] == sum(p.numel() for p in model.projector.parameters())
    assert plan.weight_bytes(arch, precision) == real_bytes(model.parameters())


def test_full_size_parameter_counts_equal_the_meta_built_8b_model():
    from rgpt4d_sdk.model.tiny import build_modules, full_size_configs

    vision, projector, llm = build_modules(full_size_configs(), device="meta", dtype=torch.bfloat16)
    counts = plan.param_counts(plan.arch_of(arch="8b"))
    assert counts["llm"] == sum(p.numel() for p in llm.parameters()) == 7_612_656_128
    assert counts["vision"] == sum(p.numel() for p in vision.parameters())
    assert counts["projector"] == sum(p.numel() for p in projector.parameters())
    assert plan.weight_bytes(plan.arch_of(arch="8b"), "bf16") == real_bytes(
        list(vision.parameters()) + list(projector.parameters()) + list(llm.parameters()))


def test_kv_bytes_and_prompt_positions_equal_the_real_cache(tiny_ckpt_dir, arch):
    engine = TorchEngine.load(tiny_ckpt_dir, device="cpu", dtype="float32", vision_cache_mb=0, prefix_reuse=False,
                              max_frames=8)
    preps = [engine.prepare(query(8), max_new_tokens=4), engine.prepare(query(4, "Is <obj_1> static?"),
                                                                        max_new_tokens=4)]
    embeds = [engine._prefill_inputs(p) for p in preps]
    for prep, e in zip(preps, embeds):  # (frames + SoM) x positions per frame + the text tokens
        images = len(prep.images)
        assert plan.prompt_positions(arch, images - 1, len(prep.input_ids) - images) == int(e.shape[0])
    step = hf_step(engine.model.llm)
    length = int(embeds[0].shape[0])
    with torch.no_grad():
        logits, cache = step(embeds[0][None], None, None, None, None)
        assert real_bytes(t for kv in cache_tensors(cache) for t in kv) == plan.kv_bytes(arch, length, 1, "fp32")
        for k in range(3):  # three decode steps: three more positions
            nxt = logits.argmax(-1)[:, None]
            logits, cache = step(None, nxt, torch.ones(1, length + k + 1, dtype=torch.long),
                                 torch.tensor([[length + k]]), cache)
        assert real_bytes(t for kv in cache_tensors(cache) for t in kv) == plan.kv_bytes(arch, length + 3, 1, "fp32")
        batch, mask, positions = left_pad(embeds)
        _, cache = step(batch, None, mask, positions, None)
    assert real_bytes(t for kv in cache_tensors(cache) for t in kv) == plan.kv_bytes(arch, batch.shape[1], 2, "fp32")
    assert engine.static_len == plan.static_len(arch, 8)
    static = StaticDecoder(engine.model.llm, engine.static_len)
    assert real_bytes(static.keys + static.values) == plan.kv_bytes(arch, engine.static_len, 1, "fp32")


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("frames", [4, 16])
def test_prefill_peak_within_ten_percent_of_a_cpu_memory_trace(tiny_ckpt_dir, arch, attn, frames):
    engine = TorchEngine.load(tiny_ckpt_dir, device="cpu", dtype="float32", attn_implementation=attn,
                              vision_cache_mb=0, prefix_reuse=False, max_frames=16)
    embeds = engine._prefill_inputs(engine.prepare(query(frames), max_new_tokens=4))[None]
    step = hf_step(engine.model.llm)
    with torch.no_grad():
        _, measured = peak_bytes(lambda: step(embeds, None, None, None, None))
    length = int(embeds.shape[1])
    predicted = plan.prefill_activation_bytes(arch, length, 1, "fp32", attn) + plan.kv_bytes(arch, length, 1, "fp32")
    assert measured > 0
    assert abs(predicted - measured) <= 0.10 * measured, (predicted, measured)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_vision_encoder_peak_within_ten_percent_of_a_cpu_memory_trace(tiny_ckpt_dir, arch, attn):
    from rgpt4d_sdk.model.processor import preprocess_images

    engine = TorchEngine.load(tiny_ckpt_dir, device="cpu", dtype="float32", attn_implementation=attn,
                              vision_cache_mb=0, max_frames=16)
    images = engine.prepare(query(16)).images
    with torch.no_grad():
        _, measured = peak_bytes(lambda: engine.model.encode_images(preprocess_images(images, engine.model.spec)))
    measured += len(images) * 3 * arch.image_size ** 2 * 4  # the float32 pixel array numpy owns (not traced)
    predicted = plan.vision_activation_bytes(arch, len(images), "fp32", attn, device_kind="cpu")
    assert abs(predicted - measured) <= 0.10 * measured, (predicted, measured)


def test_plan_fits_and_largest_frame_count_are_consistent():
    a8 = plan.arch_of(arch="8b")
    h100 = plan.find_device("H100")
    p = plan.plan_memory(a8, h100, "bf16", 16, 1)
    assert p.fits and p.decode == "static" and p.bytes["static_kv"] > 0
    assert p.peak_bytes == max(p.stages.values())
    assert plan.plan_memory(a8, h100, "bf16", p.max_frames, 1, search=False).fits
    assert not plan.plan_memory(a8, h100, "bf16", p.max_frames + 1, 1, search=False).fits
    nano = plan.plan_memory(a8, plan.find_device("Orin-Nano-8GB"), "bf16", 16, 1)
    assert not nano.fits and nano.max_frames is None
    batch8 = plan.plan_memory(a8, h100, "bf16", 16, 8)
    assert batch8.decode == "dynamic" and batch8.bytes["kv_prompt"] == 8 * p.bytes["kv_prompt"]
    eager = plan.plan_memory(a8, h100, "bf16", 16, 1, attn="eager")
    assert eager.bytes["prefill_activations"] > p.bytes["prefill_activations"]
    a100 = plan.plan_memory(a8, plan.find_device("A100-80GB"), "fp8", 16, 1)
    assert not a100.fits and "fp8" in a100.problems[0] and "8.9" in a100.problems[0]
    assert plan.weight_bytes(a8, "int8") < plan.weight_bytes(a8, "bf16") / 1.7
    trt = plan.plan_memory(a8, h100, "bf16", 16, 1, backend="tensorrt")
    from rgpt4d_sdk.compiled.memory import decoder_activation_bytes

    act = decoder_activation_bytes(a8.heads, a8.hidden, a8.intermediate, 8, plan.static_len(a8, 16), "bfloat16")
    assert 6.0e9 < act.scores < 7.0e9  # float32 scores of the decoder's largest profile (batch 8, 2,714 positions)
    assert plan.trt_activation_bytes(a8, plan.static_len(a8, 16), 8, "bf16") == act.total > act.scores
    assert trt.bytes["workspace"] == p.bytes["workspace"] + act.total and trt.bytes["static_kv"] == 0


def test_device_table_and_names():
    assert plan.find_device("NVIDIA H100 80GB HBM3").name == "H100"
    assert plan.find_device("NVIDIA H100 PCIe").bandwidth_Bps == 2.0e12
    assert plan.find_device("NVIDIA A100-SXM4-40GB").name == "A100-40GB"
    assert plan.find_device("NVIDIA A100 80GB PCIe").name == "A100-80GB"
    assert plan.find_device("NVIDIA L4").name == "L4" and plan.find_device("NVIDIA L40S").name == "L40S"
    assert plan.find_device("agx_orin_32gb").name == "AGX-Orin-32GB"
    assert plan.find_device("Orin (nvgpu)").unified
    assert {d.name for d in plan.KNOWN_DEVICES.values()} >= {"A100-40GB", "A100-80GB", "H100", "H200", "L4", "L40S",
                                                             "RTX-4090", "AGX-Orin-64GB", "AGX-Orin-32GB",
                                                             "Orin-NX-16GB", "Orin-Nano-8GB"}
    with pytest.raises(ConfigError, match="not in the table"):
        plan.find_device("TPU v5")
    with pytest.raises(ConfigError, match="precision"):
        plan.weight_bytes(plan.arch_of(arch="8b"), "fp4")
    assert plan.detect_device("cpu").memory_bytes > 0


def test_plan_cli(tiny_ckpt_dir):
    runner = CliRunner()
    r = runner.invoke(app, ["plan", "--device", "H100", "--num-frames", "16", "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["fits"] and data["precision"] == "bf16" and data["num_frames"] == 16
    r = runner.invoke(app, ["plan", "--model", str(tiny_ckpt_dir), "--device", "cpu"])
    assert r.exit_code == 0 and "FITS" in r.output and "largest frame count" in r.output
    r = runner.invoke(app, ["plan", "--device", "Orin-Nano-8GB", "--precision", "fp8"])
    assert r.exit_code == 0 and "DOES NOT FIT" in r.output
    r = runner.invoke(app, ["plan", "--dtype", "bfloat16", "--device", "A100-40GB", "--batch", "4", "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["precision"] == "bf16" and json.loads(r.output)["batch"] == 4
    r = runner.invoke(app, ["plan", "--precision", "fp9", "--device", "H100"])
    assert r.exit_code == 2 and "fp9" in r.output
    r = runner.invoke(app, ["plan", "--list-devices"])
    assert r.exit_code == 0 and "AGX-Orin-64GB" in r.output


def test_lora_plan_counts_the_adapters_peft_creates(tiny_ckpt_dir, arch):
    pytest.importorskip("peft", reason="peft is not installed (pip install 'rgpt4d-sdk[train]')")
    from rgpt4d_sdk.training.config import LoraConfig
    from rgpt4d_sdk.training.recipe import apply_lora

    llm = NvilaModel.from_pretrained(tiny_ckpt_dir, dtype="float32").llm
    for p in llm.parameters():
        p.requires_grad_(False)
    apply_lora(llm, LoraConfig())
    adapters = sum(p.numel() for p in llm.parameters() if p.requires_grad)
    step = plan.plan_lora_step(arch, plan.detect_device("cpu"), num_frames=4, rank=LoraConfig().r)
    projector_state = plan.param_counts(arch)["projector"] * 2 * 3
    assert step["trainable_state"] - projector_state == adapters * 4 * 4
    assert step["peak"] == sum(v for k, v in step.items() if k not in ("peak", "available"))
