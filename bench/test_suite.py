"""Wall time of the whole test suite (`python -m pytest -q`), the figure the README quotes.

    python bench/test_suite.py            # runs the full suite (minutes), writes bench/results/test_suite-cpu.json

Records the pass/fail/skip counts from pytest's summary line with the machine, versions and commit.
"""
from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional

from _common import REPO_ROOT, bench_parser, ensure_importable, finish, format_table

ensure_importable()


def main(argv: Optional[List[str]] = None) -> int:
    p = bench_parser(__doc__, threads=False)
    p.add_argument("--log", type=Path, default=None, help="also write pytest's output to this file")
    p.add_argument("pytest_args", nargs="*", help="extra pytest arguments (default: none, the whole suite)")
    args = p.parse_args(argv)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", *args.pytest_args], cwd=str(REPO_ROOT),
                          capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if args.log is not None:
        args.log.write_text(proc.stdout + proc.stderr, encoding="utf-8")
    summary = (proc.stdout.strip().splitlines() or [""])[-1]
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", summary)}
    result = {"benchmark": "test_suite", "command": "python -m pytest -q " + " ".join(args.pytest_args),
              "wall_s": wall, "wall_min": wall / 60, "returncode": proc.returncode, "summary": summary,
              "counts": counts}
    table = format_table(["suite", "wall min", "passed", "failed", "skipped"],
                         [["pytest", wall / 60, counts.get("passed"), counts.get("failed"), counts.get("skipped")]])
    finish(result, table, "test_suite", "cpu", out=args.out)
    return proc.returncode


if __name__ == "__main__":
    raise SystemExit(main())
