"""The CUDA branches outside the compiled backends and the decoders (those are covered in test_compiled.py and
test_engine_perf.py): dtype/device "auto", the engine's answers on CUDA against the CPU reference, the vision cache
and prefix reuse on CUDA, the memory tracer and the planner against ``max_memory_allocated``, `doctor` and the
planner's device detection, training on CUDA (bf16 autocast, peak memory, CUDA RNG state in checkpoints), and the
ROS node's GPU memory diagnostics. Run by bench/gpu_acceptance.py; skipped without a GPU."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")]

sys.path.insert(0, str(Path(__file__).parent))


def _queries():
    from rgpt4d_sdk.compiled.samples import sample_clip, sample_queries
    from rgpt4d_sdk.types import Region, RegionQuery

    clip = sample_clip(8, 11)
    marks = [Region(1, box=(10, 40, 60, 80)), Region(2, box=(160, 100, 204, 140))]
    same = [RegionQuery(clip, marks, q, options=["0 m/s", "5 m/s"], id=f"s{i}")
            for i, q in enumerate(["How fast is <obj_1> moving?", "Is <obj_2> approaching?", "Is <obj_1> static?"])]
    return sample_queries(max_frames=8, count=4) + same


def test_auto_device_and_dtype_pick_cuda_and_bf16(tiny_ckpt_dir):
    from rgpt4d_sdk import Engine
    from rgpt4d_sdk.model.checkpoint import parse_dtype

    want = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    assert parse_dtype("auto", "cuda") == want
    engine = Engine.from_pretrained(tiny_ckpt_dir, device="auto", dtype="auto")
    assert engine.model.device.type == "cuda" and engine.model.dtype == want
    answer = engine.answer(_queries()[0], max_new_tokens=8)
    assert answer.token_ids and answer.timings["total"] > 0


def test_cuda_answers_equal_the_cpu_reference_and_caches_change_nothing(tiny_ckpt_dir):
    from rgpt4d_sdk.engine.torch_backend import TorchEngine

    plain = dict(dtype="float32", vision_cache_mb=0, prefix_reuse=False, decode="dynamic")
    queries = _queries()
    cpu = TorchEngine.load(tiny_ckpt_dir, device="cpu", **plain)
    cuda = TorchEngine.load(tiny_ckpt_dir, device="cuda", **plain)
    want = [cpu.answer(q, max_new_tokens=16).token_ids for q in queries]
    assert [cuda.answer(q, max_new_tokens=16).token_ids for q in queries] == want
    cached = TorchEngine.load(tiny_ckpt_dir, device="cuda", dtype="float32")
    for _ in range(2):  # cold, then everything from the vision cache
        assert [a.token_ids for a in cached.answer_many(queries, batch_size=8, max_new_tokens=16)] == want
    stats = cached.stats()
    assert stats["vision_cache"]["hits"] > 0 and stats["prefill_positions"] > 0


@pytest.mark.parametrize("dtype,precision", [("float32", "fp32"), ("bfloat16", "bf16")])
def test_planner_prefill_peak_against_max_memory_allocated(tiny_ckpt_dir, dtype, precision):
    from rgpt4d_sdk import plan
    from rgpt4d_sdk.compiled.samples import sample_clip
    from rgpt4d_sdk.engine.generate import hf_step
    from rgpt4d_sdk.engine.torch_backend import TorchEngine
    from rgpt4d_sdk.memtrace import peak_bytes
    from rgpt4d_sdk.types import Region, RegionQuery

    arch = plan.arch_of(model=str(tiny_ckpt_dir))
    engine = TorchEngine.load(tiny_ckpt_dir, device="cuda", dtype=dtype, vision_cache_mb=0, prefix_reuse=False,
                              decode="dynamic", max_frames=16)
    q = RegionQuery(sample_clip(16, 3), [Region(1, box=(10, 40, 60, 80))], "How fast is <obj_1> moving?")
    embeds = engine._prefill_inputs(engine.prepare(q, max_new_tokens=4))[None]
    assert plan.weight_bytes(arch, precision) == sum(p.numel() * p.element_size() for p in engine.model.parameters())
    with torch.no_grad():
        _, measured = peak_bytes(lambda: hf_step(engine.model.llm)(embeds, None, None, None, None), "cuda")
    n = int(embeds.shape[1])
    predicted = plan.prefill_activation_bytes(arch, n, 1, precision, "sdpa") + plan.kv_bytes(arch, n, 1, precision)
    assert abs(predicted - measured) <= 0.10 * measured, (predicted, measured)
    from rgpt4d_sdk.model.processor import preprocess_images

    prep = engine.prepare(q)
    pixels = preprocess_images(prep.images, engine.model.spec)  # float32 on the CPU; the model copies it over
    _, measured = peak_bytes(lambda: engine.model.encode_images(pixels), "cuda")
    predicted = plan.vision_activation_bytes(arch, len(prep.images), precision, "sdpa", device_kind="cuda")
    assert abs(predicted - measured) <= 0.10 * measured, (predicted, measured)


def test_doctor_and_planner_see_this_gpu():
    from rgpt4d_sdk import plan
    from rgpt4d_sdk.doctor import diagnose

    props = torch.cuda.get_device_properties(0)
    report = diagnose()
    gpu0 = next(c for c in report["checks"] if c["name"] == "gpu0")
    assert gpu0["name"] == props.name and gpu0["memory_bytes"] == props.total_memory
    assert gpu0["compute_capability"] == f"{props.major}.{props.minor}"
    assert gpu0["bf16"] == ((props.major, props.minor) >= (8, 0))
    dev = plan.detect_device("auto")
    assert dev.kind == "cuda" and dev.memory_bytes == props.total_memory and dev.name == props.name
    assert report["recommendation"]["device"] == props.name
    assert report["recommendation"]["precision"] == ("bf16" if gpu0["bf16"] else "fp16")


def test_training_on_cuda_uses_bf16_records_peak_memory_and_resumes(tiny_ckpt_dir, tmp_path):
    from training_data import config, make_dataset

    from rgpt4d_sdk.training.config import TrainConfig
    from rgpt4d_sdk.training.recipe import run

    make_dataset(tmp_path / "data")
    out = tmp_path / "run"

    def cfg(steps):
        return TrainConfig.from_dict(config(tiny_ckpt_dir, tmp_path / "data", out, run__device="cuda",
                                            run__precision="auto", run__max_steps=steps, run__checkpoint_every=2))

    history = run(cfg(4), log=lambda m: None)
    assert len(history) == 4 and all(row["peak_memory_gb"] > 0 for row in history)
    assert all(row["loss"] == row["loss"] for row in history)  # finite under bf16 autocast
    rng = torch.load(out / "checkpoints" / "step-0000004" / "rng.pt", weights_only=True)
    assert len(rng["cuda"]) == torch.cuda.device_count()
    logs = []
    run(cfg(6), log=logs.append)
    assert any("resuming from step-0000004" in m for m in logs)
    steps = [json.loads(x)["step"] for x in (out / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_ros_node_reports_gpu_memory():
    pytest.importorskip("rclpy", reason="ROS 2 (rclpy) is not installed")
    from rgpt4d_sdk.ros.node import _gpu_memory

    keep = torch.ones(1 << 20, device="cuda")  # 4 MB allocated while it is measured
    mem = _gpu_memory()
    assert mem["gpu_allocated_mb"] >= keep.numel() * 4 / 1e6
    assert mem["gpu_reserved_mb"] >= mem["gpu_allocated_mb"]


def test_ros_node_loads_on_cuda_and_frees_the_gpu_on_cleanup(tiny_ckpt_dir):
    pytest.importorskip("rclpy", reason="ROS 2 (rclpy) is not installed")
    pytest.importorskip("rgpt4d_interfaces", reason="rgpt4d_interfaces not built (rgpt4d-sdk ros build-interfaces)")
    import rclpy
    from rclpy.parameter import Parameter

    from rgpt4d_sdk.ros.node import RegionQueryNode

    context = rclpy.Context()
    rclpy.init(context=context)
    before = torch.cuda.memory_allocated()
    node = RegionQueryNode("rgpt4d_gpu_test", context=context, parameter_overrides=[
        Parameter("model", value=str(tiny_ckpt_dir)), Parameter("cameras", value=["cam=/gpu_test/image_raw"]),
        Parameter("device", value="cuda")])
    try:
        node.trigger_configure()
        assert node.engine_loaded and node.engine.model.device.type == "cuda"
        loaded = torch.cuda.memory_allocated()
        assert loaded > before
        node.trigger_cleanup()
        assert not node.engine_loaded
        assert torch.cuda.memory_allocated() < loaded  # the engine's tensors are gone, the cache emptied
    finally:
        node.destroy_node()
        rclpy.shutdown(context=context)
