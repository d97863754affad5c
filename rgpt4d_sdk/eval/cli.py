"""`rgpt4d-sdk eval ...`: benchmark evaluation commands (registered on the main app as the `eval` group)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..cli_grammar import App
from ..errors import RGPT4DError

ALLOW_HELP = "Read files that records place outside --data (refused by default: such items become error rows)."
eval_app = App(no_args_is_help=True, help="Evaluate a checkpoint on a benchmark: per-item rows and a table.")


def _err(message: str) -> None:
    typer.echo(message, err=True)


def _run_and_report(run, *extra_files: str) -> None:
    """Run an evaluation; SDK errors exit 2 with the message; print the counts, the table and the output files."""
    try:
        stats = run()
    except RGPT4DError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(code=2)
    typer.echo(f"items: {stats.items} ({stats.done_before} already done); this run: answered {stats.answered}, "
               f"not evaluated {stats.errors}")
    typer.echo((stats.out_dir / "table.md").read_text(encoding="utf-8"), nl=False)
    files = ["results.jsonl", *extra_files, "table.md", "table.json"]
    typer.echo("outputs: " + ", ".join(str(stats.out_dir / f) for f in files))


@eval_app.command("r4d-bench", deprecated={"--frames": "--num-frames"})
def r4d_bench(
    data: Path = typer.Option(..., metavar="DIR", help="R4D-Bench folder (records in test.json/.jsonl/.parquet + the files they name), or one record file."),
    model: str = typer.Option(..., metavar="DIR", help="Checkpoint folder in the released layout (or a hub id)."),
    num_frames: int = typer.Option(16, metavar="N", help="Frames sampled evenly from each video (the paper uses 16)."),
    out: Path = typer.Option(Path("r4d-bench-out"), metavar="DIR", help="Output folder; a re-run resumes from results.jsonl."),
    limit: Optional[int] = typer.Option(None, metavar="N", help="Evaluate only the first N records."),
    device: str = typer.Option("auto", metavar="DEVICE", help="auto | cpu | cuda | cuda:N"),
    dtype: str = typer.Option("auto", metavar="DTYPE", help="auto | float32 | bfloat16 | float16"),
    batch_size: int = typer.Option(1, metavar="N", help="Items answered per engine batch."),
    allow_outside_data_root: bool = typer.Option(False, "--allow-outside-data-root", help=ALLOW_HELP),
) -> None:
    """Answer every R4D-Bench item (read by the official letter rule, or as the whole option text) and write the
    12-column table with accuracy and the expected official score."""
    from .runner import run_r4d_bench

    _run_and_report(lambda: run_r4d_bench(data, model, out, num_frames=num_frames, limit=limit, device=device,
                                          dtype=dtype, batch_size=batch_size, echo=_err,
                                          allow_outside_data_root=allow_outside_data_root))


@eval_app.command("robofac", deprecated={"--frames": "--num-frames"})
def robofac(
    data: Path = typer.Option(..., metavar="DIR", help="RoboFAC root (HF MINT-SJTU/RoboFAC-dataset layout: QA tables + videos)."),
    model: str = typer.Option(..., metavar="DIR", help="Checkpoint folder in the released layout (or a hub id)."),
    split: str = typer.Option("test_sim", metavar="SPLIT", help="test_sim | test_realworld | training"),
    num_frames: int = typer.Option(16, metavar="N", help="Frames sampled evenly from each video."),
    regions: Optional[Path] = typer.Option(None, metavar="FILE", help="Region file (adapters/robofac/regions.py) adding SoM marks."),
    out: Path = typer.Option(Path("robofac-out"), metavar="DIR", help="Output folder; a re-run resumes from results.jsonl."),
    limit: Optional[int] = typer.Option(None, metavar="N", help="Evaluate only the first N items of the split."),
    judge_scores: Optional[Path] = typer.Option(None, metavar="FILE", help="Judge scores JSONL ({\"id\", \"score\": 0-5} a line) "
                                                            "for the open-ended items of judge_requests.jsonl."),
    device: str = typer.Option("auto", metavar="DEVICE", help="auto | cpu | cuda | cuda:N"),
    dtype: str = typer.Option("auto", metavar="DTYPE", help="auto | float32 | bfloat16 | float16"),
    batch_size: int = typer.Option(1, metavar="N", help="Items answered per engine batch."),
    allow_outside_data_root: bool = typer.Option(False, "--allow-outside-data-root", help=ALLOW_HELP),
) -> None:
    """Answer every RoboFAC QA item of a split: containment accuracy (official rule, and strict) for the three
    closed types, judge requests (and, with --judge-scores, judge scores x 20) for the five open-ended ones."""
    from .robofac_run import run_robofac

    _run_and_report(lambda: run_robofac(data, model, out, split=split, num_frames=num_frames, regions=regions,
                                        limit=limit, judge_scores=judge_scores, device=device, dtype=dtype,
                                        batch_size=batch_size, echo=_err,
                                        allow_outside_data_root=allow_outside_data_root), "judge_requests.jsonl")
