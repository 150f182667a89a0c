"""A fixed event log written into an analytics store through the exporter's own ``Store.commit``
(the reports' and the weekly summary's tests, which check figures worked out by hand)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from router.exporter import Batch, Row, Store

#: conversation -> (channel, language, tags, SLA policy version or None)
Convs = Mapping[str, tuple[str, str, list[str], int | None]]
#: (conversation, group, type, when "DD HH:MM[:SS]" in the month, data)
Log = Sequence[tuple[str, str, str, str, dict[str, object]]]


def ms(when: str, month: int = 11) -> int:
    """Epoch ms of "DD HH:MM[:SS]" in ``month`` of 2026, UTC."""
    day, clock = when.split(" ")
    parts = [int(x) for x in clock.split(":")] + [0]
    return int(datetime(2026, month, int(day), parts[0], parts[1], parts[2], tzinfo=UTC).timestamp() * 1000)


def rows_of(log: Log, convs: Convs, *, month: int = 11) -> list[Row]:
    """The exporter's rows of ``log``; a "DD" of the form "-DD" is that day of the month before
    ``month``."""
    rows: list[Row] = []
    for i, (conv, group, typ, when, data) in enumerate(log):
        at = ms(when.removeprefix("-"), month - 1) if when.startswith("-") else ms(when, month)
        channel, lang, tags, sla = convs[conv]
        agent: Any = data.get("agent") or data.get("by")
        prio = data.get("prio")
        rows.append((
            f"events:{group}@0/{at}-{i}", f"events:{group}", 0, conv, typ, at, group, channel, lang,
            agent, None if prio is None else str(prio), json.dumps(data), json.dumps(tags), sla,
        ))  # fmt: skip
    return rows


def write_store(path: Path, log: Log, convs: Convs, extra: Iterable[Row] = (), *, month: int = 11) -> Path:
    """The store at ``path`` holding ``log`` (``rows_of``) and the ``extra`` rows as they are, in
    one commit."""
    store = Store(path)
    rows = [*rows_of(log, convs, month=month), *extra]
    store.commit(Batch(rows=rows, cursors={"events:all@0": ("1-0", len(rows))}))
    store.close()
    return path
