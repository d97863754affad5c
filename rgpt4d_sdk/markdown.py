"""Markdown pipe tables: the ``table.md`` of `eval r4d-bench` and `eval robofac` (a neutral module: any package
may write its tables with it)."""
from __future__ import annotations

from typing import Any, Iterable, List, Optional, Sequence


def cell(value: Optional[float]) -> str:
    """A percentage or score with one decimal; "–" when there is none (no items)."""
    return "–" if value is None else f"{value:.1f}"


def table(header: Sequence[Any], rows: Iterable[Sequence[Any]]) -> List[str]:
    """The lines of a pipe table: the header, the ``|---|`` rule, one line per row (cells written with ``str``; an
    empty cell is a single space, so the header ``["", "a"]`` is ``| | a |``)."""
    def line(cells: Sequence[Any]) -> str:
        return "|" + "".join(f" {c} |" if str(c) else " |" for c in cells)

    return [line(header), "|" + "---|" * len(header), *(line(r) for r in rows)]
