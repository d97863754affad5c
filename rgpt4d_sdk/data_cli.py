"""`rgpt4d-sdk data ...`: data-set tools (registered on the main app as the `data` group).

``export-conversations`` writes LLaVA/NVILA-style training conversations; the format is documented in
`rgpt4d_sdk.conversations`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from .cli_grammar import App
from .errors import RGPT4DError

data_app = App(no_args_is_help=True, help="Data-set tools: export training conversations.")


@data_app.callback()
def _data() -> None:
    """Data-set tools: export training conversations."""  # a callback keeps `data` a group with one command


@data_app.command("export-conversations", deprecated={"--frames": "--num-frames", "--version": "--nuscenes-version"})
def export_conversations_cmd(
    source: str = typer.Option(..., metavar="SOURCE", help="robofac | nuscenes"),
    data: Path = typer.Option(..., metavar="DIR", help="Data-set root: the RoboFAC download, or a nuScenes dataroot."),
    out: Path = typer.Option(..., metavar="FILE", help="Output JSON file (a list of conversation records)."),
    split: Optional[str] = typer.Option(None, metavar="SPLIT", help="RoboFAC split: training | test_sim | "
                                        "test_realworld (default: training, else every split present)."),
    num_frames: int = typer.Option(16, metavar="N", help="Frames per record (RoboFAC: sampled evenly; nuScenes: "
                                                         "clip length)."),
    limit: Optional[int] = typer.Option(None, metavar="N", help="Write at most N records."),
    media_dir: Optional[Path] = typer.Option(None, metavar="DIR", help="Folder for SoM images (default: <out "
                                                                       "stem>_media)."),
    regions: Optional[Path] = typer.Option(None, metavar="FILE", help="RoboFAC region file: items with regions "
                                                                      "become R4D region queries with a SoM image."),
    nuscenes_version: Optional[str] = typer.Option(None, metavar="VERSION", help="nuScenes version folder "
                                                   "(default: the only one present)."),
    camera: List[str] = typer.Option(["CAM_FRONT"], metavar="CHANNEL", help="nuScenes camera channel (repeatable)."),
    scene: List[str] = typer.Option([], metavar="NAME", help="nuScenes scene name (repeatable; default: every "
                                                             "scene)."),
) -> None:
    """Write one conversation record per question (RoboFAC QA pair, or nuScenes question with ground truth)."""
    from .conversations import export_conversations

    options: dict = {}
    if source == "robofac":
        if regions is not None:
            options["region_file"] = regions
    elif source == "nuscenes":
        options.update(version=nuscenes_version, nuscenes={"cameras": list(camera), "scenes": list(scene)})
    try:
        stats = export_conversations(source, data, out, split=split, num_frames=num_frames, limit=limit,
                                     media_dir=media_dir, echo=lambda m: typer.echo(m, err=True), **options)
    except RGPT4DError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(code=2)
    skipped = ", ".join(f"{k} {v}" for k, v in sorted(stats.skipped.items())) or "none"
    typer.echo(f"records: {stats.records}; skipped: {stats.skipped_total} ({skipped}); out: {out}")
    typer.echo(json.dumps(stats.to_dict()))


@data_app.command("sample-log")
def sample_log_cmd(
    out: Path = typer.Option(..., metavar="DIR", help="Folder for the two logs: OUT/train and OUT/heldout (+ OUT/scenes.json)."),
    train_scenes: int = typer.Option(40, help="Training scenes (each drawn from its own seed)."),
    heldout_scenes: int = typer.Option(40, help="Held-out scenes (seeds never shared with a training scene)."),
    seed: int = typer.Option(0, help="Split seed: scene seeds are seed*100000 + i (train), + 50000 + i (held out)."),
    width: int = typer.Option(640, help="Camera image width in pixels (height: 9/16 of it)."),
    lidar: bool = typer.Option(True, "--lidar/--no-lidar", help="Write LIDAR_TOP sweeps into the training log "
                                                                "(the sensor teacher reads them)."),
) -> None:
    """Write a random synthetic street log in nuScenes format, split into training and held-out scenes."""
    from .adapters.nuscenes.random_scenes import write_split_logs

    try:
        roots = write_split_logs(out, train_scenes, heldout_scenes, seed=seed, image_size=(width, width * 9 // 16),
                                 lidar=lidar)
    except RGPT4DError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(code=2)
    typer.echo(f"train: {roots['train']} ({train_scenes} scenes); heldout: {roots['heldout']} ({heldout_scenes} "
               f"scenes); seeds in {Path(out) / 'scenes.json'}")
