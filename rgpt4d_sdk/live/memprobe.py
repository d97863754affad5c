"""Where a long-running process's memory goes: a diagnostic thread that writes one JSON line per period.

Off unless asked for (the ROS node starts it when ``RGPT4D_MEMPROBE`` names a file; `bench/ros_soak.py --memprobe`
sets it). Each line holds, for the process it runs in:

- ``rss`` and the anonymous part of it (``/proc/self/status``);
- glibc's allocator totals (``mallinfo2``): ``in_use`` (bytes of live malloc blocks, torch's CPU tensors
  included), ``free_held`` (freed but kept by the allocator: fragmentation and arena tops), ``mmapped``, ``arenas``
  bytes; None on other C libraries;
- the bytes of live torch tensor storages (each storage once) and the Python objects the collector tracks, by type
  (the ``top`` types, and every type's count for diffs between lines; cyclic garbage not yet collected is counted
  too: ``gc`` holds each generation's collections and collected objects so far);
- whatever ``extra()`` returns (the node: each cache's bytes, goal bookkeeping of the action server);
- with ``RGPT4D_MEMPROBE_TRACEMALLOC=1``: the Python allocation sites that grew most since the first line
  (tracemalloc; slows Python allocations, for diagnosis only).

The walk over every tracked object takes a fraction of a second with a model loaded; keep the period at tens of
seconds.
"""
from __future__ import annotations

import collections
import ctypes
import gc
import json
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional

ENV = "RGPT4D_MEMPROBE"
ENV_PERIOD = "RGPT4D_MEMPROBE_PERIOD_S"
ENV_TRACEMALLOC = "RGPT4D_MEMPROBE_TRACEMALLOC"


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def _libc():
    try:
        libc = ctypes.CDLL(None)
        fn = libc.mallinfo2
    except (OSError, AttributeError):  # not glibc, or glibc < 2.33
        return None
    fn.restype = _MallInfo2
    return libc


_LIBC = _libc()


def malloc_stats() -> Optional[Dict[str, int]]:
    """glibc's allocator totals over all arenas (bytes), or None where ``mallinfo2`` is missing."""
    if _LIBC is None:
        return None
    m = _LIBC.mallinfo2()
    return dict(arenas=int(m.arena), in_use=int(m.uordblks + m.hblkhd), free_held=int(m.fordblks),
                mmapped=int(m.hblkhd), mmapped_blocks=int(m.hblks), top_releasable=int(m.keepcost))


def proc_memory() -> Dict[str, int]:
    """This process's resident set and its anonymous part, in bytes (Linux ``/proc/self/status``)."""
    out = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "RssAnon", "RssFile"):
                    out[{"VmRSS": "rss", "RssAnon": "rss_anon", "RssFile": "rss_file"}[key]] = \
                        int(rest.split()[0]) * 1024
    except OSError:
        pass
    return out


def census(top: int = 12) -> Dict[str, Any]:
    """Objects tracked by the garbage collector, by type name, and the bytes of live torch tensor storages."""
    counts: "collections.Counter[str]" = collections.Counter()
    storages: Dict[int, int] = {}
    try:
        import torch
        tensor_type: Any = torch.Tensor
    except ImportError:  # pragma: no cover - torch is a dependency of the engines
        tensor_type = ()
    for obj in gc.get_objects():
        kind = type(obj)  # not isinstance: that reads __class__, which some lazy module proxies warn about
        counts[kind.__name__] += 1
        if tensor_type and issubclass(kind, tensor_type):
            try:
                s = obj.untyped_storage()
                storages[s.data_ptr()] = max(storages.get(s.data_ptr(), 0), s.nbytes())
            except (RuntimeError, NotImplementedError):  # e.g. a meta or sparse tensor
                pass
    return dict(objects=sum(counts.values()), top=dict(counts.most_common(top)), types=dict(counts),
                tensor_bytes=sum(storages.values()), tensor_storages=len(storages))


class MemProbe:
    """Writes `sample()` as one JSON line to ``path`` every ``period_s`` seconds on a daemon thread."""

    def __init__(self, path: "str | Path", period_s: float = 30.0,
                 extra: Optional[Callable[[], Dict[str, Any]]] = None, trace: bool = False) -> None:
        self.path, self.period_s, self.extra, self.trace = Path(path), float(period_s), extra, bool(trace)
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._t0 = time.monotonic()
        self._base = None

    def sample(self) -> Dict[str, Any]:
        """One line's content now (the fields listed in the module docstring); an error in ``extra()`` is recorded in
        the line, never raised."""
        out: Dict[str, Any] = dict(t_s=round(time.monotonic() - self._t0, 2), wall=time.time())
        out.update(proc_memory())
        out["malloc"] = malloc_stats()
        out["gc"] = [dict(g) for g in gc.get_stats()]  # per generation: collections, collected, uncollectable
        out.update(census())
        if self.extra is not None:
            try:
                out["extra"] = self.extra()
            except Exception as e:  # noqa: BLE001 - a diagnostic must never stop the process it watches
                out["extra"] = {"error": f"{type(e).__name__}: {e}"}
        if self.trace:
            out["tracemalloc"] = self._trace_top()
        return out

    def _trace_top(self, n: int = 10):
        import tracemalloc

        snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
        if self._base is None:
            self._base = snap
        stats = snap.compare_to(self._base, "lineno")[:n]
        return dict(traced=tracemalloc.get_traced_memory()[0],
                    grew=[dict(where=f"{s.traceback[0].filename}:{s.traceback[0].lineno}", bytes=s.size_diff,
                               count=s.count_diff) for s in stats])

    def start(self) -> "MemProbe":
        """Start the writer thread (and tracemalloc when ``trace``), appending to ``path``; returns the probe."""
        if self.trace:
            import tracemalloc

            if not tracemalloc.is_tracing():
                tracemalloc.start(1)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._loop, name="rgpt4d-memprobe", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        with open(self.path, "a") as f:
            while True:
                f.write(json.dumps(self.sample()) + "\n")
                f.flush()
                if self._stop.wait(self.period_s):
                    return

    def stop(self) -> None:
        """Stop the writer thread and wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None


def from_env(extra: Optional[Callable[[], Dict[str, Any]]] = None) -> Optional[MemProbe]:
    """A started `MemProbe` when ``RGPT4D_MEMPROBE`` names a file (period ``RGPT4D_MEMPROBE_PERIOD_S``, default
    30 s; tracemalloc with ``RGPT4D_MEMPROBE_TRACEMALLOC=1``), else None."""
    path = os.environ.get(ENV, "")
    if not path:
        return None
    period = float(os.environ.get(ENV_PERIOD, "30") or 30)
    return MemProbe(path, period, extra, trace=os.environ.get(ENV_TRACEMALLOC, "") == "1").start()
