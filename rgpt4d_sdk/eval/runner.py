"""Resumable benchmark runs: a generic item runner (`run_items` with an `ItemSpec`) and `eval r4d-bench` on it.

`run_items` answers every item once, resumably; a benchmark supplies the item id, the query builder and the row
builders (`ItemSpec`), then computes its table from the rows (`run_r4d_bench` here, `robofac_run.run_robofac`).

Output folder: ``run.json`` (the model and frame count, which a resume must match), ``results.jsonl`` (one row
per item, appended with fsync as items finish; see `rgpt4d_sdk.fileio.ResultStore`), ``table.json`` and ``table.md``
(rewritten atomically at the end of every run).
Each item is its own unit: a re-run skips every item that already has its row, so an interrupted run resumes where
it stopped and a complete run re-run loads no model at all. Error rows are final too (a bad record stays bad); move
the output folder away to start afresh. The table is computed from the rows of the items selected (``limit``).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from ..adapters.r4d_bench import TASK_NAMES, ItemError, R4DItem, build_query, find_record_files, load_records
from ..engine.config import EngineConfig, LazyEngine
from ..errors import ConfigError, RGPT4DError
from ..fileio import FINGERPRINT_FIELD, ResultStore, atomic_write_text, check_fingerprint, write_json
from ..types import Answer, RegionQuery
from .r4d import build_table, numeric_score, table_markdown
from .scoring import match_choice

Item = Union[R4DItem, ItemError]
NO_MODEL = "items are left to answer but no model was given; pass --model DIR."


@dataclass
class EvalStats:
    """What a run did: ``items`` selected, ``done_before`` already in results.jsonl, ``answered`` / ``errors``
    written by this run, ``engine_loaded`` whether a model was loaded at all, and the table it wrote."""

    out_dir: Path
    items: int = 0
    done_before: int = 0
    answered: int = 0
    errors: int = 0
    engine_loaded: bool = False
    table: Dict[str, Any] = field(default_factory=dict)


def _base_row(item: Item) -> Dict[str, Any]:
    row: Dict[str, Any] = {"id": item.id, "unit_id": item.id, "unit_rows": 1, "task": item.task}
    if isinstance(item, R4DItem):
        row.update(benchmark=item.benchmark, category=item.category, format=item.format, question=item.question,
                   options=list(item.options), truth=item.truth, truth_text=item.answer, truth_unit=item.unit)
    return row


def error_row(item: Item, reason: str, message: str) -> Dict[str, Any]:
    """The results row of an item that was not evaluated (``reason`` from `adapters.r4d_bench.REASONS`)."""
    return {**_base_row(item), "status": "error", "reason": reason, "message": message}


def answer_row(item: R4DItem, answer: Answer) -> Dict[str, Any]:
    """The results row of an answered item: the raw reply, what it was read as, and its score."""
    row = {**_base_row(item), "status": "ok", "reply": answer.text, "timestamps_s": list(answer.timestamps_s),
           "prompt_tokens": answer.prompt_tokens, "finish_reason": answer.finish_reason,
           "timings_s": dict(answer.timings)}
    if item.format == "mc":
        choice, matched_by = match_choice(answer.text, item.options)
        row.update(answer_choice=choice, matched_by=matched_by, score=1.0 if choice == item.truth else 0.0)
    else:
        score, value, unit = numeric_score(answer.text, float(item.truth), item.unit)
        row.update(answer_value=value, answer_unit=unit, score=score)
    return row


@dataclass
class ItemSpec:
    """What the generic item runner needs to know about one benchmark's items.

    item_id: the item's id (the results row key). build_query: the item's `RegionQuery`; raises an exception with
    a ``reason`` attribute (e.g. `RecordError`) when the item cannot be asked. answer_row / error_row: the results
    row of an answered / failed item. known_error: (reason, message) of an item that is bad before any decoding
    (it is recorded without touching the engine), or None.
    """

    item_id: Callable[[Any], str]
    build_query: Callable[[Any], RegionQuery]
    answer_row: Callable[[Any, Answer], Dict[str, Any]]
    error_row: Callable[[Any, str, str], Dict[str, Any]]
    known_error: Callable[[Any], Optional[Tuple[str, str]]] = lambda item: None


def _answer_chunk(chunk: Sequence[Any], spec: ItemSpec, lazy: LazyEngine, batch_size: int) -> List[dict]:
    """Rows of one chunk of items: build the queries, answer the good ones in one batch (one by one if the batch
    fails, so that only the offending item gets an "engine_error" row)."""
    rows: Dict[str, dict] = {}
    ready: List[tuple] = []
    for item in chunk:
        try:
            ready.append((item, spec.build_query(item)))
        except RGPT4DError as e:
            reason = getattr(e, "reason", None)
            if reason is None:
                raise
            rows[spec.item_id(item)] = spec.error_row(item, reason, str(e))
    if ready:
        engine = lazy.get()
        queries: List[RegionQuery] = [q for _, q in ready]
        try:
            answers = engine.answer_many(queries, batch_size=batch_size)
        except RGPT4DError:
            answers = [_answer_one(engine, q) for q in queries]
        for (item, query), ans in zip(ready, answers):  # answer_many returns a failed item's error in its slot
            rows[spec.item_id(item)] = (spec.answer_row(item, ans) if isinstance(ans, Answer)
                                        else spec.error_row(item, "engine_error", ans if isinstance(ans, str)
                                                            else f"item {query.id}: {ans}"))
    return [rows[spec.item_id(item)] for item in chunk]


def progress_line(done: int, total: int, answered: int, errors: int) -> str:
    """ "9/10 items: 8 answered, 1 error": what happened to the items handled so far, counted from their rows."""
    return f"{done}/{total} items: {answered} answered, {errors} error{'' if errors == 1 else 's'}"


def _answer_one(engine, query: RegionQuery) -> Union[Answer, str]:
    try:
        return engine.answer(query)
    except RGPT4DError as e:
        return f"item {query.id}: {e}"


def settings_fingerprint(settings: Dict[str, Any]) -> str:
    """A digest of a run's settings; every results row carries it (`rgpt4d_sdk.fileio.FINGERPRINT_FIELD`)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def _check_resume(out_dir: Path, settings: Dict[str, Any]) -> None:
    """Write ``run.json`` on the first run; refuse to resume a folder whose answers came from other settings. The
    rows themselves carry the settings' fingerprint, so deleting ``run.json`` cannot make a resume mix settings."""
    path = out_dir / "run.json"
    recorded = None
    if path.exists():
        try:
            before = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ConfigError(f"{path} is not valid JSON or cannot be read ({e}); it was edited or damaged. Delete it (the rows of "
                              "results.jsonl say which settings made them) or use a new --out folder.") from e
        if not isinstance(before, dict):
            raise ConfigError(f"{path} is not a JSON object; delete it or use a new --out folder.")
        changed = sorted(k for k in settings if before.get(k) != settings[k])
        if changed:
            was = {k: before.get(k) for k in changed}
            raise ConfigError(f"{out_dir} holds answers made with other settings ({was}); give a new --out folder, "
                              "or the same settings to resume.")
        recorded = settings_fingerprint(settings)
    check_fingerprint(ResultStore(out_dir / "results.jsonl").load().values(), settings_fingerprint(settings),
                      recorded, out_dir)
    if not path.exists():
        write_json(path, settings)


def engine_config(model: Optional[str], device: str, dtype: str, num_frames: int) -> EngineConfig:
    """The engine of a benchmark run: ``model`` on the torch backend, room for ``num_frames`` (at least 16)."""
    return EngineConfig(model=model or "", device=device, dtype=dtype, max_frames=max(num_frames, 16))


def check_run_options(num_frames: int, batch_size: int, limit: Optional[int]) -> None:
    """`ConfigError` unless frames >= 2, batch size >= 1 and limit (when given) >= 1."""
    if num_frames < 2 or batch_size < 1 or (limit is not None and limit < 1):
        raise ConfigError(f"frames must be >= 2, batch size >= 1 and limit >= 1 (got {num_frames}, {batch_size}, "
                          f"{limit}).")


def start_run(out: "str | os.PathLike", settings: Dict[str, Any]) -> Path:
    """Create the output folder and write (or check, on a resume) its ``run.json``."""
    from ..outdir import ensure_output_dir

    out_dir = ensure_output_dir(out, "--out")
    _check_resume(out_dir, settings)
    return out_dir


def run_items(
    items: Sequence[Any],
    out_dir: Path,
    spec: ItemSpec,
    *,
    config: EngineConfig,
    engine: Any = None,
    batch_size: int = 1,
    echo: Optional[Callable[[str], None]] = None,
    fingerprint: Optional[str] = None,
) -> Tuple[EvalStats, List[dict]]:
    """Answer every item of ``items`` that has no row in ``out_dir/results.jsonl`` yet, appending rows chunk by
    chunk (``batch_size`` items per engine batch); the model (``config``, unless ``engine`` is given) is loaded only
    if something is left to answer.
    ``fingerprint`` (`settings_fingerprint` of the run's settings) goes into every new row.
    Returns the stats (table left empty) and the rows of ``items``, in their order."""
    store = ResultStore(out_dir / "results.jsonl")
    done = store.finished_units(store.load())
    ids = [spec.item_id(it) for it in items]
    stats = EvalStats(out_dir, items=len(items), done_before=sum(1 for i in ids if i in done))
    pending = [it for it, i in zip(items, ids) if i not in done]
    known = [(it, spec.known_error(it)) for it in pending]
    tag = {FINGERPRINT_FIELD: fingerprint} if fingerprint else {}
    bad = [{**spec.error_row(it, *err), **tag} for it, err in known if err is not None]
    store.append(bad)
    if echo and bad:
        echo(f"{len(bad)} of {len(pending)} items are bad records (error rows written, see results.jsonl)")
    todo = [it for it, err in known if err is None]
    lazy = LazyEngine(config, engine, missing_model=NO_MODEL)
    answered = errors = 0
    for start in range(0, len(todo), batch_size):
        chunk_rows = [{**r, **tag} for r in _answer_chunk(todo[start:start + batch_size], spec, lazy, batch_size)]
        store.append(chunk_rows)
        answered += sum(1 for r in chunk_rows if r.get("status") == "ok")
        errors += sum(1 for r in chunk_rows if r.get("status") != "ok")
        if echo:
            echo(progress_line(answered + errors, len(todo), answered, errors))
    rows_by_id = store.load()
    final = [rows_by_id[i] for i in ids if i in rows_by_id]
    stats.answered = sum(1 for it in pending if rows_by_id.get(spec.item_id(it), {}).get("status") == "ok")
    stats.errors = len(pending) - stats.answered
    stats.engine_loaded = lazy.loaded
    return stats, final


def write_table(out_dir: Path, table: Dict[str, Any], markdown: str) -> None:
    """Write ``table.json`` and ``table.md`` atomically."""
    write_json(out_dir / "table.json", table)
    atomic_write_text(out_dir / "table.md", markdown)


def run_r4d_bench(
    data: "str | os.PathLike",
    model: Optional[str],
    out: "str | os.PathLike",
    *,
    num_frames: int = 16,
    limit: Optional[int] = None,
    device: str = "auto",
    dtype: str = "auto",
    batch_size: int = 1,
    engine: Any = None,
    echo: Optional[Callable[[str], None]] = None,
    allow_outside_data_root: bool = False,
) -> EvalStats:
    """Evaluate the R4D-Bench items of ``data`` (first ``limit`` records) with ``model`` (or a ready ``engine``),
    ``num_frames`` frames per video; write results.jsonl, table.json and table.md under ``out``.
    allow_outside_data_root: read records' videos / SoM images outside ``data`` (refused by default)."""
    check_run_options(num_frames, batch_size, limit)
    settings: Dict[str, Any] = {"model": str(model), "frames": int(num_frames)}
    if allow_outside_data_root:
        settings["allow_outside_data_root"] = True
    out_dir = start_run(out, settings)
    files, ignored = find_record_files(Path(data))
    if echo:
        echo("records: " + ", ".join(str(f) for f in files))
        if ignored:
            echo(f"ignored {len(ignored)} other .json file(s), not record files by name: "
                 + ", ".join(p.name for p in ignored))
    items = load_records(Path(data), allow_outside_root=allow_outside_data_root)[:limit]
    spec = ItemSpec(
        item_id=lambda it: it.id,
        build_query=lambda it: build_query(it, num_frames),
        answer_row=answer_row,
        error_row=error_row,
        known_error=lambda it: (it.reason, it.message) if isinstance(it, ItemError) else None,
    )
    stats, final = run_items(items, out_dir, spec, config=engine_config(model, device, dtype, num_frames),
                             engine=engine, batch_size=batch_size, echo=echo, fingerprint=settings_fingerprint(settings))
    stats.table = build_table(final, TASK_NAMES)
    write_table(out_dir, stats.table, table_markdown(stats.table))
    return stats
