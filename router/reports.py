"""Report figures over the analytics store (issue 20, item 3): one method per report.

Every figure is computed from the analytics store the exporter fills (router/exporter.py), never
from Redis: from its ``conversations`` table, one row per conversation that the exporter keeps in
the same transaction as the events (router/convfacts.py), so a report is one query over it (two
for the durations, in one transaction), filtered by ``Filters``. Each report reads the store as it
is when it runs; ``Reports.snapshot`` makes several reports one snapshot.

- the period is the conversation's **opening** time (its first ``created`` event that is not a
  transfer in); a conversation opened before the period is not counted, whatever happened later;
- group: the conversation was in that group at some point; agent: that agent did something to it
  (claimed, was assigned, replied, moved, closed); tag, channel, language: of the conversation.

Durations (first response, resolution) are in business seconds of the calendar of the group that
answered (or closed), ``sla/calendar.py``; p50 and p90 are nearest-rank percentiles (the value at
rank ``ceil(q * n)``, DuckDB's ``quantile_disc``). Every row carries the ids of the conversations
behind it (``drill``), and ``export`` writes a report as CSV or Parquet with DuckDB's ``COPY``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from router import convfacts
from router.errors import ConfigError
from sla.calendar import Calendar

BUCKETS = ("hour", "day", "week", "month")
VOLUME_BY = {"group": "opened_group", "channel": "channel", "language": "lang", "tag": "tag"}
TIME_BY = ("group", "agent")
CSAT_BY = {"group": "opened_group", "agent": "r.agent", "language": "lang", "tag": "tag"}
# One row per tag of each conversation (an untagged one: one row, tag NULL).
PER_TAG = "(SELECT *, unnest(CASE WHEN len(tags) > 0 THEN tags ELSE [NULL] END) AS tag FROM {src})"
SLA_TARGETS = ("first_response", "next_response", "resolution")
FORMATS = ("csv", "parquet")


class ReportError(ConfigError):
    """A report asked for with a bad name, option or filter."""


@dataclass(frozen=True, slots=True)
class Filters:
    """Which conversations a report counts (every field optional; all given must hold)."""

    start: datetime | None = None  # opened at or after (UTC)
    end: datetime | None = None  # opened before
    group: str | None = None
    channel: str | None = None
    language: str | None = None
    tag: str | None = None
    agent: str | None = None

    def where(self) -> tuple[str, list[Any]]:
        """The SQL condition on the ``conversations`` table and its parameters."""
        parts, params = ["opened IS NOT NULL"], list[Any]()
        for value, sql in (
            (self.start, "opened >= ?"),
            (self.end, "opened < ?"),
            (self.group, "list_contains(groups, ?)"),
            (self.channel, "channel = ?"),
            (self.language, "lang = ?"),
            (self.tag, "list_contains(tags, ?)"),
            (self.agent, "list_contains(agents, ?)"),
        ):
            if value is not None:
                parts.append(sql)
                params.append(_naive_utc(value) if isinstance(value, datetime) else value)
        return " AND ".join(parts), params


@dataclass(frozen=True, slots=True)
class Report:
    """A report's figures: ``rows`` under ``columns``, and per row the conversations behind it."""

    name: str
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]
    convs: list[list[str]] = field(default_factory=list)

    def records(self, drill: bool = False) -> list[dict[str, Any]]:
        out = [dict(zip(self.columns, row, strict=True)) for row in self.rows]
        if drill:
            for record, convs in zip(out, self.convs, strict=True):
                record["conv_ids"] = convs
        return out


def _naive_utc(at: datetime) -> datetime:
    # The store's timestamps are naive UTC (TIMESTAMP, not TIMESTAMPTZ).
    return at.astimezone(UTC).replace(tzinfo=None) if at.tzinfo else at


def _days(
    grp: str, calendar: Calendar, first: date, last: date
) -> list[tuple[str, datetime, float, list[dict[str, int]]]]:
    """The ``opening`` rows of ``grp`` for the UTC days ``first`` to ``last``."""
    intervals: list[tuple[int, int]] = []  # epoch ms, in order, from the local day before ``first``
    day = first - timedelta(days=1)
    while day <= last + timedelta(days=1):
        intervals += [(_ms(lo), _ms(hi)) for lo, hi in calendar.open_intervals(day)]
        day += timedelta(days=1)
    rows = []
    i, cum = 0, 0.0  # the first interval not wholly before the day, the open seconds before it
    day = first
    while day <= last:
        start = _ms(datetime(day.year, day.month, day.day, tzinfo=UTC))
        end = start + 86_400_000
        while i < len(intervals) and intervals[i][1] <= start:
            cum += (intervals[i][1] - intervals[i][0]) / 1000
            i += 1
        # An interval across midnight: its part before the day counts before it.
        before = cum + max(0, start - intervals[i][0]) / 1000 if i < len(intervals) else cum
        today, j = [], i
        while j < len(intervals) and intervals[j][0] < end:
            today.append({"lo": max(intervals[j][0], start), "hi": min(intervals[j][1], end)})
            j += 1
        rows.append((grp, datetime(day.year, day.month, day.day), before, today))
        day += timedelta(days=1)
    return rows


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


class Reports:
    """The reports over one DuckDB connection (read-only is enough; a store not migrated yet is
    folded once here, router/convfacts.py ``ensure``). ``calendar(group)`` gives a group's business
    hours (default: 24/7); without ``drill`` the rows carry no conversation ids (``Report.convs``
    lists are empty)."""

    def __init__(
        self, con: duckdb.DuckDBPyConnection, calendar: Callable[[str], Calendar] | None = None, *, drill: bool = True
    ) -> None:
        self.con = con
        self.drill = drill
        always = Calendar.always()
        self.calendar = calendar or (lambda group: always)
        self._snapshots = 0  # the depth of snapshot() blocks open
        convfacts.ensure(con)

    def _ids(self, aggregate: str) -> str:
        """The drill-down column: the conversation ids of a row, or NULL without ``drill`` (the
        lists are most of a report's cost over millions of events)."""
        return aggregate if self.drill else "NULL"

    def _selected(self, filters: Filters) -> tuple[str, list[Any]]:
        where, params = filters.where()
        return f"(SELECT * FROM {convfacts.TABLE} WHERE {where})", params

    def _grouped(self, name: str, columns: tuple[str, ...], sql: str, params: list[Any]) -> Report:
        """A query whose last column is the list of conversation ids of the row."""
        rows = self.con.execute(sql, params).fetchall()
        # A list aggregate over no row (every row filtered out) is NULL, not [].
        return Report(name, columns, [tuple(r[:-1]) for r in rows], [sorted(r[-1] or []) for r in rows])

    def volume(self, filters: Filters = Filters(), *, by: str = "group", bucket: str = "day") -> Report:
        """Conversations opened per ``bucket`` (hour, day, week, month; UTC) and ``by`` (group, tag,
        language, channel). A conversation with several tags counts once under each; none: NULL."""
        if by not in VOLUME_BY:
            raise ReportError(f"volume by {by!r}: one of {', '.join(VOLUME_BY)}")
        if bucket not in BUCKETS:
            raise ReportError(f"volume bucket {bucket!r}: one of {', '.join(BUCKETS)}")
        src, params = self._selected(filters)
        if by == "tag":
            src = PER_TAG.format(src=src)
        key = VOLUME_BY[by]
        sql = (
            f"SELECT date_trunc('{bucket}', opened) AS period, {key} AS key, count(*) AS n, {self._ids('list(conv)')}"
            f" FROM {src} GROUP BY ALL ORDER BY period, key NULLS LAST"
        )
        return self._grouped("volume", ("period", by, "conversations"), sql, params)

    def _durations(self, name: str, src: str, params: list[Any], by: str, end: str, group: str, agent: str) -> Report:
        """Opening to ``end`` per conversation of ``src``, in business seconds of ``group``'s
        calendar, p50/p90 per that group or per ``agent``."""
        if by not in TIME_BY:
            raise ReportError(f"{name} by {by!r}: one of {', '.join(TIME_BY)}")
        spans = (
            f"(SELECT conv, {group} AS grp, {agent} AS who, opened AS t0, {end} AS t1"
            f" FROM {src} WHERE {end} IS NOT NULL)"
        )
        # One snapshot: an exporter's commit between the calendars' range and the figures would add
        # spans past the days made for them. (Selecting the spans once into a TEMP table instead cost
        # more than reading them twice: 80-170 ms at 10M events.)
        with self.snapshot():
            office = self._opening_days(spans, params)
            # B(t): open seconds from the first day of the table to t: those before t's day, plus
            # what of each of that day's intervals had passed by t. A hash join on (group, day)
            # (an ASOF join on the intervals took twice as long over 250,000 spans).
            at = (
                "coalesce(k{n}.cum + coalesce(list_sum(list_transform(k{n}.open,"
                " lambda x: least(greatest(epoch_ms(d.t{n}) - x.lo, 0), x.hi - x.lo))), 0) / 1000, 0)"
            )
            # Only the rows of groups that keep hours go through the joins; 24/7 ones are a subtraction.
            sql = (
                f"SELECT {'d.grp' if by == 'group' else 'd.who'} AS key, count(*),"
                f" quantile_disc(s, 0.5), quantile_disc(s, 0.9), {self._ids('list(d.conv)')} FROM ("
                f" SELECT d.*, greatest({at.format(n=1)} - {at.format(n=0)}, 0)::DOUBLE AS s"
                f" FROM (SELECT * FROM {spans} WHERE list_contains(?, grp)) d"
                " LEFT JOIN opening k0 ON d.grp = k0.grp AND date_trunc('day', d.t0) = k0.day"
                " LEFT JOIN opening k1 ON d.grp = k1.grp AND date_trunc('day', d.t1) = k1.day"
                " UNION ALL BY NAME"
                " SELECT d.*, (greatest(epoch_ms(d.t1) - epoch_ms(d.t0), 0) / 1000)::DOUBLE AS s"
                f" FROM {spans} d WHERE NOT coalesce(list_contains(?, d.grp), false)) d"
                " GROUP BY key ORDER BY key NULLS LAST"
            )
            columns = (by, "conversations", "p50_s", "p90_s")
            return self._grouped(name, columns, sql, [*params, office, *params, office])

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Reports (or a report's statements) that must see one state of the store, while an
        exporter may commit on the same file: one read transaction, and those nested in it join it.
        Each report is one snapshot by itself; ``with reports.snapshot():`` around several makes
        them one (the weekly summary). The connection must not be in a transaction of its own
        already (DuckDB has no nested ones, and a BEGIN inside one aborts it)."""
        if self._snapshots:
            self._snapshots += 1
            try:
                yield
            finally:
                self._snapshots -= 1
            return
        self.con.execute("BEGIN TRANSACTION")
        self._snapshots = 1
        try:
            yield
        finally:
            self._snapshots = 0
            # Nothing to keep: it only read (its TEMP tables go with it).
            self.con.execute("ROLLBACK")

    def _opening_days(self, spans: str, params: list[Any]) -> list[str]:
        """TEMP table ``opening``: for each group of ``spans`` that keeps business hours and each
        UTC day the spans cover, the open seconds before that day (``cum``, from the first interval
        a day before the spans) and that day's opening intervals (epoch ms, cut at midnight). The
        intervals come from the calendars themselves (time zones, holidays); the groups open 24/7
        are left out (counted in wall time). Returns the groups that keep hours."""
        # Per group, not list(DISTINCT grp): that aggregate alone took ~50 ms over 1.25M spans.
        found = self.con.execute(f"SELECT grp, min(t0), max(t1) FROM {spans} GROUP BY grp", params).fetchall()
        rows: list[tuple[str, datetime, float, list[dict[str, int]]]] = []
        office: list[str] = []
        if found:
            first = min(lo for _, lo, _ in found).date()
            last = max(hi for _, _, hi in found).date()
            for grp, _, _ in found:
                calendar = self.calendar(grp)
                if calendar.around_the_clock:
                    continue
                office.append(grp)
                rows += _days(grp, calendar, first, last)
        self.con.execute(
            "CREATE OR REPLACE TEMP TABLE opening (grp VARCHAR, day TIMESTAMP, cum DOUBLE,"
            " open STRUCT(lo BIGINT, hi BIGINT)[])"
        )
        if rows:
            # One statement over column lists: executemany runs one INSERT per row (~1 ms each).
            self.con.execute(
                "INSERT INTO opening SELECT unnest(?::VARCHAR[]), unnest(?::TIMESTAMP[]), unnest(?::DOUBLE[]),"
                " unnest(?::STRUCT(lo BIGINT, hi BIGINT)[][])",
                [list(column) for column in zip(*rows, strict=True)],
            )
        return office

    def first_response(self, filters: Filters = Filters(), *, by: str = "group") -> Report:
        """From opening to the first reply, in business seconds of the replying group's calendar,
        p50/p90 by that group or by the agent who replied; unanswered conversations are left out."""
        src, params = self._selected(filters)
        return self._durations("first_response", src, params, by, "first_reply", "reply_group", "first_agent")

    def resolution(self, filters: Filters = Filters(), *, by: str = "group") -> Report:
        """From opening to the last close, for conversations closed now (not reopened since), in
        business seconds of the closing group's calendar, by that group or by who closed it."""
        src, params = self._selected(filters)
        closed = f"(SELECT * FROM {src} WHERE closed >= coalesce(last_reopened, opened))"
        return self._durations("resolution", closed, params, by, "closed", "closed_group", "closed_by")

    def sla(self, filters: Filters = Filters()) -> Report:
        """Per opening group and target: conversations under an SLA policy, how many breached the
        target (the SLA timer's ``sla_breached`` event), and the share that did not."""
        src, params = self._selected(filters)
        targets = ", ".join(f"('{t}')" for t in SLA_TARGETS)
        sql = (
            "SELECT opened_group, target, count(*) AS n, count(*) FILTER (WHERE list_contains(breached, target)),"
            " round(1 - count(*) FILTER (WHERE list_contains(breached, target)) / count(*), 4),"
            f" {self._ids('list(conv) FILTER (WHERE list_contains(breached, target))')}"
            f" FROM {src} AS c, (VALUES {targets}) t(target) WHERE sla IS NOT NULL"
            " GROUP BY ALL ORDER BY opened_group, target"
        )
        return self._grouped("sla", ("group", "target", "conversations", "breached", "attainment"), sql, params)

    def reopens(self, filters: Filters = Filters()) -> Report:
        """Per opening group: conversations closed at least once, how many were reopened, the rate;
        the drill-down lists the reopened ones."""
        src, params = self._selected(filters)
        sql = (
            "SELECT opened_group, count(*), count(*) FILTER (WHERE reopens > 0),"
            " round(count(*) FILTER (WHERE reopens > 0) / count(*), 4),"
            f" {self._ids('list(conv) FILTER (WHERE reopens > 0)')}"
            f" FROM {src} WHERE closed IS NOT NULL GROUP BY ALL ORDER BY opened_group"
        )
        return self._grouped("reopens", ("group", "closed", "reopened", "reopen_rate"), sql, params)

    def answers(self, filters: Filters = Filters()) -> Report:
        """What happened after the knowledge base answered: ``reopened`` (the user wrote again or
        said it did not help), ``solved`` (closed by the answer), ``closed`` (by someone else),
        ``open``; per opening group."""
        src, params = self._selected(filters)
        sql = (
            "SELECT opened_group, CASE WHEN last_reopened >= answered THEN 'reopened'"
            " WHEN closed_by = 'kb' THEN 'solved' WHEN closed IS NOT NULL THEN 'closed' ELSE 'open' END AS outcome,"
            f" count(*), {self._ids('list(conv)')} FROM {src} WHERE answered IS NOT NULL GROUP BY ALL ORDER BY ALL"
        )
        return self._grouped("answers", ("group", "outcome", "conversations"), sql, params)

    def csat(self, filters: Filters = Filters(), *, by: str = "group") -> Report:
        """Satisfaction ratings (the ``csat`` event of each rated survey, router/csat.py) per
        opening group, rated agent, language or tag (a conversation with several tags counts
        under each): how many, their average (1-5) and the share of 4 and 5."""
        if by not in CSAT_BY:
            raise ReportError(f"csat by {by!r}: one of {', '.join(CSAT_BY)}")
        src, params = self._selected(filters)
        tag = "tag" if by == "tag" else "NULL AS tag"
        if by == "tag":
            src = PER_TAG.format(src=src)
        sql = (
            f"SELECT {CSAT_BY[by]}, count(*), round(avg(r.rating), 2), round(count(*) FILTER (WHERE r.rating >= 4)"
            f" / count(*), 4), {self._ids('list(DISTINCT conv)')} FROM (SELECT conv, opened_group, lang, {tag},"
            f" unnest(ratings) AS r FROM {src} WHERE len(ratings) > 0)"
            " GROUP BY ALL ORDER BY 1 NULLS LAST"
        )
        return self._grouped("csat", (by, "ratings", "average", "satisfied"), sql, params)

    def transfers(self, filters: Filters = Filters()) -> Report:
        """Moves between groups (an agent's transfer or a rule's escalation): from, to, how many,
        and the conversations moved; where routing is wrong shows as a large pair."""
        src, params = self._selected(filters)
        sql = (
            f"SELECT m['from'], m['to'], count(*), {self._ids('list(DISTINCT conv)')}"
            f" FROM (SELECT conv, unnest(moves) AS m FROM {src} WHERE len(moves) > 0)"
            " GROUP BY ALL ORDER BY 3 DESC, 1, 2"
        )
        return self._grouped("transfers", ("from", "to", "transfers"), sql, params)

    def run(self, name: str, filters: Filters = Filters(), **options: str) -> Report:
        """The report called ``name`` (a method above), with its options (``by``, ``bucket``)."""
        method = REPORTS.get(name)
        if method is None:
            raise ReportError(f"unknown report {name!r}: one of {', '.join(REPORTS)}")
        try:
            return method(self, filters, **options)
        except TypeError as exc:
            raise ReportError(f"report {name}: {exc}") from exc

    def export(self, report: Report, path: Path, fmt: str, *, drill: bool = False) -> None:
        """Write ``report`` to ``path`` as CSV or Parquet (DuckDB's COPY), with each row's
        conversation ids as a last column when ``drill``."""
        if fmt not in FORMATS:
            raise ReportError(f"format {fmt!r}: one of {', '.join(FORMATS)}")
        columns = [*report.columns, *(["conv_ids"] if drill else [])]
        rows = [(*row, convs) if drill else row for row, convs in zip(report.rows, report.convs, strict=True)]
        names = ", ".join(f'"{c}"' for c in columns)
        if rows:
            values = ", ".join("(" + ", ".join("?" * len(columns)) + ")" for _ in rows)
            self.con.execute(
                f"CREATE OR REPLACE TEMP TABLE report_out AS SELECT * FROM (VALUES {values}) v({names})",
                [x for row in rows for x in row],
            )
        else:  # an empty report is a file with its header (CSV) or schema (Parquet)
            typed = ", ".join(f'"{c}" VARCHAR' for c in columns)
            self.con.execute(f"CREATE OR REPLACE TEMP TABLE report_out ({typed})")
        options = "FORMAT csv, HEADER true" if fmt == "csv" else "FORMAT parquet"
        # COPY takes no parameter for its target: the path is quoted as a literal.
        target = str(path).replace("'", "''")
        self.con.execute(f"COPY report_out TO '{target}' ({options})")


REPORTS: dict[str, Callable[..., Report]] = {
    "volume": Reports.volume,
    "first-response": Reports.first_response,
    "resolution": Reports.resolution,
    "sla": Reports.sla,
    "reopens": Reports.reopens,
    "answers": Reports.answers,
    "transfers": Reports.transfers,
    "csat": Reports.csat,
}
