"""The analytics exporter (issue 20, part 1): every conversation event into DuckDB, exactly once.

The source is the streams Redis already writes in the same atomic script as each effect: the
group event streams (``events:{group}`` of every shard: opened, routed, claimed and assigned,
replies, transfers, priority, SLA steps, closed, reopened, answers) and the press streams
(``actions`` of every shard: button presses). Each stream is read after a cursor with XRANGE.

Exactly once: a row's key is ``<stream>@<shard>/<entry id>`` (``events.event_id``, the PRIMARY
KEY), and each stream's cursor is stored in DuckDB (``cursors``) **in the same transaction as the
rows it covers**, so a crash leaves either both or neither: the next run reads again from the
stored cursor and never re-inserts what was committed, nor skips what was not. The rows are
plain INSERTs, not INSERT OR IGNORE: a duplicate would be a bug, and it fails the transaction
loudly (the exporter stalls and says so in its health) rather than being absorbed.

The streams are capped (``MAXLEN ~ 10000`` each). An exporter down for longer than a stream's
last 10,000 events misses the trimmed ones: that is a *gap*, recorded in ``gaps`` (stream, the
cursor, the first entry still there), counted in ``health`` and logged, never hidden. On
Redis >= 7 ``XINFO STREAM``'s ``max-deleted-entry-id`` tells exactly whether anything past the
cursor was trimmed; on 6.2 (the embedded server) a cursor entry that is gone is reported as a
possible gap (``exact`` false).

DuckDB allows one writing process per file: a second exporter on the same file stands by (its
health says so) and retries, so two ``switchboard run`` replicas on one machine share one file.

The same tables can also go to PostgreSQL (``[analytics] postgres``, router/pgstore.py): a second
``Exporter`` over a ``PgStore``, with cursors of its own, beside the one that fills the file.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import duckdb
import redis.asyncio as aioredis

from router import convfacts
from router.cluster import scan_step
from router.config import AnalyticsSettings
from router.events import deleted_past, entry_id
from router.keys import Keys, Shards
from router.lifecycle import Loop
from router.redis import TRANSIENT_ERRORS, reply_text
from router.runtime import Runtime

log = logging.getLogger("switchboard.exporter")

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    event_id VARCHAR PRIMARY KEY,  -- <stream>@<shard>/<entry id>
    stream VARCHAR NOT NULL,       -- events:<group> or actions
    shard INTEGER NOT NULL,
    conv VARCHAR,                  -- the conversation id (NULL for a press)
    type VARCHAR NOT NULL,         -- created, message, claimed, ..., closed, press
    "at" TIMESTAMP NOT NULL,       -- UTC, when the script wrote it
    "group" VARCHAR,
    channel VARCHAR,
    lang VARCHAR,
    agent VARCHAR,
    prio VARCHAR,
    data JSON,
    tags VARCHAR[],                -- the conversation's tags (NULL for a press)
    sla INTEGER                    -- the SLA policy version it runs under (NULL: none)
);
CREATE TABLE IF NOT EXISTS cursors (
    stream VARCHAR PRIMARY KEY,    -- <stream>@<shard>
    last_id VARCHAR NOT NULL,      -- the last entry exported
    rows BIGINT NOT NULL,
    updated TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS gaps (
    stream VARCHAR NOT NULL,
    after_id VARCHAR NOT NULL,     -- the cursor when the gap was found
    first_id VARCHAR NOT NULL,     -- the oldest entry still in the stream
    exact BOOLEAN NOT NULL,        -- true: entries past the cursor were trimmed for sure
    found TIMESTAMP NOT NULL
);
"""

# A batch's rows go in as one statement over 14 list parameters, one per column, unnested together:
# 1,000 rows in ~6 ms, where a multi-row VALUES statement of 500 rows (7,000 parameters) took
# 60-130 ms and DuckDB's executemany runs one INSERT per row (~1,300 rows/s). They go first into a
# TEMP table (``batch``), from which they are copied into ``events`` and folded into ``conversations``.
# (column of ``events``, the type of its list parameter, the expression that makes the stored value)
COLUMNS = (
    ("event_id", "VARCHAR", "{}"),
    ("stream", "VARCHAR", "{}"),
    ("shard", "INTEGER", "{}"),
    ("conv", "VARCHAR", "{}"),
    ("type", "VARCHAR", "{}"),
    ("at", "BIGINT", "epoch_ms({})"),
    ("group", "VARCHAR", "{}"),
    ("channel", "VARCHAR", "{}"),
    ("lang", "VARCHAR", "{}"),
    ("agent", "VARCHAR", "{}"),
    ("prio", "VARCHAR", "{}"),
    ("data", "VARCHAR", "{}::JSON"),
    ("tags", "VARCHAR", "{}::JSON::VARCHAR[]"),
    ("sla", "INTEGER", "{}"),
)
NEW_BATCH = "CREATE OR REPLACE TEMP TABLE batch AS SELECT * FROM events LIMIT 0"
INSERT_BATCH = (
    "INSERT INTO batch BY NAME SELECT "
    + ", ".join(f'{expr.format(f"c{i}")} AS "{name}"' for i, (name, _, expr) in enumerate(COLUMNS))
    + " FROM (SELECT "
    + ", ".join(f"unnest(?::{typ}[]) AS c{i}" for i, (_, typ, _) in enumerate(COLUMNS))
    + ")"
)
SAVE_CURSOR = """
INSERT INTO cursors VALUES (?, ?, ?, now()::TIMESTAMP)
ON CONFLICT (stream) DO UPDATE SET last_id = excluded.last_id, rows = cursors.rows + excluded.rows,
    updated = excluded.updated
"""
INSERT_GAP = "INSERT INTO gaps VALUES (?, ?, ?, ?, now()::TIMESTAMP)"

Row = tuple[Any, ...]
# A conversation's channel, language, tags (JSON list) and SLA policy version, read at export.
Conv = tuple[str | None, str | None, str | None, int | None]


@dataclass(frozen=True, slots=True)
class Stream:
    """One source stream: ``name`` (``events:<group>`` or ``actions``) of shard ``shard``."""

    name: str
    shard: int
    key: str

    @property
    def id(self) -> str:
        return f"{self.name}@{self.shard}"


def stream_of(shards: Shards, stream_id: str) -> Stream | None:
    """The stream of a cursor's name (``Stream.id``); None for one this deployment has not."""
    name, _, shard_raw = stream_id.rpartition("@")
    if not shard_raw.isdigit() or int(shard_raw) >= shards.count:
        return None
    keys = shards.shard[int(shard_raw)]
    if name == "actions":
        return Stream(name, int(shard_raw), keys.actions)
    if name.startswith("events:"):
        return Stream(name, int(shard_raw), keys.events(name.removeprefix("events:")))
    return None


class StoreBusy(Exception):
    """The store cannot be opened now: another exporter writes to it, or its server is away. The
    exporter stands by and tries again."""


class StoreFailed(Exception):
    """A store's read or write failed and was rolled back (a server restart, a lost connection):
    retried, through a new connection when the old one is broken (``usable``)."""


class ExportStore(Protocol):
    """Where an exporter writes: the DuckDB file (``Store``) or PostgreSQL (router/pgstore.py)."""

    def cursors(self) -> dict[str, str]: ...
    def commit(self, batch: Batch) -> None: ...
    def status(self) -> dict[str, Any]: ...
    def usable(self) -> bool: ...
    def close(self) -> None: ...


@dataclass
class Batch:
    """What one round read: the rows, each stream's new cursor and row count, the gaps found."""

    rows: list[Row] = field(default_factory=list)
    cursors: dict[str, tuple[str, int]] = field(default_factory=dict)
    gaps: list[Row] = field(default_factory=list)


def tables_status(con: Any) -> dict[str, Any]:
    """Rows, gaps and cursors of the tables, through ``con`` (a DuckDB or psycopg connection:
    both have ``execute`` returning a cursor)."""
    rows = con.execute("SELECT count(*) FROM events").fetchone()
    gaps = con.execute("SELECT count(*) FROM gaps").fetchone()
    cursors = con.execute("SELECT stream, last_id, rows FROM cursors ORDER BY stream").fetchall()
    return {
        "rows": rows[0] if rows else 0,
        "gaps": gaps[0] if gaps else 0,
        "cursors": {s: {"last_id": last, "rows": n} for s, last, n in cursors},
    }


class Store:
    """The DuckDB file: its schema, and the one transaction that writes rows with their cursors."""

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        if read_only:
            self.con = duckdb.connect(str(path), read_only=True)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.con = duckdb.connect(str(path))
        except duckdb.IOException as exc:
            # Another process writes this file (its lock).
            raise StoreBusy(str(exc)) from exc
        # The schema, and the conversations table of a store made before it (router/convfacts.py),
        # in one transaction: a crash in the migration leaves the store as it was.
        self.con.execute("BEGIN TRANSACTION")
        try:
            self.con.execute(SCHEMA)
            convfacts.migrate(self.con)
            self.con.execute("COMMIT")
        except BaseException:
            self.con.execute("ROLLBACK")
            self.con.close()
            raise

    def usable(self) -> bool:
        return True  # a file: an error is the transaction's, the connection stays good

    def cursors(self) -> dict[str, str]:
        return {s: last for s, last in self.con.execute("SELECT stream, last_id FROM cursors").fetchall()}

    def commit(self, batch: Batch) -> None:
        self.con.execute("BEGIN TRANSACTION")
        try:
            self.con.execute(NEW_BATCH)
            if batch.rows:
                self.con.execute(INSERT_BATCH, [list(column) for column in zip(*batch.rows, strict=True)])
            # The rows, then each touched conversation's row: in this transaction, so both or neither.
            self.con.execute("INSERT INTO events SELECT * FROM batch")
            convfacts.fold(self.con, "batch")
            self.con.execute("DROP TABLE batch")
            if batch.gaps:
                self.con.executemany(INSERT_GAP, batch.gaps)
            self.con.executemany(SAVE_CURSOR, [(s, last, n) for s, (last, n) in batch.cursors.items()])
            self.con.execute("COMMIT")
        except BaseException:
            self.con.execute("ROLLBACK")
            raise

    def status(self) -> dict[str, Any]:
        return tables_status(self.con)

    def close(self) -> None:
        self.con.close()


class Exporter:
    """A ``Service``: every ``poll_s`` (at once while there is more), reads every source stream
    after its cursor and commits the rows with the cursors; stands by while another process
    holds the DuckDB file."""

    def __init__(
        self,
        rt: Runtime,
        settings: AnalyticsSettings | None = None,
        *,
        store: Callable[[], ExportStore] | None = None,
        name: str = "exporter",
        where: str = "",
    ) -> None:
        """The DuckDB file of ``settings`` by default; ``store`` opens another target (a
        ``PgStore``), ``where`` names it in the health record."""
        self.settings = settings or rt.settings.analytics
        self.path = self.settings.path(rt.settings.redis.data_dir)
        self.name = name
        self.where = where or str(self.path)
        path = self.path
        self._open_store: Callable[[], ExportStore] = store or (lambda: Store(path))
        self._rt = rt
        self._client: aioredis.Redis = rt.client
        self._shards: Shards = rt.shards
        self._store: ExportStore | None = None
        self._cursors: dict[str, str] = {}
        self._streams: dict[str, Stream] = {}
        self._xinfo_exact: bool | None = None
        # A store's error (a full disk, a duplicate row: a bug; a PostgreSQL restart) is retried
        # too, and shown in the health record, rather than ending the export silently.
        self._loop = Loop(self.name, (*TRANSIENT_ERRORS, duckdb.Error, StoreFailed), graceful=True)
        self.exported = 0
        self.gaps = 0
        # Why this one waits ("" when it does not): another process holds the DuckDB file (its
        # lock), or the server is away.
        self.standby = ""
        # Wall time (s) of the start of the latest round that found nothing new; None while busy.
        self.caught_up_at: float | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        async def step() -> bool:
            if self._store is None:
                await self._open()
                if self._store is None:
                    return False
            return await self.round()

        async def failed(exc: BaseException) -> None:
            if self._store is not None and not self._store.usable():
                # A lost server connection: open again, and read the cursors again from the store.
                self._store.close()
                self._store = None

        # Standing by, the store is tried again less often.
        self._loop.rounds(step, lambda: self.settings.poll_s * (5 if self._store is None else 1), failed)

    async def close(self) -> None:
        await self._loop.close()
        if self._store is not None:
            self._store.close()
            self._store = None

    def health(self) -> dict[str, Any]:
        last_error = self._loop.last_error or (f"standby: {self.standby}" if self.standby else "")
        return {
            "connected": not last_error,
            "detail": last_error or f"{self.exported} event(s) exported to {self.where}; {self.gaps} gap(s)",
            "exported": self.exported,
            "gaps": self.gaps,
            "standby": bool(self.standby),
            "caught_up_at": self.caught_up_at,
        }

    def reader(self) -> duckdb.DuckDBPyConnection | None:
        """A connection of its own to the store while this exporter holds the file (None when it
        does not): for readers in this process, such as the weekly summary, since DuckDB lets no
        other process open a file one writes. Its TEMP tables are its own; close it after use."""
        store = self._store
        return store.con.cursor() if isinstance(store, Store) else None

    async def _open(self) -> None:
        try:
            store = await asyncio.to_thread(self._open_store)
        except StoreBusy as exc:
            # Another process writes to this store (or its server is away): stand by, try again.
            self.standby = str(exc) or type(exc).__name__
            return
        try:
            self._cursors = store.cursors()
            self._streams = {}
            await self._discover()
        except BaseException:
            # Opened again, and discovered again, at the next attempt.
            store.close()
            raise
        self._store = store
        self.standby = ""

    # -- the work --------------------------------------------------------------------------------
    async def round(self) -> bool:
        """Read every stream after its cursor (up to ``batch`` entries each), commit the rows with
        the cursors in one transaction. True when a stream had more than one batch waiting."""
        assert self._store is not None
        started = time.time()
        for group in (await self._rt.engine()).groups:
            self._add(group)
        streams = list(self._streams.values())
        pipe = self._client.pipeline(transaction=False)
        for s in streams:
            cursor = self._cursor(s)
            pipe.xrange(s.key, f"({cursor}", "+", count=self.settings.batch)
            pipe.exists(s.key)
            # The cursor's own entry: while it is there, nothing past it can have been trimmed.
            pipe.xrange(s.key, cursor, cursor)
        replies = await pipe.execute()
        batch, more, convs = Batch(), False, set[str]()
        read: list[tuple[Stream, list[tuple[str, dict[str, str]]]]] = []
        for i, s in enumerate(streams):
            entries_raw, exists, cursor_there = replies[3 * i : 3 * i + 3]
            entries = [(e.decode(), {k.decode(): v.decode() for k, v in f.items()}) for e, f in entries_raw]
            if exists and not cursor_there:  # also before the first export ("0-0" is no entry)
                await self._check_gap(s, self._cursor(s), batch)
            if entries:
                read.append((s, entries))
                more = more or len(entries) == self.settings.batch
                convs.update(f["conv"] for _, f in entries if f.get("conv"))
        info = await self._conversations(sorted(convs))
        for s, entries in read:
            batch.rows += [self._row(s, entry, f, info) for entry, f in entries]
            batch.cursors[s.id] = (entries[-1][0], len(entries))
        if not batch.rows and not batch.gaps:
            self.caught_up_at = started
            return more
        await asyncio.to_thread(self._store.commit, batch)
        # Only once committed: a failed commit reads the same entries again next round.
        for s_id, (last, _) in batch.cursors.items():
            self._cursors[s_id] = last
        self.caught_up_at = None
        self.exported += len(batch.rows)
        self.gaps += len(batch.gaps)
        return more

    def _cursor(self, s: Stream) -> str:
        return self._cursors.get(s.id, "0-0")

    def _add(self, group: str) -> None:
        for i, keys in enumerate(self._shards.shard):
            s = Stream(f"events:{group}", i, keys.events(group))
            self._streams.setdefault(s.id, s)

    async def _discover(self) -> None:
        """Every shard's press stream and the event streams that exist (a group the rule set in
        force no longer has may still hold events), once at the start: SCAN walks the keyspace."""
        for i, keys in enumerate(self._shards.shard):
            s = Stream("actions", i, keys.actions)
            self._streams[s.id] = s
            pattern = keys.events("*")
            cursor = 0
            while True:
                cursor, found = await scan_step(self._client, cursor, match=pattern, count=1000)
                for key in found:
                    self._add_key(keys, i, key.decode())
                if cursor == 0:
                    break
        for s_id in self._cursors:
            if (known := stream_of(self._shards, s_id)) is not None:
                self._streams.setdefault(known.id, known)

    def _add_key(self, keys: Keys, shard: int, key: str) -> None:
        group = key.removeprefix(keys.events(""))
        s = Stream(f"events:{group}", shard, key)
        self._streams.setdefault(s.id, s)

    async def _check_gap(self, s: Stream, cursor: str, batch: Batch) -> None:
        """The cursor's entry is gone (or nothing was exported yet): were entries past it trimmed?"""
        info = await self._client.xinfo_stream(s.key)
        first = info.get("first-entry")
        if not first:
            return
        first_id = reply_text(first[0])
        past = deleted_past(info, cursor)
        # Redis >= 7: exact, anything deleted past the cursor was never exported. Redis 6.2:
        # nothing to tell by; a first export cannot know what came before.
        if past is False or (past is None and cursor == "0-0"):
            return
        exact = past is True
        batch.gaps.append((s.id, cursor, first_id, exact))
        log.warning(
            "exporter: stream %s was trimmed past its cursor %s (oldest entry now %s): events %s lost to the store",
            s.id,
            cursor,
            first_id,
            "were" if exact else "may have been",
        )

    async def _conversations(self, convs: list[str]) -> dict[str, Conv]:
        """Channel, language, tags and SLA policy version of each conversation, as stored now (the
        channel never changes, the language is the first one detected, tags only grow); Nones for
        one already removed by retention."""
        if not convs:
            return {}
        pipe = self._client.pipeline(transaction=False)
        for cid in convs:
            pipe.hmget(self._shards.conv_keys(cid).conv(cid), "channel", "language", "tags", "sla_v")
        out = {}
        for cid, values in zip(convs, await pipe.execute(), strict=True):
            channel, lang, tags, sla = (v.decode() if v else None for v in values)
            out[cid] = (channel, lang, tags or "[]", int(sla) if sla and sla != "0" else None)
        return out

    @staticmethod
    def _row(s: Stream, entry: str, f: dict[str, str], info: dict[str, Conv]) -> Row:
        at = entry_id(entry)[0]
        if s.name == "actions":
            press = json.loads(f.get("press") or "{}")
            return (
                f"{s.id}/{entry}",
                s.name,
                s.shard,
                None,
                "press",
                at,
                None,
                press.get("channel"),
                None,
                None,
                None,
                json.dumps(press),
                None,
                None,
            )
        data = json.loads(f.get("data") or "{}")
        conv = f.get("conv") or None
        channel, lang, tags, sla = info.get(conv or "", (None, None, None, None))
        agent = data.get("agent") or data.get("by")
        prio = data.get("prio")
        return (
            f"{s.id}/{entry}",
            s.name,
            s.shard,
            conv,
            f.get("type", ""),
            int(f.get("at") or at),
            s.name.removeprefix("events:"),
            channel,
            lang,
            str(agent) if agent else None,
            str(prio) if prio is not None else None,
            json.dumps(data),
            tags,
            sla,
        )


def service(rt: Runtime) -> Exporter | None:
    """The exporter when ``[analytics] enabled``."""
    return Exporter(rt) if rt.settings.analytics.enabled else None


def postgres_service(rt: Runtime) -> Exporter | None:
    """The exporter into PostgreSQL when ``[analytics] postgres`` is set (router/pgstore.py)."""
    url = rt.settings.analytics.postgres
    if not url:
        return None
    from router.pgstore import PgStore, redacted_url

    return Exporter(rt, store=lambda: PgStore(url), name="exporter-postgres", where=redacted_url(url))


def status(settings: AnalyticsSettings, data_dir: Path) -> dict[str, Any]:
    """Rows, gaps and the cursor of every stream, read from the file (read-only: fails while an
    exporter process holds it, DuckDB's lock)."""
    path = settings.path(data_dir)
    if not path.exists():
        return {"path": str(path), "rows": 0, "gaps": 0, "cursors": {}}
    store = Store(path, read_only=True)
    try:
        return {"path": str(path), **store.status()}
    finally:
        store.close()


async def lags(rt: Runtime, cursors: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each cursor with its lag: the entries past it still in Redis and the age of the newest
    one not exported (0 when caught up)."""
    names = [name for name in cursors if stream_of(rt.shards, name) is not None]
    pipe = rt.client.pipeline(transaction=False)
    for name in names:
        s = stream_of(rt.shards, name)
        assert s is not None
        pipe.xrange(s.key, f"({cursors[name]['last_id']}", "+", count=100_000)
    out = {}
    for name, after in zip(names, await pipe.execute(), strict=True):
        lag_ms = entry_id(after[-1][0].decode())[0] - entry_id(cursors[name]["last_id"])[0] if after else 0
        out[name] = {**cursors[name], "lag": len(after), "lag_s": lag_ms / 1000}
    return out
