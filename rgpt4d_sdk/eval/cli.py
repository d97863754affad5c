"""`rgpt4d-sdk eval ...`: benchmark evaluation commands (registered on the main app as the `eval` group)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import RGPT4DError

eval_app = typer.Typer(no_args_is_help=True, help="Evaluate a checkpoint on a benchmark: per-item rows and a table.")


@eval_app.command("r4d-bench")
def r4d_bench(
    data: Path = typer.Option(..., help="R4D-Bench folder: annotation .json/.jsonl/.parquet + the files they name."),
    model: str = typer.Option(..., help="Checkpoint folder in the released layout (or a hub id)."),
    frames: int = typer.Option(16, help="Frames sampled evenly from each video (the paper uses 16)."),
    out: Path = typer.Option(Path("r4d-bench-out"), help="Output folder; a re-run resumes from results.jsonl."),
    limit: Optional[int] = typer.Option(None, help="Evaluate only the first N records."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N"),
    dtype: str = typer.Option("auto", help="auto | float32 | bfloat16 | float16"),
    batch_size: int = typer.Option(1, help="Items answered per engine batch."),
) -> None:
    """Answer every R4D-Bench item (letter or option text counts as right) and write the 12-column table."""
    from .runner import run_r4d_bench

    try:
        stats = run_r4d_bench(data, model, out, num_frames=frames, limit=limit, device=device, dtype=dtype,
                              batch_size=batch_size, echo=lambda m: typer.echo(m, err=True))
    except RGPT4DError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(code=2)
    typer.echo(f"items: {stats.items} ({stats.done_before} already done); this run: answered {stats.answered}, "
               f"not evaluated {stats.errors}")
    typer.echo((stats.out_dir / "table.md").read_text(encoding="utf-8"), nl=False)
    typer.echo(f"results: {stats.out_dir / 'results.jsonl'}; table: {stats.out_dir / 'table.md'} and table.json")
