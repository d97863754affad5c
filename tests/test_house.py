"""House rules that keep the code base tidy: file size, one direction for loading, one bench harness."""
from __future__ import annotations

import ast
import subprocess
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 600


def _tracked(suffix: str):
    out = subprocess.run(["git", "ls-files", f"*{suffix}"], cwd=str(ROOT), capture_output=True, text=True)
    files = out.stdout.split() if out.returncode == 0 else [str(p.relative_to(ROOT)) for p in ROOT.rglob(f"*{suffix}")]
    return [ROOT / f for f in files if "fixtures" not in f and (ROOT / f).is_file()]


def test_no_python_file_over_600_lines():
    long = {str(p.relative_to(ROOT)): n for p in _tracked(".py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"split these (at most {MAX_LINES} lines a file): {long}"


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            yield ("." * node.level) + (node.module or ""), [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, []


def test_types_does_not_import_media():
    for module, names in _imports(ROOT / "rgpt4d_sdk" / "types.py"):
        assert "media" not in module.split(".") and "media" not in names, module


def test_clip_readers_are_registered_by_media():
    code = ("import rgpt4d_sdk.types as t, sys; assert 'rgpt4d_sdk.media' in sys.modules; "
            "assert set(t._READERS) == {'video', 'image_folder'}")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def test_the_conversation_writer_has_its_own_name():
    from rgpt4d_sdk import conversations

    assert callable(conversations.export_conversations)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sys.modules.pop("rgpt4d_sdk.export", None)
        from rgpt4d_sdk import export  # the deprecated name, kept until 0.3

    assert export.export_conversations is conversations.export_conversations
    assert any("rgpt4d_sdk.conversations" in str(w.message) for w in caught)


def test_bench_scripts_share_the_harness():
    for script in sorted((ROOT / "bench").glob("*.py")):
        if script.name.startswith("_"):
            continue
        imported = {name for module, names in _imports(script) if module == "_common" for name in names}
        text = script.read_text(encoding="utf-8")
        if "write_json(" in text or "finish(" in text:
            assert imported & {"finish", "write_json"}, script.name
        assert "argparse.ArgumentParser(" not in text, f"{script.name}: start from _common.bench_parser"
