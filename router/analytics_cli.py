"""``switchboard analytics export|status``: the exporter alone, and what the store holds."""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable, Callable
from typing import Any

import duckdb

from router.config import Settings

Handler = Callable[[argparse.Namespace, Settings], int]


async def export(rt: Any, args: argparse.Namespace) -> int:
    """The exporter as a process of its own (another machine, or `[analytics] enabled = false` in
    `switchboard run`), until SIGTERM/SIGINT."""
    from router.exporter import Exporter
    from router.supervisor import serve

    exporter = Exporter(rt)
    await serve(rt, [exporter], workers=0)
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


def add_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    with_runtime: Callable[[Callable[[Any, argparse.Namespace], Awaitable[int]]], Handler],
) -> None:
    top = sub.add_parser("analytics", help="every conversation event in DuckDB (docs/analytics.md)")
    asub = top.add_subparsers(dest="action", required=True, metavar="ACTION")
    sp = asub.add_parser("export", help="run the exporter alone until SIGTERM (exactly once, resumes where it stopped)")
    sp.set_defaults(handler=with_runtime(export))
    sp = asub.add_parser("status", help="rows, gaps, and the cursor and lag of every stream")
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp.set_defaults(handler=with_runtime(status))
