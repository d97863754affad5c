"""The embedded default run: a generated nuScenes-format sample log and the tiny fine-tuned demo checkpoint.

The log is made once and cached in the SDK's cache folder (`rgpt4d_sdk.cache`: ``$RGPT4D_CACHE``, else
``~/.cache/rgpt4d-sdk``), saying so on stderr the first time; a build that was killed half-way is cleaned up by the
next run. The checkpoint is the tiny model (about 0.4 M parameters, 1.8 MB) that `rgpt4d-sdk demo train` fine-tuned
on synthetic street scenes, shipped in ``rgpt4d_sdk/assets/tiny-finetuned`` (its held-out scores:
bench/results/demo_train-cpu-tiny.json). It has learned the question families of the synthetic log, so the report
shows real hits and misses, but it is not 4D-RGPT. Where the shipped copy is missing, a tiny random checkpoint is
written to the cache instead (and the notice says so).
"""
from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import List, Optional

from ..cache import ENV, cache_root, remove_interrupted, temp_name
from .config import AnalyzeConfig, ExecutorConfig
from .runner import Echo, RunStats, run_analysis

DEMO_NOTICE = ("These answers come from an untrained demo model with random weights: they show that the pipeline "
               "works, not what 4D-RGPT would say. Point --model at real 4D-RGPT weights for real answers.")
FINETUNED_NOTICE = ("These answers come from a tiny model (0.4 M parameters) fine-tuned for a few minutes on synthetic "
                    "street scenes by `rgpt4d-sdk demo train`: it is not 4D-RGPT, and its scores show that the SDK's "
                    "fine-tuning chain works, not what 4D-RGPT would say. Point --model at real 4D-RGPT weights for "
                    "real answers.")
FINETUNED = Path(__file__).resolve().parents[1] / "assets" / "tiny-finetuned"


_TINY_TMP_PREFIX = ".tiny-checkpoint.tmp-"


def cache_dir() -> Path:
    """The SDK's cache folder (`rgpt4d_sdk.cache.cache_root`)."""
    return cache_root()


def ensure_tiny_checkpoint(cache: Path) -> Path:
    """The tiny demo checkpoint under ``cache``, written once (to a temporary folder, then renamed)."""
    from ..model.tiny import make_tiny

    path = cache / "tiny-checkpoint"
    if (path / "config.json").is_file():
        return path
    remove_interrupted(cache, _TINY_TMP_PREFIX)
    tmp = cache / (temp_name(_TINY_TMP_PREFIX) + "build")
    shutil.rmtree(tmp, ignore_errors=True)
    make_tiny(tmp, seed=0)
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)
    return path


def default_notice() -> str:
    """What the default run's report and summary say about the model answering."""
    return FINETUNED_NOTICE if (FINETUNED / "config.json").is_file() else DEMO_NOTICE


def default_checkpoint(cache: Path) -> "tuple[Path, str]":
    """(checkpoint, notice): the shipped fine-tuned tiny model, else a tiny random one written to ``cache``."""
    if (FINETUNED / "config.json").is_file():
        return FINETUNED, default_notice()
    return ensure_tiny_checkpoint(cache), default_notice()


def first_run_lines(cache: Path) -> List[str]:
    """What the default run is about to generate and where (empty when everything is cached already)."""
    from ..adapters.nuscenes.sample import CAMERA_RIGS, GENERATOR_VERSION, default_sample_scenes

    lines = []
    log = cache / f"nuscenes-sample-v{GENERATOR_VERSION}"
    if not (log / ".rgpt4d-sample-complete").is_file():
        lines.append(f"first run: generating the sample nuScenes-format log ({len(default_sample_scenes())} scenes, "
                     f"{len(CAMERA_RIGS)} cameras) in {log} ...")
    if not (FINETUNED / "config.json").is_file() and not (cache / "tiny-checkpoint" / "config.json").is_file():
        lines.append(f"first run: writing the tiny random demo checkpoint in {cache / 'tiny-checkpoint'} ...")
    if lines:
        lines.append(f"(made once and reused; set {ENV} to use another cache folder)")
    return lines


def default_config(out: "str | Path" = "rgpt4d-out", cache: Optional[Path] = None,
                   echo: Optional[Echo] = None) -> AnalyzeConfig:
    """The default run's config: the sample log (generated on first use, said on ``echo``) and the shipped
    fine-tuned tiny checkpoint (else a tiny random one)."""
    from ..adapters.nuscenes.sample import ensure_sample_log

    cache = Path(cache or cache_dir())
    cache.mkdir(parents=True, exist_ok=True)
    notes = first_run_lines(cache)
    for line in notes:
        (echo or _stderr)(line)
    started = time.monotonic()
    dataroot = ensure_sample_log(cache)
    ckpt, notice = default_checkpoint(cache)
    if notes:
        (echo or _stderr)(f"first run: done in {time.monotonic() - started:.0f} s")
    return AnalyzeConfig(
        out=str(out),
        nuscenes={"dataroot": str(dataroot), "version": "v1.0-mini", "cameras": ["CAM_FRONT", "CAM_FRONT_LEFT"]},
        engine={"model": str(ckpt), "device": "cpu", "dtype": "float32"},
        title="rgpt4d-sdk: the embedded nuScenes-format sample log",
        notice=notice,
    )


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_default(out: "str | Path" = "rgpt4d-out", cache: Optional[Path] = None, progress: Optional[bool] = None,
                echo: Optional[Echo] = None, executor: Optional[dict] = None) -> RunStats:
    """`rgpt4d-sdk analyze` with no sub-command: analyse the embedded sample log into ``out``."""
    cfg = default_config(out, cache, echo=echo)
    cfg.progress = progress
    if executor:
        cfg.executor = ExecutorConfig(**{k: v for k, v in executor.items() if v is not None})
    return run_analysis(cfg, echo=echo)
