"""Writing files so that a killed process never leaves half of one, JSON in and out, and the resumable results file.

Every package that writes a file another run will read (analyze and eval outputs, compiled manifests, training
checkpoints' state, the tiny checkpoint, the digest cache) writes it here: to a temporary name beside the target,
renamed into place (`atomic_write_text`, `write_json`). This module imports nothing else of the SDK but its errors,
so any package may use it without an import cycle.

`ResultStore` is the append-only ``results.jsonl`` that makes `analyze` and `eval` resumable. Every row is one JSON
line. All rows of one unit (a clip, a benchmark item) are appended with a single write, then flushed and fsynced,
and each carries ``unit_rows`` (how many rows its unit has): a unit counts as finished only when all of its rows are
on disk. A run killed mid-write leaves at most a torn last line, which the next run cuts off before appending. Later
rows with the same id replace earlier ones; a unit redone after a torn write replaces all of its old rows.

Every row also carries the fingerprint of the configuration that made it (``FINGERPRINT_FIELD``), so the results
file itself says which settings it holds: a resume checks the rows, not only ``run.json`` (which a user may delete
or edit), and refuses to mix configurations (`check_fingerprint`).
"""
from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Set

from .errors import ConfigError, DatasetError

FINGERPRINT_FIELD = "run_fingerprint"


# ------------------------------------------------------------------------------------------------ atomic writes
def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to a temporary name beside ``path``, then rename it into place: a killed run never leaves a
    half-written file that a later run would take as finished. The temporary name carries the process id, so two
    processes writing the same file never write into one temporary file."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------ JSON
def write_json(path: Path, data: Any, *, sort_keys: bool = False, allow_nan: bool = False,
               default: Optional[Callable[[Any], Any]] = None, indent: int = 2, ensure_ascii: bool = True,
               mkdir: bool = False) -> None:
    """``data`` as indented JSON with a final newline, written atomically (`atomic_write_text`, UTF-8).

    sort_keys: keys in sorted order (manifests) or as given (results, reports). allow_nan: write NaN/Infinity
    (not JSON; the default refuses them with ``ValueError``). default: how to write values JSON has no type for
    (e.g. ``str``). ensure_ascii: False writes non-ASCII text as it is. mkdir: create the parent folders first."""
    path = Path(path)
    if mkdir:
        path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(data, indent=indent, sort_keys=sort_keys, allow_nan=allow_nan,
                                       default=default, ensure_ascii=ensure_ascii) + "\n")


def load_json(path: Path, fallback: Any = None) -> Any:
    """The JSON value in ``path``, or ``fallback`` when the file is missing, unreadable or not valid JSON (for files
    that are only a summary or a cache: losing one costs a recomputation, never a wrong answer)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return fallback


# ------------------------------------------------------------------------------------------------ results.jsonl
def check_fingerprint(rows: Iterable[dict], fingerprint: str, recorded: Optional[str], where: Path) -> None:
    """Refuse (`ConfigError`) rows made with another configuration than ``fingerprint``.

    Rows carry their configuration's fingerprint; rows written before rows carried one are accepted only when
    ``recorded`` (the fingerprint in ``run.json``) vouches for them. ``where`` is the output folder."""
    found = Counter(r.get(FINGERPRINT_FIELD) for r in rows)
    if not found:
        return
    other = sorted(f for f in found if f is not None and f != fingerprint)
    if other:
        raise ConfigError(
            f"{where} holds results of a different configuration ({sum(found[f] for f in other)} rows made with "
            f"fingerprint {other[0]}, this run is {fingerprint}: data, questions, model or settings changed); use "
            "another output folder, or delete that folder to start again.")
    if found.get(None) and recorded != fingerprint:
        raise ConfigError(
            f"{where} holds {found[None]} results rows without a configuration fingerprint and no run.json that "
            "says which configuration made them; use another output folder, or delete that folder to start again.")


class ResultStore:
    """results.jsonl under an output folder."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def load(self) -> Dict[str, dict]:
        """Rows by id (last write wins). A torn final line is cut off the file; a corrupt middle line is an error."""
        if not self.path.exists():
            return {}
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):  # the previous run died inside a write: drop the partial line
            with open(self.path, "r+b") as f:
                f.truncate(end)
                f.flush()
                os.fsync(f.fileno())
            data = data[:end]
        rows: Dict[str, dict] = {}
        for n, line in enumerate(data.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as e:
                raise DatasetError(f"{self.path} line {n} is not JSON ({e}); the file was edited or damaged. Move it "
                                   "away to start afresh, or delete that line to resume.") from e
            rows[row["id"]] = row
        return rows

    @staticmethod
    def finished_units(rows: Dict[str, dict]) -> Set[str]:
        """Units whose every row is on disk."""
        counts: Counter = Counter()
        expected: Dict[str, Set[int]] = {}
        for r in rows.values():
            counts[r["unit_id"]] += 1
            expected.setdefault(r["unit_id"], set()).add(r["unit_rows"])
        return {u for u, n in counts.items() if expected[u] == {n}}

    def append(self, rows: Iterable[dict]) -> None:
        """Append rows with one write, then flush and fsync (a unit's rows land together or not at all)."""
        text = "".join(json.dumps(r, sort_keys=True, allow_nan=False) + "\n" for r in rows)
        if not text:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    def rewrite(self, rows: List[dict]) -> None:
        """Replace the file atomically (used to drop error rows before retrying them)."""
        tmp = self.path.with_suffix(".jsonl.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, sort_keys=True, allow_nan=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
