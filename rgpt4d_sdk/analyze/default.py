"""The embedded default run: a generated nuScenes-format sample log and the tiny demo checkpoint.

Both are made once and cached in the SDK's cache folder (`rgpt4d_sdk.cache`: ``$RGPT4D_CACHE``, else
``~/.cache/rgpt4d-sdk``), saying so on stderr the first time; a build that was killed half-way is cleaned up by the
next run. The checkpoint has random weights, so the answers show that the pipeline works end to end, not what
4D-RGPT would say.
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


def first_run_lines(cache: Path) -> List[str]:
    """What the default run is about to generate and where (empty when everything is cached already)."""
    from ..adapters.nuscenes.sample import CAMERA_RIGS, GENERATOR_VERSION, default_sample_scenes

    lines = []
    log = cache / f"nuscenes-sample-v{GENERATOR_VERSION}"
    if not (log / ".rgpt4d-sample-complete").is_file():
        lines.append(f"first run: generating the sample nuScenes-format log ({len(default_sample_scenes())} scenes, "
                     f"{len(CAMERA_RIGS)} cameras) in {log} ...")
    if not (cache / "tiny-checkpoint" / "config.json").is_file():
        lines.append(f"first run: writing the tiny random demo checkpoint in {cache / 'tiny-checkpoint'} ...")
    if lines:
        lines.append(f"(made once and reused; set {ENV} to use another cache folder)")
    return lines


def default_config(out: "str | Path" = "rgpt4d-out", cache: Optional[Path] = None,
                   echo: Optional[Echo] = None) -> AnalyzeConfig:
    """The default run's config: the sample log and tiny checkpoint (generated on first use, said on ``echo``)."""
    from ..adapters.nuscenes.sample import ensure_sample_log

    cache = Path(cache or cache_dir())
    cache.mkdir(parents=True, exist_ok=True)
    notes = first_run_lines(cache)
    for line in notes:
        (echo or _stderr)(line)
    started = time.monotonic()
    dataroot = ensure_sample_log(cache)
    ckpt = ensure_tiny_checkpoint(cache)
    if notes:
        (echo or _stderr)(f"first run: done in {time.monotonic() - started:.0f} s")
    return AnalyzeConfig(
        out=str(out),
        nuscenes={"dataroot": str(dataroot), "version": "v1.0-mini", "cameras": ["CAM_FRONT", "CAM_FRONT_LEFT"]},
        engine={"model": str(ckpt), "device": "cpu", "dtype": "float32"},
        title="rgpt4d-sdk: the embedded nuScenes-format sample log",
        notice=DEMO_NOTICE,
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
