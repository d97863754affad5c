"""Compiled runtime: ONNX export, the ONNX Runtime backend against torch, the parity gate, keys and typed errors.

One fp32 export of the session's tiny checkpoint is shared (about 12 s); tests that alter an export copy it first.
TensorRT tests run only where TensorRT and a CUDA GPU are present.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnx", reason="the [onnx] extra is not installed")
pytest.importorskip("onnxruntime", reason="the [onnx] extra is not installed")

from rgpt4d_sdk import Engine  # noqa: E402
from rgpt4d_sdk.cli import main  # noqa: E402
from rgpt4d_sdk.compiled.artifacts import checkpoint_fingerprint, file_sha256, require_key  # noqa: E402
from rgpt4d_sdk.compiled.onnx_export import ShapeProfile, export_onnx  # noqa: E402
from rgpt4d_sdk.compiled.ort_backend import provider_options  # noqa: E402
from rgpt4d_sdk.compiled.samples import sample_queries  # noqa: E402
from rgpt4d_sdk.compiled.trt_build import check_precision, engine_key  # noqa: E402
from rgpt4d_sdk.compiled.verify import verify_engine  # noqa: E402
from rgpt4d_sdk.engine.torch_backend import TorchEngine  # noqa: E402
from rgpt4d_sdk.errors import (  # noqa: E402
    CompiledModelError,
    ConfigError,
    EngineKeyMismatch,
    ExportError,
    ParityError,
    QueryError,
    RuntimeMissingError,
    ShapeProfileError,
)
from rgpt4d_sdk.model.checkpoint import read_checkpoint  # noqa: E402
from rgpt4d_sdk.model.tiny import make_tiny  # noqa: E402
from rgpt4d_sdk.types import Region, RegionQuery  # noqa: E402


@pytest.fixture(autouse=True)
def _hash_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RGPT4D_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def onnx_dir(tiny_ckpt_dir, tmp_path_factory) -> Path:
    """A pristine fp32 export with no parity report (copy it before changing anything)."""
    return export_onnx(tiny_ckpt_dir, tmp_path_factory.mktemp("onnx") / "fp32")


@pytest.fixture(scope="module")
def torch_engine(tiny_ckpt_dir):
    return TorchEngine.load(tiny_ckpt_dir, device="cpu", dtype="float32", attn_implementation="eager")


@pytest.fixture(scope="module")
def other_ckpt(tmp_path_factory) -> Path:
    return make_tiny(tmp_path_factory.mktemp("other") / "ckpt", seed=1)


def _copy(src: Path, tmp_path: Path, name: str = "export") -> Path:
    dst = tmp_path / name
    shutil.copytree(src, dst)
    (dst / "verify.json").unlink(missing_ok=True)
    return dst


def _gate(ckpt, folder, torch_engine, count=4):
    engine = Engine.from_pretrained(ckpt, backend="onnxruntime", compiled=folder, force=True, check_weights=False)
    weights = checkpoint_fingerprint(read_checkpoint(ckpt))
    return verify_engine(engine, torch_engine, weights, sample_queries(max_frames=8, count=count))


# ------------------------------------------------------------------------------------------------ the export
def test_export_layout(onnx_dir, tiny_ckpt_dir):
    import onnx

    manifest = json.loads((onnx_dir / "manifest.json").read_text())
    assert manifest["opset"] >= 17 and manifest["precision"] == "fp32"
    assert manifest["source"]["weights"] == checkpoint_fingerprint(read_checkpoint(tiny_ckpt_dir))
    assert set(manifest["files"]) == {f"{g}.onnx{s}" for g in ("vision", "embed", "decoder") for s in ("", ".data")}
    for name, meta in manifest["files"].items():
        assert meta["bytes"] == (onnx_dir / name).stat().st_size and meta["sha256"] == file_sha256(onnx_dir / name)
    vision = onnx.load(str(onnx_dir / "vision.onnx"), load_external_data=False)
    assert [i.name for i in vision.graph.input] == ["pixel_values", "times_s", "time_mask"]
    assert vision.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "images"  # dynamic frame count
    dec = onnx.load(str(onnx_dir / "decoder.onnx"), load_external_data=False)
    names = [i.name for i in dec.graph.input]
    assert names[:4] == ["inputs_embeds", "attention_mask", "position_ids", "past.0.key"]
    axes = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in dec.graph.input}
    assert axes["inputs_embeds"][:2] == ["batch", "seq"] and axes["past.0.key"][2] == "past"
    out_axes = [d.dim_param for d in dec.graph.output[1].type.tensor_type.shape.dim]
    assert dec.graph.output[1].name == "present.0.key" and out_axes[2] == "seq+past"
    # weight matrices live in external data, not in the graph file
    big = [i for i in dec.graph.initializer if int(np.prod(i.dims)) >= 1024]
    assert big and all(init.data_location == onnx.TensorProto.EXTERNAL for init in big)


def test_export_refuses_bad_options(tiny_ckpt_dir, onnx_dir, tmp_path):
    with pytest.raises(ConfigError, match="opset 13"):
        export_onnx(tiny_ckpt_dir, tmp_path / "a", opset=13)
    with pytest.raises(ConfigError, match="dtype"):
        export_onnx(tiny_ckpt_dir, tmp_path / "b", dtype="float8")
    with pytest.raises(ExportError, match="already holds an export"):
        export_onnx(tiny_ckpt_dir, onnx_dir)


# ------------------------------------------------------------------------------------------------ ORT vs torch
def test_onnxruntime_cpu_matches_torch(tiny_ckpt_dir, onnx_dir, torch_engine):
    ort_engine = Engine.from_pretrained(tiny_ckpt_dir, backend="onnxruntime", compiled=onnx_dir, force=True)
    queries = sample_queries(max_frames=8, count=8)
    queries.append(RegionQuery(queries[1].clip, [Region(1, box=(5, 5, 90, 60))], "Where is <obj_1> after 1 s?",
                               answer_type="text", id="extra"))
    for q in queries:
        prep, ref = ort_engine.prepare(q), torch_engine.prepare(q)
        got = ort_engine.image_embeddings(prep).float()
        want = torch_engine.model.project(torch_engine._vision_features(ref.images), ref.image_times).float()
        assert float((got - want).norm() / want.norm()) < 1e-4, q.id  # fp32: vision within 1e-4 relative
    expected = [torch_engine.answer(q) for q in queries]
    one_by_one = [ort_engine.answer(q) for q in queries]
    batched = ort_engine.answer_many(queries, batch_size=4)  # left-padded batches through the same graphs
    assert [a.token_ids for a in one_by_one] == [a.token_ids for a in expected]
    assert [a.token_ids for a in batched] == [a.token_ids for a in expected]
    assert [a.text for a in one_by_one] == [a.text for a in expected]
    assert all(a.engine_id.startswith("onnxruntime:cpu:fp32") for a in one_by_one)
    assert one_by_one[0].prompt_tokens == expected[0].prompt_tokens and one_by_one[0].timings["decode"] > 0


def test_tpe_is_inside_the_vision_graph(tiny_ckpt_dir, onnx_dir):
    eng = Engine.from_pretrained(tiny_ckpt_dir, backend="onnxruntime", compiled=onnx_dir, force=True)
    pixels = torch.zeros(2, 3, eng.spec.image_size, eng.spec.image_size)
    ones = torch.ones(2)
    a = eng.runner.vision(pixels, torch.tensor([0.0, 0.5]), ones)
    b = eng.runner.vision(pixels, torch.tensor([0.0, 1.5]), ones)
    c = eng.runner.vision(pixels, torch.tensor([0.0, 1.5]), torch.tensor([1.0, 0.0]))
    assert torch.equal(a[0], b[0]) and not torch.allclose(a[1], b[1])  # frame times change the features
    assert torch.equal(c[1], eng.runner.vision(pixels, torch.tensor([0.0, 9.0]), torch.tensor([1.0, 0.0]))[1])


# ------------------------------------------------------------------------------------------------ parity gate
def test_gate_passes_then_engine_loads_unforced(tiny_ckpt_dir, onnx_dir, torch_engine, tmp_path):
    folder = _copy(onnx_dir, tmp_path)
    with pytest.raises(ParityError, match="has not been through the parity gate.*export verify"):
        Engine.from_pretrained(tiny_ckpt_dir, backend="onnxruntime", compiled=folder)
    report = _gate(tiny_ckpt_dir, folder, torch_engine)
    assert report["passed"], report["failed"]
    assert report["metrics"]["vision_rel"] < 1e-4 and report["metrics"]["answers"] == 1.0
    engine = Engine.from_pretrained(tiny_ckpt_dir, backend="onnxruntime", compiled=folder)
    assert engine.verify_report["passed"]


def test_gate_fails_for_an_engine_from_another_checkpoint(tiny_ckpt_dir, other_ckpt, onnx_dir, torch_engine,
                                                          tmp_path):
    folder = _copy(onnx_dir, tmp_path)
    other_ref = TorchEngine.load(other_ckpt, device="cpu", dtype="float32", attn_implementation="eager")
    report = _gate(other_ckpt, folder, other_ref, count=3)
    assert not report["passed"]
    assert report["failed"][0] == "weights" and {"vision_rel", "logits_rel"} <= set(report["failed"])
    assert report["metrics"]["vision_rel"] > 0.1
    with pytest.raises(EngineKeyMismatch, match=r"weights .*\n.*rgpt4d-sdk export onnx --model"):
        Engine.from_pretrained(other_ckpt, backend="onnxruntime", compiled=folder)
    with pytest.raises(ParityError, match="another checkpoint"):  # the failed verdict also blocks the right model
        Engine.from_pretrained(tiny_ckpt_dir, backend="onnxruntime", compiled=folder)
    assert Engine.from_pretrained(tiny_ckpt_dir, backend="onnxruntime", compiled=folder, force=True)


def test_gate_catches_graph_weights_the_key_does_not(tiny_ckpt_dir, onnx_dir, torch_engine, tmp_path):
    """A decoder whose stored weights were altered (manifest re-signed, so files and key look right) fails on the
    numbers alone."""
    folder = _copy(onnx_dir, tmp_path)
    data = folder / "decoder.onnx.data"
    arr = np.fromfile(data, dtype=np.float32)
    arr[: arr.size // 2] *= 1.5
    arr.tofile(data)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["decoder.onnx.data"]["sha256"] = file_sha256(data)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    report = _gate(tiny_ckpt_dir, folder, torch_engine, count=3)
    assert not report["passed"] and "weights" not in report["failed"] and "logits_rel" in report["failed"]
    with pytest.raises(ParityError, match="FAILED the parity gate"):
        Engine.from_pretrained(tiny_ckpt_dir, backend="onnxruntime", compiled=folder)


def test_altered_file_after_verification_voids_the_mark(tiny_ckpt_dir, onnx_dir, torch_engine, tmp_path):
    folder = _copy(onnx_dir, tmp_path)
    assert _gate(tiny_ckpt_dir, folder, torch_engine, count=2)["passed"]
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["embed.onnx"]["sha256"] = "0" * 64  # a re-signed manifest certifies other files
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CompiledModelError, match="does not match its recorded sha256"):
        Engine.from_pretrained(tiny_ckpt_dir, backend="onnxruntime", compiled=folder)


# ------------------------------------------------------------------------------------------------ typed errors
def test_truncated_and_corrupt_onnx_files(tiny_ckpt_dir, onnx_dir, tmp_path):
    folder = _copy(onnx_dir, tmp_path, "truncated")
    data = folder / "decoder.onnx.data"
    data.write_bytes(data.read_bytes()[:1000])
    with pytest.raises(CompiledModelError, match=r"truncated or replaced.*rgpt4d-sdk export onnx"):
        Engine.from_pretrained(tiny_ckpt_dir, backend="onnxruntime", compiled=folder, force=True)
    # garbage with a matching record (as if the manifest were rewritten): ONNX Runtime's refusal becomes typed
    folder = _copy(onnx_dir, tmp_path, "garbage")
    graph = folder / "vision.onnx"
    graph.write_bytes(b"\x08\x07garbage" * 50)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["vision.onnx"] = {"bytes": graph.stat().st_size, "sha256": file_sha256(graph)}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CompiledModelError, match="cannot load .*vision.onnx"):
        Engine.from_pretrained(tiny_ckpt_dir, backend="onnxruntime", compiled=folder, force=True)
    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(CompiledModelError, match="not valid JSON"):
        Engine.from_pretrained(tiny_ckpt_dir, backend="onnxruntime", compiled=folder, force=True)
    with pytest.raises(CompiledModelError, match="does not exist"):
        Engine.from_pretrained(tiny_ckpt_dir, backend="onnxruntime", compiled=tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="needs compiled=ONNX_DIR"):
        Engine.from_pretrained(tiny_ckpt_dir, backend="onnxruntime")


def test_inputs_outside_the_shape_profile(tiny_ckpt_dir, onnx_dir, tmp_path):
    folder = _copy(onnx_dir, tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["profile"].update(max_images=5, opt_images=5, max_seq=200, opt_seq=100)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ShapeProfileError, match="at most 5"):
        Engine.from_pretrained(tiny_ckpt_dir, backend="onnxruntime", compiled=folder, force=True, max_frames=8)
    eng = Engine.from_pretrained(tiny_ckpt_dir, backend="onnxruntime", compiled=folder, force=True)
    assert eng.max_frames == 4
    long_q = sample_queries(max_frames=4, count=1)[0]
    long_q.question = "How fast is <obj_1> moving? " + "Think about the frames carefully. " * 20
    with pytest.raises(ShapeProfileError, match=r"LLM positions .*--max-seq"):
        eng.answer(long_q)
    with pytest.raises(QueryError, match="at most 4"):  # more frames than the engine takes: refused before any work
        eng.answer(sample_queries(max_frames=8, count=3)[2])
    assert eng.answer(sample_queries(max_frames=4, count=1)[0]).text is not None


def test_missing_runtimes_name_the_extra(tiny_ckpt_dir, onnx_dir, monkeypatch):
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        with pytest.raises(RuntimeMissingError, match=r"rgpt4d-sdk\[onnx-gpu\]"):
            Engine.from_pretrained(tiny_ckpt_dir, backend="onnxruntime", compiled=onnx_dir, provider="cuda")
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeMissingError, match=r"pip install 'rgpt4d-sdk\[tensorrt\]'"):
            Engine.from_pretrained(tiny_ckpt_dir, backend="tensorrt", compiled=onnx_dir)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if the [onnx] extra were not installed
    with pytest.raises(RuntimeMissingError, match=r"rgpt4d-sdk\[onnx\]"):
        Engine.from_pretrained(tiny_ckpt_dir, backend="onnxruntime", compiled=onnx_dir)


def test_engine_key_mismatch_names_each_part_and_the_rebuild_command(onnx_dir):
    manifest = json.loads((onnx_dir / "manifest.json").read_text())
    built = engine_key(manifest, "10.3.0", (8, 7))  # an engine built on a Jetson Orin with TensorRT 10.3
    here = engine_key(manifest, "11.4.0", (9, 0))
    with pytest.raises(EngineKeyMismatch) as err:
        require_key(Path("engines/orin"), here, built, "rgpt4d-sdk export tensorrt --onnx X --out engines/orin --replace")
    msg = str(err.value)
    assert "tensorrt (the TensorRT version): engine has '10.3.0', this run needs '11.4.0'" in msg
    assert "compute_capability" in msg and "'8.7'" in msg and "weights" not in msg
    assert msg.rstrip().endswith("rgpt4d-sdk export tensorrt --onnx X --out engines/orin --replace")


def test_precision_support_by_gpu():
    check_precision("fp8", (9, 0))  # Hopper
    check_precision("int8", (8, 7))  # Jetson Orin
    with pytest.raises(ExportError, match=r"fp8 needs compute capability >= 8.9 .* 8.7"):
        check_precision("fp8", (8, 7), "Orin")
    with pytest.raises(ExportError, match="fp8"):
        check_precision("fp8", (8, 0), "A100")
    with pytest.raises(ExportError, match="bf16"):
        check_precision("bf16", (7, 5), "T4")


def test_tensorrt_provider_options_expose_caches_fp16_and_profiles(onnx_dir, tmp_path):
    manifest = json.loads((onnx_dir / "manifest.json").read_text())
    profile = ShapeProfile.from_dict(manifest["profile"])
    providers = provider_options("tensorrt", profile, manifest, "decoder", cache_dir=str(tmp_path), fp16=True)
    name, opts = providers[0]
    assert name == "TensorrtExecutionProvider" and providers[1][0] == "CUDAExecutionProvider"
    assert opts["trt_fp16_enable"] and opts["trt_engine_cache_path"] == str(tmp_path / "decoder")
    assert opts["trt_timing_cache_enable"]
    hidden, seq = manifest["llm"]["hidden_size"], profile.max_seq
    # one profile (the provider runs profile 0): up to max_seq new positions over a cache of up to max_seq
    assert opts["trt_profile_max_shapes"].count("inputs_embeds:") == 1
    assert f"inputs_embeds:{profile.max_batch}x{seq}x{hidden}" in opts["trt_profile_max_shapes"]
    assert f"past.0.key:{profile.max_batch}x" in opts["trt_profile_max_shapes"]
    vision = provider_options("tensorrt", profile, manifest, "vision", cache_dir=str(tmp_path))[0][1]
    size = manifest["spec"]["image_size"]
    assert vision["trt_profile_max_shapes"].startswith(f"pixel_values:{profile.max_images}x3x{size}x{size}")
    assert "trt_fp16_enable" not in vision  # an fp32 export stays fp32 unless asked
    with pytest.raises(ConfigError, match="ort_cache_dir"):
        provider_options("tensorrt", profile, manifest, "vision")


# ------------------------------------------------------------------------------------------------ fp16, int8
def test_fp16_export_passes_the_fp16_gate(tiny_ckpt_dir, torch_engine, tmp_path):
    folder = export_onnx(tiny_ckpt_dir, tmp_path / "fp16", dtype="float16", max_frames=8)
    report = _gate(tiny_ckpt_dir, folder, torch_engine, count=3)
    m = report["metrics"]
    assert report["precision"] == "fp16" and report["passed"], report["failed"]
    assert 1e-5 < m["vision_rel"] < 1e-2  # really computed in half precision, and close
    eng = Engine.from_pretrained(tiny_ckpt_dir, backend="onnxruntime", compiled=folder)
    assert eng.runner.dtype == torch.float16
    with pytest.raises(ConfigError, match="exported in float16"):
        Engine.from_pretrained(tiny_ckpt_dir, backend="onnxruntime", compiled=folder, dtype="float32")


def test_int8_export_runs_and_is_judged_by_the_gate(tiny_ckpt_dir, torch_engine, tmp_path):
    import onnx

    folder = export_onnx(tiny_ckpt_dir, tmp_path / "int8", quantize="int8", max_frames=8)
    decoder = onnx.load(str(folder / "decoder.onnx"), load_external_data=False)
    ops = [n.op_type for n in decoder.graph.node]
    assert ops.count("DequantizeLinear") >= 20 and "QuantizeLinear" in ops
    assert json.loads((folder / "manifest.json").read_text())["precision"] == "int8"
    report = _gate(tiny_ckpt_dir, folder, torch_engine, count=4)
    m = report["metrics"]
    assert report["precision"] == "int8" and report["thresholds"]["vision_rel"] == 1e-1
    assert 1e-4 < m["vision_rel"] < 1e-1 and 1e-4 < m["logits_rel"] < 1e-1  # quantized, yet close
    assert report["passed"] == (m["answers"] >= report["thresholds"]["answers"])


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_export_verify_and_refusals(tiny_ckpt_dir, other_ckpt, tmp_path, capsys):
    out = tmp_path / "cli-onnx"
    with pytest.raises(SystemExit) as e:
        main(["export", "onnx", "--model", str(tiny_ckpt_dir), "--out", str(out), "--num-frames", "4"])
    assert e.value.code == 0 and (out / "manifest.json").is_file()
    with pytest.raises(SystemExit) as e:
        main(["export", "verify", "--model", str(tiny_ckpt_dir), "--onnx", str(out), "--queries", "3"])
    assert e.value.code == 0 and "PASSED" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["export", "verify", "--model", str(other_ckpt), "--onnx", str(out), "--queries", "2"])
    captured = capsys.readouterr().out
    assert e.value.code == 1 and "FAILED (weights" in captured and "ANOTHER checkpoint" in captured
    with pytest.raises(SystemExit) as e:
        main(["export", "onnx", "--model", str(tiny_ckpt_dir), "--out", str(out)])
    assert e.value.code == 2 and "already holds an export" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["export", "verify", "--model", str(tiny_ckpt_dir)])
    assert e.value.code == 2


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
def test_tensorrt_engine_build_gate_and_keys(tiny_ckpt_dir, onnx_dir, torch_engine, tmp_path):
    from rgpt4d_sdk.compiled.trt_build import build_engines

    engines = build_engines(onnx_dir, tmp_path / "trt")
    with pytest.raises(ExportError, match="--replace"):
        build_engines(onnx_dir, engines)
    with pytest.raises(ParityError):
        Engine.from_pretrained(tiny_ckpt_dir, backend="tensorrt", compiled=engines)
    eng = Engine.from_pretrained(tiny_ckpt_dir, backend="tensorrt", compiled=engines, force=True, check_weights=False)
    weights = checkpoint_fingerprint(read_checkpoint(tiny_ckpt_dir))
    report = verify_engine(eng, torch_engine, weights, sample_queries(max_frames=8, count=4))
    assert report["passed"], report
    eng = Engine.from_pretrained(tiny_ckpt_dir, backend="tensorrt", compiled=engines)
    q = sample_queries(max_frames=8, count=2)[1]
    assert eng.answer(q).token_ids == torch_engine.answer(q).token_ids
    info = json.loads((engines / "engine.json").read_text())
    info["key"]["tensorrt"] = "0.0.1"
    (engines / "engine.json").write_text(json.dumps(info))
    with pytest.raises(EngineKeyMismatch, match="TensorRT version"):
        Engine.from_pretrained(tiny_ckpt_dir, backend="tensorrt", compiled=engines)
