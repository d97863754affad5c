"""CUDA and compiled paths (issue 23): what can be checked without a GPU, and `gpu`-marked tests for the rest.

CPU: the ORT TensorRT provider's options and profile strings, profiles filtered by a graph's real inputs, the
builder settings our code makes (on a recording fake builder, TensorRT not being installed here), engine keys,
provider fall-back detection on a real ONNX Runtime session, Q/DQ placement in a real int8 export, grouped-query
attention against the repeat_kv path, one device -> host read per decode step, serialised execution contexts, the
activation-memory figure and the version matrix. GPU (skipped with a reason here): the rest, on the real libraries.
"""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from rgpt4d_sdk.compiled.artifacts import require_key
from rgpt4d_sdk.compiled.memory import decoder_activation_bytes, manifest_activation_bytes
from rgpt4d_sdk.compiled.onnx_export import ShapeProfile
from rgpt4d_sdk.compiled.trt_backend import ContextPool
from rgpt4d_sdk.compiled.trt_build import configure_build, engine_key
from rgpt4d_sdk.compiled.versions import check_stack
from rgpt4d_sdk.engine import generate
from rgpt4d_sdk.engine.generate import greedy_decode
from rgpt4d_sdk.errors import BackendError, ConfigError, EngineKeyMismatch, ExportError
from rgpt4d_sdk.model.qwen2_layer import grouped_query_attention, repeat_kv

onnx = pytest.importorskip("onnx", reason="the [onnx] extra is not installed")
ort = pytest.importorskip("onnxruntime", reason="the [onnx] extra is not installed")

from rgpt4d_sdk.compiled.onnx_export import export_onnx, onnx_inputs  # noqa: E402
from rgpt4d_sdk.compiled.ort_backend import check_providers, profile_shapes, provider_options  # noqa: E402
from rgpt4d_sdk.compiled.quantize import qdq_problems  # noqa: E402


@pytest.fixture(autouse=True)
def _hash_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RGPT4D_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def export(tiny_ckpt_dir, tmp_path_factory) -> Path:
    return export_onnx(tiny_ckpt_dir, tmp_path_factory.mktemp("onnx") / "fp32", max_frames=4)


@pytest.fixture(scope="module")
def manifest(export):
    return json.loads((export / "manifest.json").read_text())


def _shapes(spec: str):
    """'a:1x2,b:3' -> {'a': (1, 2), 'b': (3,)}"""
    return {k: tuple(int(d) for d in v.split("x")) for k, v in (item.split(":") for item in spec.split(","))}


# ------------------------------------------------------------------------------------------------ 1, 4, 5, 7: ORT
def test_tensorrt_provider_gets_one_decoder_profile_spanning_prefill_and_decode(export, manifest, tmp_path):
    profile = ShapeProfile.from_dict(manifest["profile"])
    cache = tmp_path / "not" / "yet" / "there"  # the provider would not create the parents itself
    inputs = onnx_inputs(export / "decoder.onnx")
    providers = provider_options("tensorrt", profile, manifest, "decoder", cache_dir=str(cache), inputs=inputs)
    name, opts = providers[0]
    assert name == "TensorrtExecutionProvider" and (cache / "decoder").is_dir()
    lo, opt, hi = (_shapes(opts[f"trt_profile_{w}_shapes"]) for w in ("min", "opt", "max"))
    assert opts["trt_profile_max_shapes"].count("inputs_embeds:") == 1  # one profile: the provider runs profile 0
    b, seq, kv, hd = profile.max_batch, profile.max_seq, manifest["llm"]["num_kv_heads"], manifest["llm"]["head_dim"]
    assert lo["past.0.key"] == (1, kv, 0, hd) and hi["past.0.key"] == (b, kv, seq, hd)  # past 0 .. max
    assert lo["inputs_embeds"][1] == 1 and hi["inputs_embeds"][1] == seq  # new positions 1 .. max
    assert opt["inputs_embeds"][1] == 1 and opt["past.0.key"][2] == profile.opt_seq  # tuned for decode steps
    for point in (lo, opt, hi):  # each point is consistent: the mask spans cached + new positions
        assert point["attention_mask"][1] == point["inputs_embeds"][1] + point["past.0.key"][2]
    assert set(lo) == set(inputs) and providers[1][0] == "CUDAExecutionProvider"


def test_profiles_name_only_the_graph_inputs(export, manifest, tmp_path):
    profile = ShapeProfile.from_dict(manifest["profile"])
    for graph in ("vision", "embed", "decoder"):
        inputs = onnx_inputs(export / f"{graph}.onnx")
        strings = profile_shapes(profile, manifest, graph, inputs)
        assert set(_shapes(strings["max"])) == set(inputs)
        for prof in profile.profiles(manifest, graph, inputs):
            assert set(prof) == set(inputs)
    # a checkpoint without TPE: the exporter drops times_s / time_mask, and so must the profile
    vision = profile_shapes(profile, manifest, "vision", ["pixel_values"])
    assert set(_shapes(vision["min"])) == {"pixel_values"} and "times_s" not in vision["max"]
    assert len(profile.profiles(manifest, "decoder")) == 2  # the tensorrt backend keeps prefill and decode apart


def test_fp16_flag_only_relaxes_untyped_fp32_exports(manifest, tmp_path):
    profile = ShapeProfile.from_dict(manifest["profile"])
    opts = provider_options("tensorrt", profile, manifest, "vision", cache_dir=str(tmp_path))[0][1]
    assert "trt_fp16_enable" not in opts and "trt_int8_enable" not in opts  # strongly typed by default
    assert provider_options("tensorrt", profile, manifest, "vision", cache_dir=str(tmp_path),
                            fp16=True)[0][1]["trt_fp16_enable"] is True  # asked for, on an fp32 export
    typed = dict(manifest, precision="fp16", dtype="float16")
    with pytest.raises(ConfigError, match="strong typing"):
        provider_options("tensorrt", profile, typed, "vision", cache_dir=str(tmp_path), fp16=True)
    with pytest.raises(ConfigError, match="trt_int8_enable"):
        provider_options("tensorrt", profile, dict(manifest, precision="int8"), "decoder", cache_dir=str(tmp_path),
                         extra={"trt_int8_enable": "1"})
    assert "trt_fp16_enable" not in provider_options("tensorrt", profile, typed, "vision",
                                                     cache_dir=str(tmp_path))[0][1]


def test_cache_folder_that_cannot_be_created_is_a_config_error(manifest, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match="cannot create"):
        provider_options("tensorrt", ShapeProfile.from_dict(manifest["profile"]), manifest, "embed",
                         cache_dir=str(blocker / "sub"))


def test_provider_fallback_is_refused_on_a_real_session(export):
    path = export / "embed.onnx"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    check_providers(session, "cpu", path)  # what was asked for is what runs
    for wanted in ("tensorrt", "cuda"):
        with pytest.raises(BackendError, match=r"did not start .*fell back to \['CPUExecutionProvider'\]"):
            check_providers(session, wanted, path)


# ------------------------------------------------------------------------------------------------ 2, 7: TensorRT build
class _Recorder:
    """Records the calls our build makes; TensorRT itself is not installed on this machine."""

    def __init__(self, timing_ok=True, profile_index=0):
        self.calls, self.flags = [], {"TF32": True}  # TensorRT's default: TF32 on
        self.timing_ok, self.profile_index, self.profiles = timing_ok, profile_index, []

    # builder config
    def set_memory_pool_limit(self, pool, size):
        self.calls.append(("pool", pool, size))

    def clear_flag(self, flag):
        self.flags[flag] = False

    def get_flag(self, flag):
        return self.flags[flag]

    def create_timing_cache(self, data):
        return ("cache", data)

    def set_timing_cache(self, cache, ignore_mismatch):
        self.calls.append(("timing", cache, ignore_mismatch))
        return self.timing_ok

    def add_optimization_profile(self, profile):
        self.profiles.append(profile)
        return self.profile_index

    # builder
    def create_optimization_profile(self):
        rec = {}

        class Profile:
            def set_shape(self, name, lo, opt, hi):
                rec[name] = (lo, opt, hi)

        p = Profile()
        p.shapes = rec
        return p


class _FakeTrt:
    class BuilderFlag:
        TF32 = "TF32"

    class MemoryPoolType:
        WORKSPACE = "WORKSPACE"


def _configure(rec, profiles, inputs, tmp_path):
    configure_build(_FakeTrt, rec, rec, profiles, inputs, 2.0, 3, b"", tmp_path / "timing.cache")


def test_build_clears_tf32_and_checks_each_result_with_recording_fake_builder(manifest, tmp_path):
    profile = ShapeProfile.from_dict(manifest["profile"])
    inputs = ["pixel_values"]  # as the parser reports a vision network without TPE inputs
    rec = _Recorder()
    _configure(rec, profile.profiles(manifest, "vision", inputs), inputs, tmp_path)
    assert rec.flags["TF32"] is False and rec.builder_optimization_level == 3
    assert ("timing", ("cache", b""), False) in rec.calls
    assert [set(p.shapes) for p in rec.profiles] == [{"pixel_values"}]  # no profile names a dropped input
    dec_inputs = list(profile.profiles(manifest, "decoder")[0])
    rec = _Recorder()
    _configure(rec, profile.profiles(manifest, "decoder", dec_inputs), dec_inputs, tmp_path)
    assert len(rec.profiles) == 2  # prefill + decode, one execution context each at run time
    with pytest.raises(ExportError, match="timing cache"):
        _configure(_Recorder(timing_ok=False), profile.profiles(manifest, "vision", inputs), inputs, tmp_path)
    with pytest.raises(ExportError, match="rejected the optimisation profile"):
        _configure(_Recorder(profile_index=-1), profile.profiles(manifest, "vision", inputs), inputs, tmp_path)
    with pytest.raises(ExportError, match=r"does not cover the network inputs \['extra'\]"):
        _configure(_Recorder(), profile.profiles(manifest, "vision", inputs), inputs + ["extra"], tmp_path)


def test_engine_key_says_tf32_is_off_and_refuses_older_engines(manifest):
    key = engine_key(manifest, "10.3.0", (8, 7))
    assert key["tf32"] is False
    older = {k: v for k, v in key.items() if k != "tf32"}  # built before TF32 was switched off
    with pytest.raises(EngineKeyMismatch, match=r"tf32 \(TF32 math in fp32 layers.*not recorded"):
        require_key(Path("engines"), key, older, "rgpt4d-sdk export tensorrt --replace")


# ------------------------------------------------------------------------------------------------ 8: Q/DQ
def test_int8_fp16_export_quantizes_product_inputs_only_with_fp16_scales(tiny_ckpt_dir, tmp_path):
    folder = export_onnx(tiny_ckpt_dir, tmp_path / "int8", dtype="float16", quantize="int8", max_frames=4)
    for graph in ("vision", "decoder"):
        model = onnx.load(str(folder / f"{graph}.onnx"), load_external_data=False)
        producer = {o: n.op_type for n in model.graph.node for o in n.output}
        products = [n for n in model.graph.node if n.op_type == "MatMul"]
        quantized = [n for n in products if producer.get(n.input[1]) == "DequantizeLinear"]
        assert len(quantized) >= 10 and all(producer.get(n.input[0]) == "DequantizeLinear" for n in quantized)
        fed_by_products = {i for n in model.graph.node if n.op_type == "QuantizeLinear" for i in n.input[:1]}
        assert not fed_by_products & {o for n in products for o in n.output}  # outputs stay fp16
        assert qdq_problems(folder / f"{graph}.onnx", onnx.TensorProto.FLOAT16) == []


def test_qdq_check_finds_quantized_outputs_and_wrong_scale_types(tmp_path):
    from onnx import TensorProto, helper

    f32 = TensorProto.FLOAT
    nodes = [helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["x"], name="dq_x"),
             helper.make_node("DequantizeLinear", ["wq", "s", "z"], ["w"], name="dq_w"),
             helper.make_node("MatMul", ["x", "w"], ["y"], name="mm"),
             helper.make_node("QuantizeLinear", ["y", "s", "z"], ["yq"], name="q_y")]
    inits = [helper.make_tensor("s", f32, [], [0.1]), helper.make_tensor("z", TensorProto.INT8, [], [0]),
             helper.make_tensor("wq", TensorProto.INT8, [2, 2], [1, 2, 3, 4])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("xq", TensorProto.INT8, [1, 2])],
                              [helper.make_tensor_value_info("yq", TensorProto.INT8, [1, 2])], inits)
    path = tmp_path / "bad.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]), str(path))
    assert qdq_problems(path, f32) == ["mm: its output is quantized"]
    problems = qdq_problems(path, TensorProto.FLOAT16)  # an fp16 graph with fp32 scales
    assert "mm: its output is quantized" in problems and sum("scale of type FLOAT," in p for p in problems) == 3


# ------------------------------------------------------------------------------------------------ 10: attention
@pytest.mark.parametrize("heads,kv,length", [(8, 2, 1), (28, 4, 1), (8, 2, 5), (4, 4, 3)])
def test_grouped_query_attention_equals_the_repeat_kv_path(heads, kv, length):
    g = torch.Generator().manual_seed(heads * 7 + length)
    b, s, hd = 2, 11, 16
    q = torch.randn(b, heads, length, hd, generator=g)
    k, v = torch.randn(b, kv, s, hd, generator=g), torch.randn(b, kv, s, hd, generator=g)
    mask = torch.rand(b, 1, length, s, generator=g) > 0.3
    mask[..., 0] = True  # every row sees something
    expected = F.scaled_dot_product_attention(q, repeat_kv(k, heads // kv), repeat_kv(v, heads // kv), attn_mask=mask)
    got = grouped_query_attention(q, k, v, mask)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    static_mask = (torch.arange(s) <= 6).view(1, 1, 1, s)  # the static decoder's shared mask, broadcast
    if length == 1:
        torch.testing.assert_close(grouped_query_attention(q, k, v, static_mask), F.scaled_dot_product_attention(
            q, repeat_kv(k, heads // kv), repeat_kv(v, heads // kv), attn_mask=static_mask), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------------ 11: syncs
class _HostReads(TorchFunctionMode):
    """Counts every tensor -> Python value read (each one a device sync on CUDA)."""

    READS = {"__bool__", "__int__", "__index__", "__float__", "item", "tolist", "cpu", "numpy"}

    def __init__(self):
        super().__init__()
        self.reads = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in self.READS:
            self.reads.append(name)
        return func(*args, **(kwargs or {}))


def _toy_step(vocab=16):
    """A step on plain tensors (no host reads): the next token is (last token + 1) % vocab; the prompt's last
    embedding's first feature is the start token."""

    def step(inputs_embeds, input_ids, attention_mask, position_ids, past):
        last = inputs_embeds[:, -1, 0].long() if inputs_embeds is not None else input_ids[:, -1]
        return F.one_hot((last + 1) % vocab, vocab).float(), past

    return step


def test_greedy_decoding_reads_the_device_once_per_step(monkeypatch):
    starts = [2, 5, 9]  # stop id 7: rows stop after 5, 2 and (never) tokens
    embeds = [torch.full((4 + i, 3), float(s)) for i, s in enumerate(starts)]
    calls = []
    monkeypatch.setattr(generate, "to_host", lambda t: calls.append(t.shape) or t.tolist())
    with _HostReads() as mode:
        gens = greedy_decode(_toy_step(), embeds, stop_ids=[7], max_new_tokens=6)
    assert [g.token_ids for g in gens] == [[3, 4, 5, 6], [6], [10, 11, 12, 13, 14, 15]]
    assert [g.finish_reason for g in gens] == ["stop", "stop", "length"]
    assert len(calls) == 6 and all(shape == (3,) for shape in calls)  # the hook, once per step, whole batch
    assert sorted(mode.reads) == sorted(["tolist"] * 6 + ["cpu"])  # nothing else: no per-row reads
    assert gens[0].first_logits.shape == (16,) and int(gens[0].first_logits.argmax()) == 3


# ------------------------------------------------------------------------------------------------ 9: threads
def test_context_pool_serialises_threads():
    contexts = {"decoder": ["prefill context", "decode context"], "vision": ["context"]}
    pool = ContextPool(contexts)
    active, peak, used = [0], [0], []
    guard = threading.Lock()

    def worker(i):
        for j in range(15):
            graph, profile = ("decoder", j % 2) if i % 2 else ("vision", 0)
            with pool.use(graph, profile) as ctx:
                with guard:
                    active[0] += 1
                    peak[0] = max(peak[0], active[0])
                used.append(ctx)
                time.sleep(0.0005)  # a run's shapes, addresses and enqueue
                with guard:
                    active[0] -= 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] == 1 and len(used) == 90
    assert set(used) == {"prefill context", "decode context", "context"}


# ------------------------------------------------------------------------------------------------ 6, 12
def test_decoder_activation_figure_for_the_planner(manifest):
    full = decoder_activation_bytes(28, 3584, 18944, max_batch=8, max_seq=2714, dtype="float16")
    assert 6.5e9 < full.scores < 6.7e9  # fp32 scores at the 8B prefill maximum
    assert full.total == full.scores + full.probabilities + full.mlp + full.hidden
    ort_trt = decoder_activation_bytes(28, 3584, 18944, 8, 2714, "float16", backend="onnxruntime:tensorrt")
    assert ort_trt.scores == 2 * full.scores  # one profile spans a full cache beside a full prefill
    assert decoder_activation_bytes(28, 3584, 18944, 1, 2714).total < full.total / 7
    llm, prof = manifest["llm"], manifest["profile"]
    assert manifest_activation_bytes(manifest) == decoder_activation_bytes(
        llm["num_heads"], llm["hidden_size"], llm["intermediate_size"], prof["max_batch"], prof["max_seq"], "float32")
    with pytest.raises(ConfigError, match="max_batch"):
        decoder_activation_bytes(28, 3584, 18944, 0, 2714)


def test_version_matrix_check():
    assert check_stack("10.3.0", jetson=True) == [("ok", "TensorRT 10.3.0 (JetPack)")]
    level, msg = check_stack("8.6.2", jetson=True)[0]
    assert level == "error" and "JetPack 6.1" in msg
    assert any(lv == "warn" and "no JetPack release ships TensorRT 11" in m
               for lv, m in check_stack("11.1.0", jetson=True))
    trt_ep = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert check_stack("11.1.0", "1.20.1", trt_ep)[-1][0] == "error"  # a TensorRT 10.4 build of ONNX Runtime
    assert check_stack("10.4.0", "1.20.1", trt_ep)[-1] == ("ok", "onnxruntime 1.20.1 TensorRT provider (built "
                                                                 "against TensorRT 10.4)")
    assert check_stack(None, "1.17.3", trt_ep)[0][0] == "error"
    assert check_stack(None, "1.20.1", ["CPUExecutionProvider"]) == []


# ------------------------------------------------------------------------------------------------ GPU
def _no_cuda() -> str:
    return "" if torch.cuda.is_available() else "no CUDA GPU"


def _no_provider(name: str) -> str:
    return _no_cuda() or ("" if name in ort.get_available_providers() else f"onnxruntime has no {name} here "
                          "(pip install 'rgpt4d-sdk[onnx-gpu]')")


def _no_tensorrt() -> str:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "TensorRT is not installed (pip install 'rgpt4d-sdk[tensorrt]')"
    return _no_cuda()


@pytest.mark.gpu
@pytest.mark.skipif(bool(_no_cuda()), reason=_no_cuda() or "CUDA present")
def test_static_decoder_captures_on_its_device_while_another_thread_uses_cuda(tiny_ckpt_dir):
    from rgpt4d_sdk.engine.torch_backend import TorchEngine
    from rgpt4d_sdk.compiled.samples import sample_queries

    eng = TorchEngine.load(tiny_ckpt_dir, device="cuda", dtype="float32", decode="static")
    ref = TorchEngine.load(tiny_ckpt_dir, device="cuda", dtype="float32", decode="dynamic")
    stop = threading.Event()

    def busy():  # CUDA calls from another thread during capture: an error under the "global" capture mode
        x = torch.randn(256, 256, device="cuda")
        while not stop.is_set():
            x = (x @ x).tanh()
            torch.cuda.synchronize()

    t = threading.Thread(target=busy)
    t.start()
    try:
        q = sample_queries(max_frames=8, count=2)[1]
        assert eng.answer(q).token_ids == ref.answer(q).token_ids
    finally:
        stop.set()
        t.join()
    assert eng._static.use_graph and eng._static.graph is not None


@pytest.mark.gpu
@pytest.mark.skipif(bool(_no_provider("CUDAExecutionProvider")), reason=_no_provider("CUDAExecutionProvider") or "x")
def test_onnxruntime_cuda_io_binding_waits_for_torch(tiny_ckpt_dir, export, monkeypatch):
    from rgpt4d_sdk import Engine
    from rgpt4d_sdk.compiled import ort_backend
    from rgpt4d_sdk.compiled.samples import sample_queries

    syncs = []
    real = ort_backend.device_sync
    monkeypatch.setattr(ort_backend, "device_sync", lambda d: syncs.append(d) or real(d))
    eng = Engine.from_pretrained(tiny_ckpt_dir, backend="onnxruntime", compiled=export, provider="cuda",
                                 device="cuda:0", force=True)
    cpu = Engine.from_pretrained(tiny_ckpt_dir, backend="onnxruntime", compiled=export, provider="cpu", force=True)
    for q in sample_queries(max_frames=4, count=3):
        torch.cuda._sleep(50_000_000)  # torch work still queued when ORT is called
        assert eng.answer(q).token_ids == cpu.answer(q).token_ids
    assert syncs and eng.runner.sessions["decoder"].get_providers()[0] == "CUDAExecutionProvider"


@pytest.mark.gpu
@pytest.mark.skipif(bool(_no_provider("TensorrtExecutionProvider")),
                    reason=_no_provider("TensorrtExecutionProvider") or "x")
def test_onnxruntime_tensorrt_provider_runs_decode_steps(tiny_ckpt_dir, export, tmp_path):
    from rgpt4d_sdk import Engine
    from rgpt4d_sdk.compiled.samples import sample_queries

    eng = Engine.from_pretrained(tiny_ckpt_dir, backend="onnxruntime", compiled=export, provider="tensorrt",
                                 device="cuda:0", force=True, ort_cache_dir=str(tmp_path / "a" / "b"))
    cpu = Engine.from_pretrained(tiny_ckpt_dir, backend="onnxruntime", compiled=export, provider="cpu", force=True)
    for q in sample_queries(max_frames=4, count=3):  # prefill and decode steps with past > 0
        ans = eng.answer(q)
        assert len(ans.token_ids) > 1 and ans.token_ids == cpu.answer(q).token_ids
    assert all(s.get_providers()[0] == "TensorrtExecutionProvider" for s in eng.runner.sessions.values())


@pytest.mark.gpu
@pytest.mark.skipif(bool(_no_tensorrt()), reason=_no_tensorrt() or "x")
def test_tensorrt_runner_shares_one_activation_buffer_and_checks_shapes(tiny_ckpt_dir, export, tmp_path):
    from rgpt4d_sdk import Engine
    from rgpt4d_sdk.compiled.samples import sample_queries
    from rgpt4d_sdk.compiled.trt_build import build_engines
    from rgpt4d_sdk.errors import ShapeProfileError

    engines = build_engines(export, tmp_path / "trt")
    info = json.loads((engines / "engine.json").read_text())
    assert info["key"]["tf32"] is False and info["build"]["tf32"] is False
    eng = Engine.from_pretrained(tiny_ckpt_dir, backend="tensorrt", compiled=engines, force=True)
    runner = eng.runner
    sizes = [b for per_graph in runner.context_memory.values() for b in per_graph]
    assert len(runner.context_memory["decoder"]) == 2 and runner.activation_bytes == max(sizes)
    assert runner.activations.numel() == max(runner.activation_bytes, 1)
    qs = sample_queries(max_frames=4, count=4)
    results = [None] * len(qs)

    def answer(i):
        results[i] = eng.answer(qs[i]).token_ids

    threads = [threading.Thread(target=answer, args=(i,)) for i in range(len(qs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [eng.answer(q).token_ids for q in qs]  # threads share the contexts safely
    too_many = torch.zeros(runner.engines["vision"].get_tensor_profile_shape("pixel_values", 0)[2][0] + 1, 3,
                           int(info["spec"]["image_size"]), int(info["spec"]["image_size"]), device="cuda")
    with pytest.raises(ShapeProfileError, match="outside the engine's profile"):
        runner.vision(too_many, torch.zeros(len(too_many), device="cuda"), torch.ones(len(too_many), device="cuda"))
