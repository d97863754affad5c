"""report.md of a `rgpt4d-sdk demo train` run: what the model is, and per family its held-out scores next to the
baselines, with 95 % intervals."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

NOTICE = ("This is a tiny model (about 0.4 M parameters, the NVILA / 4D-RGPT checkpoint layout) trained for a few "
          "minutes on synthetic street scenes: it is not 4D-RGPT, and its scores say that the SDK's fine-tuning "
          "chain works, not how well any real model answers.")


def _pct(x: Optional[float]) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _score(m: Mapping[str, Any]) -> str:
    lo, hi = m["interval"]
    return f"{_pct(m['score'])} [{_pct(lo)}, {_pct(hi)}]"


def family_lines(families: Mapping[str, Any], models: Sequence[str]) -> list:
    """Markdown table rows: one per family/format."""
    head = ["family", "format", "n (clips)", *[f"{m} (95 % CI)" for m in models], "always A",
            "top training letter", "training median", "best constant", "parsed (fine-tuned)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key in sorted(families, key=lambda k: (families[k]["format"], k)):
        e = families[key]
        b = e["baselines"]
        best = e["best_constant"]
        letter = e.get("training_letter")
        cells = [e["family"], e["format"], f"{e['n']} ({e['clips']})", *[_score(e["models"][m]) for m in models],
                 _pct(b.get("always_A")),
                 "-" if "most_frequent_training_letter" not in b else f"{_pct(b['most_frequent_training_letter'])} "
                                                                         f"({letter})",
                 _pct(b.get("training_median")), f"{_pct(best['score'])}",
                 " / ".join(_pct(e["models"][m]["parse_rate"]) for m in models[1:])]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def ablation_lines(families: Mapping[str, Any]) -> list:
    """P4D ablation: per family, SFT + P4D minus SFT (same data, steps and seed), in points."""
    lines = ["## P4D ablation (SFT + P4D minus SFT, same data, steps and seed)", "",
             "| family | format | SFT | SFT + P4D | difference (points) | intervals overlap |",
             "|---|---|---|---|---|---|"]
    for key in sorted(families, key=lambda k: (families[k]["format"], k)):
        e = families[key]
        a, b = e["models"].get("sft"), e["models"].get("sft_p4d")
        if not a or not b or a["score"] is None or b["score"] is None:
            continue
        overlap = a["interval"][0] <= b["interval"][1] and b["interval"][0] <= a["interval"][1]
        lines.append(f"| {e['family']} | {e['format']} | {_pct(a['score'])} | {_pct(b['score'])} | "
                     f"{100 * (b['score'] - a['score']):+.1f} | {'yes' if overlap else 'no'} |")
    return lines


def write_report(path: Path, metrics: Mapping[str, Any], source: Optional[str] = None) -> Path:
    """Markdown: what the model is, the summary, the per-family table and the training losses."""
    models = list(metrics["models"])
    lines = ["# `rgpt4d-sdk demo train`: fine-tuning a tiny model on synthetic driving scenes", "", f"> {NOTICE}", ""]
    if source:
        lines += [f"Numbers from `{source}` (written by `python bench/demo_train.py`).", ""]
    lines += [f"Size `{metrics['size']}`, seed {metrics['seed']}: {len(metrics['scenes']['train'])} training scenes, "
              f"{len(metrics['scenes']['heldout'])} held-out scenes (disjoint seeds), "
              f"{metrics['demo']['steps']} optimizer steps of {metrics['demo']['global_batch']} questions.", "",
              "Models: " + "; ".join(f"`{m}` = {metrics['models'][m]['title']}" for m in models) + ".", "",
              "## Summary", "", "| model | replies parsed | mc replies read by letter / option text / none | mc "
              "families above the best constant (point / whole interval) |", "|---|---|---|---|"]
    for m in models:
        s = metrics["summary"][m]
        how = s.get("mc_matched_by") or {}
        lines.append(f"| {m} | {_pct(s['parse_rate'])} % | {how.get('letter', '-')} / {how.get('option_text', '-')} / "
                     f"{how.get('none', '-')} | {s['mc_families_above_best_constant']} / "
                     f"{s['mc_families_interval_above_best_constant']} of {s['mc_families']} |")
    lines += ["", "## Per family (held-out; accuracy % for mc, MRA % for numeric)", "",
              *family_lines(metrics["families"], models), "",
              "Intervals: 95 % percentile bootstrap over held-out clips. Constant baselines: always A; the letter most "
              "often correct for the family in the training conversations; for numeric questions the median of the "
              "family's training answers. Parse rate: replies that read as a valid option or a number. Multiple choice is "
              "scored strictly (docs/scoring.md): the official R4D-Bench letter rule, else the whole reply equal to one "
              "option's text; anything else picks nothing and is wrong.", "",
              *ablation_lines(metrics["families"]), "", "## Training", ""]
    for name, t in metrics["training"].items():
        lines.append(f"- `{name}`: {t['steps']} steps in {t['seconds']} s; loss {t['first'].get('loss', 0):.3f} -> "
                     f"{t['last'].get('loss', 0):.3f} (SFT term {t['first'].get('sft', 0):.3f} -> "
                     f"{t['last'].get('sft', 0):.3f})")
    timings = metrics.get("timings") or {}
    if timings:
        lines += ["", "## Time", "", "| step(s) | wall s | CPU s (all child processes) |", "|---|---|---|"]
        lines += [f"| {k} | {v['wall_s']} | {'-' if v.get('cpu_s') is None else v['cpu_s']} |"
                  for k, v in timings.items()]
        cpu = [v["cpu_s"] for v in timings.values() if v.get("cpu_s") is not None]
        total_cpu = f"{sum(cpu):.1f}" if len(cpu) == len(timings) else "-"
        gnu = metrics.get("gnu_time")
        if gnu:
            total_cpu = f"{gnu['cpu_s']} (`/usr/bin/time`; peak memory {gnu['max_rss_mb']} MB)"
        lines.append(f"| total | {sum(v['wall_s'] for v in timings.values()):.1f} | {total_cpu} |")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def readme_table(results: Mapping[str, Any]) -> list:
    """The README's table of the committed demo run (bench/results/demo_train-cpu-tiny.json): multiple-choice
    families, accuracy % with 95 % intervals; a test checks that the README quotes exactly these lines."""
    lines = ["| family (mc) | n | untrained | SFT | SFT + P4D | best constant |", "|---|---|---|---|---|---|"]
    for key in sorted(k for k, e in results["families"].items() if e["format"] == "mc"):
        e = results["families"][key]
        m, best = e["models"], e["best_constant"]
        name = {"always_A": "always A", "most_frequent_training_letter": f"always {e.get('training_letter')}"}.get(
            best["name"], best["name"])
        lines.append(f"| {e['family']} | {e['n']} | {_pct(m['base']['score'])} | {_score(m['sft'])} | "
                     f"{_score(m['sft_p4d'])} | {_pct(best['score'])} ({name}) |")
    return lines


def readme_summary(results: Mapping[str, Any]) -> str:
    """The README's sentence on parse rates and families above the best constant, from the same file."""
    s = results["summary"]
    return (f"Held-out replies that parse as an option or a number: untrained {_pct(s['base']['parse_rate'])} %, "
            f"SFT {_pct(s['sft']['parse_rate'])} %, SFT + P4D {_pct(s['sft_p4d']['parse_rate'])} %. Multiple-choice "
            f"families above the best constant baseline: SFT {s['sft']['mc_families_above_best_constant']} of "
            f"{s['sft']['mc_families']} ({s['sft']['mc_families_interval_above_best_constant']} with the whole "
            f"interval above it), SFT + P4D {s['sft_p4d']['mc_families_above_best_constant']} of "
            f"{s['sft_p4d']['mc_families']} ({s['sft_p4d']['mc_families_interval_above_best_constant']}).")
