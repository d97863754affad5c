"""int4 (4-bit weight-only) in the memory planner: weight bytes per part counted by hand for a small configuration
(4-bit blocks padded to whole blocks, fp16 scales, packed 4-bit zero points), the 8B model's verdicts on the Jetson
modules, the decode bound on a hand example, the CLI, and the Jetson table of docs/compiled.md against the planner."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rgpt4d_sdk import plan, plan_table
from rgpt4d_sdk.cli import app
from rgpt4d_sdk.errors import ConfigError
from rgpt4d_sdk.weight_plan import decode_bound, matrix_bytes, part_bytes, part_shapes, weight_spec

ROOT = Path(__file__).resolve().parent.parent
GiB = 1 << 30

# hidden 64, MLP 136 (not a multiple of the block of 32: the down projection's rows are padded), 4 heads / 2 KV heads
# of 16, vocab 1000, untied lm_head; vision width 32, MLP 72, 2 layers, 56 px / patch 14 (16 patches)
SMALL = plan.Arch(hidden=64, intermediate=136, layers=2, heads=4, kv_heads=2, head_dim=16, vocab=1000, tied=False,
                  context=4096, v_hidden=32, v_intermediate=72, v_layers=2, v_layers_used=1, v_heads=2, image_size=56,
                  patch_size=14, label="small")


def test_int4_matrix_bytes_by_hand():
    # 64 x 136 with blocks of 32: 5 blocks per row (the last padded), 16 bytes each; 5 fp16 scales; 3 bytes of zeros
    assert matrix_bytes(64, 136, "int4", "fp16", 32, True) == 64 * 5 * 16 + 64 * 5 * 2 + 64 * 3 == 5952
    assert matrix_bytes(64, 136, "int4", "fp16", 32, False) == 5952 - 64 * 3
    assert matrix_bytes(64, 136, "int4", "fp32", 32, False) == 64 * 5 * 16 + 64 * 5 * 4
    assert matrix_bytes(64, 136, "int8", "fp16") == 64 * 136 + 64 * 2  # one fp16 scale per output channel
    assert matrix_bytes(64, 136, "fp16") == 64 * 136 * 2
    for bad in (0, 24, 100):
        with pytest.raises(ConfigError, match="power of two"):
            matrix_bytes(64, 136, "int4", "fp16", bad)


def test_weight_bytes_of_every_part_by_hand():
    everything = weight_spec("int4", "vision=int4,projector=int4", block_size=32, zero_point=True)
    got = part_bytes(SMALL, everything)
    # LLM, per layer x 2: q, o 64x64 (2 blocks: 2048 packed + 256 scales + 64 zeros = 2368);
    # k, v 32x64 (1024 + 128 + 32 = 1184); gate, up 136x64 (4352 + 544 + 136 = 5032); down 64x136 (5952);
    # biases and norms (64 + 2 x 32 + 2 x 64 per layer, final norm 64) = 576 fp16 values
    llm = 2 * (2 * 2368 + 2 * 1184 + 2 * 5032 + 5952) + 576 * 2
    assert got["llm"] == llm == 47392
    # vision, x 2 layers: q, k, v, o 32x32 (1 block: 512 + 64 + 32 = 608); fc1 72x32 (1152 + 144 + 72 = 1368);
    # fc2 32x72 (3 blocks: 1536 + 192 + 64 = 1792); fp16: patch conv 3x14x14x32 + 32, 16 positions x 32,
    # per layer 4 x 32 + 72 + 32 + 4 x 32 biases/norms, post-layernorm 2 x 32
    vision_other = 3 * 14 * 14 * 32 + 32 + 16 * 32 + 2 * (4 * 32 + 72 + 32 + 4 * 32) + 2 * 32
    assert got["vision"] == 2 * (4 * 608 + 1368 + 1792) + 2 * vision_other == 51472
    # projector: 96x288 (9 blocks: 13824 + 1728 + 480), 64x96 (3 blocks: 3072 + 384 + 128), 64x64 (2368);
    # fp16: LayerNorm(288) 576, bias 96, LayerNorm(96) 192, biases 64 + 64
    assert got["projector"] == 16032 + 3584 + 2368 + (576 + 96 + 192 + 128) * 2 == 23968
    # embedding and lm_head 1000x64: 2 blocks a row: 32000 packed + 4000 scales + 1000 zeros
    assert got["embedding"] == got["lm_head"] == 37000
    # the default int4 (the export's): LLM, lm_head and embedding in 4 bits without zero points (the zero bytes of
    # q, o, k, v, gate, up, down: 64 + 64 + 32 + 32 + 136 + 136 + 64 x 3 per layer; 1000 per table), vision tower
    # and projector fp16 (2 bytes a parameter)
    default = part_bytes(SMALL, weight_spec("int4", block_size=32))
    shapes = part_shapes(SMALL)
    assert default["llm"] == llm - 2 * (2 * 64 + 2 * 32 + 2 * 136 + 64 * 3) == 46080
    assert default["embedding"] == default["lm_head"] == 37000 - 1000
    for part in ("vision", "projector"):
        assert default[part] == 2 * shapes[part].params
    # TinyChat/AWQ's split: lm_head and table fp16
    awq = part_bytes(SMALL, weight_spec("int4", "lm_head=fp16,embedding=fp16", block_size=32, zero_point=True))
    assert awq["llm"] == llm and awq["embedding"] == awq["lm_head"] == 2 * 1000 * 64
    assert plan.weight_bytes(SMALL, "int4", weight_spec("int4", block_size=32)) == sum(default.values())


def test_parts_add_up_to_the_parameter_count(tiny_ckpt_dir):
    for a in (plan.arch_of(model=str(tiny_ckpt_dir)), plan.arch_of(arch="8b"), SMALL):
        shapes, counts = part_shapes(a), plan.param_counts(a)
        assert sum(s.params for s in shapes.values()) == counts["total"]
        assert shapes["llm"].params + shapes["embedding"].params + shapes["lm_head"].params == counts["llm"]
        assert plan.weight_bytes(a, "fp32") == 4 * counts["total"]


def test_8b_int4_llm_bytes_are_under_three_tenths_of_fp16():
    a = plan.arch_of(arch="8b")
    fp16, int4 = part_bytes(a, weight_spec("fp16")), part_bytes(a, weight_spec("int4"))
    llm_all = lambda p: p["llm"] + p["embedding"] + p["lm_head"]  # noqa: E731
    assert int4["llm"] <= 0.3 * fp16["llm"] and llm_all(int4) <= 0.3 * llm_all(fp16)
    # 4 bits + a 16-bit scale per 128 = 4.125 bits a weight, against 16 (norms and biases stay fp16)
    assert llm_all(int4) / llm_all(fp16) == pytest.approx(4.125 / 16, rel=2e-3)
    zeros = part_bytes(a, weight_spec("int4", zero_point=True))  # + a 4-bit zero point per block: 4.156 bits
    assert zeros["llm"] / fp16["llm"] == pytest.approx((4 + 20 / 128) / 16, rel=2e-3)
    # TinyChat/AWQ's split (embedding table and lm_head fp16): the whole LLM is a little over a third
    awq = part_bytes(a, weight_spec("int4", "embedding=fp16,lm_head=fp16", zero_point=True))
    assert 0.36 < llm_all(awq) / llm_all(fp16) < 0.37
    assert int4["vision"] == fp16["vision"] and int4["projector"] == fp16["projector"]


def test_8b_on_the_jetson_modules():
    a = plan.arch_of(arch="8b")
    nx = plan.find_device("Orin-NX-16GB")
    for backend in ("torch", "onnxruntime", "tensorrt"):
        fp16 = plan.plan_memory(a, nx, "fp16", 16, 1, backend=backend, max_batch=1, search=False)
        assert not fp16.fits and fp16.bytes["weights"] > fp16.available_bytes  # the weights alone are too large
        int4 = plan.plan_memory(a, nx, "int4", 16, 1, backend=backend, max_batch=1)
        assert int4.fits and int4.margin_bytes > GiB and int4.max_frames >= 16
    # TensorRT on Jetson: the engine files are read into the same memory while deserialised ("load" stage)
    int8 = plan.plan_memory(a, nx, "int8", 16, 1, backend="tensorrt", max_batch=1)
    assert not int8.fits and max(int8.stages, key=int8.stages.get) == "load" and int8.stages["prefill"] < \
        int8.available_bytes
    agx32, agx64 = plan.find_device("AGX-Orin-32GB"), plan.find_device("AGX-Orin-64GB")
    assert plan.plan_memory(a, agx32, "int8", 16, 1, backend="tensorrt", max_batch=1).fits
    assert plan.plan_memory(a, agx64, "fp16", 16, 1, backend="tensorrt", max_batch=1).fits
    h100 = plan.plan_memory(a, plan.find_device("H100"), "int4", 16, 1, backend="tensorrt")
    assert "load" not in h100.stages and "engine_load" not in h100.bytes  # discrete GPU: the file is in host RAM
    assert nx.unified and nx.reserve_bytes == nx.carveout_bytes + plan.JETSON_SYSTEM_BYTES
    assert nx.carveout_bytes == 16 * GiB - 15_189_422_080 and "DS-10712-001" in nx.source
    assert nx.bandwidth_Bps == 102.4e9 and agx32.bandwidth_Bps == agx64.bandwidth_Bps == 204.8e9


def test_decode_bound_by_hand():
    spec = weight_spec("int4", "embedding=fp16,lm_head=fp16", block_size=32, zero_point=True)
    # batch 1, prompt 100, 11 new tokens: KV over 100 + 5 positions on average; per position 2 x 2 layers x 2 KV
    # heads x 16 x 2 bytes = 256 bytes. Weights read: the LLM (47392) + lm_head fp16 (128000) + one fp16 row (128)
    b = decode_bound(SMALL, spec, 1e9, 100, 11, 1)
    assert b.kv_positions == 105 and b.weight_bytes == 47392 + 128000 + 128 and b.kv_bytes == 256 * 105
    assert b.tok_s == pytest.approx(1e9 / (175520 + 26880)) and b.tok_s == b.tok_s_per_row
    b4 = decode_bound(SMALL, spec, 1e9, 100, 11, 4)  # the weights are read once for the 4 rows, the KV per row
    assert b4.weight_bytes == 47392 + 128000 + 4 * 128 and b4.kv_bytes == 4 * 256 * 105
    assert b4.tok_s == pytest.approx(4e9 / (175904 + 4 * 26880)) and b4.tok_s > 2 * b.tok_s
    assert decode_bound(SMALL, spec, None, 100).tok_s is None
    # the export's int4: lm_head in 4 bits (1000 rows x (2 x 16 packed + 2 x 2 scale) = 36000) and 36 bytes a row
    default = decode_bound(SMALL, weight_spec("int4", block_size=32), 1e9, 100, 11, 4)
    assert default.weight_bytes == 46080 + 36000 + 4 * 36
    with pytest.raises(ConfigError):
        decode_bound(SMALL, spec, 1e9, 100, 0)


def test_8b_decode_bounds_against_published_rates():
    a = plan.arch_of(arch="8b")
    agx = plan.find_device("AGX-Orin-64GB")
    one_image = plan.prompt_positions(a, 0, 60)  # TinyChat's figure: one image and a short question
    # NVILA-Lite-8B W4A16 with TinyChat on Jetson Orin (VILA README): 32.8 tok/s, below the bound of either split
    for spec in (weight_spec("int4"), weight_spec("int4", "lm_head=fp16,embedding=fp16", zero_point=True)):
        assert decode_bound(a, spec, agx.bandwidth_Bps, one_image, 32).tok_s > 32.8
    fp16 = plan.plan_memory(a, agx, "fp16", 16, 1).decode_bounds[0]
    assert 13 < fp16["tok_s"] < 15  # PERFORMANCE.md: ~14 tok/s bf16 on AGX Orin
    h100 = plan.plan_memory(a, plan.find_device("H100"), "bf16", 16, 8)
    assert [d["batch"] for d in h100.decode_bounds] == [1, 8] and h100.decode_bounds[1]["tok_s"] > 5 * \
        h100.decode_bounds[0]["tok_s"]


def test_plan_cli_int4():
    runner = CliRunner()
    r = runner.invoke(app, ["plan", "--device", "Orin-NX-16GB", "--precision", "int4", "--backend", "tensorrt",
                            "--max-batch", "1", "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["fits"] and data["precision"] == "int4" and data["weights_spec"]["formats"]["llm"] == "int4"
    assert data["margin_bytes"] == data["available_bytes"] - data["peak_bytes"] > 0
    assert data["bytes"]["weights"] == sum(data["weight_parts"].values())
    assert data["decode_bounds"][0]["batch"] == 1 and 25 < data["decode_bounds"][0]["tok_s"] < 30
    assert data["weights_spec"]["formats"]["lm_head"] == "int4" and not data["weights_spec"]["zero_point"]
    r = runner.invoke(app, ["plan", "--device", "AGX-Orin-64GB", "--precision", "int4", "--weights",
                            "lm_head=fp16,embedding=fp16", "--block-size", "64", "--zero-point", "--batch", "2"])
    assert r.exit_code == 0, r.output
    assert "lm_head fp16" in r.output and "blocks of 64, with zero points" in r.output
    assert "decode bound, batch 1: <=" in r.output and "decode bound, batch 2: <=" in r.output
    assert "FITS (margin +" in r.output
    r = runner.invoke(app, ["plan", "--table", "--device", "Orin-NX-16GB", "--backend", "tensorrt", "--max-batch",
                            "1", "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)
    assert [(x["precision"], x["fits"]) for x in rows] == [("fp16", False), ("int8", False), ("int4", True)]
    for args, word in ((["--weights", "tower=int4"], "tower"), (["--weights", "llm=int3"], "int3"),
                       (["--block-size", "100"], "power of two"), (["--batch", "4", "--max-batch", "2",
                                                                     "--backend", "tensorrt"], "max_batch")):
        r = runner.invoke(app, ["plan", "--device", "H100", "--precision", "int4", *args])
        assert r.exit_code == 2 and word in r.output, (args, r.output)


def test_jetson_table_in_the_docs_is_the_planners():
    page = (ROOT / "docs" / "compiled.md").read_text(encoding="utf-8")
    m = re.search(r"<!-- quoted: jetson_plan[^\n]*-->\n(.*?)<!-- end quoted: jetson_plan -->", page, flags=re.S)
    assert m, "docs/compiled.md lost its jetson_plan block"
    assert m.group(1) == plan_table.jetson_markdown() + "\n", "run python docs/hooks/quoted_results.py"
    for name in plan.JETSON_DEVICES:
        assert plan.KNOWN_DEVICES[name].source.split(",")[0] in m.group(1)
    # the prose under the table states these verdicts
    rows = {(r["device"], r["precision"]): r["fits"] for r in plan_table.profile_rows(
        plan.arch_of(arch="8b"), [plan.KNOWN_DEVICES[n] for n in plan.JETSON_DEVICES], **plan_table.JETSON_PROFILE)}
    assert [p for p in ("fp16", "int8", "int4") if rows[("Orin-NX-16GB", p)]] == ["int4"]
    assert [p for p in ("fp16", "int8", "int4") if rows[("AGX-Orin-32GB", p)]] == ["int8", "int4"]
    assert all(rows[("AGX-Orin-64GB", p)] for p in ("fp16", "int8", "int4"))


def test_jetson_module_from_the_device_tree_model():
    assert plan.jetson_entry("NVIDIA Jetson Orin NX Engineering Reference Developer Kit", 15_189_422_080).name == \
        "Orin-NX-16GB"
    assert plan.jetson_entry("NVIDIA Jetson AGX Orin Developer Kit", 32_110_190_592).name == "AGX-Orin-32GB"
    assert plan.jetson_entry("NVIDIA Jetson AGX Orin Developer Kit", 62 * GiB).name == "AGX-Orin-64GB"
    assert plan.jetson_entry("NVIDIA Jetson Orin Nano Developer Kit", 7 * GiB).name == "Orin-Nano-8GB"
    with pytest.raises(ConfigError, match="not in the table"):
        plan.jetson_entry("NVIDIA Jetson AGX Xavier", 30 * GiB)


@pytest.mark.parametrize("k,n", [(136, 64), (128, 96)])
@pytest.mark.parametrize("float_type", ["fp16", "fp32"])
@pytest.mark.parametrize("zero_point", [True, False])
def test_int4_layout_equals_onnxruntime_matmulnbits(k, n, float_type, zero_point):
    """ONNX Runtime's own 4-bit quantizer (MatMulNBits) stores exactly the bytes `matrix_bytes` counts."""
    pytest.importorskip("onnxruntime.quantization.matmul_nbits_quantizer", reason="onnxruntime's quantizer is needed")
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    dt, npdt = (TensorProto.FLOAT16, np.float16) if float_type == "fp16" else (TensorProto.FLOAT, np.float32)
    w = np.random.default_rng(0).standard_normal((k, n)).astype(npdt)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", dt, [1, k])],
                              [helper.make_tensor_value_info("y", dt, [1, n])], [numpy_helper.from_array(w, "W")])
    q = MatMulNBitsQuantizer(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]), block_size=32,
                             is_symmetric=not zero_point)
    q.process()
    model = q.model.model
    assert [node.op_type for node in model.graph.node] == ["MatMulNBits"]
    stored = sum(numpy_helper.to_array(t).nbytes for t in model.graph.initializer)
    assert stored == matrix_bytes(n, k, "int4", float_type, 32, zero_point)


def test_recommend_picks_int4_where_only_4_bit_weights_fit_and_describes_one_engine():
    a = plan.arch_of(arch="8b")
    nx = plan.find_device("Orin-NX-16GB")
    rec = plan.recommend(a, nx, {"tensorrt": True})
    assert rec["backend"] == "tensorrt" and rec["precision"] == "int4"
    # the frames and batch it recommends fit together, in an engine profile sized for exactly them
    frames, batch = rec["max_frames"], rec["batch_size"]
    assert frames and batch
    p = plan.plan_memory(a, nx, "int4", frames, batch, search=False, backend="tensorrt", max_frames=frames,
                         max_batch=batch)
    assert p.fits
    if batch < 8:  # and the next batch up does not
        up = {1: 2, 2: 4, 4: 8}[batch]
        assert not plan.plan_memory(a, nx, "int4", frames, up, search=False, backend="tensorrt", max_frames=frames,
                                    max_batch=up).fits
    # where bf16 fits, 4-bit weights are not recommended
    assert plan.recommend(a, plan.find_device("H100"), {"tensorrt": True})["precision"] == "bf16"
    # without a compiled backend there is no int4 path: the NX verdict says it does not fit
    assert plan.recommend(a, nx, {})["max_frames"] is None
