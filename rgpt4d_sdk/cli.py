"""`rgpt4d-sdk` command line: thin commands that build typed inputs and call one library function each."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from . import __version__
from .cli_boundary import BoundaryGroup
from .cli_common import fail as _fail
from .cli_grammar import App, Group
from .compiled.cli import export_app
from .data_cli import data_app
from .readiness_cli import doctor as doctor_cmd
from .readiness_cli import plan as plan_cmd
from .errors import QueryError, RGPT4DError
from .eval.cli import eval_app
from .ros.cli import ros_app
from .training.cli import train_app



class RootGroup(BoundaryGroup, Group):
    """The root group: the grammar's readable help (`cli_grammar.Group`) inside the one error boundary
    (`cli_boundary.BoundaryGroup`)."""


app = App(cls=RootGroup, no_args_is_help=True,
          help="Region-level 4D video question answering. On an internal error, rerun with "
               "`rgpt4d-sdk --debug ...` (or RGPT4D_DEBUG=1) to see the traceback.")
checkpoint_app = App(no_args_is_help=True, help="Inspect checkpoints, or write a tiny random one.")
app.add_typer(checkpoint_app, name="checkpoint")
analyze_app = App(help="Batch analysis of driving logs: questions with ground truth, answers, metrics, report.")
app.add_typer(analyze_app, name="analyze")
app.add_typer(ros_app, name="ros")
app.add_typer(eval_app, name="eval")
app.add_typer(data_app, name="data")
app.add_typer(export_app, name="export")
app.add_typer(train_app, name="train")
app.command("doctor")(doctor_cmd)
app.command("plan")(plan_cmd)

def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"rgpt4d-sdk {__version__}")
        raise typer.Exit()


@app.callback(cls=RootGroup)
def _root(
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                 help="Print the SDK's version and exit."),
) -> None:
    """Region-level 4D video question answering with 4D-RGPT: the grammar of every verb is in docs/cli.md."""


DEMO_NOTICE = "NOTE: answers come from an untrained demo model with random weights; point --model at real weights."


def parse_region(spec: str):
    """"N:x0,y0,x1,y1" (box), "N:poly=x,y,x,y,..." (polygon) or "N:mask=FILE.png" (non-zero pixels)."""
    from .types import Region

    ident, sep, rest = spec.partition(":")
    if not sep or not ident.strip().isdigit():
        raise QueryError(f"region {spec!r} must look like 1:x0,y0,x1,y1 (or 1:poly=x,y,... or 1:mask=FILE.png).")
    rid = int(ident)
    try:
        if rest.startswith("mask="):
            from .media import load_image

            return Region(rid, mask=load_image(Path(rest[5:]))[:, :, 0] > 0)
        if rest.startswith("poly="):
            vals = [float(v) for v in rest[5:].split(",")]
            if len(vals) % 2:
                raise ValueError("odd number of coordinates")
            return Region(rid, polygon=list(zip(vals[0::2], vals[1::2])))
        vals = [float(v) for v in rest.split(",")]
        if len(vals) != 4:
            raise ValueError(f"{len(vals)} numbers")
        return Region(rid, box=tuple(vals))
    except ValueError as e:
        if isinstance(e, RGPT4DError):
            raise
        raise QueryError(f"region {spec!r} cannot be read ({e}); use 1:x0,y0,x1,y1 in pixels of the first frame.")


@app.command(deprecated={"--frames": "--images"})
def query(
    model: str = typer.Option(..., metavar="DIR", help="Checkpoint folder in the released layout (or a hub id)."),
    question: str = typer.Option(..., metavar="TEXT", help="The question; refer to marks as <obj_N>."),
    video: Optional[Path] = typer.Option(None, metavar="FILE", help="Video file (frame times from its presentation "
                                                                     "timestamps)."),
    images: Optional[Path] = typer.Option(None, metavar="DIR", help="Folder of images (needs --timestamps)."),
    timestamps: Optional[Path] = typer.Option(None, metavar="FILE", help="Times file for --images: txt, CSV or JSON "
                                                                         "(seconds)."),
    region: List[str] = typer.Option([], metavar="N:BOX", help="N:x0,y0,x1,y1 | N:poly=x,y,... | N:mask=FILE.png "
                                                               "(repeatable)."),
    option: List[str] = typer.Option([], metavar="TEXT", help="Answer option (repeatable); makes it multiple choice."),
    answer_type: Optional[str] = typer.Option(None, metavar="TYPE", help="choice | number | text (default: choice "
                                                                         "with options)."),
    mode: str = typer.Option("r4d", metavar="MODE", help="r4d (SoM image + duration + options) or plain (NVILA "
                                                         "video QA)."),
    num_frames: int = typer.Option(16, metavar="N", help="Frames sampled evenly from the video or folder."),
    device: str = typer.Option("auto", metavar="DEVICE", help="auto | cpu | cuda | cuda:N"),
    dtype: str = typer.Option("auto", metavar="DTYPE", help="auto | float32 | bfloat16 | float16"),
    as_json: bool = typer.Option(False, "--json", help="Print the answer as JSON."),
    time_unit_check: bool = typer.Option(True, "--time-unit-check/--no-time-unit-check",
                                         help="Refuse --timestamps that look like ms/us/ns rather than seconds "
                                              "(median frame gap outside 0.1 ms..10 s)."),
) -> None:
    """Answer one region query about a video or an image folder."""
    from .engine.config import EngineConfig
    from .types import Clip, RegionQuery

    try:
        if (video is None) == (images is None):
            raise QueryError("give exactly one of --video FILE or --images DIR (with --timestamps FILE).")
        if images is not None and timestamps is None:
            raise QueryError("--images needs --timestamps FILE (one time in seconds per image).")
        clip = (Clip.from_video(video, num_frames=num_frames) if video is not None
                else Clip.from_image_folder(images, timestamps, num_frames=num_frames, check_units=time_unit_check))
        q = RegionQuery(clip, [parse_region(r) for r in region], question, options=list(option),
                        answer_type=answer_type, prompt_mode=mode, id="cli")
        engine = EngineConfig(model=model, device=device, dtype=dtype, max_frames=None).build().load()
        ans = engine.answer(q)
    except RGPT4DError as e:
        _fail(e)
    if as_json:
        typer.echo(json.dumps(ans.to_dict(), indent=2))
    else:
        typer.echo(f"answer: {ans.text}")
        if ans.choice:
            typer.echo(f"choice: {ans.choice} ({q.options[ans.option_index]})")
        if ans.value is not None:
            typer.echo(f"value: {ans.value} {ans.unit or ''}".rstrip())
        typer.echo("timings: " + ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in ans.timings.items()))


demo_app = App(help="Demos: one region query end to end (no sub-command), or `demo train`.")
app.add_typer(demo_app, name="demo")


@demo_app.callback(invoke_without_command=True)
def demo(
    ctx: typer.Context,
    out: Optional[Path] = typer.Option(None, metavar="DIR", help="Where the demo files go (default: demo/ in the "
                                                                 "cache folder, $RGPT4D_CACHE or ~/.cache/rgpt4d-sdk)."),
) -> None:
    """Run a region query end to end on an embedded sample (tiny random checkpoint + a synthetic video)."""
    if ctx.invoked_subcommand is not None:
        return
    from .cache import cache_root
    from .demo import run_demo

    try:
        result = run_demo(out or cache_root() / "demo")
    except RGPT4DError as e:
        _fail(e)
    typer.echo(DEMO_NOTICE)
    typer.echo(f"checkpoint: {result['checkpoint']}\nvideo: {result['video']}")
    typer.echo(f"question: {result['question']}\noptions: {result['options']}")
    typer.echo(f"answer: {result['answer']['text']!r} (choice: {result['answer']['choice']})")


@demo_app.command("train")
def demo_train(
    out: Path = typer.Option(Path("rgpt4d-demo-train"), metavar="DIR", help="Folder for the log, models, runs and results (cached: "
                                                             "finished steps are skipped on a rerun)."),
    size: str = typer.Option("full", metavar="SIZE", help="full (the committed run: 60 training / 40 held-out scenes) or ci (the "
                                          "smallest chain, for tests)."),
    seed: int = typer.Option(0, help="Seeds the scenes, the base weights, the data order and the questions."),
) -> None:
    """Fine-tune a tiny model on a synthetic log (SFT, and SFT + P4D) and score it on held-out scenes against
    baselines, through the public commands (data sample-log, data export-conversations, train, train export,
    analyze)."""
    from .demo_train import run_demo_train

    try:
        metrics = run_demo_train(out, size=size, seed=seed, echo=lambda m: typer.echo(m, err=True))
    except RGPT4DError as e:
        _fail(e)
    for name, s in metrics["summary"].items():
        typer.echo(f"{name}: replies parsed {100 * (s['parse_rate'] or 0):.1f} %, above the best constant baseline "
                   f"on {s['mc_families_above_best_constant']} of {s['mc_families']} multiple-choice families")
    typer.echo(f"report: {Path(out) / 'report.md'}")


def _print_run(stats) -> None:
    m = stats.metrics.get("overall", {}) if stats.metrics else {}
    typer.echo(f"clips: {stats.units_total} ({stats.units_skipped_done} already done, {stats.units_run} run); "
               f"rows: answered {stats.queries_answered}, errors {stats.errors}, skipped {stats.skipped}")
    if m:
        parts = (f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in m.items())
        typer.echo("overall: " + ", ".join(parts))
    typer.echo(f"results: {Path(stats.out_dir) / 'results.jsonl'} (+ results.parquet, metrics.json, config.yaml)")
    typer.echo(f"report: {stats.report}")


@analyze_app.callback(invoke_without_command=True)
def analyze_default(
    ctx: typer.Context,
    out: Path = typer.Option(Path("rgpt4d-out"), metavar="DIR", help="Output folder of the embedded default run."),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help="Progress bar (default: on a TTY)."),
    executor: str = typer.Option("local", metavar="KIND", help="local or ray (an actor pool on a local or running "
                                                               "Ray cluster)."),
    address: Optional[str] = typer.Option(None, metavar="ADDRESS", help="ray: cluster address ('auto' joins a "
                                                                        "running one)."),
    num_workers: int = typer.Option(1, metavar="N", help="ray: actors, each loading the engine once."),
) -> None:
    """With no sub-command: analyse the embedded sample log (generated once) with the tiny demo checkpoint."""
    if ctx.invoked_subcommand is not None:
        if out != Path("rgpt4d-out") or progress is not None or executor != "local":
            _fail(QueryError(f"options given before '{ctx.invoked_subcommand}' belong to the default run; put them "
                             f"after it: rgpt4d-sdk analyze {ctx.invoked_subcommand} --out DIR ..."))
        return
    from .analyze.default import default_notice, run_default

    try:
        stats = run_default(out, progress=progress, echo=lambda m: typer.echo(m, err=True),
                            executor={"kind": executor, "address": address, "num_workers": num_workers})
    except RGPT4DError as e:
        _fail(e)
    typer.echo("NOTE: " + default_notice())
    _print_run(stats)


VERIFY_HELP = ("Hash the compiled model's files afresh instead of trusting the digest cache (keyed by size, mtime "
               "and inode; see docs/compiled.md).")


def _run_sections(model, device, dtype, batch_size, backend, compiled, executor, address, num_workers,
                  gpus_per_worker, verify_digests: bool = False) -> dict:
    """The engine and executor sections of an analyze run from the options both sources share (None: not given)."""
    return {
        "engine": {"model": model, "device": device, "dtype": dtype, "batch_size": batch_size, "backend": backend,
                   "compiled": None if compiled is None else str(compiled),
                   "verify_digests": verify_digests or None},
        "executor": {"kind": executor, "address": address, "num_workers": num_workers,
                     "gpus_per_worker": gpus_per_worker},
    }


def _run_analyze(config: Optional[str], overrides: dict) -> None:
    """Command-line overrides on top of the YAML config (if any) -> a checked config -> the run -> its summary."""
    from .analyze.config import AnalyzeConfig
    from .analyze.runner import run_analysis

    try:
        cfg = AnalyzeConfig.load(_config_path(config), overrides)
        stats = run_analysis(cfg, echo=lambda m: typer.echo(m, err=True))
    except RGPT4DError as e:
        _fail(e)
    _print_run(stats)


# Options every analyze source shares (same names, metavars and help in `analyze nuscenes` and `analyze rosbag`).
_MODEL = dict(metavar="DIR", help="Checkpoint folder in the released layout, or a hub id.")
_OUT = dict(metavar="DIR", help="Output folder (default rgpt4d-out).")
_CONFIG = dict(metavar="CONFIG", help="YAML config (a path, or a shipped one by name: analyze_nuscenes, "
                                         "analyze_rosbag); command-line options override it.")
_DEVICE = dict(metavar="DEVICE", help="auto | cpu | cuda | cuda:N (default: auto)")
_DTYPE = dict(metavar="DTYPE", help="auto | float32 | bfloat16 | float16 (default: auto)")
_BATCH = dict(metavar="N", help="Questions answered per batch.")
_BACKEND = dict(metavar="BACKEND", help="torch | onnxruntime | tensorrt")
_COMPILED = dict(metavar="DIR", help="Export (onnxruntime) or engine (tensorrt) folder.")
_EXECUTOR = dict(metavar="KIND", help="local (default) or ray: an actor pool on a Ray cluster.")
_ADDRESS = dict(metavar="ADDRESS", help="ray: cluster address ('auto' joins a running one; none starts a local Ray).")
_WORKERS = dict(metavar="N", help="ray: actors, each loading the engine once.")
_GPUS = dict(metavar="X", help="ray: GPUs per actor (0 on CPU-only machines).")
_PROGRESS = dict(help="Progress bar (default: on a TTY; a line per clip otherwise).")
_ALLOW_OUTSIDE = dict(help="Read files that data records place outside the data folder (refused by default: such "
                           "clips become error rows).")


def _config_path(config: Optional[str]) -> Optional[Path]:
    from .cli_grammar import resolve_config

    return resolve_config(config, Path(__file__).resolve().parent / "configs", "analyze")


@analyze_app.command("nuscenes", deprecated={"--dataroot": "--data", "--version": "--nuscenes-version",
                                             "--scenes": "--scene", "--cameras": "--camera",
                                             "--frames": "--frame-source"})
def analyze_nuscenes(
    data: Optional[Path] = typer.Option(None, metavar="DIR", help="nuScenes dataroot (holds v1.0-*/, samples/, "
                                                                  "sweeps/, maps/)."),
    nuscenes_version: Optional[str] = typer.Option(None, metavar="VERSION", help="Table version folder, e.g. "
                                                   "v1.0-mini (default: the only one present)."),
    scene: List[str] = typer.Option([], metavar="NAME", help="Scene name (repeatable); default: all scenes."),
    camera: List[str] = typer.Option([], metavar="CHANNEL", help="Camera channel (repeatable); default: CAM_FRONT."),
    model: Optional[str] = typer.Option(None, **_MODEL),
    out: Optional[Path] = typer.Option(None, **_OUT),
    config: Optional[str] = typer.Option(None, **_CONFIG),
    shard: Optional[str] = typer.Option(None, metavar="I/N", help="Process every N-th clip (writes "
                                                                  "out/shard-i-of-N)."),
    frame_source: Optional[str] = typer.Option(None, metavar="SOURCE", help="sweeps (every camera image, ~12 Hz) or "
                                                                            "keyframes (2 Hz)."),
    num_frames: Optional[int] = typer.Option(None, metavar="N", help="Frames per clip (default 16)."),
    device: Optional[str] = typer.Option(None, **_DEVICE),
    dtype: Optional[str] = typer.Option(None, **_DTYPE),
    batch_size: Optional[int] = typer.Option(None, **_BATCH),
    backend: Optional[str] = typer.Option(None, **_BACKEND),
    compiled: Optional[Path] = typer.Option(None, **_COMPILED),
    executor: Optional[str] = typer.Option(None, **_EXECUTOR),
    address: Optional[str] = typer.Option(None, **_ADDRESS),
    num_workers: Optional[int] = typer.Option(None, **_WORKERS),
    gpus_per_worker: Optional[float] = typer.Option(None, **_GPUS),
    retry_errors: Optional[bool] = typer.Option(None, "--retry-errors/--no-retry-errors",
                                                help="Redo clips that failed before (default: no)."),
    verify_digests: bool = typer.Option(False, "--verify-digests", help=VERIFY_HELP),
    allow_outside_data_root: bool = typer.Option(False, "--allow-outside-data-root", **_ALLOW_OUTSIDE),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", **_PROGRESS),
) -> None:
    """Ask questions with known answers about a nuScenes log, answer them, and grade the answers (resumable)."""
    overrides = {
        "source": "nuscenes", "out": None if out is None else str(out), "shard": shard,
        "retry_errors": retry_errors, "progress": progress,
        "nuscenes": {"dataroot": None if data is None else str(data), "version": nuscenes_version,
                     "scenes": scene or None, "cameras": camera or None, "frames": frame_source,
                     "num_frames": num_frames, "allow_outside_data_root": allow_outside_data_root or None},
        **_run_sections(model, device, dtype, batch_size, backend, compiled, executor, address, num_workers,
                        gpus_per_worker, verify_digests),
    }
    _run_analyze(config, overrides)


@analyze_app.command("rosbag")
def analyze_rosbag(
    bag: Optional[Path] = typer.Argument(None, metavar="BAG", help="rosbag2 folder (metadata.yaml + .db3/.mcap) or "
                                                                  "ROS 1 .bag file."),
    camera: Optional[str] = typer.Option(None, metavar="TOPIC", help="Image or CompressedImage topic, e.g. "
                                                                     "/cam/image_raw/compressed."),
    queries: Optional[Path] = typer.Option(None, metavar="FILE", help="Queries YAML (format: "
                                                                      "rgpt4d_sdk.adapters.rosbag.queries)."),
    camera_info: Optional[str] = typer.Option(None, metavar="TOPIC", help="CameraInfo topic (default: the camera's "
                                                                          "sibling camera_info; \"\" for none)."),
    undistort: Optional[bool] = typer.Option(None, "--undistort/--no-undistort",
                                             help="Undistort frames with the CameraInfo (default: yes)."),
    tolerance_ms: Optional[float] = typer.Option(None, metavar="MS", help="How far (ms) an end/reference stamp may "
                                                                          "be from a frame's stamp (default 1)."),
    model: Optional[str] = typer.Option(None, **_MODEL),
    out: Optional[Path] = typer.Option(None, **_OUT),
    config: Optional[str] = typer.Option(None, **_CONFIG),
    shard: Optional[str] = typer.Option(None, metavar="I/N", help="Process every N-th query (writes "
                                                                  "out/shard-i-of-N)."),
    device: Optional[str] = typer.Option(None, **_DEVICE),
    dtype: Optional[str] = typer.Option(None, **_DTYPE),
    batch_size: Optional[int] = typer.Option(None, **_BATCH),
    backend: Optional[str] = typer.Option(None, **_BACKEND),
    compiled: Optional[Path] = typer.Option(None, **_COMPILED),
    executor: Optional[str] = typer.Option(None, **_EXECUTOR),
    address: Optional[str] = typer.Option(None, **_ADDRESS),
    num_workers: Optional[int] = typer.Option(None, **_WORKERS),
    gpus_per_worker: Optional[float] = typer.Option(None, **_GPUS),
    retry_errors: Optional[bool] = typer.Option(None, "--retry-errors/--no-retry-errors",
                                                help="Redo queries that failed before (default: no)."),
    verify_digests: bool = typer.Option(False, "--verify-digests", help=VERIFY_HELP),
    allow_outside_data_root: bool = typer.Option(False, "--allow-outside-data-root", **_ALLOW_OUTSIDE),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", **_PROGRESS),
) -> None:
    """Answer the region queries of a queries file on a ROS bag's frames, and grade those with a truth (resumable)."""
    overrides = {
        "source": "rosbag", "out": None if out is None else str(out), "shard": shard,
        "retry_errors": retry_errors, "progress": progress,
        "rosbag": {"bag": None if bag is None else str(bag), "camera": camera, "camera_info": camera_info,
                   "queries": None if queries is None else str(queries), "undistort": undistort,
                   "tolerance_ms": tolerance_ms, "allow_outside_data_root": allow_outside_data_root or None},
        **_run_sections(model, device, dtype, batch_size, backend, compiled, executor, address, num_workers,
                        gpus_per_worker, verify_digests),
    }
    _run_analyze(config, overrides)


@analyze_app.command("merge", deprecated_positional="--out")
def analyze_merge(out: Path = typer.Option(..., metavar="DIR", help="The --out folder of the sharded run (holds "
                                                                    "shard-i-of-N folders).")) -> None:
    """Combine the shards of a sharded run into one results set, metrics and report."""
    from .analyze.runner import merge_shards

    try:
        metrics = merge_shards(out)
    except RGPT4DError as e:
        _fail(e)
    typer.echo(f"merged {metrics['counts']['rows']} rows; report: {out / 'report.html'}")


@checkpoint_app.command("make-tiny", deprecated_positional="--out")
def make_tiny_cmd(
    out: Path = typer.Option(..., metavar="DIR", help="Empty folder to write the checkpoint into."),
    seed: int = typer.Option(0, metavar="N", help="Seed of the random weights."),
    tpe: bool = typer.Option(True, help="Declare TPE in the root config (use_time_pe)."),
    shards: int = typer.Option(2, metavar="N", help="Number of LLM safetensors shards."),
) -> None:
    """Write a tiny random checkpoint in the released 4D-RGPT layout (for tests and demos)."""
    from .model.tiny import make_tiny

    try:
        path = make_tiny(out, seed=seed, tpe=tpe, llm_shards=shards)
    except RGPT4DError as e:
        _fail(e)
    typer.echo(f"wrote tiny checkpoint to {path} (random weights: an untrained demo model)")


@checkpoint_app.command("inspect")
def inspect_cmd(
    path: str = typer.Argument(..., metavar="CHECKPOINT", help="Checkpoint folder (or hub id)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Report what a checkpoint holds: dims, projector, tokens per frame, TPE, tokenizer form, size."""
    from .model.tiny import inspect_checkpoint

    try:
        info = inspect_checkpoint(path)
    except RGPT4DError as e:
        _fail(e)
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    v, p, llm, tpe = info["vision_tower"], info["projector"], info["llm"], info["tpe"]
    typer.echo(f"checkpoint: {info['path']} ({info['architecture']}, {info['size_bytes'] / 1e6:.1f} MB)")
    typer.echo(f"vision tower: SigLIP {v['image_size']} px, patch {v['patch_size']}, width {v['width']}, "
               f"{v['layers']} layers, features from hidden_states[{v['feature_layer']}], {v['params']:,} params")
    typer.echo(f"projector: {p['type']}, {p['params']:,} params")
    typer.echo(f"llm: Qwen2 hidden {llm['hidden_size']}, {llm['layers']} layers, {llm['heads']} heads / "
               f"{llm['kv_heads']} KV, vocab {llm['vocab_size']}, {llm['params']:,} params in {llm['shards']} file(s)")
    typer.echo(f"tokens per frame: {info['tokens_per_frame']} visual + 1 newline = {info['positions_per_frame']}")
    typer.echo(f"TPE: {'on' if tpe['enabled'] else 'off'} (base {tpe['base']:g}, {tpe['site']}, {tpe['origin']})")
    typer.echo(f"tokenizer: {info['tokenizer_form']}; weight dtypes: {', '.join(info['weight_dtypes'])}")
    if info["ignored_subfolders"]:
        typer.echo(f"ignored subfolders: {', '.join(info['ignored_subfolders'])}")


def main(argv: Optional[List[str]] = None) -> None:
    app(args=argv, prog_name="rgpt4d-sdk")


if __name__ == "__main__":
    main(sys.argv[1:])
