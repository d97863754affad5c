"""The one command-line grammar of `rgpt4d-sdk` (written down in docs/cli.md), enforced by small typer subclasses.

Every command and group of the CLI is built with `App` (a `typer.Typer` whose commands use `Command` and whose groups
use `Group`), which gives them:

- readable help: flags show no ``<bool>`` type, value options show their metavar (``N``, ``DIR``, ``FILE`` ...; a
  value option without one gets a readable default from its type), the usage line names arguments in capitals;
- deprecated spellings: ``@app.command(..., deprecated={"--frames": "--num-frames"})`` keeps an old option name
  working for one release, rewriting it to the new one with a ``warning:`` line on stderr;
  ``deprecated_positional="--out"`` does the same for a value that used to be a positional argument.

tests/test_cli_grammar.py walks the whole typer app and checks every verb against these rules and docs/cli.md.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

# typer vendors its own click: annotations name its Context and Parameter through typer, never `import click`.
Context = typer.Context

REMOVED_IN = "0.3"

# Readable metavars for value options that declare none, by the parameter's type.
_TYPE_METAVARS = {"int": "N", "float": "X", "Path": "PATH", "str": "TEXT", "bool": "BOOL"}


def deprecation_line(old: str, new: str) -> str:
    """The one wording of every deprecation warning."""
    return f"warning: {old} is deprecated and will be removed in {REMOVED_IN}; use {new}."


def _readable(params: list) -> list:
    for p in params:
        if isinstance(p, TyperOption):
            if p.is_flag or p.count:
                if p.metavar is None:
                    p.metavar = ""  # no "<bool>" column for a switch
            elif p.metavar is None:
                kind = p.bare_type().removeprefix("list[").rstrip("]")
                p.metavar = _TYPE_METAVARS.get(kind, kind.upper())
    return params


def _usage(cmd: TyperCommand, ctx: Context) -> List[str]:
    params = cmd.get_params(ctx)
    pieces = ["[OPTIONS]"] if any(isinstance(p, TyperOption) for p in params) else []
    for p in params:
        if isinstance(p, TyperArgument) and not p.hidden:
            name = p.metavar or (p.name or "ARG").upper()
            pieces.append(name if p.required else f"[{name}]")
    return pieces


def _takes_value(cmd: TyperCommand, ctx: Context, token: str) -> bool:
    """Whether option ``token`` (without "=value") consumes the next token as its value."""
    for p in cmd.get_params(ctx):
        if isinstance(p, TyperOption) and token in (*p.opts, *p.secondary_opts):
            return not (p.is_flag or p.count)
    return False


def rewrite_deprecated(cmd: TyperCommand, ctx: Context, args: List[str], deprecated: Dict[str, str],
                       positional: Optional[str] = None) -> List[str]:
    """``args`` with deprecated option names replaced by their new names (a warning line each), and, when
    ``positional`` names an option, a lone positional value turned into that option."""
    out: List[str] = []
    i, positional_seen = 0, False
    while i < len(args):
        tok = args[i]
        if tok == "--":
            out += args[i:]
            break
        name, eq, value = tok.partition("=")
        if tok.startswith("--") and name in deprecated:
            new = deprecated[name]
            typer.echo(deprecation_line(name, new), err=True)
            tok = f"{new}{eq}{value}"
            name = new
        if tok.startswith("-") and len(tok) > 1:
            out.append(tok)
            if not eq and _takes_value(cmd, ctx, name) and i + 1 < len(args):
                out.append(args[i + 1])
                i += 1
        elif positional and not positional_seen:
            typer.echo(deprecation_line(f"the positional {positional.lstrip('-').upper()} argument",
                                        f"{positional} {tok}"), err=True)
            out += [positional, tok]
            positional_seen = True
        else:
            out.append(tok)
        i += 1
    return out


class Command(TyperCommand):
    """A typer command with readable help and deprecated spellings (see the module docstring)."""

    deprecated_options: Dict[str, str] = {}  # (click's own `deprecated` marks a whole command)
    deprecated_positional: Optional[str] = None

    def get_params(self, ctx: Context) -> list:
        return _readable(super().get_params(ctx))

    def collect_usage_pieces(self, ctx: Context) -> List[str]:
        return _usage(self, ctx)

    def parse_args(self, ctx: Context, args: List[str]) -> List[str]:
        if self.deprecated_options or self.deprecated_positional:
            args = rewrite_deprecated(self, ctx, list(args), self.deprecated_options, self.deprecated_positional)
        return super().parse_args(ctx, args)


class Group(TyperGroup):
    """A typer group with readable help; its own options (a callback's) follow the same rules as a command's."""

    deprecated_options: Dict[str, str] = {}  # (click's own `deprecated` marks a whole command)
    deprecated_positional: Optional[str] = None

    def get_params(self, ctx: Context) -> list:
        return _readable(super().get_params(ctx))


def _command_class(base: type, deprecated: Optional[Dict[str, str]], positional: Optional[str]) -> type:
    if not deprecated and not positional:
        return base
    return type(base.__name__, (base,), {"deprecated_options": dict(deprecated or {}),
                                        "deprecated_positional": positional})


class App(typer.Typer):
    """`typer.Typer` whose commands and groups follow the grammar; ``command``/``callback`` also take
    ``deprecated={OLD: NEW}`` and ``deprecated_positional=OPTION``."""

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("cls", Group)
        kwargs.setdefault("add_completion", False)
        super().__init__(**kwargs)

    def command(self, *args, deprecated: Optional[Dict[str, str]] = None, deprecated_positional: Optional[str] = None,
                **kwargs):
        kwargs.setdefault("cls", _command_class(Command, deprecated, deprecated_positional))
        return super().command(*args, **kwargs)

    def callback(self, *args, **kwargs):
        kwargs.setdefault("cls", Group)
        return super().callback(*args, **kwargs)


# ------------------------------------------------------------------ shipped configs by name
def resolve_config(value: "str | Path | None", folder: Path, what: str) -> Optional[Path]:
    """A config given as a path, or by the name of a file shipped in ``folder`` (``p4d_code_lora`` or
    ``p4d_code_lora.yaml``). Raises `ConfigError` naming the shipped configs when it is neither."""
    from .errors import ConfigError

    if value is None:
        return None
    path = Path(value)
    if path.is_file():
        return path
    shipped = sorted(p.stem for p in folder.glob("*.yaml"))
    stem = path.name[:-5] if path.name.endswith(".yaml") else path.name
    if stem in shipped and (path.parent == Path(".") or path.parent.name == folder.name):
        return folder / f"{stem}.yaml"
    raise ConfigError(f"{what} config {str(value)!r} is neither a file nor a shipped config; give a YAML path or "
                      f"one of: {', '.join(shipped) or '(none shipped)'}.")
