"""One CLI grammar (docs/cli.md): every verb of the typer app, including verbs added later, is checked here."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rgpt4d_sdk import __version__
from rgpt4d_sdk.cli import app
from rgpt4d_sdk.cli_grammar import Command, Group, deprecation_line, resolve_config
from rgpt4d_sdk.cli_reference import grammar_rows, reference_markdown, table_in, verbs
from rgpt4d_sdk.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
VERBS = verbs(app)
IDS = [v.path or "root" for v in VERBS]
# Positional arguments are only for the thing a verb acts on.
ALLOWED_ARGUMENTS = {"CHECKPOINT", "BAG", "RUN_DIR"}
METAVAR = re.compile(r"^[A-Z][A-Z0-9_/=:.]*$")


def test_docs_table_lists_every_verb_as_the_app_has_it():
    documented = table_in((ROOT / "docs" / "cli.md").read_text(encoding="utf-8"))
    assert documented == grammar_rows(app), (
        "docs/cli.md's grammar table differs from the app; run `python -m rgpt4d_sdk.cli_reference --write "
        "docs/cli.md` and review the diff")


def test_the_walk_finds_the_verbs():
    paths = {v.path for v in VERBS}
    assert {"query", "analyze nuscenes", "analyze rosbag", "eval r4d-bench", "data export-conversations",
            "export onnx", "train", "train export", "ros serve", "checkpoint make-tiny"} <= paths


@pytest.mark.parametrize("verb", VERBS, ids=IDS)
def test_verb_follows_the_grammar(verb):
    assert isinstance(verb.command, (Command, Group)), f"{verb.path}: build it with rgpt4d_sdk.cli_grammar.App"
    names = {o.name: o for o in verb.options}
    for o in verb.options:
        long = max(o.opts, key=len)
        if not (o.is_flag or o.count):
            assert o.metavar and METAVAR.match(o.metavar), f"{verb.path} {long}: metavar {o.metavar!r}"
        if o.multiple:
            assert not long.endswith("s") or long in ("--regions",), f"{verb.path} {long}: repeatable is singular"
        assert long not in ("--frames", "--max-frames", "--scenes", "--cameras", "--dataroot", "--output",
                            "--out-dir", "--output-dir"), f"{verb.path}: {long} is not in the grammar"
        if "frames" in long and o.bare_type() == "int" and not long.startswith("--buffer"):
            assert long == "--num-frames", f"{verb.path}: frame counts are --num-frames, not {long}"
    for key in ("device", "dtype"):
        if key in names:
            assert names[key].default in ("auto", None), f"{verb.path} --{key} defaults to {names[key].default!r}"
    for a in verb.arguments:
        assert (a.metavar or "") in ALLOWED_ARGUMENTS, f"{verb.path}: positional {a.metavar or a.name}"
    for old, new in verb.deprecated.items():
        assert any(new in o.opts for o in verb.options), f"{verb.path}: {old} -> {new}, which does not exist"
        assert not any(old in o.opts for o in verb.options), f"{verb.path}: {old} is both old and current"
    if verb.deprecated_positional:
        assert any(verb.deprecated_positional in o.opts for o in verb.options)


def test_same_option_names_across_the_batch_verbs():
    by_path = {v.path: {max(o.opts, key=len) for o in v.options} for v in VERBS}
    for path in ("analyze nuscenes", "analyze rosbag", "eval r4d-bench", "eval robofac", "export onnx"):
        assert {"--model", "--out"} <= by_path[path], path
    for path in ("analyze nuscenes", "eval r4d-bench", "eval robofac", "data export-conversations"):
        assert "--data" in by_path[path] and "--num-frames" in by_path[path], path
    for path in ("analyze nuscenes", "analyze rosbag", "eval r4d-bench", "eval robofac", "export onnx", "query",
                 "ros serve"):
        assert {"--device", "--dtype"} <= by_path[path], path


def test_help_is_readable():
    runner = CliRunner()
    for argv in (["--help"], ["analyze", "nuscenes", "--help"], ["checkpoint", "make-tiny", "--help"],
                 ["train", "--help"]):
        res = runner.invoke(app, argv, env={"COLUMNS": "160"})
        assert res.exit_code == 0, res.output
        assert "<bool>" not in res.output and "<list[" not in res.output and "{" not in res.output, res.output


def test_version():
    res = CliRunner().invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"rgpt4d-sdk {__version__}"


def _cli(*args: str):
    """A verb that does real work runs in its own process: libraries it loads (transformers' logging) would keep a
    handle on CliRunner's temporary stderr and break later tests."""
    return subprocess.run([sys.executable, "-m", "rgpt4d_sdk.cli", *args], capture_output=True, text=True, timeout=300)


def test_old_spellings_work_with_a_deprecation_line(tmp_path):
    res = _cli("checkpoint", "make-tiny", str(tmp_path / "a"), "--shards", "1")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "a" / "config.json").is_file()
    assert deprecation_line("the positional OUT argument", f"--out {tmp_path / 'a'}") in res.stderr
    # A renamed option reaches the new parameter: --data's value shows in the error about the data.
    res = _cli("analyze", "nuscenes", "--dataroot", str(tmp_path / "none"), "--version=v9", "--scenes", "s1",
               "--cameras", "CAM_FRONT")
    assert res.returncode == 2
    for old, new in (("--dataroot", "--data"), ("--version", "--nuscenes-version"), ("--scenes", "--scene"),
                     ("--cameras", "--camera")):
        assert deprecation_line(old, new) in res.stderr
    assert str(tmp_path / "none") in res.stderr and "does not exist" in res.stderr


def test_new_spellings_give_no_warning(tmp_path):
    res = _cli("checkpoint", "make-tiny", "--out", str(tmp_path / "b"), "--shards", "1")
    assert res.returncode == 0 and "will be removed" not in res.stderr


def test_shipped_configs_by_name_or_path(tmp_path, monkeypatch):
    folder = ROOT / "training" / "configs"
    monkeypatch.chdir(tmp_path)  # not the repository root
    assert resolve_config("p4d_code_lora", folder, "training") == folder / "p4d_code_lora.yaml"
    assert resolve_config("p4d_code_lora.yaml", folder, "training") == folder / "p4d_code_lora.yaml"
    assert resolve_config("training/configs/p4d_paper.yaml", folder, "training") == folder / "p4d_paper.yaml"
    mine = tmp_path / "mine.yaml"
    mine.write_text("{}")
    assert resolve_config(str(mine), folder, "training") == mine
    with pytest.raises(ConfigError, match="p4d_code_lora, p4d_paper"):
        resolve_config("p4d_nope", folder, "training")


def test_reference_page_covers_every_verb():
    text = reference_markdown(app)
    for v in VERBS:
        assert f"## `rgpt4d-sdk {v.path}`".replace(" `", " `") in text or v.path == ""
        for o in v.options:
            assert max(o.opts, key=len) in text


def test_ros_serve_without_a_camera_names_the_option():
    res = _cli("ros", "serve", "--model", "/m")
    assert res.returncode == 2 and "--camera NAME=IMAGE_TOPIC" in res.stderr and ":=" not in res.stderr
