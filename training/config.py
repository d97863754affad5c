"""The training configuration (YAML, `yaml.safe_load`; every unknown key is an error that lists the valid ones).

Every value is checked against its field's annotated type and range (`rgpt4d_sdk.schema`, pydantic strict mode) and
the cross-field rules of `TrainConfig.check` before the model is loaded, so a bad learning rate or batch size fails
in a second with a message that names the file, the key, the value and what is allowed.
"""
from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Dict, List, Mapping, Optional

from pydantic import Field

from rgpt4d_sdk.config import from_mapping, load_yaml_file
from rgpt4d_sdk.errors import ConfigError
from rgpt4d_sdk.schema import SchemaError, check_instance, in_config_file

from .p4d import P4DConfig
from .teachers.base import latent_spec

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class DataConfig:
    """train: the conversation JSON. roots: folders (besides the conversation file's own) that the records' frame
    and SoM image paths may lie in, e.g. the data set's root; a path elsewhere is refused unless
    ``allow_outside_root`` (see `rgpt4d_sdk.paths`)."""

    train: str = ""  # conversation JSON from `rgpt4d-sdk data export-conversations`
    num_frames: Annotated[int, Field(ge=2)] = 16
    workers: Annotated[int, Field(ge=0)] = 0
    roots: List[str] = field(default_factory=list)
    allow_outside_root: bool = False


@dataclass
class TeacherConfig:
    """Where distillation targets come from. kind: "precomputed" (per-clip safetensors, e.g. from L4P),
    "sensor" (nuScenes LiDAR, calibration and boxes) or "none" (plain SFT; P4D is then off). options: the teacher's
    keyword arguments (`PrecomputedTeacher`, `SensorTeacher`)."""

    kind: str = "none"  # precomputed | sensor | none
    options: Dict[str, Any] = field(default_factory=dict)


@dataclass
class LoraConfig:
    """LoRA adapters on the LLM (``finetune.method: lora``): rank ``r``, scale ``alpha / r``, dropout, and the
    projection modules adapted (all attention and MLP projections by default)."""

    r: Annotated[int, Field(ge=1)] = 16
    alpha: Annotated[float, Field(gt=0)] = 32
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    targets: List[str] = field(default_factory=lambda: list(LORA_TARGETS))


@dataclass
class FinetuneConfig:
    """What trains. method: "full" (every unfrozen weight) or "lora" (adapters on the LLM; the vision tower and the
    projector follow their freeze flags). freeze_*: keep that part's weights fixed."""

    method: str = "full"  # full | lora
    lora: LoraConfig = field(default_factory=LoraConfig)
    freeze_vision: bool = True
    freeze_projector: bool = False
    freeze_llm: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.lora, Mapping):
            self.lora = from_mapping(LoraConfig, self.lora, "finetune.lora")
        if self.method not in ("full", "lora"):
            raise ConfigError(f"finetune.method {self.method!r} is unknown; choose full or lora.")


@dataclass
class OptimConfig:
    """AdamW (weight decay on matrices only) with linear warm-up over ``warmup_ratio`` of the steps, then cosine
    decay to ``min_lr_ratio`` x ``lr``; gradients clipped to norm ``grad_clip`` (0: no clipping)."""

    lr: Annotated[float, Field(gt=0, le=1)] = 1e-5
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    betas: List[Annotated[float, Field(ge=0, lt=1)]] = field(default_factory=lambda: [0.9, 0.999])
    warmup_ratio: Annotated[float, Field(ge=0, le=1)] = 0.03
    min_lr_ratio: Annotated[float, Field(ge=0, le=1)] = 0.0
    grad_clip: Annotated[float, Field(ge=0)] = 1.0

    def __post_init__(self) -> None:
        check_instance(self, "optim")
        if len(self.betas) != 2:
            raise SchemaError(f"optim.betas = {self.betas!r} is invalid: give two numbers in [0, 1), e.g. "
                              f"[0.9, 0.999].", "optim.betas", self.betas)


@dataclass
class BatchConfig:
    """global_batch: samples per optimizer step, over all processes; micro_batch: samples per forward pass
    (gradients accumulate over the rest). The global batch must split into micro-batches on every process."""

    global_batch: Annotated[int, Field(ge=1)] = 8
    micro_batch: Annotated[int, Field(ge=1)] = 1

    def __post_init__(self) -> None:
        check_instance(self, "batch")
        if self.global_batch % self.micro_batch:
            raise SchemaError(f"batch.global_batch = {self.global_batch} is invalid: it must be a multiple of "
                              f"batch.micro_batch ({self.micro_batch}).", "batch.global_batch", self.global_batch)


@dataclass
class RunConfig:
    """Where and how the run goes: ``out`` (run folder: run.json, log.jsonl, checkpoints/), length (``epochs``,
    or ``max_steps`` when set), seed, device and precision, the multi-process strategy (ddp, or fsdp for models too
    large for one GPU), and how often to log and checkpoint."""

    out: str = "runs/p4d"
    epochs: Annotated[int, Field(ge=1)] = 1
    max_steps: Optional[Annotated[int, Field(ge=1)]] = None
    seed: Annotated[int, Field(ge=0)] = 0
    device: Annotated[str, Field(pattern=r"^(auto|cpu|cuda)$", description="auto, cpu or cuda")] = "auto"
    threads: Optional[Annotated[int, Field(ge=1)]] = None  # CPU threads per process (default: torch's)
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | bf16 | fp32
    strategy: str = "ddp"  # ddp | fsdp (full-size models on several GPUs)
    gradient_checkpointing: bool = False
    checkpoint_every: Annotated[int, Field(ge=1)] = 100
    keep_checkpoints: Annotated[int, Field(ge=1)] = 2
    log_every: Annotated[int, Field(ge=1)] = 1
    tensorboard: bool = True

    def __post_init__(self) -> None:
        check_instance(self, "run")
        if not str(self.out).strip():
            raise SchemaError("run.out is empty; give the run folder.", "run.out", self.out)
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ConfigError(f"run.precision {self.precision!r} is unknown; choose auto, bf16 or fp32.")
        if self.strategy not in ("ddp", "fsdp"):
            raise ConfigError(f"run.strategy {self.strategy!r} is unknown; choose ddp or fsdp.")


@dataclass
class TrainConfig:
    """The whole training configuration: the base checkpoint (``model``) and one section per concern. Build it
    with `load` (YAML) or `from_dict`; both check every value and the cross-section rules (`check`)."""

    model: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    p4d: P4DConfig = field(default_factory=P4DConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    run: RunConfig = field(default_factory=RunConfig)

    SECTIONS = {"data": DataConfig, "teacher": TeacherConfig, "p4d": P4DConfig, "finetune": FinetuneConfig,
                "optim": OptimConfig, "batch": BatchConfig, "run": RunConfig}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        """A configuration from its sections (``model`` plus data, teacher, p4d, finetune, optim, batch, run),
        as read from YAML. Every value is checked against its field's type and range, then `check` runs (with one
        process).

        Raises:
            ConfigError: an unknown key or section, an empty ``model`` or ``data.train``, or a broken cross-section rule
                (`SchemaError`, a subclass, for a wrong type or range, naming the dotted key).
        """
        if not isinstance(d, Mapping):
            raise ConfigError("a training config is a mapping of sections (model, data, teacher, p4d, ...).")
        known = {"model", *cls.SECTIONS}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown training config key(s) {unknown}; valid keys are {sorted(known)}.")
        if not isinstance(d.get("model") or "", str):
            raise SchemaError(f"model = {d['model']!r} is invalid: it must be a string (the base checkpoint folder).",
                              "model", d["model"])
        kwargs: Dict[str, Any] = {"model": str(d.get("model") or "")}
        for name, typ in cls.SECTIONS.items():
            section = d.get(name) or {}
            if not isinstance(section, Mapping):
                raise ConfigError(f"config section {name!r} must be a mapping, got {type(section).__name__}.")
            kwargs[name] = from_mapping(typ, section, name)
        cfg = cls(**kwargs)
        if not cfg.model:
            raise ConfigError("`model` is empty; set it to the base checkpoint folder (released layout).")
        if not cfg.data.train:
            raise ConfigError("data.train is empty; set it to a conversation JSON (rgpt4d-sdk data "
                              "export-conversations).")
        cfg.check()
        return cfg

    def check(self, world: int = 1) -> None:
        """Cross-section rules and this machine's resources, before any data, model or process group.

        `from_dict` runs it with ``world`` 1 and `Recipe.setup` again with the real process count, before
        ``torch.distributed.init_process_group``, so no configuration error is found after the processes have met.

        Args:
            world: the number of training processes (``WORLD_SIZE`` under torchrun); each takes an equal share of
                the global batch.

        Raises:
            ConfigError: the global batch does not split into micro-batches over ``world`` processes; an unknown
                teacher; teacher latents (hooks, width, tubelet) that the P4D decoder is not built for, or a frame
                count that is not a multiple of the teacher's tubelet; ``run.device: cuda`` on a machine without
                CUDA.
        """
        b, p4d = self.batch, self.p4d
        if b.global_batch % (b.micro_batch * world):
            raise ConfigError(f"batch.global_batch {b.global_batch} must be a multiple of micro_batch "
                              f"{b.micro_batch} x {world} processes.")
        latents = latent_spec(self.teacher.kind, self.teacher.options)
        if latents is not None:
            if latents.hooks != tuple(p4d.hooks) or latents.latent_dim != p4d.latent_dim or \
                    latents.tubelet != p4d.tubelet:
                raise ConfigError(
                    f"teacher latents (hooks {latents.hooks}, width {latents.latent_dim}, tubelet "
                    f"{latents.tubelet}) do not match the P4D decoder (hooks {p4d.hooks}, width {p4d.latent_dim}, "
                    f"tubelet {p4d.tubelet}); make teacher.options and p4d agree."
                )
            if self.data.num_frames % p4d.tubelet:
                fit = self.data.num_frames - self.data.num_frames % p4d.tubelet or p4d.tubelet
                raise ConfigError(f"data.num_frames {self.data.num_frames} is not a multiple of the teacher's "
                                  f"tubelet {p4d.tubelet}; use {fit} frames.")
        if self.run.device == "cuda":
            from rgpt4d_sdk.device import check_device

            check_device("cuda", "run.device")

    @classmethod
    def load(cls, path, overrides: Optional[Mapping[str, Any]] = None) -> "TrainConfig":
        """Read ``path`` and apply ``overrides`` ({"optim.lr": 0.001}, from ``--set``); errors name the file (or the
        ``--set`` option) the offending value came from."""
        data = load_yaml_file(path, "training config") or {}
        if not isinstance(data, dict):
            raise ConfigError(f"training config {path} must hold a mapping of sections (model, data, optim, ...), "
                              f"not a {type(data).__name__}.")
        from_file = json.loads(json.dumps(data, default=str))
        for dotted, value in (overrides or {}).items():
            node = data
            *parents, leaf = dotted.split(".")
            for p in parents:
                node = node.setdefault(p, {})
                if not isinstance(node, dict):
                    raise ConfigError(f"--set {dotted}: {p} is not a section of the training config.")
            node[leaf] = value
        try:
            return cls.from_dict(data)
        except SchemaError as exc:
            if exc.key in (overrides or {}):
                raise SchemaError(f"--set {exc.key}={exc.value!r}: {exc}", exc.key, exc.value) from None
            with in_config_file(path, from_file):
                raise

    def resolved(self) -> "TrainConfig":
        """The configuration a run trains with: a copy of this one with the values the run derives from it, so the
        caller's object is never changed. One value is derived: P4D is off when there is no teacher
        (``teacher.kind: none``), since nothing would supervise its decoder and heads. The run records the copy
        (run.json's config and fingerprint, each checkpoint's state.json), and `train export` rebuilds the model
        from it."""
        cfg = copy.deepcopy(self)
        if cfg.teacher.kind == "none" and cfg.p4d.enabled:
            cfg = replace(cfg, p4d=replace(cfg.p4d, enabled=False))
        return cfg

    def to_dict(self) -> Dict[str, Any]:
        """Plain nested dicts and lists (JSON-ready): what run.json records and `from_dict` reads back."""
        d = asdict(self)
        d.pop("SECTIONS", None)
        return d

    def fingerprint(self) -> str:
        """What decides the loss sequence (everything except where logs and checkpoints go and how often)."""
        d = self.to_dict()
        for k in ("checkpoint_every", "keep_checkpoints", "log_every", "tensorboard", "out"):
            d["run"].pop(k, None)
        for k in ("workers", "roots", "allow_outside_root"):  # where files may come from, not what is learnt
            d["data"].pop(k, None)
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def example_configs() -> Dict[str, Path]:
    """The shipped example configs (the paper's and the released code's settings)."""
    folder = Path(__file__).parent / "configs"
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))}
