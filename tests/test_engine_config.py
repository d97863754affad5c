"""Engine settings declared once: `EngineConfig.build` decides per backend what `Engine.from_pretrained` gets,
`LazyEngine` is the one loader (analyze, ray workers, eval, the ROS node), and the analyze schema still checks the
section strictly."""
from __future__ import annotations

import pytest

from rgpt4d_sdk.analyze import config as analyze_config
from rgpt4d_sdk.analyze.config import AnalyzeConfig, plain
from rgpt4d_sdk.engine.base import BACKENDS, Engine
from rgpt4d_sdk.engine.config import (HELP, MISSING_MODEL, OPTIONS, EngineConfig, LazyEngine, OrtOptions, TorchOptions,
                                      TrtOptions)
from rgpt4d_sdk.errors import BackendError, ConfigError
from rgpt4d_sdk.schema import SchemaError


def test_every_backend_has_its_options_and_every_field_its_help():
    assert set(OPTIONS) == set(BACKENDS)
    assert analyze_config.EngineConfig is EngineConfig  # the analyze section is the engine's config
    for name, f in EngineConfig.__dataclass_fields__.items():
        assert f.metadata.get(HELP), name


def test_build_torch_passes_only_what_is_set():
    opts = EngineConfig(model="/m", device="cpu", dtype="float32", max_frames=8, verify_digests=True).build()
    assert type(opts) is TorchOptions and opts.backend == "torch"
    assert opts.options() == {"max_frames": 8}
    assert EngineConfig(model="/m", max_frames=None).build().options() == {}  # the engine's own max_frames
    assert EngineConfig(model="/m").build(vision_cache_mb=0.0).options() == {"max_frames": 16, "vision_cache_mb": 0.0}
    assert EngineConfig(model="/m", compiled=None).build().options() == {"max_frames": 16}
    with pytest.raises(ConfigError, match="compiled='/x' is for the onnxruntime and tensorrt backends"):
        EngineConfig(model="/m", compiled="/x").build()


@pytest.mark.parametrize("backend, kind", [("onnxruntime", OrtOptions), ("tensorrt", TrtOptions)])
def test_build_compiled_backends_pass_compiled_only_if_set(backend, kind):
    opts = EngineConfig(model="/m", backend=backend, compiled="/c").build(vision_cache_mb=512.0)
    assert type(opts) is kind and opts.backend == backend
    assert opts.options() == {"max_frames": 16, "compiled": "/c"}  # no vision cache option: they have none
    for unset in ("", None):
        assert "compiled" not in EngineConfig(model="/m", backend=backend, compiled=unset).build().options()


def test_build_refuses_an_unknown_backend_with_the_engine_message():
    with pytest.raises(BackendError) as built:
        EngineConfig(model="/m", backend="jax").build()
    with pytest.raises(BackendError) as loaded:
        Engine.from_pretrained("/m", backend="jax")
    assert str(built.value) == str(loaded.value)


def test_options_load_a_real_engine(tiny_ckpt_dir):
    cfg = EngineConfig(model=str(tiny_ckpt_dir), device="cpu", dtype="float32", max_frames=8)
    engine = cfg.build(vision_cache_mb=0.0).load()
    assert engine.backend == "torch" and engine.max_frames == 8 and engine.vision_cache is None
    assert engine.checkpoint == str(tiny_ckpt_dir)
    default = EngineConfig(model=str(tiny_ckpt_dir), device="cpu", dtype="float32", max_frames=None).build().load()
    assert default.max_frames == 16 and default.vision_cache is not None  # the engine's own defaults


def test_compiled_backend_without_a_folder_says_how_to_make_one(tiny_ckpt_dir):
    opts = EngineConfig(model=str(tiny_ckpt_dir), backend="onnxruntime", device="cpu").build()
    with pytest.raises(ConfigError, match="needs compiled=ONNX_DIR"):
        opts.load()


def test_lazy_engine_loads_once_on_first_use(tiny_ckpt_dir):
    lazy = LazyEngine(EngineConfig(model=str(tiny_ckpt_dir), device="cpu", dtype="float32"))
    assert lazy.engine is None and not lazy.loaded
    first = lazy.get()
    assert lazy.loaded and lazy.get() is first


def test_lazy_engine_given_engine_and_missing_model():
    given = object()
    lazy = LazyEngine(EngineConfig(), given)
    assert lazy.get() is given and not lazy.loaded
    with pytest.raises(ConfigError) as e:
        LazyEngine(EngineConfig()).get()
    assert str(e.value) == MISSING_MODEL
    with pytest.raises(ConfigError, match="^no model here$"):
        LazyEngine(EngineConfig(backend="jax"), missing_model="no model here").get()  # before the backend check


def test_analyze_engine_section_is_still_checked_strictly(tmp_path):
    base = {"source": "nuscenes", "nuscenes": {"dataroot": str(tmp_path), "version": "v1.0-mini"}}
    with pytest.raises(SchemaError, match=r"engine.batch_size = '2' is invalid: it must be an integer >= 1\."):
        AnalyzeConfig.from_dict({**base, "engine": {"batch_size": "2"}})
    with pytest.raises(SchemaError, match=r"engine.device = 'gpu' is invalid: it must be a string \(auto, cpu, cuda"):
        AnalyzeConfig.from_dict({**base, "engine": {"device": "gpu"}})
    with pytest.raises(ConfigError, match=r"unknown engine option\(s\) \['batch'\]; valid options are \['backend', "
                                          r"'batch_size', 'compiled', 'device', 'dtype', 'max_frames', 'model', "
                                          r"'verify_digests'\]"):
        AnalyzeConfig.from_dict({**base, "engine": {"batch": 2}})
    with pytest.raises(SchemaError, match="engine.max_frames = None is invalid"):
        AnalyzeConfig.from_dict({**base, "engine": {"max_frames": None}})  # None is for Python callers only
    cfg = AnalyzeConfig.from_dict({**base, "engine": {"model": "/m", "compiled": None}})
    assert list(cfg.to_dict()["engine"]) == ["model", "backend", "compiled", "device", "dtype", "batch_size",
                                             "max_frames", "verify_digests"]


def test_plain_turns_dataclasses_and_tuples_into_plain_data():
    assert plain({"a": (1, [2, (3,)]), "e": EngineConfig(model="/m")}) == {
        "a": [1, [2, [3]]], "e": {"model": "/m", "backend": "torch", "compiled": "", "device": "auto", "dtype": "auto",
                                  "batch_size": 8, "max_frames": 16, "verify_digests": False}}
    assert plain(EngineConfig) is EngineConfig  # a dataclass type is left alone
