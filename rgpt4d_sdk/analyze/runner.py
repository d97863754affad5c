"""`analyze`: a source's clips -> questions with known answers -> engine -> rows, metrics and a report.

What a source provides (work units, loaded clips, their questions) and how sources are registered:
`rgpt4d_sdk.sources`.

Work units are clips with stable ids. A run appends each finished clip's rows to results.jsonl (see
`rgpt4d_sdk.fileio.ResultStore`); a re-run skips finished clips, so an interrupted run resumed ends with the same
rows as an uninterrupted one.
A clip that cannot be loaded (missing or corrupt image, a query its frames cannot serve, ...) becomes an error row
(with ``error_code`` when the error has a reason code) and the run goes on; a question whose truth is unknown
becomes a skipped row with the reason. `--shard i/N` takes every N-th clip by a hash of its id and writes under
``out/shard-i-of-N`` (`merge_shards` combines them).
"""
from __future__ import annotations

import hashlib
import math
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from ..errors import ConfigError, RGPT4DError
from ..fileio import FINGERPRINT_FIELD, ResultStore, check_fingerprint, load_json, write_json
from ..eval.metrics import score_row, summarize
from ..eval.scoring import match_choice
from ..eval.questions import QuestionSpec
from ..prompt.parse import parse_number, to_si
from ..sources import SOURCES, source_class
from ..device import check_device
from ..engine.config import MISSING_MODEL, LazyEngine
from ..outdir import ensure_output_dir
from ..types import RegionQuery
from .config import AnalyzeConfig, parse_shard, write_yaml
from .sinks import write_clip_media, write_parquet

Echo = Callable[[str], None]


@dataclass
class RunStats:
    """What a run did. Times in seconds: adapter = decode, projection, SoM, media; engine = the model."""

    out_dir: str
    report: str
    units_total: int = 0
    units_skipped_done: int = 0
    units_run: int = 0
    rows: int = 0
    queries_answered: int = 0
    errors: int = 0
    skipped: int = 0
    adapter_s: float = 0.0
    engine_s: float = 0.0
    wall_s: float = 0.0
    metrics: Dict[str, Any] = field(default_factory=dict)


def shard_of(unit_id: str, num_shards: int) -> int:
    """A stable shard for a clip id (sha1, not Python's salted hash)."""
    return int(hashlib.sha1(unit_id.encode()).hexdigest()[:8], 16) % num_shards


def open_source(cfg: AnalyzeConfig):
    """The registered source of ``cfg.source``, opened on its config section (`rgpt4d_sdk.sources.Source.open`)."""
    if cfg.source not in SOURCES:  # AnalyzeConfig already checks; kept for direct callers
        raise ConfigError(f"source {cfg.source!r} is unknown.")
    return source_class(cfg.source).open(getattr(cfg, cfg.source))


def _read_run(out: Path) -> Dict[str, Any]:
    return load_json(out / "run.json", {})


def _check_out_dir(out: Path, cfg: AnalyzeConfig, rows: Dict[str, dict]) -> None:
    """Refuse to resume into a folder whose results came from a different data/question/model setting: the rows
    carry their configuration's fingerprint (run.json is only a summary of it, and may have been deleted)."""
    run_file = out / "run.json"
    if rows:
        before = _read_run(out).get("fingerprint")
        if before and before != cfg.fingerprint():
            raise ConfigError(f"{out} holds results of a different configuration (data, questions or model changed); "
                              "use another --out, or delete that folder to start again.")
        # rows carry the shard-free fingerprint: the folder already names the shard, and merged rows stay checkable
        check_fingerprint(rows.values(), cfg.fingerprint(shard=False), _read_run(out).get("data_fingerprint"), out)
    write_json(run_file, {"fingerprint": cfg.fingerprint(), "data_fingerprint": cfg.fingerprint(shard=False),
                          "complete": False})
    write_yaml(out / "config.yaml", cfg.to_dict())


def run_analysis(cfg: AnalyzeConfig, engine=None, echo: Optional[Echo] = None) -> RunStats:
    """Run (or resume) an analysis; return what it did. Bad configuration or data-set errors raise before any
    clip is processed; per-clip and per-question failures become rows."""
    echo = echo or (lambda s: print(s, file=sys.stderr))
    start = time.perf_counter()
    index, count = parse_shard(cfg.shard)
    out = Path(cfg.out) / (f"shard-{index}-of-{count}" if count > 1 else "")
    ensure_output_dir(out, "out (--out)", create=False)  # a file or a read-only folder fails before any data is read
    if engine is None and cfg.executor.kind == "local":  # Ray workers check their own devices
        check_device(cfg.engine.device, "engine.device (--device)")
    source = open_source(cfg)
    all_units = source.units()
    order = {u.id: n for n, u in enumerate(all_units)}  # the unsharded order, kept in rows for merging
    units = [u for u in all_units if count == 1 or shard_of(u.id, count) == index]
    out.mkdir(parents=True, exist_ok=True)
    store = ResultStore(out / "results.jsonl")
    rows = store.load()
    _check_out_dir(out, cfg, rows)
    fingerprint = cfg.fingerprint(shard=False)
    if cfg.retry_errors and any(r["status"] == "error" for r in rows.values()):
        store.rewrite([r for r in rows.values() if r["status"] != "error"])
        rows = store.load()
    finished = store.finished_units(rows)
    torn = {r["unit_id"] for r in rows.values()} - finished  # clips with some rows on disk: redone whole
    todo = [u for u in units if u.id not in finished]
    stats = RunStats(str(out), str(out / "report.html"), units_total=len(units),
                     units_skipped_done=len(units) - len(todo))
    if stats.units_skipped_done:
        echo(f"resuming: {stats.units_skipped_done} of {len(units)} clips already done in {out}")
    engines = LazyEngine(cfg.engine, engine)
    ray = cfg.executor.kind == "ray" and engine is None
    if any(not u.problem for u in todo):
        if ray:  # the actors load it; here only check that it is there and complete
            _check_model(cfg)
        else:
            engines.get()  # a missing or broken checkpoint is reported before any clip is processed
    bar = _progress(cfg, len(units), stats.units_skipped_done)
    if ray:
        from .ray_executor import ray_unit_rows

        finished_rows = ray_unit_rows(cfg, out, todo, stats, echo)
    else:
        finished_rows = ((u, _unit_rows(u, source, cfg, out, engines, stats)) for u in todo)
    try:
        for unit, new in finished_rows:  # rows of one clip, in the order clips finish
            for r in new:
                r["unit_order"] = order[unit.id]
                r[FINGERPRINT_FIELD] = fingerprint  # the rows say which configuration made them
            if unit.id in torn:  # a torn earlier write: replace that clip
                rows = {i: r for i, r in rows.items() if r["unit_id"] != unit.id}
                rows.update({r["id"]: r for r in new})
                store.rewrite(list(rows.values()))
            else:
                store.append(new)
            stats.units_run += 1
            bar.update(1)
            bar.set_postfix(queries=stats.queries_answered, errors=stats.errors, refresh=False)
            if bar.disable and cfg.progress is None:  # not a terminal: a plain line per clip instead of a bar
                echo(f"analyze: clip {stats.units_skipped_done + stats.units_run}/{len(units)} done "
                     f"({stats.queries_answered} answered, {stats.errors} errors)")
    finally:
        bar.close()
    _finish(out, store, units, cfg, stats)
    stats.wall_s = time.perf_counter() - start
    return stats


def _progress(cfg: AnalyzeConfig, total: int, initial: int):
    from tqdm import tqdm

    disable = (not sys.stderr.isatty()) if cfg.progress is None else not cfg.progress
    return tqdm(total=total, initial=initial, unit="clip", desc="analyze", disable=disable, dynamic_ncols=True,
                file=sys.stderr)


def _check_model(cfg: AnalyzeConfig) -> None:
    """The checkpoint named by the config exists and is complete (configs and weight headers; no weights load)."""
    from ..model.checkpoint import read_checkpoint

    if not cfg.engine.model:
        raise ConfigError(MISSING_MODEL)
    read_checkpoint(cfg.engine.model)


def _unit_rows(unit, source, cfg: AnalyzeConfig, out: Path, engines: LazyEngine, stats: RunStats) -> List[dict]:
    base = {"unit_id": unit.id, "source": source.name, "scene": unit.scene, "camera": unit.camera,
            "clip_index": unit.clip_index}
    if unit.problem:
        return _finalise([_unit_problem_row(base, unit.status, unit.problem)], stats)
    t0 = time.perf_counter()
    try:
        data = source.load(unit)
        specs = source.questions(data, cfg.questions)
        media = write_clip_media(out, unit.id, data.clip, data.regions)
    except RGPT4DError as e:  # GoalError carries a reason code (rgpt4d_sdk.live.REASONS)
        code = getattr(e, "code", None)
        message = f"{type(e).__name__}{f' [{code}]' if code else ''}: {e}"
        return _finalise([_unit_problem_row(base, "error", message, code)], stats)
    adapter_s = time.perf_counter() - t0
    stats.adapter_s += adapter_s
    t_first = data.clip.frames[0].timestamp_s
    base.update(t0_us=data.t0_us, timestamps_s=[round(f.timestamp_s - t_first, 6) for f in data.clip.frames],
                regions=data.region_info, media=media, **data.row_fields)
    rows, queries = [], []
    for i, spec in enumerate(specs):
        row = _question_row(base, unit.id, i, spec)
        rows.append(row)
        if spec.skip_reason:
            row.update(status="skipped", reason=spec.skip_reason)
            continue
        try:
            with warnings.catch_warnings():  # every clip mark is drawn for every question: not a mistake here
                warnings.simplefilter("ignore", UserWarning)
                queries.append((row, RegionQuery(
                    data.clip, data.regions, spec.question, options=list(spec.options), task=spec.task,
                    answer_type=spec.answer_type, truth=spec.truth, id=row["id"])))
        except RGPT4DError as e:
            row.update(status="error", error=f"{type(e).__name__}: {e}")
    if queries:
        t1 = time.perf_counter()
        answers = _answer_all(engines.get(), [q for _, q in queries], cfg.engine.batch_size)
        stats.engine_s += time.perf_counter() - t1
        for (row, _), ans in zip(queries, answers):
            _fill_answer(row, ans, adapter_s / max(len(queries), 1))
    return _finalise(rows, stats)


def _answer_all(engine, queries: Sequence[RegionQuery], batch_size: int) -> List[Any]:
    """Answers in batches; a failing batch is retried one query at a time so one bad query costs only its row."""
    out: List[Any] = []
    for s in range(0, len(queries), batch_size):
        batch = list(queries[s: s + batch_size])
        try:
            out.extend(engine.answer_many(batch, batch_size=batch_size))
        except (RGPT4DError, RuntimeError):  # RuntimeError: e.g. CUDA out of memory on a large batch
            for q in batch:
                try:
                    out.append(engine.answer(q))
                except (RGPT4DError, RuntimeError) as e:
                    out.append(e)
    return out


def _unit_problem_row(base: dict, status: str, message: str, code: Optional[str] = None) -> dict:
    row = dict(base, id=f"{base['unit_id']}#clip", status=status, task=None, format=None, question=None, options=[],
               truth=None, score=None, index=0, error_code=code)
    row["error" if status == "error" else "reason"] = message
    return row


def _question_row(base: dict, unit_id: str, index: int, spec: QuestionSpec) -> dict:
    return dict(base, id=f"{unit_id}/{spec.key}", key=spec.key, index=index, status="ok", error=None, reason=None,
                task=spec.task, format=spec.format, question=spec.question, options=list(spec.options),
                answer_type=spec.answer_type, mark_ids=list(spec.mark_ids), truth=spec.truth,
                truth_text=spec.truth_text, truth_value=spec.truth_value, unit=spec.unit, answer_text=None,
                answer_choice=None, matched_by=None, answer_value=None, answer_unit=None, score=None, timings={})


def _fill_answer(row: dict, ans: Any, adapter_share_s: float) -> None:
    if isinstance(ans, Exception):
        row.update(status="error", error=f"{type(ans).__name__}: {ans}")
        return
    value, unit, choice, matched_by = ans.value, ans.unit, ans.choice, None
    if row.get("format") == "mc" or row.get("options"):
        # Graded by the official rule (letter, or the whole option text), never by the engine's lenient reading.
        choice, matched_by = match_choice(ans.text, row["options"])
        number = parse_number(row["options"]["ABCDEFGHIJKLMNOPQRSTUVWXYZ".index(choice)]) if choice else None
        value, unit = number if number else (None, None)
    if value is not None and math.isfinite(value):
        value, unit = to_si(value, unit)
        if not math.isfinite(value):  # "1e306 km" overflows: keep the text, drop the number
            value, unit = None, None
    else:
        value, unit = None, None
    row.update(answer_text=ans.text, answer_choice=choice, matched_by=matched_by, answer_value=value,
               answer_unit=unit,
               timings=dict({k: round(v, 6) for k, v in ans.timings.items()}, adapter=round(adapter_share_s, 6)))
    row["score"] = score_row(row)


def _finite(value: Any) -> Any:
    """NaN/inf -> None, recursively: rows are strict JSON, and a bad record must not stop the run."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _finalise(rows: List[dict], stats: RunStats) -> List[dict]:
    rows[:] = [_finite(r) for r in rows]
    for r in rows:
        r["unit_rows"] = len(rows)
        stats.rows += 1
        stats.errors += r["status"] == "error"
        stats.skipped += r["status"] == "skipped"
        stats.queries_answered += r["status"] == "ok"
    return rows


def _finish(out: Path, store: ResultStore, units: Sequence, cfg: AnalyzeConfig, stats: RunStats) -> None:
    """Parquet, metrics and report from every row on disk (this run's and earlier runs')."""
    wanted = {u.id for u in units}
    rows = sorted((r for r in store.load().values() if r["unit_id"] in wanted), key=_row_order)
    stats.metrics = write_outputs(out, rows, cfg.to_dict(), cfg.title, cfg.notice)
    run = _read_run(out)
    write_json(out / "run.json", dict(run, complete=True, units=len(units)))


def _row_order(r: dict):
    return (r.get("unit_order", 0), r["unit_id"], r.get("index", 0))


def write_outputs(out: Path, rows: List[dict], config: Dict[str, Any], title: str, notice: str) -> Dict[str, Any]:
    """Write a run's results.parquet, metrics.json and report.html into ``out`` from its result rows; returns the
    metrics."""
    from .report import write_report

    metrics = summarize(rows)
    write_parquet(out / "results.parquet", rows)
    write_json(out / "metrics.json", metrics)
    write_report(out, rows, metrics, title=title, notice=notice or None, config=config)
    return metrics


def merge_shards(out: "str | Path") -> Dict[str, Any]:
    """Combine ``out/shard-i-of-N`` folders into results, metrics and a report in ``out``. All N shards must be
    there, finished, and from one configuration (same data, questions and model)."""
    import re

    from .config import read_yaml

    out = Path(out)
    found = {}
    for d in out.iterdir() if out.is_dir() else []:
        m = re.fullmatch(r"shard-(\d+)-of-(\d+)", d.name)
        if m and d.is_dir():
            found[d] = (int(m.group(1)), int(m.group(2)))
    if not found:
        raise ConfigError(f"no shard-i-of-N folders in {out}; run analyze with --shard i/N --out {out} first.")
    counts = {n for _, n in found.values()}
    if len(counts) != 1:
        raise ConfigError(f"{out} mixes shard counts {sorted(counts)}; merge one sharding at a time.")
    n = counts.pop()
    missing = sorted(set(range(n)) - {i for i, _ in found.values()})
    if missing:
        raise ConfigError(f"shards {missing} of {n} are missing in {out}; run them (--shard i/{n}) before merging.")
    shards = sorted(found, key=lambda d: found[d][0])
    runs = [_read_run(d) for d in shards]
    unfinished = [d.name for d, r in zip(shards, runs) if not r.get("complete")]
    if unfinished:
        raise ConfigError(f"shard(s) {unfinished} did not finish; re-run them (they resume) before merging.")
    if len({r.get("data_fingerprint") for r in runs}) != 1:
        raise ConfigError(f"the shards in {out} were run with different data, questions or models; merge only "
                          "shards of one configuration.")
    rows = []
    for d in shards:
        for r in ResultStore(d / "results.jsonl").load().values():
            if r.get("media"):
                r["media"] = {k: f"{d.name}/{v}" for k, v in r["media"].items()}
            rows.append(r)
    rows.sort(key=_row_order)
    config = read_yaml(shards[0] / "config.yaml")
    config["shard"] = f"merged {n} shards"
    ResultStore(out / "results.jsonl").rewrite(rows)
    write_yaml(out / "config.yaml", config)
    title, notice = str(config.get("title", "rgpt4d-sdk analysis")), str(config.get("notice", ""))
    return write_outputs(out, rows, config, title, notice)
