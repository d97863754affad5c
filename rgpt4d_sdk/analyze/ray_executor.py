"""`analyze --executor ray`: the clips of a run processed by an actor pool on a Ray cluster.

Work units (clip ids) become a Ray Dataset; `map_batches` runs them through `UnitWorker` actors (``num_workers`` of
them, each with ``gpus_per_worker`` GPUs), each of which opens the data source and loads the engine once, then turns
clip ids into result rows with exactly the code of the local executor (`runner._unit_rows`). Rows travel back as
JSON text (no Python objects are unpickled from workers' results) and the driver appends them to results.jsonl
clip by clip as they arrive, so resume, shards and merging behave exactly as with the local executor: a killed
driver loses only the clips in flight, and the re-run skips every clip already on disk.

Any exception while processing a clip (not only the SDK's typed errors) becomes an error row for that clip; the job
goes on. Ray is imported only here, only when this executor is chosen.
"""
from __future__ import annotations

import json
import traceback
from pathlib import Path
from typing import Any, Dict, Iterator, List, Sequence, Tuple

from ..engine.config import LazyEngine
from ..optional import need
from .config import AnalyzeConfig, plain

STAT_FIELDS = ("adapter_s", "engine_s")


def _ray():
    need("ray.data", "ray")  # Ray Data too, not only the core
    return need("ray", "ray")


class UnitWorker:
    """One actor: the data source and the engine, loaded once; clip ids in, rows (JSON) out."""

    def __init__(self, config: str, out: str) -> None:
        from .runner import open_source

        self.cfg = AnalyzeConfig.from_dict(json.loads(config))
        self.out = Path(out)
        self.source = open_source(self.cfg)
        self.units = {u.id: u for u in self.source.units()}
        self.engines = LazyEngine(self.cfg.engine)

    def __call__(self, batch: Dict[str, Any]) -> Dict[str, List[str]]:
        from .runner import RunStats, _finalise, _unit_problem_row, _unit_rows

        ids, rows_out, stats_out = [], [], []
        for unit_id in list(batch["unit_id"]):
            unit = self.units[str(unit_id)]
            stats = RunStats(str(self.out), "")
            try:
                rows = _unit_rows(unit, self.source, self.cfg, self.out, self.engines, stats)
            except Exception as e:  # a worker never lets one clip fail the job: it becomes that clip's error row
                base = {"unit_id": unit.id, "source": self.source.name, "scene": unit.scene, "camera": unit.camera,
                        "clip_index": unit.clip_index}
                detail = traceback.format_exception_only(type(e), e)[-1].strip()
                rows = _finalise([_unit_problem_row(base, "error", f"worker failed: {detail}")],
                                 RunStats(str(self.out), ""))
            ids.append(unit.id)
            rows_out.append(json.dumps(rows, sort_keys=True, allow_nan=False))
            stats_out.append(json.dumps({k: getattr(stats, k) for k in STAT_FIELDS}))
        return {"unit_id": ids, "rows": rows_out, "stats": stats_out}


def ray_unit_rows(cfg: AnalyzeConfig, out: Path, todo: Sequence, stats, echo) -> Iterator[Tuple[Any, List[dict]]]:
    """(unit, rows) for every unit of ``todo``, in the order they finish on the cluster."""
    if not todo:
        return
    ray = _ray()
    ex = cfg.executor
    if not ray.is_initialized():
        ray.init(address=ex.address, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the driver shows one bar, per clip
    by_id = {u.id: u for u in todo}
    config = json.dumps(plain(cfg.to_dict()))
    ds = ray.data.from_items([{"unit_id": u.id} for u in todo], override_num_blocks=len(todo))
    results = ds.map_batches(UnitWorker, fn_constructor_kwargs={"config": config, "out": str(out)}, batch_size=1,
                             concurrency=int(ex.num_workers), num_gpus=float(ex.gpus_per_worker) or None,
                             num_cpus=float(ex.cpus_per_worker), batch_format="numpy")
    echo(f"ray: {len(todo)} clips on {ex.num_workers} worker(s) ({ex.gpus_per_worker:g} GPU each) at "
         f"{ray.get_runtime_context().gcs_address}")
    from .runner import _finalise

    for item in results.iter_rows():
        rows = json.loads(item["rows"])
        for k, v in json.loads(item["stats"]).items():
            setattr(stats, k, getattr(stats, k) + v)
        _finalise(rows, stats)  # counts rows, errors, skips and answers on the driver (rows are already final)
        yield by_id[str(item["unit_id"])], rows

