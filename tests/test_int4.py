"""int4 weight-only export: the block quantizer, both graph forms, AWQ, the int4 gate and the TensorRT form's
patterns, on the shipped fine-tuned tiny checkpoint (hidden 64, intermediate 160: block 32 is used).

Exports share a module (each about 20 s on two cores); the gate runs 8 sample queries per export.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnx", reason="the [onnx] extra is not installed")
pytest.importorskip("onnxruntime", reason="the [onnx] extra is not installed")

import onnx  # noqa: E402

from rgpt4d_sdk import Engine  # noqa: E402
from rgpt4d_sdk.analyze.default import FINETUNED  # noqa: E402
from rgpt4d_sdk.cli import main  # noqa: E402
from rgpt4d_sdk.compiled.artifacts import checkpoint_fingerprint  # noqa: E402
from rgpt4d_sdk.compiled.awq import search_group  # noqa: E402
from rgpt4d_sdk.compiled.int4 import (  # noqa: E402
    choose_block_size,
    dequantize_blocks,
    dequantized_weights,
    llm_weight_bytes,
    quantize_blocks,
    weight_patterns,
)
from rgpt4d_sdk.compiled.onnx_export import export_onnx  # noqa: E402
from rgpt4d_sdk.compiled.samples import sample_queries  # noqa: E402
from rgpt4d_sdk.compiled.trt_build import check_trt_form  # noqa: E402
from rgpt4d_sdk.compiled.verify import THRESHOLDS, format_report, verify_engine  # noqa: E402
from rgpt4d_sdk.engine.torch_backend import TorchEngine  # noqa: E402
from rgpt4d_sdk.errors import ConfigError, ExportError, ParityError  # noqa: E402
from rgpt4d_sdk.model.checkpoint import read_checkpoint  # noqa: E402

FRAMES = 4
LLM_LAYERS = 2 * 7 + 1  # q/k/v/o/gate/up/down per layer and the lm_head


@pytest.fixture(autouse=True)
def _hash_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RGPT4D_CACHE", str(tmp_path / "cache"))


def _export(root: Path, name: str, ckpt=FINETUNED, **kw) -> Path:
    return export_onnx(ckpt, root / name, max_frames=FRAMES, quantize="int4", block_size=32, dtype="float16", **kw)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("int4")
    return {"rtn": _export(root, "rtn"), "awq": _export(root, "awq", int4_method="awq"),
            "trt": _export(root, "trt", int4_form="tensorrt")}


@pytest.fixture(scope="module")
def reference():
    return TorchEngine.load(FINETUNED, device="cpu", dtype="float32", attn_implementation="eager", max_frames=FRAMES)


@pytest.fixture(scope="module")
def gates(exports, reference):
    """The int4 gate of each export on ONNX Runtime CPU (8 sample queries), as `export verify` runs it."""
    weights = checkpoint_fingerprint(read_checkpoint(FINETUNED))
    out = {}
    for name, folder in exports.items():
        eng = Engine.from_pretrained(FINETUNED, backend="onnxruntime", compiled=folder, force=True, max_frames=FRAMES)
        out[name] = verify_engine(eng, reference, weights, sample_queries(max_frames=FRAMES, count=8))
    return out


# ------------------------------------------------------------------------------------------------ the recipe
def test_quantizer_grid_is_symmetric_positive_and_within_half_a_step():
    w = torch.randn(96, 40, dtype=torch.float64) * torch.linspace(0.01, 3, 40)
    w[:32, 0] = 0.0  # an all-zero block still gets a positive scale
    q, s = quantize_blocks(w, 32, axis=0)
    assert q.dtype == torch.int8 and int(q.abs().max()) == 7 and s.shape == (3, 40)
    assert bool((s > 0).all()), "TensorRT refuses non-positive scales"
    err = (dequantize_blocks(q, s, 32, axis=0) - w).abs()
    assert bool((err <= torch.repeat_interleave(s.double(), 32, dim=0) / 2 + 1e-12).all())
    q1, s1 = quantize_blocks(w.t(), 32, axis=1)  # the table's layout: blocks along the last axis
    assert torch.equal(q1, q.t()) and torch.equal(s1, s.t())


def test_block_size_follows_the_model_axes_or_names_the_flag():
    assert choose_block_size(128, [3584, 18944, 3584]) == 128  # 4D-RGPT-8B: the default fits
    assert choose_block_size(128, [64, 160, 64]) == 32  # the tiny model: lowered, and said
    with pytest.raises(ExportError, match="--block-size"):
        choose_block_size(128, [64, 24])
    with pytest.raises(ExportError, match="--block-size 48"):
        choose_block_size(48, [96])


def test_int4_options_are_checked_before_loading(tmp_path):
    with pytest.raises(ConfigError, match="--int4-method"):
        export_onnx(FINETUNED, tmp_path / "a", quantize="int4", int4_method="gptq")
    with pytest.raises(ConfigError, match="only apply with --quantize int4"):
        export_onnx(FINETUNED, tmp_path / "b", int4_method="awq")
    with pytest.raises(ConfigError, match="opset >= 21"):
        export_onnx(FINETUNED, tmp_path / "c", quantize="int4", opset=18)


def test_awq_search_never_loses_to_rtn_and_helps_outlier_channels():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 64, generator=g)
    x[:, :4] *= 30  # a few salient input channels, as LLM activations have
    w = torch.randn(48, 64, generator=g) * 0.05
    res = search_group([w], x, x.abs().mean(0), block=32)
    assert res["error"] <= res["rtn_error"]
    assert res["alpha"] > 0 and res["error"] < 0.8 * res["rtn_error"]


# ------------------------------------------------------------------------------------------------ the exports
def test_int4_export_runs_on_ort_cpu_and_llm_bytes_are_under_0_3x_fp16(exports, reference):
    """LLM weight bytes = embedding table + q/k/v/o/gate/up/down + lm_head, with scales (norms, biases and rotary
    tables not counted); fp16 holds the same matrices at 2 bytes each."""
    for name, folder in exports.items():
        manifest = json.loads((folder / "manifest.json").read_text())
        info = manifest["int4"]
        assert manifest["precision"] == "int4" and info["block_size"] == 32 and len(info["layers"]) == LLM_LAYERS + 1
        fp16_bytes = 2 * sum(v["K"] * v["N"] for v in info["layers"].values())
        assert llm_weight_bytes(folder) <= 0.3 * fp16_bytes, name
    eng = Engine.from_pretrained(FINETUNED, backend="onnxruntime", compiled=exports["rtn"], force=True,
                                 max_frames=FRAMES)
    assert eng.runner.sessions["decoder"].get_providers()[0] == "CPUExecutionProvider"
    q = sample_queries(max_frames=FRAMES, count=2)[1]
    assert eng.answer(q).token_ids[:1] == reference.answer(q).token_ids[:1]


def test_both_forms_hold_the_same_weights_and_the_trt_form_only_its_patterns(exports):
    ort_w, trt_w = dequantized_weights(exports["rtn"]), dequantized_weights(exports["trt"])
    assert sorted(ort_w) == sorted(trt_w) and len(ort_w) == LLM_LAYERS + 1
    for node, w in ort_w.items():
        np.testing.assert_array_equal(w, trt_w[node])
    trt = exports["trt"]
    for graph in ("decoder", "embed", "vision"):
        onnx.checker.check_model(str(trt / f"{graph}.onnx"))
    dec, emb = weight_patterns(trt / "decoder.onnx"), weight_patterns(trt / "embed.onnx")
    assert dec == {"dq_matmul": LLM_LAYERS, "dq_gather": 0, "matmulnbits": 0, "gatherblockquantized": 0,
                   "other_dq": 0, "float_weight_matmul": 0}
    assert emb == {"dq_matmul": 0, "dq_gather": 1, "matmulnbits": 0, "gatherblockquantized": 0, "other_dq": 0,
                   "float_weight_matmul": 0}
    proto = onnx.load(str(trt / "decoder.onnx"), load_external_data=False)
    assert not any(n.domain for n in proto.graph.node), "the TensorRT form uses standard ONNX ops only"
    assert weight_patterns(exports["rtn"] / "decoder.onnx")["matmulnbits"] == LLM_LAYERS
    assert weight_patterns(exports["rtn"] / "embed.onnx")["gatherblockquantized"] == 1
    vision = weight_patterns(trt / "vision.onnx")  # the vision tower and projector stay fp16
    assert vision["dq_matmul"] == vision["other_dq"] == 0 and vision["float_weight_matmul"] > 0


def test_onnx_runtime_reads_the_tables_as_written(exports):
    """GatherBlockQuantized (ort form) and DequantizeLinear -> Gather (tensorrt form) return the table rows the
    recipe wrote (int4 values times their block's scale)."""
    import onnxruntime as ort

    ids = np.array([[0, 5, 487, 100]], dtype=np.int64)
    for name in ("rtn", "trt"):
        table = dequantized_weights(exports[name])["node_embedding"]
        sess = ort.InferenceSession(str(exports[name] / "embed.onnx"), providers=["CPUExecutionProvider"])
        got = sess.run(None, {"input_ids": ids})[0]
        np.testing.assert_allclose(got[0].astype(np.float64), table[ids[0]], rtol=1e-3, atol=1e-6)


def test_awq_scales_are_in_the_export_and_folded_without_extra_ops(exports):
    manifest = json.loads((exports["awq"] / "manifest.json").read_text())
    awq = manifest["int4"]["awq"]
    assert manifest["int4"]["method"] == "awq" and awq["file"] in manifest["files"]
    assert len(awq["groups"]) == 2 * 4 + 1 and all(0 <= g["alpha"] <= 1 for g in awq["groups"].values())
    assert all(g["rel_error_awq"] <= g["rel_error_rtn"] for g in awq["groups"].values())
    ops = lambda f: sorted(n.op_type for n in onnx.load(str(f / "decoder.onnx"), load_external_data=False).graph.node)
    assert ops(exports["awq"]) == ops(exports["rtn"])


def test_trt_build_refuses_the_ort_form(exports):
    check_trt_form(json.loads((exports["trt"] / "manifest.json").read_text()), exports["trt"])
    with pytest.raises(ExportError, match="--int4-form tensorrt"):
        check_trt_form(json.loads((exports["rtn"] / "manifest.json").read_text()), exports["rtn"])


# ------------------------------------------------------------------------------------------------ the gate
def test_int4_gate_passes_both_forms_and_awq_is_no_worse_than_rtn(gates):
    for name, report in gates.items():
        assert report["passed"], format_report(report)
        assert report["thresholds"] == THRESHOLDS["int4"]
        assert len(report["layers"]) == LLM_LAYERS + 1 and report["metrics"]["weights_rel"] <= 0.15
        fams = report["metrics"]["answers_by_family"]
        assert set(fams) == {"choice", "number", "text"} and all(0 <= v <= 1 for v in fams.values())
    rtn, awq = gates["rtn"]["metrics"], gates["awq"]["metrics"]
    assert awq["logits_rel"] <= rtn["logits_rel"]
    assert awq["answers"] >= rtn["answers"] and awq["first_token"] >= rtn["first_token"]
    assert "int4 weights" in format_report(gates["awq"]) and "per family" in format_report(gates["awq"])


def test_gate_marks_the_export_and_the_loader_accepts_it(exports, gates):
    eng = Engine.from_pretrained(FINETUNED, backend="onnxruntime", compiled=exports["trt"], max_frames=FRAMES)
    assert eng.verify_report["passed"] and eng.manifest["int4"]["form"] == "tensorrt"


def test_random_weights_fail_the_int4_gate(tmp_path, tiny_ckpt_dir):
    """The gate is not loosened into uselessness: a random-weight checkpoint quantizes its weights as well as the
    fine-tuned one, but its near-tied logits drift."""
    folder = _export(tmp_path, "random", ckpt=tiny_ckpt_dir)
    ref = TorchEngine.load(tiny_ckpt_dir, device="cpu", dtype="float32", attn_implementation="eager",
                           max_frames=FRAMES)
    eng = Engine.from_pretrained(tiny_ckpt_dir, backend="onnxruntime", compiled=folder, force=True, max_frames=FRAMES)
    report = verify_engine(eng, ref, checkpoint_fingerprint(read_checkpoint(tiny_ckpt_dir)),
                           sample_queries(max_frames=FRAMES, count=8))
    assert not report["passed"] and "weights_rel" not in report["failed"]
    assert {"logits_rel", "answers"} & set(report["failed"])
    with pytest.raises(ParityError, match="FAILED"):
        Engine.from_pretrained(tiny_ckpt_dir, backend="onnxruntime", compiled=folder, max_frames=FRAMES)


def test_cli_int4_export_and_verify(tmp_path, capsys):
    out = tmp_path / "cli"
    with pytest.raises(SystemExit) as done:
        main(["export", "onnx", "--model", str(FINETUNED), "--out", str(out), "--quantize", "int4", "--int4-form",
              "tensorrt", "--block-size", "32", "--num-frames", str(FRAMES), "--max-batch", "1", "--device", "cpu"])
    assert done.value.code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["dtype"] == "float16" and manifest["opset"] == 21  # the int4 defaults
    shutil.rmtree(out)
    with pytest.raises(SystemExit) as failed:
        main(["export", "onnx", "--model", str(FINETUNED), "--out", str(out), "--int4-method", "awq"])
    assert failed.value.code != 0
    assert "only apply with --quantize int4" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ TensorRT
def _have_tensorrt() -> str:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "TensorRT is not installed (pip install 'rgpt4d-sdk[tensorrt]')"
    if not torch.cuda.is_available():
        return "no CUDA GPU"
    return ""


@pytest.mark.gpu
@pytest.mark.skipif(bool(_have_tensorrt()), reason=_have_tensorrt() or "TensorRT present")
def test_tensorrt_builds_the_int4_form_and_it_passes_the_gate(exports, reference, tmp_path):
    from rgpt4d_sdk.compiled.trt_build import build_engines

    engines = build_engines(exports["trt"], tmp_path / "trt")
    eng = Engine.from_pretrained(FINETUNED, backend="tensorrt", compiled=engines, force=True, max_frames=FRAMES)
    report = verify_engine(eng, reference, checkpoint_fingerprint(read_checkpoint(FINETUNED)),
                           sample_queries(max_frames=FRAMES, count=8))
    assert report["passed"], format_report(report)
    assert report["metrics"]["weights_rel"] <= THRESHOLDS["int4"]["weights_rel"]


def test_awq_calibrates_on_the_users_log(tmp_path):
    """--calib-data: queries from a nuScenes-format log (one family after another), and AWQ searching on them."""
    from rgpt4d_sdk.adapters.nuscenes import sample as S
    from rgpt4d_sdk.compiled.awq import apply_awq
    from rgpt4d_sdk.compiled.samples import log_queries
    from rgpt4d_sdk.model.nvila import NvilaModel

    root = S.write_sample_log(tmp_path / "nus", image_size=(160, 90))
    qs = log_queries(root, max_frames=FRAMES, count=6)
    assert len(qs) == 6 and all(len(q.clip) == FRAMES for q in qs)
    assert len({q.task for q in qs}) == 6, "round-robin over the question families"
    model = NvilaModel.from_pretrained(FINETUNED, device="cpu", dtype="float32", attn_implementation="eager")
    norm_before = model.llm.model.layers[0].input_layernorm.weight.clone()
    x = torch.randn(1, 12, model.llm.config.hidden_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model.llm(inputs_embeds=x).logits
    record, scales = apply_awq(model, qs, block=32)
    assert record["queries"] == 6 and set(scales) == set(record["groups"])
    s = scales["model.layers.0.qkv"]
    torch.testing.assert_close(model.llm.model.layers[0].input_layernorm.weight, norm_before / s)
    assert any(float((v - 1).abs().max()) > 0.05 for v in scales.values()), "some group was rescaled"
    with torch.no_grad():  # folding is exact: the float model computes the same function (GQA ties, v/o, up/down)
        torch.testing.assert_close(model.llm(inputs_embeds=x).logits, before, rtol=1e-4, atol=1e-4)
