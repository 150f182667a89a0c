"""``switchboard analytics export|status``: the exporter alone, and what the store holds."""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import duckdb

from router.config import Settings

Handler = Callable[[argparse.Namespace, Settings], int]


async def export(rt: Any, args: argparse.Namespace) -> int:
    """The exporter as a process of its own (another machine, or `[analytics] enabled = false` in
    `switchboard run`), until SIGTERM/SIGINT."""
    from router.exporter import Exporter, postgres_service
    from router.supervisor import serve

    # The file's exporter, and PostgreSQL's when configured (each with cursors of its own).
    exporters = [x for x in [Exporter(rt), postgres_service(rt)] if x is not None]
    await serve(rt, exporters, workers=0)
    return 0


async def status(rt: Any, args: argparse.Namespace) -> int:
    """Rows, gaps and every stream's cursor with its lag (entries in Redis past the cursor, and
    how far behind in time); while an exporter holds the file, its health records instead."""
    from router import exporter

    settings = rt.settings
    try:
        found = exporter.status(settings.analytics, settings.redis.data_dir)
    except duckdb.IOException as exc:
        records = [
            json.loads(raw)
            async for key in rt.client.scan_iter(match=rt.keys.health("service", "exporter@*"), count=500)
            if (raw := await rt.client.get(key))
        ]
        out: dict[str, Any] = {"path": str(settings.analytics.path(settings.redis.data_dir)), "locked": str(exc)}
        out["exporters"] = records
    else:
        out = {**found, "cursors": await exporter.lags(rt, found["cursors"])}
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"store: {out['path']}")
    if "locked" in out:
        print("the file is held by a running exporter; its health:")
        for record in out["exporters"]:
            print(f"  {record.get('detail')}")
        return 0
    print(f"rows: {out['rows']}  gaps: {out['gaps']}")
    for stream, c in out["cursors"].items():
        print(f"  {stream:<30} {c['last_id']:<18} rows {c['rows']:<9} lag {c['lag']} entries, {c['lag_s']:.1f} s")
    return 0


async def report(rt: Any, args: argparse.Namespace) -> int:
    """One report's figures (router/reports.py) from the store, printed, as JSON, or to a CSV or
    Parquet file; business hours are the calendars of the SLA policy in force (24/7 without one)."""
    from datetime import datetime

    from router.reports import Filters, ReportError, Reports

    if args.name != "weekly" and (args.week or args.send):
        raise ReportError("--week and --send are for report weekly")
    if args.name == "waits":
        return await waits(rt, args)
    if args.name == "weekly":
        return await weekly(rt, args)
    if args.name == "complaints":
        return await complaints(rt, args)
    if args.days is not None:
        raise ReportError("--days is for report complaints (the others take --from/--to)")
    settings = rt.settings
    calendars = await rt.sla_policies.calendars()
    path = settings.analytics.path(settings.redis.data_dir)
    if not path.exists():
        raise ReportError(f"no analytics store at {path}: run the exporter first (docs/analytics.md)")
    try:
        filters = Filters(
            start=datetime.fromisoformat(args.start) if args.start else None,
            end=datetime.fromisoformat(args.end) if args.end else None,
            group=args.group,
            channel=args.channel,
            language=args.language,
            tag=args.tag,
            agent=args.agent,
        )
    except ValueError as exc:
        raise ReportError(f"--from/--to: {exc} (ISO 8601, e.g. 2026-11-02 or 2026-11-02T09:00+08:00)") from exc
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.IOException as exc:
        raise ReportError(
            f"the store {path} is held by a running exporter (DuckDB lets one process open a file it writes): {exc}"
        ) from exc
    try:
        reports = Reports(con, calendars, drill=args.drill)
        options = {k: v for k, v in (("by", args.by), ("bucket", args.bucket)) if v is not None}
        found = reports.run(args.name, filters, **options)
        if args.csv or args.parquet:
            reports.export(found, args.csv or args.parquet, "csv" if args.csv else "parquet", drill=args.drill)
            print(f"{found.name}: {len(found.rows)} row(s) written to {args.csv or args.parquet}")
            return 0
    finally:
        con.close()
    if args.json:
        print(json.dumps(found.records(args.drill), indent=2, default=str))
        return 0
    print("  ".join(found.columns) + ("  conv_ids" if args.drill else ""))
    for row, convs in zip(found.rows, found.convs, strict=True):
        print("  ".join("-" if v is None else str(v) for v in row) + (f"  {' '.join(convs)}" if args.drill else ""))
    return 0


async def waits(rt: Any, args: argparse.Namespace) -> int:
    """``report waits``: the wait estimates said against the real waits, per group, from Redis
    (router/waits.py; not the analytics store)."""
    from dataclasses import asdict

    from router.reports import ReportError
    from router.waits import accuracy, observations

    ignored = [
        k
        for k in ("start", "end", "channel", "language", "tag", "agent", "by", "bucket", "csv", "parquet", "days")
        if getattr(args, k)
    ]
    if ignored or args.drill:
        raise ReportError("report waits takes --group and --json only")
    found = accuracy(await observations(rt.client, rt.shards), args.group)
    if args.json:
        print(json.dumps([asdict(a) for a in found], indent=2))
        return 0
    print("group  n  median_abs_error_s  inside")
    for a in found:
        print(f"{a.group}  {a.n}  {a.median_abs_error_s:.1f}  {a.inside:.3f}")
    return 0


async def weekly(rt: Any, args: argparse.Namespace) -> int:
    """``report weekly``: the support lead's weekly summary (router/summary.py) of ``--week`` (else
    the latest week due), printed, or sent now (``--send``) to the ``[reports]`` recipients not
    sent that week's yet — the same claim as the scheduled service, so it is not sent again."""
    from datetime import UTC, datetime

    from router.reports import ReportError
    from router.summary import Week
    from router.weekly import WeeklyReports, due_week, store_reader

    ignored = [
        k
        for k in (
            *("start", "end", "group", "channel", "language", "tag", "agent"),
            *("by", "bucket", "csv", "parquet", "days"),
        )
        if getattr(args, k)
    ]
    if ignored or args.drill:
        raise ReportError("report weekly takes --week, --send and --json only")
    settings = rt.settings.reports
    week = Week.parse(args.week, settings.timezone) if args.week else due_week(datetime.now(UTC), settings)
    path = rt.settings.analytics.path(rt.settings.redis.data_dir)
    if not path.exists():
        raise ReportError(f"no analytics store at {path}: run the exporter first (docs/analytics.md)")
    recipients = args.recipients(rt.settings) if args.send else []
    if args.send and not recipients:
        raise ReportError("[reports] names no recipient: set email_to (and email_mailbox) or telegram_chat")
    service = WeeklyReports(rt, recipients, store_reader(path), settings=settings)
    held = f"the store {path} is held by a running exporter (DuckDB lets one process open a file it writes)"
    if args.send:
        out = await service.deliver(week)
        if "no store" in out.values():
            raise ReportError(f"{held}: the running switchboard run sends the summary on schedule")
        results = {r.describe(): out.get(r.name, "already sent") for r in recipients}
        if args.json:
            print(json.dumps({"week": week.label, "sent": results}, indent=2))
        else:
            print("".join(f"{week.label} to {who}: {what}\n" for who, what in results.items()), end="")
        return 1 if any(what.startswith("failed") for what in results.values()) else 0
    summary = await service.summary(week)
    if summary is None:
        raise ReportError(held)
    if args.json:
        print(json.dumps(dataclasses.asdict(summary), indent=2))
    else:
        print(summary.text, end="")
    return 0


async def complaints(rt: Any, args: argparse.Namespace) -> int:
    """``report complaints``: the last ``--days`` of complaints grouped into causes, with the
    previous period's sizes, from the Redis histories (router/complaints.py; docs/complaints.md)."""
    from datetime import UTC, datetime

    from router.complaints import complaint_causes
    from router.reports import ReportError

    ignored = [
        k
        for k in ("start", "end", "group", "channel", "language", "tag", "agent", "by", "bucket", "csv", "parquet")
        if getattr(args, k)
    ]
    if ignored or args.drill:
        raise ReportError("report complaints takes --days and --json only")
    days = 7.0 if args.days is None else args.days
    if days <= 0:
        raise ReportError(f"--days must be positive, not {days:g}")
    found = await complaint_causes(rt, days)
    if args.json:
        print(json.dumps(found.to_dict(), indent=2, ensure_ascii=False))
        return 0

    def day(ms: int) -> str:
        return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")

    f = found.found
    period = f"{day(found.start_ms)} to {day(found.end_ms)} UTC"
    print(f"complaints {period}: {f.complaints} (the {days:g} days before: {f.previous})")
    for n, cause in enumerate(f.causes, 1):
        flag = "  SPIKE" if cause.spike else ""
        print(f"\n{n}. {cause.name}  {cause.size} (before {cause.previous}, {cause.change:+d}){flag}")
        for lang, terms in cause.terms.items():
            print(f"   {lang}: {', '.join(terms)}")
        for q in cause.quotes:
            print(f'   "{q.text}"  ({q.lang}, {q.ref})')
        print(f"   conversations: {' '.join(cause.examples)}")
    if f.unmatched:
        print(f"\nprevious period's complaints near no current cause: {f.unmatched}")
    return 0


def add_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    with_runtime: Callable[[Callable[[Any, argparse.Namespace], Awaitable[int]]], Handler],
    recipients: Callable[[Settings], list[Any]],
) -> None:
    """``recipients``: the weekly summary's (router/weekly.py ``Recipient``), built by the CLI
    from the adapters, which this module may not import."""
    top = sub.add_parser("analytics", help="every conversation event in DuckDB (docs/analytics.md)")
    asub = top.add_subparsers(dest="action", required=True, metavar="ACTION")
    sp = asub.add_parser("export", help="run the exporter alone until SIGTERM (exactly once, resumes where it stopped)")
    sp.set_defaults(handler=with_runtime(export))
    sp = asub.add_parser("status", help="rows, gaps, and the cursor and lag of every stream")
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp.set_defaults(handler=with_runtime(status))
    from router.reports import BUCKETS, REPORTS

    sp = sub.add_parser(
        "report",
        help="one report's figures from the analytics store (docs/analytics.md); waits, complaints: from Redis"
        " (docs/waits.md, docs/complaints.md); weekly: the support lead's summary",
    )
    sp.add_argument("name", choices=[*REPORTS, "waits", "weekly", "complaints"])
    sp.add_argument("--from", dest="start", help="conversations opened at or after (ISO 8601; UTC if no offset)")
    sp.add_argument("--to", dest="end", help="conversations opened before (ISO 8601)")
    for name in ("group", "channel", "language", "tag", "agent"):
        sp.add_argument(f"--{name}", help=f"only conversations of this {name}")
    sp.add_argument("--by", help="volume: group|tag|language|channel; first-response, resolution: group|agent")
    sp.add_argument("--bucket", choices=BUCKETS, help="volume: the period of a row (default day)")
    sp.add_argument("--drill", action="store_true", help="each row's conversation ids")
    sp.add_argument("--days", type=float, help="complaints: the period, ending now (default 7), and the one before")
    out = sp.add_mutually_exclusive_group()
    out.add_argument("--csv", type=Path, metavar="FILE", help="write the report as CSV")
    out.add_argument("--parquet", type=Path, metavar="FILE", help="write the report as Parquet")
    out.add_argument("--json", action="store_true", help="machine-readable output")
    sp.add_argument("--week", help="weekly: the ISO week, e.g. 2026-W45 (default: the latest one due)")
    sp.add_argument("--send", action="store_true", help="weekly: send it now to the [reports] recipients not sent yet")
    sp.set_defaults(handler=with_runtime(report), recipients=recipients)
