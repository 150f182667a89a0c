"""The report pages (issue 20, item 3): ``/reports``, ``/reports/{name}`` with its filters, chart
and table, the conversations behind a row, and the CSV/Parquet export; ``/reports/complaints``.

Admins see every report; a supervisor those of their groups — the group filter is forced to one of
them (their first when none is asked), another group is a 403; agents get 403. The filters are
query parameters (a report's URL is a link to its figures): ``start`` and ``end`` (days, UTC, both
included), ``group``, ``channel``, ``language``, ``tag``, ``agent``, and the report's options ``by``
and ``bucket``. The page's script (static/reports.js) draws the chart from a JSON block (the CSP
allows no inline script) and lists a clicked bar's conversations from the same data.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from router.accounts import Forbidden, User
from router.errors import BadRequest, NotFound
from router.reports import BUCKETS, CSAT_BY, FORMATS, TIME_BY, VOLUME_BY, Filters, Report, ReportError

from .access import require_reports
from .http import console, require
from .pages import render
from .reporting import cell, chart

#: Each report's title, what it shows, and its options with their choices (the first is the default).
PAGES: dict[str, tuple[str, str, dict[str, tuple[str, ...]]]] = {
    "volume": (
        "Volume",
        "Conversations opened per period, by group, tag, language or channel.",
        {"by": tuple(VOLUME_BY), "bucket": ("day", *(b for b in BUCKETS if b != "day"))},
    ),
    "first-response": (
        "First response time",
        "From opening to the first reply, in business hours of the replying group: p50 and p90.",
        {"by": TIME_BY},
    ),
    "resolution": (
        "Resolution time",
        "From opening to the last close, in business hours of the closing group: p50 and p90.",
        {"by": TIME_BY},
    ),
    "sla": ("SLA attainment", "Per group and target: the share of conversations under a policy that met it.", {}),
    "reopens": ("Reopen rate", "Per group: of the conversations closed, how many were reopened.", {}),
    "answers": (
        "Auto-answer outcomes",
        "After the knowledge base answered: solved, reopened, closed by someone else, or open.",
        {},
    ),
    "csat": (
        "CSAT",
        "Satisfaction ratings by group, rated agent, language or tag: how many, the average, the share of 4 and 5.",
        {"by": tuple(CSAT_BY)},
    ),
    "transfers": ("Transfers", "Moves between groups: a large pair shows where routing is wrong.", {}),
}
FILTERS = ("channel", "language", "tag", "agent")
#: Days the complaints page looks back: the default and the most.
COMPLAINT_DAYS = 7
COMPLAINT_DAYS_MAX = 90


def _day(params: Any, name: str) -> date | None:
    raw = (params.get(name) or "").strip()
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise BadRequest(f"{name}: a day as YYYY-MM-DD (not {raw[:40]})") from None


async def _groups(request: Request, user: User) -> list[str]:
    """The groups the user may pick in the group filter."""
    return await console(request).all_groups() if user.is_admin else list(user.groups)


@dataclass(frozen=True, slots=True)
class Asked:
    """A report's query, checked: its filters, options, and the query as the page's links repeat it."""

    name: str
    filters: Filters
    options: dict[str, str]
    query: dict[str, str]


def _asked(request: Request, user: User, name: str, groups: list[str]) -> Asked:
    """The filters and options of the query, checked (400 for a bad one, 403 for a group not the user's)."""
    params = request.query_params
    options: dict[str, str] = {}
    for option, choices in PAGES[name][2].items():
        value = params.get(option) or choices[0]
        if value not in choices:
            raise BadRequest(f"{option}: one of {', '.join(choices)} (not {value[:40]})")
        options[option] = value
    start, end = _day(params, "start"), _day(params, "end")
    if start and end and end < start:
        raise BadRequest("end: a day on or after start")
    group = params.get("group") or None
    if group is None and not user.is_admin:
        if not groups:
            raise Forbidden("you are in no group: no report to see")
        group = groups[0]  # a supervisor's reports are always of one of their groups
    require_reports(user, group)
    values = {k: (params.get(k) or "").strip() or None for k in FILTERS}
    filters = Filters(
        start=datetime.combine(start, datetime.min.time(), UTC) if start else None,
        end=datetime.combine(end + timedelta(days=1), datetime.min.time(), UTC) if end else None,
        group=group,
        **values,
    )
    days = {"start": start.isoformat() if start else None, "end": end.isoformat() if end else None}
    query = {k: v for k, v in {**days, "group": group, **values, **options}.items() if v}
    return Asked(name, filters, options, query)


async def _report(request: Request) -> tuple[Asked, list[str], Report]:
    """The query of a report page (checked) with the groups the user may pick, and the figures."""
    user = await require(request)
    require_reports(user)
    name = request.path_params["name"]
    if name not in PAGES:
        raise NotFound(f"report {name}")
    groups = await _groups(request, user)
    asked = _asked(request, user, name, groups)
    try:
        report = await console(request).reports.run(name, asked.filters, asked.options)
    except ReportError as exc:
        raise BadRequest(str(exc)) from exc
    return asked, groups, report


async def index(request: Request) -> Response:
    user = await require(request)
    require_reports(user)
    return await render(request, "reports.html", pages=PAGES)


async def report_page(request: Request) -> Response:
    asked, groups, report = await _report(request)
    name = asked.name
    title, about, choices = PAGES[name]
    data = {
        "name": name,
        "columns": list(report.columns),
        "rows": [[cell(v) for v in row] for row in report.rows],
        "convs": report.convs,
        "chart": chart(report),
    }
    return await render(
        request,
        "report.html",
        name=name,
        title=title,
        about=about,
        choices=choices,
        options=asked.options,
        query=asked.query,
        qs=urlencode(asked.query),
        groups=groups,
        report=report,
        rows=data["rows"],
        data=data,
        pages=PAGES,
    )


async def drill(request: Request) -> Response:
    """The conversations behind row ``row`` of a report."""
    asked, _, report = await _report(request)
    raw = request.query_params.get("row", "")
    if not raw.isdigit() or int(raw) >= len(report.rows):
        raise BadRequest(f"row: a row number from 0 to {len(report.rows) - 1} (not {raw[:20]})")
    row = int(raw)
    return await render(
        request,
        "report_drill.html",
        name=asked.name,
        title=PAGES[asked.name][0],
        columns=report.columns,
        row=[cell(v) for v in report.rows[row]],
        convs=report.convs[row],
        qs=urlencode(asked.query),
    )


async def export(request: Request) -> Response:
    user = await require(request)
    require_reports(user)
    name, fmt = request.path_params["name"], request.path_params["fmt"]
    if name not in PAGES:
        raise NotFound(f"report {name}")
    if fmt not in FORMATS:
        raise NotFound(f"format {fmt}: one of {', '.join(FORMATS)}")
    asked = _asked(request, user, name, await _groups(request, user))
    try:
        body = await console(request).reports.export(name, asked.filters, asked.options, fmt)
    except ReportError as exc:
        raise BadRequest(str(exc)) from exc
    kind = "text/csv; charset=utf-8" if fmt == "csv" else "application/vnd.apache.parquet"
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M")
    disposition = f'attachment; filename="switchboard-{name}-{stamp}.{fmt}"'
    return Response(body, media_type=kind, headers={"content-disposition": disposition})


async def complaints(request: Request) -> Response:
    """The complaint causes of the last ``days`` (router/complaints.py, from Redis): admins only,
    as the complaints span every group."""
    user = await require(request)
    if not user.is_admin:
        raise Forbidden("the complaint causes span every group: admins only")
    raw = request.query_params.get("days", str(COMPLAINT_DAYS))
    if not raw.isdigit() or not 1 <= int(raw) <= COMPLAINT_DAYS_MAX:
        raise BadRequest(f"days: a whole number from 1 to {COMPLAINT_DAYS_MAX}")
    found = await console(request).reports.complaints(float(raw))
    return await render(request, "report_complaints.html", days=int(raw), found=found, pages=PAGES)


def routes() -> list[BaseRoute]:
    return [
        Route("/reports", index),
        Route("/reports/complaints", complaints),
        Route("/reports/{name}.{fmt}", export),
        Route("/reports/{name}/drill", drill),
        Route("/reports/{name}", report_page),
    ]
