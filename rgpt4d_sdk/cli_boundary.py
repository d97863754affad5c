"""The one error boundary of the `rgpt4d-sdk` command line.

Every verb (query, demo, analyze, ros, eval, data, export, train, checkpoint and their sub-commands) runs inside
`BoundaryGroup.main`, the click entry point of the root app, so nothing a command raises reaches Python's default
traceback printer:

- an `RGPT4DError` (bad input, named by its message) prints one ``error: ...`` line on stderr and exits with 2;
- any other exception is a bug in the SDK: one line names the exception and says how to see the traceback
  (``rgpt4d-sdk --debug ...`` or ``RGPT4D_DEBUG=1``), exit code 1;
- click's own exits (usage errors, ``--help``, `typer.Exit`) and Ctrl-C (click's "Aborted!") pass unchanged.

With ``--debug`` (anywhere before a ``--`` separator) or ``RGPT4D_DEBUG=1`` the exception propagates, so its full
traceback is printed.
"""
from __future__ import annotations

import os
import sys
from typing import Any, List, Optional, Sequence

import typer
from typer.core import TyperGroup

from .errors import RGPT4DError

DEBUG_FLAG = "--debug"
DEBUG_ENV = "RGPT4D_DEBUG"
EXIT_BAD_INPUT = 2
EXIT_BUG = 1


def debug_enabled(args: Sequence[str] = ()) -> bool:
    """True when ``--debug`` is among ``args`` or the RGPT4D_DEBUG environment variable is set (not 0/false/no)."""
    env = os.environ.get(DEBUG_ENV, "").strip().lower()
    return DEBUG_FLAG in _options_part(args) or env not in ("", "0", "false", "no", "off")


def _options_part(args: Sequence[str]) -> List[str]:
    args = list(args)
    return args[:args.index("--")] if "--" in args else args


def strip_debug(args: Sequence[str]) -> List[str]:
    """``args`` without the global ``--debug`` flag (only before a ``--`` separator)."""
    args = list(args)
    cut = args.index("--") if "--" in args else len(args)
    return [a for a in args[:cut] if a != DEBUG_FLAG] + args[cut:]


def _is_click_control(exc: BaseException) -> bool:
    """Exceptions click handles itself (usage errors, Exit, Abort), whichever click (vendored or not) typer uses."""
    if isinstance(exc, (typer.Exit, typer.Abort)):
        return True
    return any(c.__name__ in ("ClickException", "Exit", "Abort") and c.__module__.split(".")[0] in ("click", "typer")
               for c in type(exc).__mro__)


def bug_line(exc: BaseException) -> str:
    """The one line printed for an unexpected exception (a bug): what it was and how to see the traceback."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    what = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return (f"internal error (a bug in rgpt4d-sdk, not in your input): {what}; rerun with `rgpt4d-sdk "
            f"{DEBUG_FLAG} ...` or {DEBUG_ENV}=1 for the traceback, and report it.")


def report(exc: BaseException) -> int:
    """Print the one line for ``exc`` on stderr and return the exit code (2 bad input, 1 bug)."""
    if isinstance(exc, RGPT4DError):
        typer.echo(f"error: {exc}", err=True)
        return EXIT_BAD_INPUT
    typer.echo(f"error: {bug_line(exc)}", err=True)
    return EXIT_BUG


class BoundaryGroup(TyperGroup):
    """The root command group: runs the whole command line (parsing and every sub-command) inside the boundary."""

    def main(self, args: Optional[Sequence[str]] = None, *a: Any, **kw: Any) -> Any:  # noqa: D102
        argv = list(sys.argv[1:] if args is None else args)
        debug = debug_enabled(argv)
        try:
            return super().main(strip_debug(argv), *a, **kw)
        except Exception as exc:  # the boundary: KeyboardInterrupt/SystemExit are BaseException and pass
            if debug or _is_click_control(exc):
                raise
            sys.exit(report(exc))
