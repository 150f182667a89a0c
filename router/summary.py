"""The weekly summary for the support lead (issue 20, item 5): a week's report figures as text and
a small HTML page.

``gather`` runs the reports of router/reports.py over one ISO week (and the volume of the week
before, for the change); ``render`` is a pure function from those figures to a ``Summary``. The
figures follow the reports' rule: a conversation counts in the week it **opened**, with what
happened to it up to the store's newest event. A figure that cannot be computed (no replied
conversation for a first-response time, no rating for a CSAT average, a week before the store's
oldest event for a change) is written as missing with the reason, never as 0 or a guess.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import duckdb

from router.reports import Filters, Report, ReportError, Reports
from sla.calendar import Calendar

if TYPE_CHECKING:
    from router.complaints import ComplaintReport

#: The reports a summary is made of, each over the week (``volume_*_before``: the week before).
PARTS = ("first_response", "resolution", "sla", "reopens", "csat", "answers", "transfers")
ANSWER_OUTCOMES = ("solved", "closed", "reopened", "open")
#: A quoted complaint is cut to this many characters (an e-mail, not the conversation).
QUOTE_CHARS = 160


@dataclass(frozen=True, slots=True)
class Week:
    """An ISO week (Monday 00:00 to the next Monday 00:00) in a time zone."""

    year: int
    number: int
    zone: str = "UTC"

    @classmethod
    def parse(cls, text: str, zone: str = "UTC") -> Week:
        """``YYYY-Www`` (2026-W45); ReportError naming the form otherwise."""
        year, sep, number = text.strip().upper().partition("-W")
        try:
            if not sep:
                raise ValueError(text)
            date.fromisocalendar(int(year), int(number), 1)  # week 53 of a year without one fails
        except ValueError:
            raise ReportError(f"week {text!r}: an ISO week such as 2026-W45") from None
        return cls(int(year), int(number), zone)

    @classmethod
    def of(cls, at: datetime, zone: str = "UTC") -> Week:
        """The week ``at`` (aware) falls in, in ``zone``."""
        year, number, _ = at.astimezone(ZoneInfo(zone)).isocalendar()
        return cls(year, number, zone)

    @property
    def label(self) -> str:
        return f"{self.year}-W{self.number:02d}"

    @property
    def monday(self) -> date:
        return date.fromisocalendar(self.year, self.number, 1)

    @property
    def start(self) -> datetime:
        return datetime.combine(self.monday, time(), ZoneInfo(self.zone))

    @property
    def end(self) -> datetime:
        return datetime.combine(self.monday + timedelta(days=7), time(), ZoneInfo(self.zone))

    def shift(self, weeks: int) -> Week:
        year, number, _ = (self.monday + timedelta(weeks=weeks)).isocalendar()
        return Week(year, number, self.zone)

    def filters(self) -> Filters:
        return Filters(start=self.start, end=self.end)


@dataclass(frozen=True, slots=True)
class Figures:
    """What a summary is made of: the reports over ``week`` (``PARTS``, the volume by group and by
    channel), the volume of the week before, and the store's oldest and newest event (UTC)."""

    week: Week
    reports: dict[str, Report]
    oldest: datetime | None
    newest: datetime | None
    business_hours: bool
    top_transfers: int = 5


@dataclass(frozen=True, slots=True)
class WeekCauses:
    """What users complained about in the week (router/complaints.py reads it from Redis, not from
    the store): the report, or why there is none (``missing``); ``before_missing`` says why the
    week before's sizes are no comparison (Redis no longer holds all of that week)."""

    report: ComplaintReport | None
    missing: str = ""
    before_missing: str = ""
    top: int = 5


@dataclass(frozen=True, slots=True)
class Summary:
    week: str
    subject: str
    text: str
    html: str


def gather(
    con: duckdb.DuckDBPyConnection,
    week: Week,
    calendar: Callable[[str], Calendar] | None = None,
    *,
    top_transfers: int = 5,
) -> Figures:
    """Run the reports over ``week`` on ``con`` (a read-only connection, or a cursor of the
    exporter's, which may commit meanwhile): every report over one snapshot of the store."""
    reports = Reports(con, calendar, drill=False)
    before = week.shift(-1)
    with reports.snapshot():
        found = {name: reports.run(name.replace("_", "-"), week.filters()) for name in PARTS}
        for by in ("group", "channel"):
            found[f"volume_{by}"] = reports.volume(week.filters(), by=by, bucket="week")
            found[f"volume_{by}_before"] = reports.volume(before.filters(), by=by, bucket="week")
        row = con.execute('SELECT min("at"), max("at") FROM events WHERE conv IS NOT NULL').fetchone()
    oldest, newest = (None, None) if row is None else (_utc(row[0]), _utc(row[1]))
    # "Business hours" only when a calendar keeps hours for a group that answered or closed.
    groups = {r[0] for name in ("first_response", "resolution") for r in found[name].rows if r[0] is not None}
    office = calendar is not None and any(not calendar(g).around_the_clock for g in groups)
    return Figures(week, found, oldest, newest, office, top_transfers)


def _utc(at: datetime | None) -> datetime | None:
    return at.replace(tzinfo=UTC) if at is not None else None


# -- rendering (pure) ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Section:
    title: str
    lines: list[str]  # the text form
    table: list[list[str]] | None = None  # the HTML form: a header row, then rows
    headline: str = ""  # above the table in the HTML


def render(f: Figures, causes: WeekCauses | None = None) -> Summary:
    """The summary of ``f`` as plain text (Telegram, the e-mail's text part) and HTML, with the
    week's complaint causes when given (the weekly service always gives them; without, the section
    is left out rather than said empty)."""
    week, before = f.week, f.week.shift(-1)
    last = week.end - timedelta(days=1)
    span = f"{week.start:%a %d %b} - {last:%a %d %b %Y} ({week.zone})"
    title = f"Support weekly summary {week.label}"
    notes = [f"{span}. Conversations opened in the week, with what happened to them up to {_when(f.newest, week)}."]
    if f.oldest is None:
        notes.append("The analytics store holds no conversation event: every figure below is missing.")
    elif f.oldest > week.start:
        notes.append(f"The store's oldest event is {_when(f.oldest, week)}, after the week began: figures are partial.")
    before_known = f.oldest is not None and f.oldest <= before.start
    sections = [
        _volume(f, before_known),
        _durations(f, "first_response", "First response", "replied"),
        _durations(f, "resolution", "Resolution", "closed (and not reopened since)"),
        _sla(f),
        _reopens(f),
        _csat(f),
        _answers(f),
        _transfers(f),
    ]
    if causes is not None:
        sections.append(_causes(causes))
    text = "\n".join([title, *notes, ""] + [line for s in sections for line in (s.title, *s.lines, "")])
    return Summary(week.label, title, text.rstrip() + "\n", _html(title, notes, sections))


def _when(at: datetime | None, week: Week) -> str:
    return "-" if at is None else f"{at.astimezone(ZoneInfo(week.zone)):%a %d %b %Y %H:%M}"


def _sum(report: Report) -> dict[Any, int]:
    """Conversations per key of a volume report (its rows may be split over two UTC weeks)."""
    out: dict[Any, int] = {}
    for _, key, n in report.rows:
        out[key] = out.get(key, 0) + n
    return out


def _change(now: int, before: int, known: bool) -> str:
    if not known:
        return "change missing: the store has no events from the week before"
    if before == 0:
        return "week before 0" + ("" if now == 0 else ", change not a percentage")
    return f"week before {before}, {_percent(now, before)}"


def _percent(now: int, before: int) -> str:
    # Rounded first, so that a change under half a percent is +0%, never -0%.
    return f"{round((now - before) * 100 / before):+d}%"


def _short_change(now: int, before: int, known: bool) -> str:
    if not known:
        return ""
    return " (week before 0)" if before == 0 else f" ({_percent(now, before)})"


def _volume(f: Figures, known: bool) -> _Section:
    total = sum(_sum(f.reports["volume_group"]).values())
    total_before = sum(_sum(f.reports["volume_group_before"]).values())
    lines = [f"{total} conversations ({_change(total, total_before, known)})"]
    table = [["", "conversations", "week before", "change"]]
    for by in ("group", "channel"):
        now, before = _sum(f.reports[f"volume_{by}"]), _sum(f.reports[f"volume_{by}_before"])
        keys = sorted(set(now) | set(before), key=lambda k: (-now.get(k, 0), str(k)))
        parts = []
        for key in keys:
            name = "(none)" if key is None else str(key)
            parts.append(f"{name} {now.get(key, 0)}{_short_change(now.get(key, 0), before.get(key, 0), known)}")
            change = _change(now.get(key, 0), before.get(key, 0), known)
            table.append([f"{by} {name}", str(now.get(key, 0)), str(before.get(key, 0)) if known else "-", change])
        lines.append(f"  by {by}: " + (", ".join(parts) if parts else "none"))
    return _Section("Volume", lines, table if len(table) > 1 else None, lines[0])


def _duration(seconds: float) -> str:
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _durations(f: Figures, name: str, label: str, what: str) -> _Section:
    clock = "business hours where the group's SLA calendar keeps them" if f.business_hours else "wall-clock time"
    rows = f.reports[name].rows
    if not rows:
        return _Section(f"{label} p50 / p90", [f"  missing: no conversation opened in the week was {what}"])
    table = [["group", "conversations", "p50", "p90"]]
    lines = []
    for group, n, p50, p90 in rows:
        table.append([str(group), str(n), _duration(p50), _duration(p90)])
        lines.append(f"  {group}: {_duration(p50)} / {_duration(p90)} ({n} conversations)")
    return _Section(f"{label} p50 / p90 ({clock})", lines, table)


def _sla(f: Figures) -> _Section:
    rows = f.reports["sla"].rows
    if not rows:
        return _Section("SLA attainment", ["  missing: no conversation opened in the week ran under an SLA policy"])
    table = [["group", "target", "conversations", "breached", "attained"]]
    lines = []
    for group, target, n, breached, attained in rows:
        table.append([str(group), target, str(n), str(breached), f"{attained:.1%}"])
        lines.append(f"  {group} {target}: {attained:.1%} ({breached} of {n} breached)")
    return _Section("SLA attainment", lines, table)


def _reopens(f: Figures) -> _Section:
    rows = f.reports["reopens"].rows
    if not rows:
        return _Section("Reopen rate", ["  missing: no conversation opened in the week was closed"])
    closed, reopened = sum(r[1] for r in rows), sum(r[2] for r in rows)
    lines = [f"  {reopened / closed:.1%} ({reopened} of {closed} closed were reopened)"]
    lines += [f"  {group}: {rate:.1%} ({n_re} of {n})" for group, n, n_re, rate in rows]
    table = [["group", "closed", "reopened", "rate"]] + [
        [str(g), str(n), str(r), f"{rate:.1%}"] for g, n, r, rate in rows
    ]
    return _Section("Reopen rate", lines, table, lines[0].strip())


def _csat(f: Figures) -> _Section:
    rows = f.reports["csat"].rows
    if not rows:
        return _Section("CSAT", ["  missing: no rating for a conversation opened in the week"])
    n = sum(r[1] for r in rows)
    # The overall average from the groups' own: each weighted by its number of ratings.
    average = sum(r[1] * r[2] for r in rows) / n
    lines = [f"  average {average:.2f} of 5 over {n} ratings"]
    lines += [f"  {group}: {avg:.2f} ({count} ratings, {sat:.0%} 4 or 5)" for group, count, avg, sat in rows]
    table = [["group", "ratings", "average", "4 or 5"]]
    table += [[str(g), str(c), f"{a:.2f}", f"{s:.0%}"] for g, c, a, s in rows]
    return _Section("CSAT", lines, table, lines[0].strip())


def _answers(f: Figures) -> _Section:
    counts: dict[str, int] = {}
    for _, outcome, n in f.reports["answers"].rows:
        counts[outcome] = counts.get(outcome, 0) + n
    if not counts:
        return _Section(
            "Knowledge-base answers", ["  none: the knowledge base answered no conversation opened in the week"]
        )
    total = sum(counts.values())
    shown = ", ".join(f"{o} {counts.get(o, 0)}" for o in ANSWER_OUTCOMES)
    table = [["outcome", "conversations"]] + [[o, str(counts.get(o, 0))] for o in ANSWER_OUTCOMES]
    return _Section("Knowledge-base answers", [f"  {total} answered: {shown}"], table, f"{total} answered")


def _transfers(f: Figures) -> _Section:
    rows = f.reports["transfers"].rows[: f.top_transfers]
    if not rows:
        return _Section("Top transfers", ["  none"])
    table = [["from", "to", "transfers"]] + [[str(a), str(b), str(n)] for a, b, n in rows]
    return _Section("Top transfers", [f"  {a} -> {b}: {n}" for a, b, n in rows], table)


def _causes(c: WeekCauses) -> _Section:
    title = "What users complained about"
    if c.report is None:
        return _Section(title, [f"  missing: {c.missing}"])
    found = c.report.found
    known = not c.before_missing
    before = f"{found.previous} the week before" if known else "the week before unknown"
    if not found.causes:
        return _Section(title, [f"  no complaint in the week ({before})"])
    head = f"{found.complaints} complaints ({before}); the {min(c.top, len(found.causes))} largest causes"
    lines = [f"  {head}"]
    if not known:
        lines.append(f"  change missing: {c.before_missing}")
    table = [["cause", "complaints", "week before", "change", "as a user wrote it"]]
    for cause in found.causes[: c.top]:
        change = f" (week before {cause.previous}, {cause.change:+d})" if known else ""
        spike = "  SPIKE" if cause.spike and known else ""
        quote = _quote(cause.quotes[0].text) if cause.quotes else ""
        lines.append(f"  {cause.name}: {cause.size}{change}{spike}")
        if quote:
            lines.append(f'    "{quote}"')
        table.append(
            [
                cause.name + (" (spike)" if spike else ""),
                str(cause.size),
                str(cause.previous) if known else "-",
                f"{cause.change:+d}" if known else "-",
                quote,
            ]
        )
    if len(found.causes) > c.top:
        rest = found.causes[c.top :]
        lines.append(f"  {len(rest)} smaller causes: {sum(x.size for x in rest)} complaints")
    return _Section(title, lines, table, head)


def _quote(text: str) -> str:
    """One line of at most QUOTE_CHARS, cut with an ellipsis (the words as written otherwise)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= QUOTE_CHARS else flat[: QUOTE_CHARS - 1].rstrip() + "\u2026"


def _html(title: str, notes: list[str], sections: list[_Section]) -> str:
    e = html.escape
    out = [f"<h2>{e(title)}</h2>", *(f"<p>{e(n)}</p>" for n in notes)]
    for s in sections:
        out.append(f"<h3>{e(s.title)}</h3>")
        if s.table is None:
            out += [f"<p>{e(line.strip())}</p>" for line in s.lines]
            continue
        if s.headline:
            out.append(f"<p>{e(s.headline)}</p>")
        head, *rows = s.table
        out.append('<table border="1" cellspacing="0" cellpadding="4">')
        out.append("<tr>" + "".join(f"<th>{e(c)}</th>" for c in head) + "</tr>")
        out += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows]
        out.append("</table>")
    body = "\n".join(out)
    return f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"></head><body>\n{body}\n</body></html>\n'
