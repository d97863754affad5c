"""P4D training: losses on hand-made tensors, modules, data and labels, the recipe (loss goes down, exact resume after
a kill, 2-process DDP equals 1 process), export without the P4D branch, and configuration errors."""
from __future__ import annotations

import copy
import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml
from rgpt4d_sdk.training.config import TrainConfig, example_configs
from rgpt4d_sdk.training.data import ConversationDataset, GlobalBatchSampler, load_records
from rgpt4d_sdk.training.export import export_run
from rgpt4d_sdk.training.p4d import (
    ExplicitDistillLoss,
    LatentDecoder,
    LatentDistillLoss,
    P4DConfig,
    masked_mean,
    sft_loss,
    student_grid,
)
from rgpt4d_sdk.training import recipe as recipe_module
from rgpt4d_sdk.training.recipe import Recipe, run

from rgpt4d_sdk import Engine
from rgpt4d_sdk.errors import ConfigError, DatasetError
from rgpt4d_sdk.model.checkpoint import read_checkpoint
from rgpt4d_sdk.model.nvila import NvilaModel

sys.path.insert(0, str(Path(__file__).parent))
from training_data import config, make_dataset  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("p4d-data")
    make_dataset(root)
    return root


def _cfg(tiny_ckpt_dir, data_root, out, **over) -> TrainConfig:
    return TrainConfig.from_dict(config(tiny_ckpt_dir, data_root, out, **over))


def _losses(history):
    return [row["loss"] for row in history]


def _param_count(path) -> int:
    files = read_checkpoint(path)
    return sum(s.num_params() for s in (files.llm, files.vision_tower, files.mm_projector))


# ------------------------------------------------------------------------------------------------ losses
def test_sft_loss_counts_answer_tokens_only_per_sample():
    v = 5
    logits = torch.zeros(2, 4, v)  # uniform: every token costs log(5)
    logits[1, 1, 3] = 100.0  # sample 1 predicts its label at position 2 perfectly
    labels = torch.tensor([[-100, -100, 2, 4], [-100, -100, 3, -100]])
    # sample 0: two answer tokens at log 5 each -> log 5; sample 1: one token, predicted -> ~0
    assert sft_loss(logits, labels).item() == pytest.approx(math.log(5) / 2, rel=1e-5)
    assert sft_loss(logits, torch.full((2, 4), -100)).item() == 0.0


def test_explicit_losses_on_known_values():
    loss = ExplicitDistillLoss("l1")
    pred = {"depth": torch.log(torch.tensor([[[2.0, 4.0], [8.0, 1.0]]])),  # log-depth predictions
            "flow": torch.ones(1, 2, 2, 2), "dynamic": torch.zeros(1, 2, 2), "rays": torch.zeros(1, 6, 2, 2)}
    target = {"depth": torch.tensor([[[1.0, 4.0], [0.0, 1.0]]]),  # 0: unknown depth
              "flow": torch.zeros(1, 2, 2, 2), "dynamic": torch.ones(1, 2, 2), "rays": torch.ones(1, 6, 2, 2)}
    mask = {"flow": torch.tensor([[[True, False], [False, False]]])}
    out = loss(pred, target, mask)
    assert out["depth"].item() == pytest.approx(math.log(2) / 3, rel=1e-6)  # |log2-log1|, 0, 0 over 3 valid cells
    assert out["flow"].item() == pytest.approx(2.0)  # |1-0| summed over 2 channels, one valid cell
    assert out["dynamic"].item() == pytest.approx(math.log(2), rel=1e-6)  # BCE(logit 0, 1)
    assert out["rays"].item() == pytest.approx(6.0)
    smooth = ExplicitDistillLoss("smooth_l1")(pred, target, mask)
    assert smooth["flow"].item() == pytest.approx(1.0)  # 0.5 * 1^2 per channel, 2 channels
    nothing = masked_mean(torch.ones(3, requires_grad=True), torch.zeros(3, dtype=torch.bool))
    assert nothing.item() == 0.0 and nothing.requires_grad


def test_latent_losses_on_known_values():
    s = {14: torch.zeros(2, 3), 21: torch.ones(2, 3)}
    t = {14: torch.full((2, 3), 2.0), 21: torch.ones(2, 3)}
    assert LatentDistillLoss("mse")(s, t).item() == pytest.approx(2.0)  # (4 + 0) / 2 hooks
    assert LatentDistillLoss("smooth_l1")(s, t).item() == pytest.approx(0.75)  # (2 - 0.5 + 0) / 2
    with pytest.raises(ConfigError, match="hook 14"):
        LatentDistillLoss()({14: torch.zeros(2, 4)}, {14: torch.zeros(2, 3)})


def test_decoder_variants_follow_the_code_and_the_paper():
    torch.manual_seed(0)
    code = LatentDecoder(3584, P4DConfig(variant="code"))
    assert [tuple(h.weight.shape) for h in code.heads] == [(1408, 3584)] * 4
    assert code.heads[0].weight.std().item() == pytest.approx(0.1, rel=0.02) and code.heads[0].bias.abs().sum() == 0
    paper = LatentDecoder(64, P4DConfig(variant="paper"))
    first = paper.heads[0]
    assert [m.out_features for m in first if isinstance(m, torch.nn.Linear)] == [2560, 2560, 1408]
    assert isinstance(first[1], torch.nn.GELU) and first[0].bias.abs().sum() == 0
    bound = math.sqrt(6 / (64 + 2560))  # Xavier-uniform bound
    assert first[0].weight.abs().max().item() <= bound and first[0].weight.abs().max().item() > 0.9 * bound
    cfg = P4DConfig(variant="paper")
    assert (cfg.latent_weight, cfg.explicit_scale, cfg.explicit_weights["flow"]) == (0.5, 0.1, 0.1)
    assert P4DConfig().explicit_weights == {"depth": 0.1, "flow": 0.001, "dynamic": 0.01, "rays": 1e-5}


def test_student_grid_takes_each_frames_visual_tokens():
    hidden = torch.arange(30, dtype=torch.float32)[:, None].repeat(1, 2)  # (L=30, D=2), value = position
    spans = [(2, 12), (12, 22)]  # 9 visual tokens + "\n" each
    g = student_grid(hidden, spans, 9, (3, 3))
    assert g.shape == (2, 3, 3, 2)
    assert g[0, 0, 0, 0] == 2 and g[0, 2, 2, 0] == 10 and g[1, 0, 0, 0] == 12  # "\n" (position 11) is not used
    assert student_grid(hidden, spans, 9, (4, 4)).shape == (2, 4, 4, 2)


# ------------------------------------------------------------------------------------------------ data
def test_prompt_equals_the_engine_prompt_and_labels_cover_the_answer(tiny_ckpt_dir, data_root):
    from rgpt4d_sdk.engine.torch_backend import TorchEngine
    from rgpt4d_sdk.types import Clip, RegionQuery

    model = NvilaModel.from_pretrained(tiny_ckpt_dir)
    records = load_records(data_root / "conversations.json")
    ds = ConversationDataset(records, model.spec, model.tokenizer, 4)
    sample = ds[1]  # plain mode
    rec = records[1]
    engine = TorchEngine(model)
    frames = [ds.frames(rec)[i] for i in range(4)]
    query = RegionQuery(Clip.from_arrays(frames, rec["timestamps_s"]), [], "How far does the red box move?",
                        prompt_mode="plain")
    prep = engine.prepare(query)
    assert sample.input_ids[:-sample.answer_len] == prep.input_ids
    answer = model.tokenizer.decode(sample.input_ids[-sample.answer_len:])
    assert answer == rec["conversations"][1]["value"] + "<|im_end|>"
    assert torch.allclose(sample.image_times, prep.image_times)
    r4d = ds[0]
    assert r4d.first_frame_image == 1 and r4d.pixels.shape[0] == 5 and math.isnan(r4d.image_times[0])


def test_global_batches_are_the_same_for_any_process_count():
    one = GlobalBatchSampler(10, 4, seed=3)
    two = [GlobalBatchSampler(10, 4, seed=3, rank=r, world=2) for r in range(2)]
    for epoch in range(2):
        for step in range(one.steps_per_epoch):
            assert one.batch(epoch, step) == two[0].batch(epoch, step) + two[1].batch(epoch, step)
    assert one.batch(0, 0) != one.batch(1, 0)


# ------------------------------------------------------------------------------------------------ recipe
def test_tiny_run_lowers_the_loss(tiny_ckpt_dir, data_root, tmp_path):
    history = run(_cfg(tiny_ckpt_dir, data_root, tmp_path / "run"), log=lambda m: None)
    losses = _losses(history)
    assert len(losses) == 30
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.6 * first, (first, last)
    assert {"sft", "latent", "depth", "flow", "dynamic", "rays", "lr", "tokens_per_s"} <= set(history[-1])
    lines = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == list(range(1, 31))
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == [
        f"step-{s:07d}" for s in (10, 20, 30)]


def test_killed_run_resumes_with_the_same_loss_sequence(tiny_ckpt_dir, data_root, tmp_path):
    reference = _losses(run(_cfg(tiny_ckpt_dir, data_root, tmp_path / "ref", run__max_steps=20,
                                 run__checkpoint_every=5), log=lambda m: None))
    out = tmp_path / "killed"
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump(config(tiny_ckpt_dir, data_root, out, run__max_steps=20,
                                              run__checkpoint_every=5)))
    cmd = [sys.executable, "-m", "rgpt4d_sdk.cli", "train", "--config", str(cfg_file)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    log = out / "log.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # wait for step 12 (checkpoint at 10), then kill without warning
        if log.is_file() and len(log.read_text().splitlines()) >= 12:
            break
        if proc.poll() is not None:
            pytest.fail(f"training exited early: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    steps_before = [json.loads(x)["step"] for x in log.read_text().splitlines()]
    assert 12 <= max(steps_before) < 20
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming from step-" in done.stdout
    by_step = {}
    for line in log.read_text().splitlines():
        row = json.loads(line)
        by_step[row["step"]] = row["loss"]  # steps redone after the kill overwrite the lost ones
    assert [by_step[s] for s in range(1, 21)] == pytest.approx(reference, rel=0, abs=1e-6)


def test_two_process_ddp_matches_one_process(tiny_ckpt_dir, data_root, tmp_path):
    single = _losses(run(_cfg(tiny_ckpt_dir, data_root, tmp_path / "one", run__max_steps=6), log=lambda m: None))
    cfg_file = tmp_path / "ddp.yaml"
    cfg_file.write_text(yaml.safe_dump(config(tiny_ckpt_dir, data_root, tmp_path / "two", run__max_steps=6)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "rgpt4d_sdk.cli", "train", "--config", str(cfg_file)],
                          capture_output=True, text=True, timeout=600, env=env, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "world 2" in proc.stdout
    rows = [json.loads(x) for x in (tmp_path / "two" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 7))
    assert [r["loss"] for r in rows] == pytest.approx(single, rel=1e-4, abs=1e-5)


# ------------------------------------------------------------------------------------------------ export
def test_export_removes_p4d_and_loads_in_the_engine(tiny_ckpt_dir, data_root, tmp_path):
    run(_cfg(tiny_ckpt_dir, data_root, tmp_path / "run", run__max_steps=4), log=lambda m: None)
    out = export_run(tmp_path / "run", tmp_path / "exported")
    assert _param_count(out) == _param_count(tiny_ckpt_dir)
    names = set(read_checkpoint(out).llm.tensor_names())
    assert names == set(read_checkpoint(tiny_ckpt_dir).llm.tensor_names())
    from safetensors.torch import load_file

    before = load_file(str(tiny_ckpt_dir / "mm_projector" / "model.safetensors"))
    after = load_file(str(out / "mm_projector" / "model.safetensors"))
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the trained projector was written
    from rgpt4d_sdk.compiled.samples import sample_queries

    answer = Engine.from_pretrained(out, device="cpu", dtype="float32").answer(sample_queries(4, 1)[0])
    assert answer.finish_reason in ("stop", "length") and answer.prompt_tokens > 0 and "total" in answer.timings
    with pytest.raises(ConfigError, match="not empty"):
        export_run(tmp_path / "run", out)


def test_lora_run_merges_into_the_base_weights(tiny_ckpt_dir, data_root, tmp_path):
    pytest.importorskip("peft", reason="the [train] extra is not installed")
    cfg = _cfg(tiny_ckpt_dir, data_root, tmp_path / "lora", run__max_steps=3,
               finetune__method="lora", finetune__lora={"r": 4, "alpha": 8, "dropout": 0.1}, optim__lr=5e-2)
    history = run(cfg, log=lambda m: None)
    assert len(history) == 3
    out = export_run(tmp_path / "lora", tmp_path / "merged")
    assert _param_count(out) == _param_count(tiny_ckpt_dir)
    assert not any("lora" in n for n in read_checkpoint(out).llm.tensor_names())
    base = read_checkpoint(tiny_ckpt_dir).llm.load_state_dict()
    merged = read_checkpoint(out).llm.load_state_dict()
    changed = [k for k in base if not torch.equal(base[k], merged[k])]
    assert changed and all(k.endswith("proj.weight") for k in changed)  # only the adapted projections moved


# ------------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("over, error, match", [
    ({"teacher__kind": "l4p-live"}, ConfigError, "teacher 'l4p-live' is unknown"),
    ({"p4d__latent_dim": 16, "teacher__options": {"latent_dim": 16, "hooks": [3, 5], "tubelet": 2}}, ConfigError,
     "expects"),
    ({"p4d__hooks": [3, 4]}, ConfigError, "do not match the P4D decoder"),
    ({"data__num_frames": 3}, ConfigError, "not a multiple of the teacher's tubelet"),
    ({"run__warmup": 3}, ConfigError, "unknown run option"),
    ({"p4d__variant": "both"}, ConfigError, "p4d.variant"),
])
def test_bad_configurations_fail_before_training(tiny_ckpt_dir, data_root, tmp_path, over, error, match):
    if "teacher__options" in over:
        over["teacher__options"] = {"root": str(data_root / "teacher"), **over["teacher__options"]}
    out = tmp_path / "bad"
    with pytest.raises(error, match=match):
        run(TrainConfig.from_dict(config(tiny_ckpt_dir, data_root, out, **over)), log=lambda m: None)
    assert not (out / "checkpoints").exists()


def test_config_errors_come_before_the_process_group_and_leave_the_config_alone(tiny_ckpt_dir, data_root, tmp_path,
                                                                                 monkeypatch):
    """Under torchrun (WORLD_SIZE 2) a configuration that breaks a cross-section rule raises ConfigError from
    Recipe.setup before init_process_group (and before the data or the model are read)."""
    def joined(*args, **kwargs):
        pytest.fail("init_process_group was called before the configuration was checked")

    def read(*args, **kwargs):
        pytest.fail("the data or the model were read before the configuration was checked")

    monkeypatch.setattr(torch.distributed, "init_process_group", joined)
    monkeypatch.setattr(recipe_module, "load_records", read)
    monkeypatch.setattr(NvilaModel, "from_pretrained", read)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    # valid for one process (from_dict passes), but 4 samples do not split into micro-batches of 4 over 2 processes
    cfg = _cfg(tiny_ckpt_dir, data_root, tmp_path / "batch", batch__micro_batch=4)
    # built without from_dict (the Python API): teacher latents the P4D decoder is not built for
    decoder = replace(_cfg(tiny_ckpt_dir, data_root, tmp_path / "hooks"), p4d=P4DConfig(hooks=(3, 4), latent_dim=8))
    for bad, match in ((cfg, "multiple of micro_batch 4 x 2 processes"), (decoder, "do not match the P4D decoder")):
        before = copy.deepcopy(bad.to_dict())
        with pytest.raises(ConfigError, match=match):
            Recipe(bad, log=lambda m: None).setup()
        assert bad.to_dict() == before
    assert not (tmp_path / "batch").exists() and not (tmp_path / "hooks").exists()


def test_no_teacher_turns_p4d_off_in_the_run_record_not_in_the_callers_config(tiny_ckpt_dir, data_root, tmp_path):
    cfg = _cfg(tiny_ckpt_dir, data_root, tmp_path / "run", teacher__kind="none", teacher__options={})
    before = copy.deepcopy(cfg.to_dict())
    lines = []
    recipe = Recipe(cfg, log=lines.append)
    try:
        recipe.setup()
        folder = recipe.save()
    finally:
        recipe.cleanup()
    assert cfg.to_dict() == before and cfg.p4d.enabled  # the caller's object is unchanged
    assert recipe.student.p4d is None and any("P4D off" in line for line in lines)
    recorded = json.loads((tmp_path / "run" / "run.json").read_text())
    assert recorded["config"]["p4d"]["enabled"] is False
    assert recorded["fingerprint"] == cfg.resolved().fingerprint() != cfg.fingerprint()
    state = json.loads((folder / "state.json").read_text())
    assert state["p4d"] is False and state["fingerprint"] == recorded["fingerprint"]
    exported = export_run(tmp_path / "run", tmp_path / "exported")  # rebuilt from the recorded (resolved) config
    assert _param_count(exported) == _param_count(tiny_ckpt_dir)


def test_missing_teacher_targets_and_unknown_yaml_keys(tiny_ckpt_dir, data_root, tmp_path):
    partial = tmp_path / "teacher"
    partial.mkdir()
    first = sorted((data_root / "teacher").iterdir())[0]
    (partial / first.name).write_bytes(first.read_bytes())
    cfg = config(tiny_ckpt_dir, data_root, tmp_path / "run", teacher__options={
        "root": str(partial), "hooks": [3, 5], "latent_dim": 8, "tubelet": 2})
    with pytest.raises(DatasetError, match="teacher targets missing for 7 clip"):
        run(TrainConfig.from_dict(cfg), log=lambda m: None)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**config(tiny_ckpt_dir, data_root, tmp_path / "run"), "optimiser": {"lr": 1}}))
    with pytest.raises(ConfigError, match="unknown training config key.*optimiser"):
        TrainConfig.load(bad)
    proc = subprocess.run([sys.executable, "-m", "rgpt4d_sdk.cli", "train", "--config", str(bad)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "optimiser" in proc.stderr


def test_example_configs_parse():
    examples = example_configs()
    assert {"p4d_code_lora", "p4d_paper", "nuscenes_sensor"} <= set(examples)
    for path in examples.values():
        cfg = TrainConfig.load(path)
        assert cfg.model and cfg.data.train
    assert TrainConfig.load(examples["p4d_paper"]).p4d.latent_weight == 0.5
    assert TrainConfig.load(examples["p4d_code_lora"]).finetune.method == "lora"


def test_sensor_teacher_run_on_exported_nuscenes_conversations(tiny_ckpt_dir, tmp_path):
    """End to end on nuScenes-format data with LiDAR: export conversations, train with the sensor teacher (explicit,
    masked losses; no latents)."""
    pytest.importorskip("nuscenes", reason="the [nuscenes] extra is not installed")
    from rgpt4d_sdk.adapters.nuscenes.sample import write_sample_log
    from rgpt4d_sdk.conversations import export_conversations

    root = write_sample_log(tmp_path / "nuscenes", image_size=(320, 180), lidar=True)
    conv = tmp_path / "conv.json"
    export_conversations("nuscenes", root, conv, num_frames=4, limit=4)
    records = json.loads(conv.read_text())
    assert len(records) >= 4 and all(len(r["video"]) == 4 for r in records)
    cfg = TrainConfig.from_dict({
        "model": str(tiny_ckpt_dir), "data": {"train": str(conv), "num_frames": 4},
        "teacher": {"kind": "sensor", "options": {"dataroot": str(root), "version": "v1.0-mini"}},
        "p4d": {"grid": [6, 8]}, "batch": {"global_batch": 2, "micro_batch": 1},
        "run": {"out": str(tmp_path / "run"), "max_steps": 2, "device": "cpu", "precision": "fp32", "threads": 1,
                "tensorboard": False}})
    history = run(cfg, log=lambda m: None)
    assert len(history) == 2
    row = history[-1]
    assert "latent" not in row and {"depth", "rays", "dynamic"} <= set(row)  # latent distillation is off
    assert all(math.isfinite(row[k]) for k in ("loss", "sft", "depth", "rays"))
