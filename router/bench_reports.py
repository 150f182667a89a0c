"""``switchboard bench reports``: the exporter's throughput and cost, and every report's latency.

Two parts, because the streams the exporter reads are capped (``MAXLEN ~ 10000`` each): ten million
events never sit in Redis at once.

- **Export**, on the real path, on a private redis-server: ``--messages`` conversations (default
  9,000, under the cap) routed by a real worker, once alone and once with an exporter running in
  the same process (as in ``switchboard run``): ``route_msgs_per_s`` and
  ``route_msgs_per_s_with_exporter`` are the exporter's cost on the router. Then an exporter
  exports the first run's events from scratch: ``export_events_per_s``.
- **Queries**, over ``--events`` (default 10,000,000) events generated straight into a DuckDB file
  (a month of conversations of 8 events each, in 5 groups, 4 channels, 6 languages, 40 agents,
  transfers, reopens, knowledge-base answers, SLA breaches, CSAT ratings; one group on office hours
  so the business-hours path is timed), as a store made before the ``conversations`` table:
  ``migration_ms`` is its first opening by the exporter's ``Store`` (the whole fold, once per store);
  ``store_commit_ms`` the exporter's commit of ``COMMIT_BATCH`` events touching as many conversations
  spread over the store (the events and the merge of their rows), ``COMMIT_RUNS`` times;
  ``reports_init_ms`` making a ``Reports``; then each report ``--runs`` times: ``query_p99_ms`` is the
  slowest report's p99 (nearest rank), ``queries`` each report's.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO
from zoneinfo import ZoneInfo

import duckdb

from router.bench_assign import route_waiting
from router.config import AnalyticsSettings, Settings
from router.exporter import SCHEMA, Batch, Exporter, Row, Store
from router.redis import EmbeddedRedis
from router.reports import Filters, Reports
from router.runtime import Runtime
from sla.calendar import Calendar

EVENTS_PER_CONV = 8
MONTH_MS = 30 * 86_400_000
START_MS = 1_793_491_200_000  # 2026-11-01 00:00 UTC
# Batches committed into the generated store (``store_commit_ms``), and their size.
COMMIT_RUNS = 5
COMMIT_BATCH = 1000
OFFICE = Calendar(ZoneInfo("Asia/Shanghai"), tuple(((9 * 60, 18 * 60),) if d < 5 else () for d in range(7)))

# Slot k of conversation i is one event; h is a per-conversation hash in [0, 1000).
GENERATE = f"""
INSERT INTO events
WITH c AS (
    SELECT i, (hash(i) % 1000)::BIGINT AS h, {START_MS} + i * {MONTH_MS} // $convs AS t0,
        ['security', 'payments', 'kyc', 'trading', 'general'][(1 + hash(i) % 5)::BIGINT] AS grp,
        ['telegram', 'discord', 'email', 'sandbox'][(1 + hash(i + 1) % 4)::BIGINT] AS channel,
        ['en', 'zh', 'ru', 'es', 'tr', 'vi'][(1 + hash(i + 2) % 6)::BIGINT] AS lang,
        'agent' || (hash(i + 3) % 40) AS agent
    FROM range($convs) r(i)
), s AS (
    SELECT c.*, k, CASE k
        WHEN 0 THEN 'created' WHEN 1 THEN 'claimed' WHEN 2 THEN 'replied'
        WHEN 3 THEN CASE WHEN h < 100 THEN 'moved' WHEN h < 150 THEN 'sla_breached' ELSE 'message' END
        WHEN 4 THEN CASE WHEN h BETWEEN 200 AND 349 THEN 'answered' ELSE 'replied' END
        WHEN 5 THEN 'closed'
        WHEN 6 THEN CASE WHEN h BETWEEN 400 AND 479 THEN 'reopened' ELSE 'delivery' END
        ELSE CASE WHEN h BETWEEN 400 AND 479 THEN 'closed' WHEN h >= 500 THEN 'csat' ELSE 'delivery' END END AS type,
        t0 + k * (60_000 + (h * 7919 + k * 104_729) % 3_600_000) AS at_ms
    FROM c, range({EVENTS_PER_CONV}) k(k)
)
SELECT 'events:' || grp || '@0/' || at_ms || '-' || i || '-' || k, 'events:' || grp, 0, 'c' || i, type,
    epoch_ms(at_ms::BIGINT), grp, channel, lang,
    CASE WHEN type IN ('claimed', 'replied', 'moved', 'closed') THEN agent END,
    CASE WHEN type IN ('created', 'reopened') THEN (1 + h % 4)::VARCHAR END,
    CASE type WHEN 'moved' THEN '{{"to": "payments"}}' WHEN 'sla_breached' THEN '{{"target": "first_response"}}'
        WHEN 'csat' THEN '{{"rating": ' || (1 + h % 5) || '}}' ELSE '{{}}' END::JSON,
    CASE WHEN h % 3 = 0 THEN [grp, 'vip'] ELSE [grp] END,
    CASE WHEN h % 2 = 0 THEN 1 END
FROM s
"""


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


async def _routing(settings: Settings, url: str, prefix: str, n: int, db: Path | None) -> tuple[float, int]:
    """Route ``n`` conversations under ``prefix``, with an exporter into ``db`` running meanwhile
    when given; messages a second, and the events that exporter wrote."""
    async with Runtime(settings.model_copy(update={"prefix": prefix}), url) as rt:
        # As configured by default in `switchboard run` (poll_s 1 s, batch 1,000).
        exporter = Exporter(rt, AnalyticsSettings(db=db)) if db else None
        if exporter:
            await exporter.start()
        started = time.perf_counter()
        try:
            await route_waiting(rt, n)
        finally:
            elapsed = time.perf_counter() - started
            if exporter:
                await exporter.close()
        return n / elapsed, exporter.exported if exporter else 0


async def _export(settings: Settings, url: str, prefix: str, db: Path) -> tuple[int, float]:
    async with Runtime(settings.model_copy(update={"prefix": prefix}), url) as rt:
        exporter = Exporter(rt, AnalyticsSettings(db=db))
        started = time.perf_counter()
        # The exporter's rounds back to back, without its polling pause once caught up.
        await exporter._open()
        while await exporter.round():
            pass
        elapsed = time.perf_counter() - started
        await exporter.close()
        return exporter.exported, elapsed


async def export_part(settings: Settings, messages: int, tmp: Path) -> dict[str, Any]:
    with EmbeddedRedis(tmp / "redis", private=True) as server:
        alone, _ = await _routing(settings, server.url, "bench:a:", messages, None)
        beside, _ = await _routing(settings, server.url, "bench:b:", messages, tmp / "beside.duckdb")
        exported, seconds = await _export(settings, server.url, "bench:a:", tmp / "export.duckdb")
    return {
        "export_source_events": exported,
        "export_seconds": round(seconds, 2),
        "export_events_per_s": round(exported / seconds),
        "route_msgs_per_s": round(alone),
        "route_msgs_per_s_with_exporter": round(beside),
        "route_ratio_with_exporter": round(beside / alone, 2),
    }


def _late_batch(convs: int, k: int) -> Batch:
    """``COMMIT_BATCH`` replies to as many conversations spread over the whole store, as the
    exporter would commit them (one transaction: the events and the conversations' rows)."""
    rng = random.Random(k)
    rows: list[Row] = []
    for j, i in enumerate(rng.sample(range(convs), min(COMMIT_BATCH, convs))):
        at = START_MS + MONTH_MS + k * COMMIT_BATCH + j
        rows.append((
            f"events:general@0/{at}-{k}", "events:general", 0, f"c{i}", "replied", at, "general", "telegram",
            "en", "agent1", None, "{}", '["general"]', None,
        ))  # fmt: skip
    return Batch(rows=rows, cursors={"events:general@0": (f"{rows[-1][5]}-{k}", len(rows))})


def query_part(events: int, runs: int, tmp: Path) -> dict[str, Any]:
    convs = max(1, events // EVENTS_PER_CONV)
    path = tmp / "reports.duckdb"
    con = duckdb.connect(str(path))
    # The events alone, as in a store made before the conversations table: its opening migrates it.
    con.execute(SCHEMA)
    started = time.perf_counter()
    con.execute(GENERATE, {"convs": convs})
    generated = time.perf_counter() - started
    con.close()
    started = time.perf_counter()
    store = Store(path)
    migrated = time.perf_counter() - started
    # The exporter's commit into a store this big: the events and the merge of each touched row.
    commits = []
    for k in range(COMMIT_RUNS):
        batch = _late_batch(convs, k)
        started = time.perf_counter()
        store.commit(batch)
        commits.append((time.perf_counter() - started) * 1000)
    con = store.con
    started = time.perf_counter()
    # The figures only: drill-down lists of a million ids are a separate, per-click query.
    reports = Reports(con, lambda group: OFFICE if group == "kyc" else Calendar.always(), drill=False)
    made = time.perf_counter() - started
    day = 86_400_000
    week = Filters(
        start=datetime.fromtimestamp((START_MS + 7 * day) / 1000, UTC),
        end=datetime.fromtimestamp((START_MS + 14 * day) / 1000, UTC),
        group="payments",
    )
    cases: dict[str, Any] = {
        "volume_by_group_day": lambda: reports.volume(by="group"),
        "volume_by_tag_week": lambda: reports.volume(by="tag", bucket="week"),
        "volume_by_language_filtered": lambda: reports.volume(week, by="language"),
        "first_response_by_group": lambda: reports.first_response(by="group"),
        "first_response_by_agent_filtered": lambda: reports.first_response(week, by="agent"),
        "resolution_by_group": lambda: reports.resolution(by="group"),
        "sla": lambda: reports.sla(),
        "reopens": lambda: reports.reopens(),
        "answers": lambda: reports.answers(),
        "transfers": lambda: reports.transfers(),
        "csat": lambda: reports.csat(),
    }
    queries = {}
    for name, run in cases.items():
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            run()
            times.append((time.perf_counter() - t) * 1000)
        queries[name] = round(_p99(times), 1)
    store.close()
    return {
        "events": convs * EVENTS_PER_CONV,
        "conversations": convs,
        "generate_seconds": round(generated, 1),
        "migration_ms": round(migrated * 1000, 1),
        "store_commit_events": COMMIT_BATCH,
        "store_commit_ms": [round(t, 1) for t in commits],
        "reports_init_ms": round(made * 1000, 1),
        "query_runs": runs,
        "query_p99_ms": max(queries.values()),
        "queries": queries,
    }


def main(settings: Settings, as_json: bool, events: int, messages: int, runs: int, out: TextIO = sys.stdout) -> int:
    if settings.redis.shards != 1:
        settings = settings.model_copy(update={"redis": settings.redis.model_copy(update={"shards": 1})})
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sb-bench-reports-") as tmp:
        result = {**query_part(events, runs, Path(tmp)), **asyncio.run(export_part(settings, messages, Path(tmp)))}
    result["total_seconds"] = round(time.perf_counter() - started, 1)
    if as_json:
        print(json.dumps(result), file=out)
    else:
        for k, v in result.items():
            print(f"{k:32} {v}", file=out)
    return 0
