"""The P4D fine-tuning recipe: setup -> train -> save -> cleanup (runs as is, or under `torchrun`).

    rgpt4d-sdk train --config training/configs/p4d_code_lora.yaml
    torchrun --nproc_per_node 8 -m rgpt4d_sdk.cli train --config my.yaml

One optimizer step consumes one *global batch* (`batch.global_batch` samples, split across processes, then into
micro-batches of `batch.micro_batch` with gradient accumulation); which samples form it depends only on the seed, the
epoch and the step (`GlobalBatchSampler`), so 1 and N processes train on the same batches and a resumed run continues
exactly where the checkpoint was taken. Checkpoints hold the trainable weights (safetensors), optimizer and scheduler
state, RNG states and the data position.
"""
from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch
from torch import nn

from rgpt4d_sdk.errors import ConfigError
from rgpt4d_sdk.fileio import write_json
from rgpt4d_sdk.optional import need

from .config import TrainConfig
from .data import ConversationDataset, GlobalBatchSampler, clip_of, collate, load_records
from .model import P4DStudent, trainable_summary
from .teachers.base import make_teacher

# run.json and a checkpoint's state.json: any value JSON has no type for is written as its str()
_STATE_JSON = {"allow_nan": True, "default": str}


def lr_lambda(total: int, warmup: int, min_ratio: float) -> Callable[[int], float]:
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``min_ratio`` of the peak at ``total``."""
    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return f


class _StepBatches:
    """Micro-batches of this process, step after step, from ``start`` (a DataLoader batch_sampler)."""

    def __init__(self, sampler: GlobalBatchSampler, start: int, total: int, micro: int) -> None:
        self.sampler, self.start, self.total, self.micro = sampler, start, total, micro

    def __iter__(self):
        spe = self.sampler.steps_per_epoch
        for step in range(self.start, self.total):
            idx = self.sampler.batch(step // spe, step % spe)
            for k in range(0, len(idx), self.micro):
                yield idx[k:k + self.micro]

    def __len__(self) -> int:
        per = self.sampler.global_batch // self.sampler.world
        return (self.total - self.start) * math.ceil(per / self.micro)


class Recipe:
    """One P4D fine-tuning run: `setup`, then `train` (which calls `save` every ``run.checkpoint_every`` steps),
    then `cleanup`; `run` does all three. Works alone or as one of ``WORLD_SIZE`` processes under torchrun.

    ``cfg`` is not changed: the recipe trains with ``cfg.resolved()`` (kept as ``self.cfg``), and that is what the
    run folder records. ``log`` receives the progress lines (the CLI passes ``typer.echo``).
    """

    def __init__(self, cfg: TrainConfig, log: Callable[[str], None] = print) -> None:
        self.cfg, self.say = cfg.resolved(), log
        self.out = Path(self.cfg.run.out)

    # ------------------------------------------------------------------------------------------------ setup
    def setup(self, restart: bool = False) -> None:
        """Everything before the first step, in this order: every configuration rule (`TrainConfig.check` with
        this launch's process count), the data and a teacher probe, then the process group, the model, the
        optimizer and the scheduler, and the run folder (resuming from its latest checkpoint unless ``restart``).
        So a bad configuration, data set or teacher fails before ``init_process_group`` and before the model is
        loaded.

        Raises:
            ConfigError: a configuration rule is broken, or ``run.out`` holds a run of another configuration.
            DatasetError: the conversation file or the teacher targets of a clip are missing or unreadable.
        """
        cfg = self.cfg
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        cfg.check(self.world)
        if cfg.run.threads:
            torch.set_num_threads(int(cfg.run.threads))
        records = load_records(cfg.data.train, cfg.data.roots, cfg.data.allow_outside_root)
        self.teacher = self._probe_teacher(records)
        self._init_distributed()
        self._seed(cfg.run.seed)
        self._build_model(records)
        self.optimizer = self._build_optimizer()
        self.scheduler = self._build_scheduler()
        self.step = 0
        self._prepare_out(restart)
        trainable, total = trainable_summary(self.student)
        p4d = cfg.p4d
        self.say(f"model: {total:,} params, {trainable:,} trainable ({cfg.finetune.method}); P4D "
                 f"{'on (' + p4d.variant + ')' if p4d.enabled else 'off'}; teacher {cfg.teacher.kind}; "
                 f"{len(self.dataset)} samples, {self.sampler.steps_per_epoch} steps/epoch, {self.total_steps} "
                 f"steps; world {self.world}")

    def _probe_teacher(self, records: List[Dict[str, Any]]):
        """The configured teacher (None for "none"), after checking that every clip has targets (teachers that can
        tell) and asking for one clip's targets, so a missing file or a wrong shape fails now, not at step 1."""
        teacher = make_teacher(self.cfg.teacher.kind, self.cfg.teacher.options)
        if teacher is not None and hasattr(teacher, "check_available"):
            teacher.check_available([str(r["id"]) for r in records])
        if teacher is not None:
            teacher.targets(clip_of(records[0]), self.cfg.p4d.grid)
        return teacher

    def _init_distributed(self) -> None:
        """Pick the device (``cuda:LOCAL_RANK`` when CUDA is asked for and present), join the process group when
        ``WORLD_SIZE`` > 1 (NCCL on CUDA, else gloo) and decide bf16 autocast."""
        run_cfg = self.cfg.run
        cuda = torch.cuda.is_available() and run_cfg.device in ("auto", "cuda")
        self.device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if cuda else "cpu")
        if self.world > 1 and not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if cuda else "gloo")
        if cuda:
            torch.cuda.set_device(self.device)
        self.bf16 = run_cfg.precision == "bf16" or (run_cfg.precision == "auto" and cuda)

    def _build_model(self, records: List[Dict[str, Any]]) -> None:
        """The base model, the data set and sampler (they need its tokenizer and spec), the student (base + P4D
        modules) with the trainable parameters chosen, wrapped for DDP/FSDP when there are several processes."""
        cfg = self.cfg
        from rgpt4d_sdk.model.nvila import NvilaModel

        base = NvilaModel.from_pretrained(cfg.model, device=str(self.device), dtype="float32",
                                          attn_implementation="sdpa")
        self.dataset = ConversationDataset(records, base.spec, base.tokenizer, cfg.data.num_frames)
        self.sampler = GlobalBatchSampler(len(self.dataset), cfg.batch.global_batch, cfg.run.seed, self.rank,
                                          self.world)
        self.student = P4DStudent(base, cfg.p4d, freeze_vision=cfg.finetune.freeze_vision).to(self.device)
        self._freeze_and_adapt()
        if cfg.run.gradient_checkpointing:
            base.llm.gradient_checkpointing_enable()
            base.llm.config.use_cache = False
        self.model = self._wrap(self.student)

    def _build_optimizer(self) -> torch.optim.Optimizer:
        """AdamW over the trainable parameters; weight decay on matrices only (not on biases and norms)."""
        params = [p for p in self.student.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        o = self.cfg.optim
        return torch.optim.AdamW(
            [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=o.lr, betas=tuple(o.betas))

    def _build_scheduler(self) -> torch.optim.lr_scheduler.LambdaLR:
        """Sets ``total_steps`` (``run.max_steps``, else ``run.epochs`` epochs) and returns the warm-up + cosine
        schedule over them (`lr_lambda`)."""
        o = self.cfg.optim
        self.total_steps = self.cfg.run.max_steps or self.cfg.run.epochs * self.sampler.steps_per_epoch
        warmup = int(round(o.warmup_ratio * self.total_steps))
        return torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(self.total_steps, warmup, o.min_lr_ratio))

    def _seed(self, seed: int) -> None:
        random.seed(seed)
        torch.manual_seed(seed)

    def _freeze_and_adapt(self) -> None:
        ft, base = self.cfg.finetune, self.student.base
        for p in base.vision.parameters():
            p.requires_grad_(not ft.freeze_vision)
        for p in base.projector.parameters():
            p.requires_grad_(not ft.freeze_projector)
        for p in base.llm.parameters():
            p.requires_grad_(not ft.freeze_llm and ft.method == "full")
        self.peft = None
        if ft.method == "lora" and not ft.freeze_llm:
            self.peft = apply_lora(base.llm, ft.lora)

    def _wrap(self, module: nn.Module) -> nn.Module:
        if self.world == 1:
            return module
        if self.cfg.run.strategy == "fsdp":
            from torch.distributed.fsdp import FullyShardedDataParallel, MixedPrecision
            from torch.distributed.fsdp.wrap import ModuleWrapPolicy

            layer_cls = {type(layer) for layer in self.student.base.llm.model.layers}
            mp = MixedPrecision(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if self.bf16 else None
            return FullyShardedDataParallel(module, auto_wrap_policy=ModuleWrapPolicy(layer_cls), mixed_precision=mp,
                                            use_orig_params=True, device_id=self.device)
        return nn.parallel.DistributedDataParallel(
            module, device_ids=[self.device.index] if self.device.type == "cuda" else None,
            find_unused_parameters=self.cfg.p4d.enabled)

    # ------------------------------------------------------------------------------------------------ run dir
    def _prepare_out(self, restart: bool) -> None:
        fp = self.cfg.fingerprint()
        marker = self.out / "run.json"
        if self.rank == 0:
            if marker.is_file() and not restart:
                old = json.loads(marker.read_text())
                if old.get("fingerprint") != fp:
                    raise ConfigError(f"{self.out} holds a run of another configuration (fingerprint "
                                      f"{old.get('fingerprint')} vs {fp}); choose another run.out or pass --restart.")
            if restart and self.out.exists():
                shutil.rmtree(self.out)
            self.out.mkdir(parents=True, exist_ok=True)
            write_json(marker, {"fingerprint": fp, "config": self.cfg.to_dict(), "world": self.world}, **_STATE_JSON)
        self._barrier()
        latest = latest_checkpoint(self.out)
        if latest is not None:
            self._load(latest)
            self.say(f"resuming from {latest.name} (step {self.step})")

    def _barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    # ------------------------------------------------------------------------------------------------ train
    def train(self) -> List[Dict[str, Any]]:
        """Train from the current step to the last (`setup` first): one optimizer step per global batch, loss terms
        logged every ``run.log_every`` steps (log.jsonl, and TensorBoard when installed), a checkpoint every
        ``run.checkpoint_every`` steps and at the end.

        Returns:
            One row per step of this call: step, epoch, lr, every loss term averaged over the processes, step time and
            throughput (and peak CUDA memory on a GPU).
        """
        cfg = self.cfg
        micro = cfg.batch.micro_batch
        per_rank = cfg.batch.global_batch // self.world
        n_micro = math.ceil(per_rank / micro)
        loader = torch.utils.data.DataLoader(
            self.dataset, batch_sampler=_StepBatches(self.sampler, self.step, self.total_steps, micro),
            collate_fn=collate, num_workers=cfg.data.workers,
            generator=torch.Generator().manual_seed(cfg.run.seed))  # never draws from the global RNG
        writer = self._tensorboard()
        history: List[Dict[str, Any]] = []
        it = iter(loader)
        self.model.train()
        while self.step < self.total_steps:
            t0 = time.perf_counter()
            sums: Dict[str, float] = {}
            tokens = 0
            for k in range(n_micro):
                samples = next(it)
                targets = [self.teacher.targets(s.clip, cfg.p4d.grid) for s in samples] if self.teacher else None
                sync = k == n_micro - 1 or self.world == 1
                ctx = self.model.no_sync() if not sync and hasattr(self.model, "no_sync") else nullcontext()
                with ctx, self._autocast():
                    losses = self.model(samples, targets)
                    total = self.student.total(losses) / n_micro
                total.backward()
                for name, v in losses.items():
                    sums[name] = sums.get(name, 0.0) + float(v.detach()) / n_micro
                sums["loss"] = sums.get("loss", 0.0) + float(total.detach())
                tokens += sum(len(s.input_ids) for s in samples)
            if cfg.optim.grad_clip:
                torch.nn.utils.clip_grad_norm_([p for p in self.student.parameters() if p.requires_grad],
                                               cfg.optim.grad_clip)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
            row = self._log_row(sums, tokens, time.perf_counter() - t0)
            history.append(row)
            if self.rank == 0:
                if self.step % cfg.run.log_every == 0 or self.step == self.total_steps:
                    with open(self.out / "log.jsonl", "a", encoding="utf-8") as f:
                        f.write(json.dumps(row) + "\n")
                    if writer is not None:
                        for k2, v in row.items():
                            if isinstance(v, float):
                                writer.add_scalar(f"train/{k2}", v, self.step)
            if self.step % cfg.run.checkpoint_every == 0 or self.step == self.total_steps:
                self.save()
        if writer is not None:
            writer.close()
        return history

    def _autocast(self):
        if self.bf16 and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    def _log_row(self, sums: Dict[str, float], tokens: int, seconds: float) -> Dict[str, Any]:
        """Loss terms averaged over processes (each process's global-batch share weighs the same)."""
        if self.world > 1:
            names = sorted(sums)
            t = torch.tensor([sums[n] for n in names] + [float(tokens)], dtype=torch.float64,
                             device=self.device if self.device.type == "cuda" else "cpu")
            torch.distributed.all_reduce(t)
            sums = {n: float(t[i]) / self.world for i, n in enumerate(names)}
            tokens = int(t[-1])
        row: Dict[str, Any] = {"step": self.step, "epoch": (self.step - 1) // self.sampler.steps_per_epoch,
                               "lr": float(self.scheduler.get_last_lr()[0]), **sums,
                               "step_s": seconds, "samples_per_s": self.cfg.batch.global_batch / seconds,
                               "tokens_per_s": tokens / seconds}
        if self.device.type == "cuda":
            row["peak_memory_gb"] = torch.cuda.max_memory_allocated(self.device) / 1e9
        return row

    def _tensorboard(self):
        if self.rank != 0 or not self.cfg.run.tensorboard:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            self.say("tensorboard is not installed: logging to log.jsonl only (pip install tensorboard)")
            return None
        return SummaryWriter(str(self.out / "tensorboard"))

    # ------------------------------------------------------------------------------------------------ save / load
    def trainable_state(self) -> Dict[str, torch.Tensor]:
        """The trainable parameters by name, on the CPU (gathered from every shard under FSDP; then only rank 0 holds
        them)."""
        if self.cfg.run.strategy == "fsdp" and self.world > 1:
            from torch.distributed.fsdp import FullStateDictConfig, FullyShardedDataParallel, StateDictType

            with FullyShardedDataParallel.state_dict_type(self.model, StateDictType.FULL_STATE_DICT,
                                                          FullStateDictConfig(offload_to_cpu=True, rank0_only=True)):
                full = self.model.state_dict()
            names = {n for n, p in self.student.named_parameters() if p.requires_grad}
            return {k: v for k, v in full.items() if k in names}
        return {n: p.detach().cpu().contiguous() for n, p in self.student.named_parameters() if p.requires_grad}

    def save(self) -> Path:
        """Write ``checkpoints/step-NNNNNNN`` (rank 0; the others wait): trainable weights (safetensors), optimizer
        state, RNG states and state.json (step, data position, scheduler, fingerprint). Written to a .tmp folder and
        renamed, so a killed run never leaves a half checkpoint; only the newest ``run.keep_checkpoints`` are kept.
        Returns the folder."""
        from safetensors.torch import save_file

        state = self.trainable_state()
        folder = self.out / "checkpoints" / f"step-{self.step:07d}"
        if self.rank == 0:
            tmp = folder.with_name(folder.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            save_file(state, str(tmp / "trainable.safetensors"))
            torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
            torch.save({"torch": torch.get_rng_state(), "python": random.getstate(),
                        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}, tmp / "rng.pt")
            write_json(tmp / "state.json", {
                "step": self.step, "epoch": self.step // self.sampler.steps_per_epoch,
                "step_in_epoch": self.step % self.sampler.steps_per_epoch, "scheduler": self.scheduler.state_dict(),
                "fingerprint": self.cfg.fingerprint(), "world": self.world,
                "lora": self.cfg.finetune.method == "lora", "p4d": self.cfg.p4d.enabled}, **_STATE_JSON)
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(tmp, folder)
            for old in sorted((self.out / "checkpoints").glob("step-*"))[:-max(1, self.cfg.run.keep_checkpoints)]:
                if not old.name.endswith(".tmp"):
                    shutil.rmtree(old, ignore_errors=True)
        self._barrier()
        return folder

    def _load(self, folder: Path) -> None:
        from safetensors.torch import load_file

        from rgpt4d_sdk.model.checkpoint import check_finite

        state = json.loads((folder / "state.json").read_text())
        if state.get("fingerprint") != self.cfg.fingerprint():
            raise ConfigError(f"{folder} was written by another configuration; use another run.out or --restart.")
        weights = load_file(str(folder / "trainable.safetensors"))
        check_finite(weights, folder / "trainable.safetensors")  # a diverged run's step is not resumed silently
        missing = [n for n, p in self.student.named_parameters() if p.requires_grad and n not in weights]
        if missing:
            raise ConfigError(f"{folder}: trainable weights {missing[:3]} are missing; the checkpoint does not match.")
        params = dict(self.student.named_parameters())
        with torch.no_grad():
            for n, t in weights.items():
                params[n].copy_(t)
        self.optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True,
                                                  map_location=self.device))
        self.scheduler.load_state_dict(state["scheduler"])
        rng = torch.load(folder / "rng.pt", weights_only=True)
        torch.set_rng_state(rng["torch"])
        random.setstate(_as_tuple(rng["python"]))
        if rng["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        self.step = int(state["step"])

    def cleanup(self) -> None:
        """Leave the process group (when this recipe's run joined one); safe to call after a failed `setup`."""
        if self.world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def apply_lora(llm: nn.Module, lora_cfg) -> Any:
    """Inject LoRA adapters into the LLM in place (peft); returns the peft wrapper (used to merge at export)."""
    peft = need("peft", "train")
    config = peft.LoraConfig(r=lora_cfg.r, lora_alpha=lora_cfg.alpha, lora_dropout=lora_cfg.dropout,
                        target_modules=list(lora_cfg.targets), bias="none")
    return peft.get_peft_model(llm, config)


def latest_checkpoint(out: Path) -> Optional[Path]:
    """The newest finished ``checkpoints/step-*`` folder of a run folder (one with state.json), or None."""
    found = sorted(p for p in (Path(out) / "checkpoints").glob("step-*") if not p.name.endswith(".tmp")
                   and (p / "state.json").is_file())
    return found[-1] if found else None


def _as_tuple(x):
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def run(cfg: TrainConfig, restart: bool = False, log: Callable[[str], None] = print) -> List[Dict[str, Any]]:
    """Train with ``cfg`` from start to end: `Recipe` setup, train, cleanup (also on errors). ``restart`` deletes
    the run folder first instead of resuming from its latest checkpoint. Returns the rows `Recipe.train` logged."""
    recipe = Recipe(cfg, log)
    try:
        recipe.setup(restart)
        history = recipe.train()
        if recipe.rank == 0 and history:
            last = history[-1]
            log(f"done: step {last['step']}, loss {last['loss']:.4f}; checkpoints in {recipe.out / 'checkpoints'}")
        return history
    finally:
        recipe.cleanup()
