"""The reports behind the console's report pages (issue 20, item 3): figures, charts, exports.

The figures are router/reports.py's, over the analytics store (DuckDB). The console reads the store
through the ``Opener`` it is given (router/weekly.py ``store_opener``: inside ``switchboard run`` a
cursor of that process's exporter, in ``switchboard web`` a read-only opening when no process
writes the file); a store it cannot read raises ``StoreUnreadable``, which the console shows as
a 503 with the reason. Every query runs in a thread (DuckDB blocks), each report over one
snapshot of the store (its ``conversations`` table, which the exporter keeps).

``chart`` turns a report into one Chart.js bar chart: labels, datasets, and for every bar the
index of the report row behind it, which the page uses to list that row's conversations.

The complaint causes come from Redis (router/complaints.py) and embed every complaint (seconds per
thousand): they are kept ``COMPLAINTS_TTL_S`` per period.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from router.complaints import ComplaintReport, complaint_causes
from router.reports import Filters, Report, Reports
from router.runtime import Runtime
from router.weekly import Opener
from sla.calendar import Calendar

#: How long the complaint causes of a period are kept before they are computed again.
COMPLAINTS_TTL_S = 300.0
#: At most this many periods' (lengths') complaint causes are kept.
COMPLAINTS_KEPT = 8

#: The two bars of a duration report's group or agent.
_DURATION = ("p50_s", "p90_s")


class ConsoleReports:
    """Runs reports for the console over the analytics store; keeps complaint causes a while."""

    def __init__(self, rt: Runtime, opener: Opener) -> None:
        self._rt = rt
        self._opener = opener
        self._complaints: dict[float, tuple[float, ComplaintReport]] = {}
        self._computing: dict[float, asyncio.Task[ComplaintReport]] = {}

    async def _calendars(self) -> Callable[[str], Calendar] | None:
        # Business hours: the calendars of the SLA policy in force (24/7 without one).
        return await self._rt.sla_policies.calendars()

    async def run(self, name: str, filters: Filters, options: dict[str, str]) -> Report:
        """Report ``name`` with its options (``by``, ``bucket``), each row with its conversations."""
        calendars = await self._calendars()

        def work() -> Report:
            with self._opener() as con:
                return Reports(con, calendars).run(name, filters, **options)

        return await asyncio.to_thread(work)

    async def export(self, name: str, filters: Filters, options: dict[str, str], fmt: str) -> bytes:
        """The report as a CSV or Parquet file (``Reports.export``, the conversation ids included)."""
        calendars = await self._calendars()

        def work() -> bytes:
            with self._opener() as con, tempfile.TemporaryDirectory(prefix="switchboard-report-") as tmp:
                reports = Reports(con, calendars)
                path = Path(tmp) / f"report.{fmt}"
                reports.export(reports.run(name, filters, **options), path, fmt, drill=True)
                return path.read_bytes()

        return await asyncio.to_thread(work)

    async def complaints(self, days: float) -> ComplaintReport:
        """The complaint causes of the last ``days``, computed once per ``COMPLAINTS_TTL_S`` (the
        period then ends when they were computed); concurrent requests share one computation."""
        kept = self._complaints.get(days)
        if kept is not None and time.monotonic() - kept[0] < COMPLAINTS_TTL_S:
            return kept[1]
        task = self._computing.get(days)
        if task is None:
            task = asyncio.create_task(complaint_causes(self._rt, days))
            self._computing[days] = task
            task.add_done_callback(lambda _: self._computing.pop(days, None))
        found = await asyncio.shield(task)
        if days not in self._complaints and len(self._complaints) >= COMPLAINTS_KEPT:
            self._complaints.pop(min(self._complaints, key=lambda k: self._complaints[k][0]))
        self._complaints[days] = (time.monotonic(), found)
        return found


def cell(value: Any) -> Any:
    """A figure as JSON carries it (the periods are naive UTC timestamps)."""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M") if value.hour or value.minute else value.strftime("%Y-%m-%d")
    return value


def _label(value: Any) -> str:
    return "(none)" if value is None else str(cell(value))


def chart(report: Report) -> dict[str, Any]:
    """One Chart.js bar chart of ``report``: ``labels`` (x), ``datasets`` each with ``data`` and
    ``rows`` (the report row of each bar, or None where there is none), ``stacked``, ``unit``."""
    cols = report.columns
    rows = report.rows
    if report.name in ("volume", "answers", "sla"):
        # Two keys: x is the first (period or group), a dataset per value of the second.
        x_col, series_col = (0, 1)
        value_col = {"volume": 2, "answers": 2, "sla": 4}[report.name]
        labels = list(dict.fromkeys(_label(r[x_col]) for r in rows))
        series = list(dict.fromkeys(_label(r[series_col]) for r in rows))
        datasets = []
        for s in series:
            data: list[float | None] = [None] * len(labels)
            at: list[int | None] = [None] * len(labels)
            for i, r in enumerate(rows):
                if _label(r[series_col]) == s:
                    x = labels.index(_label(r[x_col]))
                    value = r[value_col]
                    data[x] = round(value * 100, 1) if report.name == "sla" else value
                    at[x] = i
            datasets.append({"label": s, "data": data, "rows": at})
        unit = "% of targets met" if report.name == "sla" else "conversations"
        return {"labels": labels, "datasets": datasets, "stacked": report.name != "sla", "unit": unit}
    labels = [f"{_label(r[0])} → {_label(r[1])}" if report.name == "transfers" else _label(r[0]) for r in rows]
    index = list(range(len(rows)))
    if report.name in ("first_response", "resolution"):
        datasets = [
            {"label": c.removesuffix("_s"), "data": [round(r[cols.index(c)] / 3600, 2) for r in rows], "rows": index}
            for c in _DURATION
        ]
        return {"labels": labels, "datasets": datasets, "stacked": False, "unit": "business hours"}
    column, scale, unit = {
        "reopens": ("reopen_rate", 100, "% reopened"),
        "csat": ("average", 1, "average rating (1-5)"),
        "transfers": ("transfers", 1, "transfers"),
    }[report.name]
    values = [None if r[cols.index(column)] is None else round(r[cols.index(column)] * scale, 2) for r in rows]
    datasets = [{"label": column, "data": values, "rows": index}]
    return {"labels": labels, "datasets": datasets, "stacked": False, "unit": unit}
