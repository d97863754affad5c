"""The README's CLI and Python examples run as written (with /tmp/rgpt4d-example moved into a temp folder)."""
from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
EXAMPLE_ROOT = "/tmp/rgpt4d-example"


def blocks(lang: str):
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_has_the_two_setup_commands():
    bash = blocks("bash")
    assert any(b.strip().startswith("pip install torch==2.13.0") and b.strip().endswith("rgpt4d-sdk analyze") for b in bash)
    assert any(b.strip() == "python -m pytest -q" for b in bash)
    ci = (README.parent / ".ci" / "run").read_text()
    assert "\npython -m pytest -q\n" in ci


def test_readme_examples_run(tmp_path):
    cli_lines = [ln for b in blocks("bash") for ln in b.splitlines() if ln.startswith("rgpt4d-sdk ")]
    assert len(cli_lines) >= 4
    outputs = []
    for line in cli_lines:
        argv = shlex.split(line.replace(EXAMPLE_ROOT, str(tmp_path)))
        proc = subprocess.run([sys.executable, "-m", "rgpt4d_sdk.cli", *argv[1:]], capture_output=True, text=True)
        assert proc.returncode == 0, f"{line}\n{proc.stderr[-2000:]}"
        outputs.append(proc.stdout)
    assert "untrained demo model" in outputs[2]
    answer = json.loads(outputs[3])
    assert answer["generated_tokens"] > 0 and len(answer["timestamps_s"]) == 16

    (code,) = blocks("python")
    code = code.replace(EXAMPLE_ROOT, str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "preprocess" in proc.stdout
