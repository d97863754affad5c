"""Helpers shared by every `rgpt4d-sdk` sub-command module (kept apart from cli.py to avoid import cycles)."""
from __future__ import annotations

import typer


def fail(err: Exception) -> None:
    """Print a typed error as one 'error: ...' line and exit 2 (bad input), the convention of every command."""
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(code=2)
