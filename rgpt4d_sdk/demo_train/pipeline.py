"""`rgpt4d-sdk demo train`: the whole fine-tuning chain on a synthetic log, through the public verbs only.

    data sample-log -> data export-conversations (training scenes) -> checkpoint make-tiny (the base)
    -> train (SFT) and train (SFT + P4D, sensor teacher), same data, steps and seed -> train export (both)
    -> analyze nuscenes on the held-out scenes (base, SFT, SFT + P4D) -> baselines, metrics.json, report.md

Every step is the `rgpt4d-sdk` command a user would type, run as a child process (``python -m rgpt4d_sdk.cli``), so
the demo is also an integration test of the chain. Steps are cached in ``OUT``: a step whose command line is the one
recorded in ``OUT/steps.json`` after it last finished is skipped, as long as no earlier step ran again (then it runs
from a clean folder: its inputs may have changed); an interrupted training or analysis resumes from what it wrote.
Wall and CPU seconds of each step group go to ``OUT/timings.json``. Everything is seeded by ``seed``: the scene
seeds, the base weights, the data order and the question layouts, so a second run with the same arguments on the
same machine gives the same numbers.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

from ..errors import ConfigError, RGPT4DError
from ..fileio import write_json
from . import baselines as B
from .report import write_report

Echo = Callable[[str], None]
MODELS = ("base", "sft", "sft_p4d")
MODEL_TITLES = {"base": "untrained (random weights)", "sft": "fine-tuned, SFT", "sft_p4d": "fine-tuned, SFT + P4D"}


@dataclass(frozen=True)
class DemoSize:
    """How big a demo run is (the rest lives in the shipped training config, training/configs/demo_tiny.yaml)."""

    train_scenes: int
    heldout_scenes: int
    steps: int
    global_batch: int = 8
    width: int = 640
    num_frames: int = 16


SIZES: Dict[str, DemoSize] = {
    # the CI test: the chain end to end in a couple of minutes; too short to learn anything
    "ci": DemoSize(train_scenes=3, heldout_scenes=2, steps=4, global_batch=4),
    # the committed demo run (bench/results/demo_train-cpu-tiny.json, README)
    "full": DemoSize(train_scenes=60, heldout_scenes=40, steps=600),
}


class DemoError(RGPT4DError):
    """A step of the demo chain failed; the message names the command and its last output lines."""


def _cli(*args: str) -> List[str]:
    return [sys.executable, "-m", "rgpt4d_sdk.cli", *[str(a) for a in args]]


class _Steps:
    """Runs the chain's commands (up to ``jobs`` at once), records finished ones in OUT/steps.json, echoes progress."""

    def __init__(self, out: Path, echo: Echo, total: int, jobs: int = 1) -> None:
        self.out, self.echo, self.total, self.index, self.jobs = out, echo, total, 0, max(1, jobs)
        self.file = out / "steps.json"
        self.done: Dict[str, List[str]] = json.loads(self.file.read_text()) if self.file.is_file() else {}
        self.lock = threading.Lock()
        self.rerun = False  # once a step runs, every later step runs too: its inputs may have changed

    def run(self, name: str, cmd: List[str], output: Optional[Path] = None,
            resume: bool = False) -> None:
        """Run ``cmd`` unless it finished before with the same arguments and no earlier step ran again."""
        self.run_group([(name, cmd, output, None, resume)])

    def run_group(self, steps: List[tuple]) -> None:
        """Independent steps ``(name, cmd, output, watch, resume)``, ``jobs`` at a time; the first failure is raised
        once all have ended. ``output`` (a folder the command writes) is removed before the command runs, unless
        ``resume`` and the step only resumes: it did not finish before and nothing before it ran again (training and
        analyze continue from what they wrote)."""
        todo = []
        for name, cmd, output, watch, resume in steps:
            self.index += 1
            shown = " ".join(["rgpt4d-sdk"] + cmd[3:])
            if self.done.get(name) == cmd[3:] and not self.rerun:
                self.echo(f"[{self.index}/{self.total}] {name}: cached")
                continue
            self.echo(f"[{self.index}/{self.total}] {name}: {shown}")
            resumable = resume and name not in self.done and not self.rerun
            if output is not None and output.exists() and not resumable:
                shutil.rmtree(output)
            todo.append((name, cmd, shown, watch))
        self.rerun = self.rerun or bool(todo)
        errors: List[str] = []
        pending = list(todo)
        cpu0, wall0 = _children_cpu_s(), time.perf_counter()

        def worker() -> None:
            while True:
                with self.lock:
                    if not pending:
                        return
                    name, cmd, shown, watch = pending.pop(0)
                prefix = f"    {name}: " if len(todo) > 1 else "    "
                t0 = time.perf_counter()
                tail = _run(cmd, lambda m: self.echo(prefix + m), watch)
                with self.lock:
                    if tail is not None:
                        errors.append(f"step {name!r} failed: {shown}\n" + "\n".join(tail))
                        continue
                    self.echo(f"{prefix}done in {time.perf_counter() - t0:.0f} s")
                    self.done[name] = cmd[3:]
                    write_json(self.file, self.done, indent=1, allow_nan=True)

        threads = [threading.Thread(target=worker) for _ in range(min(self.jobs, len(todo)))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if todo:
            self._record_time([t[0] for t in todo], time.perf_counter() - wall0, _children_cpu_s() - cpu0)
        if errors:
            raise DemoError("\n".join(errors))


    def _record_time(self, names: List[str], wall_s: float, cpu_s: float) -> None:
        """OUT/timings.json: wall and CPU seconds (user + system, all child processes) of each step group."""
        path = self.out / "timings.json"
        timings = json.loads(path.read_text()) if path.is_file() else {}
        timings[" + ".join(names)] = {"wall_s": round(wall_s, 1), "cpu_s": round(cpu_s, 1)}
        write_json(path, timings, indent=1, allow_nan=True)


def _children_cpu_s() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _run(cmd: List[str], echo: Echo, watch: Optional[Callable[[], Optional[str]]]) -> Optional[List[str]]:
    """Run a child process, echo its output (and ``watch()`` lines every few seconds); None on success, else its
    last output lines."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: List[str] = []
    stop = threading.Event()

    def poll() -> None:
        last = None
        while not stop.wait(5.0):
            line = watch()
            if line and line != last and proc.poll() is None:
                echo(line)
                last = line

    poller = threading.Thread(target=poll, daemon=True) if watch else None
    if poller:
        poller.start()
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        lines.append(line)
        if line:
            echo(line)
    proc.wait()
    stop.set()
    return None if proc.returncode == 0 else lines[-15:]


def _train_progress(run_dir: Path, total: int) -> Callable[[], Optional[str]]:
    def line() -> Optional[str]:
        log = run_dir / "log.jsonl"
        try:
            last = log.read_text().strip().splitlines()[-1]
        except (OSError, IndexError):
            return None
        row = json.loads(last)
        return f"step {row['step']}/{total}  loss {row['loss']:.3f}  ({row['step_s']:.2f} s/step)"
    return line


def run_demo_train(out="rgpt4d-demo-train", size: str = "full", seed: int = 0, echo: Echo = print,
                   threads: Optional[int] = 1, jobs: int = 2) -> Dict[str, object]:
    """Run (or resume) the demo chain into ``out``; returns the metrics written to ``out/metrics.json``.

    ``jobs`` independent steps (the two trainings, the exports, the three analyses) run at once, each with
    ``threads`` CPU threads (1 x 2 jobs: both cores of a 2-core machine busy without oversubscription)."""
    if size not in SIZES:
        raise ConfigError(f"demo size {size!r} is unknown; choose one of {sorted(SIZES)}.")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be an integer >= 0, got {seed!r}.")
    s = SIZES[size]
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    data, conv, models, runs, held = out / "data", out / "conversations" / "train.json", out / "models", \
        out / "runs", out / "heldout"
    steps = _Steps(out, echo, total=10, jobs=jobs)
    t0 = time.perf_counter()
    steps.run("sample log", _cli("data", "sample-log", "--out", data, "--train-scenes", s.train_scenes,
                                 "--heldout-scenes", s.heldout_scenes, "--seed", seed, "--width", s.width), data)
    steps.run("export conversations", _cli("data", "export-conversations", "--source", "nuscenes", "--data",
                                           data / "train", "--out", conv, "--num-frames", s.num_frames))
    steps.run("base checkpoint", _cli("checkpoint", "make-tiny", "--out", models / "base", "--seed", seed), models / "base")
    from ..training.config import example_configs

    common = ["--config", example_configs()["demo_tiny"], "--set", f"model={models / 'base'}",
              "--set", f"data.train={conv}",
              # the conversations name the training log's frames, which lie outside the conversations' folder
              "--set", "data.roots=" + json.dumps([str(data / "train")]),
              "--set", f"data.num_frames={s.num_frames}", "--set", f"run.max_steps={s.steps}",
              "--set", f"run.seed={seed}", "--set", f"batch.global_batch={s.global_batch}",
              "--set", f"batch.micro_batch={s.global_batch}"]
    if threads:
        common += ["--set", f"run.threads={threads}"]
    teacher = json.dumps({"dataroot": str(data / "train"), "version": "v1.0-mini"})
    variants = {"sft": ["--set", "teacher.kind=none"],
                "sft_p4d": ["--set", "teacher.kind=sensor", "--set", f"teacher.options={teacher}"]}
    steps.run_group([(f"train {name}", _cli("train", *common, *extra, "--set", f"run.out={runs / name}"),
                      runs / name, _train_progress(runs / name, s.steps), True) for name, extra in variants.items()])
    steps.run_group([(f"export {name}", _cli("train", "export", runs / name, "--out", models / name), models / name,
                      None, False) for name in variants])
    steps.run_group([(f"analyze held-out ({name})", _cli(
        "analyze", "nuscenes", "--data", data / "heldout", "--nuscenes-version", "v1.0-mini", "--model", models / name,
        "--out", held / name, "--device", "cpu", "--dtype", "float32", "--num-frames", s.num_frames,
        "--no-progress"), held / name, None, True) for name in MODELS])
    rows = B.all_rows({m: held / m / "results.jsonl" for m in MODELS})
    table = B.family_table(rows, B.training_priors(conv), seed=seed)
    metrics = {
        "what": "A tiny NVILA-layout model (about 0.4 M parameters) fine-tuned on synthetic street scenes by "
                "`rgpt4d-sdk demo train`; NOT 4D-RGPT. Scores are on held-out scenes (seeds never used in training).",
        "size": size, "seed": seed, "demo": asdict(s),
        "scenes": json.loads((data / "scenes.json").read_text()),
        "models": {m: {"title": MODEL_TITLES[m], "checkpoint": (models / m).relative_to(out).as_posix(),
                       "results": (held / m).relative_to(out).as_posix()} for m in MODELS},  # relative to out
        "summary": {m: B.summary(table, rows, m) for m in MODELS},
        "families": table,
        "training": {name: _training_log(runs / name) for name in variants},
        "timings": json.loads((out / "timings.json").read_text()) if (out / "timings.json").is_file() else {},
        "elapsed_s_this_call": round(time.perf_counter() - t0, 1),
    }
    metrics["scenes"] = {k: [x["seed"] for x in v] if k in ("train", "heldout") else v
                         for k, v in metrics["scenes"].items()}
    write_json(out / "metrics.json", metrics, indent=1, allow_nan=True)
    write_report(out / "report.md", metrics)
    echo(f"metrics: {out / 'metrics.json'}; report: {out / 'report.md'}")
    return metrics


def _training_log(run_dir: Path) -> Dict[str, object]:
    rows = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines() if line.strip()]
    keep = ("step", "loss", "sft", "depth", "flow", "dynamic", "rays")
    return {"steps": len(rows), "first": {k: rows[0][k] for k in keep if k in rows[0]},
            "last": {k: rows[-1][k] for k in keep if k in rows[-1]},
            "seconds": round(sum(r["step_s"] for r in rows), 1)}
