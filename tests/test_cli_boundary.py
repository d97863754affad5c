"""The one error boundary of the command line (issue 16): every verb runs inside it, so a typed error is one
``error:`` line with exit code 2, any other exception (a bug) one line naming it and how to see the traceback with
exit code 1, and no verb prints a traceback unless asked to (``--debug`` or RGPT4D_DEBUG=1)."""
from __future__ import annotations

import subprocess
import sys
from typing import List

import pytest

from rgpt4d_sdk.cli import app


def _leaf_calls():
    """One command per sub-app, with the arguments its parser needs (the callback itself is replaced)."""
    return {
        "query": ["query", "--model", "m", "--question", "q"], "demo": ["demo"], "analyze": ["analyze"],
        "analyze nuscenes": ["analyze", "nuscenes"], "analyze merge": ["analyze", "merge", "--out", "x"],
        "analyze rosbag": ["analyze", "rosbag"], "checkpoint make-tiny": ["checkpoint", "make-tiny", "--out", "x"],
        "checkpoint inspect": ["checkpoint", "inspect", "x"],
        "export tensorrt": ["export", "tensorrt", "--onnx", "o", "--out", "e"], "ros serve": ["ros", "serve"],
        "ros build-interfaces": ["ros", "build-interfaces"],
        "eval r4d-bench": ["eval", "r4d-bench", "--data", "d", "--model", "m"],
        "eval robofac": ["eval", "robofac", "--data", "d", "--model", "m"],
        "data export-conversations": ["data", "export-conversations", "--source", "robofac", "--data", "d", "--out",
                                      "o.json"],
        "export onnx": ["export", "onnx", "--model", "m", "--out", "o"],
        "export verify": ["export", "verify", "--model", "m"],
        "train": ["train"], "train export": ["train", "export", "r", "--out", "o"],
        "doctor": ["doctor"], "plan": ["plan"], "demo train": ["demo", "train"],
        "data sample-log": ["data", "sample-log", "--out", "o"],
    }


def _find(cmd, path: List[str]):
    for part in path:
        cmd = cmd.commands[part]
    return cmd


def test_the_boundary_test_covers_every_verb():
    """A new verb must be added to `_leaf_calls`, so that it is checked to run inside the boundary too."""
    import typer

    def walk(cmd, path):
        subs = getattr(cmd, "commands", None)
        if not subs:
            return [" ".join(path)]
        own = [" ".join(path)] if getattr(cmd, "invoke_without_command", False) and path else []
        return own + [v for name, sub in subs.items() for v in walk(sub, path + [name])]

    assert set(walk(typer.main.get_command(app), [])) == set(_leaf_calls())


@pytest.mark.parametrize("verb", sorted(_leaf_calls()))
@pytest.mark.parametrize("kind", ["bug", "typed"])
def test_every_verb_runs_inside_the_boundary(verb, kind, capsys, monkeypatch):
    """A bug (any exception) in any verb: one line naming it and how to get the traceback, exit 1; a typed error
    that a verb lets through: one 'error:' line, exit 2. No traceback either way."""
    import typer

    from rgpt4d_sdk.errors import DatasetError

    monkeypatch.delenv("RGPT4D_DEBUG", raising=False)
    cli = typer.main.get_command(app)
    leaf = _find(cli, verb.split())

    def boom(*a, **k):
        if kind == "bug":
            raise ZeroDivisionError("integer modulo by zero")
        raise DatasetError("table scene.json is broken")

    monkeypatch.setattr(leaf, "callback", boom)
    if hasattr(leaf, "invoke_without_command"):
        monkeypatch.setattr(leaf, "invoke_without_command", True)
    with pytest.raises(SystemExit) as exc:
        cli.main(args=_leaf_calls()[verb], prog_name="rgpt4d-sdk")
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    if kind == "bug":
        assert exc.value.code == 1
        assert "ZeroDivisionError: integer modulo by zero" in lines[0]
        assert "--debug" in lines[0] and "RGPT4D_DEBUG=1" in lines[0]
    else:
        assert exc.value.code == 2 and lines[0] == "error: table scene.json is broken"


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_shows_the_traceback(how, monkeypatch):
    import typer

    cli = typer.main.get_command(app)
    leaf = _find(cli, ["checkpoint", "inspect"])
    monkeypatch.setattr(leaf, "callback", lambda *a, **k: 1 // 0)
    args = ["checkpoint", "inspect", "x"]
    if how == "flag":
        args = ["--debug", *args]
    else:
        monkeypatch.setenv("RGPT4D_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        cli.main(args=args, prog_name="rgpt4d-sdk")


def test_real_process_prints_one_line_and_no_traceback(tmp_path):
    """The installed entry point, as a user runs it: a bug injected into a verb and a typed error."""
    code = ("import sys, rgpt4d_sdk.model.tiny as t\n"
            "t.inspect_checkpoint = lambda *a, **k: 1 // 0\n"
            "from rgpt4d_sdk.cli import main\nmain(sys.argv[1:])\n")
    bug = subprocess.run([sys.executable, "-c", code, "checkpoint", "inspect", "x"], capture_output=True, text=True,
                         timeout=120)
    assert bug.returncode == 1 and "Traceback" not in bug.stderr, bug.stderr
    assert bug.stderr.strip().count("\n") == 0 and "ZeroDivisionError" in bug.stderr
    debug = subprocess.run([sys.executable, "-c", code, "--debug", "checkpoint", "inspect", "x"],
                           capture_output=True, text=True, timeout=120)
    assert debug.returncode == 1 and "Traceback" in debug.stderr
    bad = tmp_path / "t.yaml"
    bad.write_text("model: m\ndata: {train: c.json}\noptim: {lr: fast}\n")
    typed = subprocess.run([sys.executable, "-m", "rgpt4d_sdk.cli", "train", "--config", str(bad)],
                           capture_output=True, text=True, timeout=120)
    assert typed.returncode == 2 and "Traceback" not in typed.stderr
    assert typed.stderr.strip() == f"error: config file {bad}: optim.lr = 'fast' is invalid: it must be a number " \
                                   "in (0, 1]."
