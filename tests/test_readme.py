"""The README's set-up blocks are the ones CI runs, and its CLI and Python examples run as written (with
/tmp/rgpt4d-example moved into a temp folder)."""
from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
CI = README.parent / ".ci" / "run"
EXAMPLE_ROOT = "/tmp/rgpt4d-example"
BLOCK_1 = ('pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu && pip install -e ".[nuscenes]" '
           "&& rgpt4d-sdk analyze")
BLOCK_2 = 'pip install -e ".[test]" && rgpt4d-sdk ros build-interfaces && python -m pytest -q'


def blocks(lang: str):
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_has_the_two_setup_blocks_and_ci_runs_the_second_as_written():
    bash = [b.strip() for b in blocks("bash")]
    assert bash[0] == BLOCK_1 and bash[1] == BLOCK_2
    ci_lines = [ln.strip() for ln in CI.read_text().splitlines()]
    assert BLOCK_2 in ci_lines and ci_lines[-1] == BLOCK_2
    # CI installs the same torch pin as block 1 (from its PyPI mirror: the only index it reaches).
    assert "python -m pip install -q torch==2.13.0" in ci_lines
    assert "apt-get install -y -qq chromium chromium-driver" in CI.read_text()


def test_readme_says_how_to_choose_the_torch_build():
    text = README.read_text(encoding="utf-8")
    assert "download.pytorch.org/whl/cpu" in text and "/whl/cu128" in text


def test_readme_examples_run(tmp_path):
    cli_lines = [ln for b in blocks("bash") for ln in b.splitlines() if ln.startswith("rgpt4d-sdk ")]
    assert len(cli_lines) >= 4
    outputs = []
    for line in cli_lines:
        argv = shlex.split(line.replace(EXAMPLE_ROOT, str(tmp_path)))
        proc = subprocess.run([sys.executable, "-m", "rgpt4d_sdk.cli", *argv[1:]], capture_output=True, text=True)
        assert proc.returncode == 0, f"{line}\n{proc.stderr[-2000:]}"
        assert "will be removed in 0.3" not in proc.stderr, f"{line} uses an old spelling:\n{proc.stderr[-500:]}"
        outputs.append(proc.stdout)
    assert "untrained demo model" in outputs[2]
    answer = json.loads(outputs[3])
    assert answer["generated_tokens"] > 0 and len(answer["timestamps_s"]) == 16

    (code,) = blocks("python")
    code = code.replace(EXAMPLE_ROOT, str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "preprocess" in proc.stdout
