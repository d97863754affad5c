"""What a checkpoint declares, read from its configs: sizes, projector, feature layer, TPE settings.

Every size is derived from the configs (never hard-coded): SigLIP 448 px / patch 14 gives a 32x32 grid, zero-padded
to 33x33 and folded 3x3 into 121 tokens; the tiny test tower of 112 px gives 8x8 -> 9x9 -> 9 tokens.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Mapping, Optional

from ..config import from_mapping
from ..errors import CheckpointError, ConfigError

PROJECTOR_TYPES = ("mlp_downsample_3x3_fix",)
SELECT_FEATURES = ("cls_patch", "patch")
TPE_SITES = ("pre_projector", "post_projector")
TPE_ORIGINS = ("first_frame", "absolute")
TPE_SOM = ("none", "first_frame")

# Root-config keys that switch TPE on. The released 4D-RGPT config may use either spelling [inferred].
TPE_FLAG_KEYS = ("use_time_pe", "time_pe", "use_timestamp_pe", "tpe")


@dataclass
class TPEConfig:
    """Timestamp positional encoding: sin/cos of frame time (seconds), added to that frame's visual features.

    site: "pre_projector" adds to vision-encoder features (width mm_hidden_size, the paper's choice);
    "post_projector" adds to projector outputs (width hidden_size). origin: "first_frame" measures time from the
    clip's first frame; "absolute" uses the source clock. som: whether the SoM image gets the encoding of the
    first frame ("first_frame") or none ("none"; the SoM image is a separate image, not a video frame).
    """

    enabled: bool = False
    base: float = 10000.0
    site: str = "pre_projector"
    origin: str = "first_frame"
    som: str = "none"
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.site not in TPE_SITES:
            raise ConfigError(f"TPE site {self.site!r} is unknown; choose one of {TPE_SITES}.")
        if self.origin not in TPE_ORIGINS:
            raise ConfigError(f"TPE origin {self.origin!r} is unknown; choose one of {TPE_ORIGINS}.")
        if self.som not in TPE_SOM:
            raise ConfigError(f"TPE som {self.som!r} is unknown; choose one of {TPE_SOM}.")
        if not (self.base > 1.0):
            raise ConfigError(f"TPE base must be > 1, got {self.base}.")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TPEConfig":
        """A `TPEConfig` from a mapping; unknown keys and wrong types raise ConfigError naming the "TPE" key."""
        return from_mapping(cls, d, "TPE")


@dataclass
class ModelSpec:
    """The architecture a checkpoint describes (read by `ModelSpec.from_configs`)."""

    image_size: int
    patch_size: int
    vision_hidden: int  # SigLIP width (mm_hidden_size)
    vision_layers: int
    hidden_size: int  # LLM width
    projector_type: str = "mlp_downsample_3x3_fix"
    select_layer: int = -2
    select_feature: str = "cls_patch"
    image_mean: tuple = (0.5, 0.5, 0.5)
    image_std: tuple = (0.5, 0.5, 0.5)
    resample: int = 3  # PIL bicubic
    rescale_factor: float = 1.0 / 255.0
    num_video_frames: int = 16
    chat_template: str = "qwen2"
    tpe: TPEConfig = field(default_factory=TPEConfig)

    def __post_init__(self) -> None:
        if self.projector_type not in PROJECTOR_TYPES:
            raise CheckpointError(
                f"projector type {self.projector_type!r} is not supported; this SDK implements {PROJECTOR_TYPES} "
                "(NVILA-Lite / 4D-RGPT). Check mm_projector/config.json."
            )
        if self.select_feature not in SELECT_FEATURES:
            raise CheckpointError(
                f"mm_vision_select_feature {self.select_feature!r} is unknown; expected one of {SELECT_FEATURES}."
            )
        if self.image_size % self.patch_size:
            raise CheckpointError(
                f"vision tower image_size {self.image_size} is not a multiple of patch_size {self.patch_size}."
            )
        if not (-self.vision_layers <= self.select_layer < self.vision_layers + 1) or self.select_layer == 0:
            raise CheckpointError(
                f"mm_vision_select_layer {self.select_layer} does not exist in a {self.vision_layers}-layer tower."
            )

    @property
    def grid(self) -> int:
        """Patches per side of the vision grid (32 for 448 px / patch 14)."""
        return self.image_size // self.patch_size

    @property
    def patches(self) -> int:
        return self.grid * self.grid

    @property
    def tokens_per_image(self) -> int:
        """Visual tokens per frame after the 3x3 fold (121 for 448 px)."""
        return math.ceil(self.grid / 3) ** 2

    @property
    def positions_per_frame(self) -> int:
        """LLM positions per frame: the visual tokens plus one "\\n" embedding (122 for 448 px)."""
        return self.tokens_per_image + 1

    @property
    def encoder_layers_used(self) -> int:
        """How many SigLIP blocks run: hidden_states[-2] is the output of block L-1 of L."""
        sel = self.select_layer
        return self.vision_layers + 1 + sel if sel < 0 else sel

    @property
    def tpe_dim(self) -> int:
        return self.vision_hidden if self.tpe.site == "pre_projector" else self.hidden_size

    def to_dict(self) -> Dict[str, Any]:
        """The spec as plain values, with the derived tokens_per_image, positions_per_frame and grid."""
        d = asdict(self)
        d.update(tokens_per_image=self.tokens_per_image, positions_per_frame=self.positions_per_frame, grid=self.grid)
        return d

    @classmethod
    def from_configs(
        cls,
        root: Mapping[str, Any],
        vision: Mapping[str, Any],
        projector: Mapping[str, Any],
        llm: Mapping[str, Any],
        preprocessor: Optional[Mapping[str, Any]] = None,
        tpe_override: Optional[Mapping[str, Any]] = None,
    ) -> "ModelSpec":
        """Read the four configs of the released layout (and the optional preprocessor config)."""
        pre = dict(preprocessor or {})
        tpe = tpe_from_root(root)
        if tpe_override:
            merged = asdict(tpe)
            merged.update(dict(tpe_override))
            tpe = TPEConfig.from_dict(merged)
        v, p, l = "vision_tower/config.json", "mm_projector/config.json", "llm/config.json"
        return cls(
            image_size=_value(int, vision, "image_size", v),
            patch_size=_value(int, vision, "patch_size", v),
            vision_hidden=_value(int, vision, "hidden_size", v),
            vision_layers=_value(int, vision, "num_hidden_layers", v),
            hidden_size=_value(int, llm, "hidden_size", l),
            projector_type=str(_need(projector, "mm_projector_type", p)),
            select_layer=_value(int, root, "mm_vision_select_layer", "config.json", -2),
            select_feature=str(root.get("mm_vision_select_feature", "cls_patch")),
            image_mean=_value(_floats, pre, "image_mean", "preprocessor_config.json", (0.5, 0.5, 0.5)),
            image_std=_value(_floats, pre, "image_std", "preprocessor_config.json", (0.5, 0.5, 0.5)),
            resample=_value(int, pre, "resample", "preprocessor_config.json", 3),
            rescale_factor=_value(float, pre, "rescale_factor", "preprocessor_config.json", 1.0 / 255.0),
            num_video_frames=_value(int, root, "num_video_frames", "config.json", None) or 16,
            chat_template=str(root.get("chat_template") or "qwen2"),
            tpe=tpe,
        )


_MISSING = object()


def _floats(value: Any) -> tuple:
    return tuple(float(x) for x in value)


def _value(conv: Any, cfg: Mapping[str, Any], key: str, where: str, default: Any = _MISSING) -> Any:
    """``conv(cfg[key])`` (``default`` when absent and a default is given); a value of the wrong type raises
    `CheckpointError` naming the file, the key and the value."""
    value = _need(cfg, key, where) if default is _MISSING else cfg.get(key, default)
    if value is None:
        return default
    try:
        if isinstance(value, bool) or (conv is int and isinstance(value, float) and not value.is_integer()):
            raise ValueError(value)
        return conv(value)
    except (TypeError, ValueError):
        kind = {int: "an integer", float: "a number", _floats: "a list of numbers"}.get(conv, "valid")
        raise CheckpointError(f"{where}: {key} = {value!r} is not {kind}; the checkpoint config is damaged "
                              "(re-download it).") from None


def tpe_from_root(root: Mapping[str, Any]) -> TPEConfig:
    """TPE settings declared by a root config.json: a boolean flag (any of `TPE_FLAG_KEYS`) or a dict of options."""
    for key in TPE_FLAG_KEYS:
        if key not in root:
            continue
        val = root[key]
        if isinstance(val, Mapping):
            opts = dict(val)
            opts.setdefault("enabled", True)
            return TPEConfig.from_dict(opts)
        if isinstance(val, bool):
            extra = {k[len("time_pe_"):]: v for k, v in root.items() if k.startswith("time_pe_")}
            return TPEConfig.from_dict({"enabled": val, **extra})
    return TPEConfig(enabled=False)


def _need(cfg: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in cfg or cfg[key] is None:
        raise CheckpointError(f"{where} has no {key!r}; the checkpoint is incomplete or not a NVILA/4D-RGPT one.")
    return cfg[key]
