"""Refresh the result tables that README.md and docs/ quote from committed benchmark files.

Each quoted block sits between ``<!-- quoted: NAME ... -->`` and ``<!-- end quoted: NAME -->`` and is written from
its results file only (or, for a computed table such as ``jetson_plan``, from the code that computes it), so a re-run
benchmark or a changed planner needs one command, not hand edits in several pages:

    python docs/hooks/quoted_results.py           # rewrite the blocks in README.md and docs/*.md
    python docs/hooks/quoted_results.py --check   # exit 1 if a block differs from its file

The tests check the same text independently (tests/test_demo_train.py, tests/test_live_latency.py,
tests/test_docs_numbers.py with docs/numbers.yaml); prose around the blocks that interprets the numbers is for the
person who re-ran the benchmark to re-read.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _load(rel: str) -> dict:
    return json.loads((ROOT / rel).read_text(encoding="utf-8"))


def _wrap(text: str) -> list:
    return textwrap.wrap(text, 118, break_on_hyphens=False, break_long_words=False)


def demo_train() -> str:
    """Parse rates, families above the best constant and the multiple-choice table of the committed demo run."""
    sys.path.insert(0, str(ROOT))
    from rgpt4d_sdk.demo_train.report import readme_summary, readme_table

    results = _load("bench/results/demo_train-cpu-tiny.json")
    return "\n".join([*_wrap(readme_summary(results)), "", *readme_table(results)])


def ros_latency() -> str:
    """The live-latency table (goals answered, p50, p95, first and later questions' p50) and the ratio sentence."""
    data = _load("bench/results/ros_latency-cpu-tiny.json")
    lines = ["| configuration | goals | p50 ms | p95 ms | 1st question p50 ms | 2nd/3rd p50 ms |",
             "|---|---|---|---|---|---|"]
    for name, s in data["summary"].items():
        lines.append(f"| `{name}` | {s['ok']} | {s['p50_ms']:.0f} | {s['p95_ms']:.0f} | "
                     f"{s['first_question_p50_ms']:.0f} | {s['later_questions_p50_ms']:.0f} |")
    r, a = data["ratios"], data["answers"]
    lines += ["", *_wrap(f"Both on: {r['p50_off_over_both']:.2f}x lower p50 and {r['p95_off_over_both']:.2f}x lower p95 "
                  f"than both off; answers compared on {a['compared']} (frames, question) pairs asked in several "
                  f"configurations: {a['mismatches']} differ.")]
    return "\n".join(lines)


def jetson_plan() -> str:
    """The Jetson profile of docs/compiled.md: the memory planner's rows for the 8B model (no results file: the
    figures are computed from the architecture and the device table, not measured)."""
    sys.path.insert(0, str(ROOT))
    from rgpt4d_sdk.plan_table import jetson_markdown

    return jetson_markdown()


def quantize() -> str:
    """fp32 / fp16 / int8 / int4 side by side: sizes, CPU speed and the gate (bench/quantize.py)."""
    data = _load("bench/results/quantize-cpu-tiny.json")
    lines = ["| variant | LLM weights kB | of fp16 | all files kB | decode tok/s | first token ms | logits rel. err. | "
             "same answers | int4 weights rel. err. | gate |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, v in data["variants"].items():
        m = v["gate"]["metrics"]
        w = f"{m['weights_rel']:.3f}" if "weights_rel" in m else "-"
        verdict = "passed" if v["gate"]["passed"] else "FAILED (" + ", ".join(v["gate"]["failed"]) + ")"
        lines.append(f"| {name} | {v['llm_weight_bytes'] / 1e3:.1f} | {v['llm_weight_bytes_vs_fp16']:.3f} | "
                     f"{v['files_bytes'] / 1e3:.0f} | {v['decode_tok_s']['median']:.0f} | "
                     f"{v['ttft_ms']['median']:.1f} | {m['logits_rel']:.3f} | {m['answers'] * 100:.1f} % | {w} | "
                     f"{verdict} |")
    fams = []
    for name in ("int4-rtn", "int4-awq"):
        if name in data["variants"]:
            f = data["variants"][name]["gate"]["metrics"]["answers_by_family"]
            fams.append(f"{name}: " + ", ".join(f"{k} {v * 100:.1f} %" for k, v in f.items()))
    cfg = data["config"]
    lines += ["", *_wrap(f"Identical answers per family ({cfg['gate_queries']} gate queries): " + "; ".join(fams)
                         + f". Requested block {cfg['block_size_requested']}; the tiny model's axes take 32.")]
    return "\n".join(lines)


BLOCKS = {"demo_train": demo_train, "ros_latency": ros_latency, "jetson_plan": jetson_plan, "quantize": quantize}
PATTERN = re.compile(r"(<!-- quoted: (\w+)[^\n]*-->\n)(.*?)(<!-- end quoted: \2 -->)", flags=re.S)


def refresh(text: str) -> str:
    """``text`` with every quoted block rewritten from its results file."""
    return PATTERN.sub(lambda m: m.group(1) + BLOCKS[m.group(2)]() + "\n" + m.group(4), text)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="only report blocks that differ; exit 1 if any")
    args = p.parse_args(argv)
    stale = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        text = page.read_text(encoding="utf-8")
        new = refresh(text)
        if new != text:
            stale.append(str(page.relative_to(ROOT)))
            if not args.check:
                page.write_text(new, encoding="utf-8")
    print(("stale: " if args.check else "rewritten: ") + (", ".join(stale) or "none"))
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
