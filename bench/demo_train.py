"""The fine-tuning demo's numbers: `rgpt4d-sdk demo train` (full size) on the CPU, written to bench/results/.

    python bench/demo_train.py --out runs/demo-train     # runs (or reuses) the demo in --out, then writes
                                                         # bench/results/demo_train-cpu-tiny.json

The demo is cached in --out: a finished run is reused as it is (its step timings come from --out/timings.json, written
when the steps ran). The JSON holds, per question family, the held-out scores of the untrained, SFT and SFT + P4D
models with 95 % intervals next to the constant baselines, the training losses, and wall/CPU time per step group
with the machine's load (the shared 2-core machine this was measured on was busy with other jobs: CPU seconds are
the comparable measure, wall seconds depend on the load).
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import List, Optional

from _common import RESULTS_DIR, bench_parser, ensure_importable, format_table, git_info, machine_info, versions, write_json

ensure_importable()


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    # --out is the demo's run folder, as in `rgpt4d-sdk demo train --out`; the results file is --json.
    p = bench_parser(__doc__, threads=False, conflict_handler="resolve")
    p.add_argument("--out", type=Path, default=Path("rgpt4d-demo-train"), help="the demo's folder (cached)")
    p.add_argument("--size", default="full", help="demo size (full or ci)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--gnu-time", type=Path, default=None,
                   help="output of `/usr/bin/time -v` around the run that did the work: its CPU seconds and peak "
                        "memory go into the JSON")
    p.add_argument("--docs", type=Path, default=None, help="also write the per-family tables as Markdown here "
                                                          "(docs/demo_train.md)")
    p.add_argument("--json", type=Path, default=None,
                   help="output JSON (default: bench/results/demo_train-cpu-tiny.json)")
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> dict:
    from rgpt4d_sdk.demo_train import run_demo_train

    args = parse_args(argv)
    t0 = time.perf_counter()
    metrics = run_demo_train(args.out, size=args.size, seed=args.seed, echo=print)
    timings = metrics.get("timings", {})
    rows = [[name, t["wall_s"], t.get("cpu_s")] for name, t in timings.items()]
    cpu = [t["cpu_s"] for t in timings.values() if t.get("cpu_s") is not None]
    rows.append(["total", round(sum(t["wall_s"] for t in timings.values()), 1),
                 round(sum(cpu), 1) if len(cpu) == len(timings) else None])
    print(format_table(["step(s)", "wall s", "cpu s"], rows))
    fam_rows = []
    for key, e in sorted(metrics["families"].items(), key=lambda kv: (kv[1]["format"], kv[0])):
        m = e["models"]
        fam_rows.append([key, e["n"], *[f"{100 * m[k]['score']:.1f} [{100 * m[k]['interval'][0]:.1f}, "
                                        f"{100 * m[k]['interval'][1]:.1f}]" for k in ("base", "sft", "sft_p4d")],
                         f"{100 * e['best_constant']['score']:.1f} ({e['best_constant']['name']})"])
    print(format_table(["family", "n", "untrained", "SFT", "SFT + P4D", "best constant"], fam_rows))
    result = {
        "benchmark": "demo_train",
        "what": metrics["what"],
        "command": f"rgpt4d-sdk demo train --size {args.size} --seed {args.seed}",
        "machine": machine_info("cpu"), "versions": versions(), "git": git_info(),
        "load_average_at_write": list(os.getloadavg()),
        "timings": timings,
        "gnu_time": _gnu_time(args.gnu_time) if args.gnu_time else None,
        "this_call_s": round(time.perf_counter() - t0, 1),
        **{k: metrics[k] for k in ("size", "seed", "demo", "scenes", "models", "summary", "families", "training")},
    }
    path = args.json or RESULTS_DIR / "demo_train-cpu-tiny.json"
    write_json(path, result)
    print(f"wrote {path}")
    if args.docs:
        from rgpt4d_sdk.demo_train.report import write_report

        write_report(args.docs, result, source=f"bench/results/{path.name}")
        print(f"wrote {args.docs}")
    return result


def _gnu_time(path: Path) -> dict:
    """CPU seconds (user + system, the process and its children), wall and peak RSS from `/usr/bin/time -v`."""
    fields = {}
    for line in path.read_text().splitlines():
        key, _, value = line.strip().rpartition(": ")
        fields[key] = value
    wall = [float(x) for x in fields.get("Elapsed (wall clock) time (h:mm:ss or m:ss)", "0").split(":")]
    return {"cpu_s": round(float(fields["User time (seconds)"]) + float(fields["System time (seconds)"]), 1),
            "wall_s": round(sum(v * 60 ** i for i, v in enumerate(reversed(wall))), 1),
            "cpu_percent": fields.get("Percent of CPU this job got"),
            "max_rss_mb": round(int(fields["Maximum resident set size (kbytes)"]) / 1024, 1)}


if __name__ == "__main__":
    main()
