"""The archive of closed conversations (issue 20, item 1): their state and whole history in the
analytics store, so that retention may delete them from Redis and the console still shows them.

With ``retention.archive`` on, the ``Archiver`` runs where the store's writer is (beside the
exporter: ``switchboard run``, or ``switchboard analytics export``) and writes through a
connection of the exporter's (DuckDB: one writing process per file). Each store (a file: one per
machine, as for the events) has an id of its own, made once in the file (``archive_store``), and
holds every archived conversation. Every round, per shard:

1. it takes the conversations of the ``closed`` index (id -> closed at) closed more than
   ``retention.archive_after_s`` ago after its store's position (``archive:cursor:{store}``),
   and those retention handed back to it (``archive:again:{store}``: due for deletion but not in
   this store as they are now);
2. router/lua/archive.lua reads each one's state, delivery records and history in one go, with
   their digest (lua/common.lua ``conv_digest``); one this store holds as it is already, or
   reopened, is skipped;
3. it upserts them in the ``archive`` table (PRIMARY KEY conv: a conversation archived twice,
   e.g. reopened and closed again, has one row, its latest) and commits;
4. only then, in one MULTI, marks each archived in this store (``archived:{store}``: id -> the
   digest archived) and moves the store's position past them.

Retention deletes a closed conversation only while the mark of every store whose archiver ran
within ``retention.archive_forget_store_days`` (``archive:stores``, refreshed each round) is the
digest of what Redis holds (router/lua/retention.lua): never one not archived yet, nor one
changed since it was archived (a late delivery record, a rating, a reopen) — that one goes to
the ``archive:again:{store}`` of each store lacking it and is archived again — and nothing while
no archiver has run. A crash between the commit (3) and the mark (4) leaves the position where it
was: the next round archives the same conversations again (an upsert, one row each). Nothing is
deleted that a store has not committed; what Redis keeps is redacted already (secrets never in
clear), and so is the archive.

Redis trims a history's head beyond ~10,000 entries (lua/common.lua): when a conversation is
archived again, entries the row held from before the oldest one still in Redis are kept.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import duckdb
import redis.asyncio as aioredis

from router.config import RetentionSettings, Settings
from router.conversations import Conversation, HistoryEntry, arrival_order
from router.errors import NotFound
from router.keys import Keys, Shards, entry_order
from router.leases import Clock, WallClock
from router.lifecycle import Loop
from router.redis import TRANSIENT_ERRORS
from router.runtime import Runtime
from router.scripts import Scripts, argv

log = logging.getLogger("switchboard.archive")

SCHEMA = """
CREATE TABLE IF NOT EXISTS archive (
    conv VARCHAR PRIMARY KEY,      -- the conversation id
    shard INTEGER NOT NULL,
    "group" VARCHAR NOT NULL,      -- its group when closed (who may see it: the console checks)
    closed_at TIMESTAMP NOT NULL,  -- UTC
    state JSON NOT NULL,           -- its state (conv:{id}): field -> value, as Redis held it
    deliveries JSON NOT NULL,      -- reply id -> delivery status (delivery:{id})
    history JSON NOT NULL,         -- [{id (stream id), type, at_ms, data}] in write order, redacted
    digest VARCHAR NOT NULL,       -- conv_digest (lua/common.lua) of what was archived
    archived_at TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS archive_store (
    id VARCHAR NOT NULL            -- this file's store id, made once: its marks in Redis
);
"""
UPSERT = """
INSERT INTO archive VALUES (?, ?, ?, epoch_ms(?::BIGINT), ?::JSON, ?::JSON, ?::JSON, ?, epoch_ms(?::BIGINT))
ON CONFLICT (conv) DO UPDATE SET shard = excluded.shard, "group" = excluded."group",
    closed_at = excluded.closed_at, state = excluded.state, deliveries = excluded.deliveries,
    history = excluded.history, digest = excluded.digest, archived_at = excluded.archived_at
"""

#: A DuckDB connection to write the store through (``Exporter.reader``): None while this process
#: does not hold the file (the exporter starting, or standing by for another process's).
StoreConnection = Callable[[], duckdb.DuckDBPyConnection | None]


class ArchiveUnreadable(NotFound):
    """A conversation Redis no longer holds, and the archive cannot be read by this process."""

    def __init__(self, conv_id: str, why: str) -> None:
        super().__init__(
            f"conversation {conv_id}: not in Redis, and the archive cannot be read by this process now ({why}):"
            " open it in the console of the process that runs the exporter"
        )


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A closed conversation as archive.lua read it."""

    conv: str
    shard: int
    digest: str
    state: dict[str, str]
    deliveries: dict[str, str]
    history: list[HistoryEntry]  # write order

    @classmethod
    def parse(cls, shard: int, reply: list[Any]) -> Snapshot:
        _, _, digest, state, deliveries, history = reply

        def pairs(flat: list[bytes]) -> dict[str, str]:
            return {flat[i].decode(): flat[i + 1].decode() for i in range(0, len(flat), 2)}

        entries = []
        for eid, flat in history:
            f = pairs(flat)
            entries.append(HistoryEntry(eid.decode(), f["type"], int(f["at"]), json.loads(f.get("data") or "{}")))
        return cls(reply[0].decode(), shard, digest.decode(), pairs(state), pairs(deliveries), entries)


@dataclass(frozen=True, slots=True)
class Archived:
    """An archived conversation as the console shows it: read-only, from the store."""

    conv: Conversation
    history: list[HistoryEntry]  # arrival order, as Conversations.history gives it
    deliveries: dict[str, str]
    closed_ms: int
    archived_ms: int


def store_id(con: duckdb.DuckDBPyConnection) -> str:
    """This file's store id (made, with the schema, at the first call)."""
    con.execute(SCHEMA)
    row = con.execute("SELECT id FROM archive_store").fetchone()
    if row is not None:
        return str(row[0])
    made = uuid.uuid4().hex[:12]
    con.execute("INSERT INTO archive_store VALUES (?)", [made])
    return made


def write(con: duckdb.DuckDBPyConnection, snaps: list[Snapshot], now_ms: int) -> None:
    """Upsert ``snaps`` in one transaction, each history with the entries its row held from
    before the oldest entry Redis still has (trimmed there since)."""
    con.execute("BEGIN TRANSACTION")
    try:
        ids = [s.conv for s in snaps]
        held = dict(con.execute("SELECT conv, history FROM archive WHERE list_contains(?, conv)", [ids]).fetchall())
        rows = []
        for s in snaps:
            history = [h.to_dict() for h in s.history]
            if s.conv in held and history:
                first = entry_order(history[0]["id"])
                older = [h for h in json.loads(held[s.conv]) if entry_order(h["id"]) < first]
                history = older + history
            rows.append(
                (
                    s.conv,
                    s.shard,
                    s.state.get("group", ""),
                    int(s.state.get("closed_ms") or 0),
                    json.dumps(s.state, ensure_ascii=False),
                    json.dumps(s.deliveries, ensure_ascii=False),
                    json.dumps(history, ensure_ascii=False),
                    s.digest,
                    now_ms,
                )
            )
        con.executemany(UPSERT, rows)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def read(con: duckdb.DuckDBPyConnection, conv_id: str) -> Archived | None:
    """The archived conversation ``conv_id``; None when the store holds none (or no archive)."""
    found = con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'archive'").fetchone()
    if not found or not found[0]:
        return None
    row = con.execute(
        "SELECT state, deliveries, history, epoch_ms(closed_at), epoch_ms(archived_at) FROM archive WHERE conv = ?",
        [conv_id],
    ).fetchone()
    if row is None:
        return None
    state, deliveries, history, closed_ms, archived_ms = row
    fields = {k.encode(): str(v).encode() for k, v in json.loads(state).items()}
    entries = [HistoryEntry(h["id"], h["type"], int(h["at_ms"]), h["data"]) for h in json.loads(history)]
    return Archived(
        Conversation.from_hash(fields),
        arrival_order(entries),
        json.loads(deliveries),
        int(closed_ms),
        int(archived_ms),
    )


def _position(raw: bytes | None) -> tuple[int, str] | None:
    if not raw:
        return None
    score, _, member = raw.decode().partition(" ")
    return int(score), member


def _after(score: int, member: str, position: tuple[int, str] | None) -> bool:
    # The index's own order: by score, then by member as bytes (ZRANGEBYSCORE's).
    return position is None or (score, member.encode()) > (position[0], position[1].encode())


class Archiver:
    """A ``Service``: every ``retention.sweep_every_s`` (at once while a shard has more), archives
    one batch of each shard's closed conversations due for it. ``clock`` decides what is due (a
    fake one in tests, which call ``round``)."""

    name = "archiver"

    def __init__(
        self, rt: Runtime, store: StoreConnection, *, settings: Settings | None = None, clock: Clock | None = None
    ) -> None:
        self.settings: RetentionSettings = (settings or rt.settings).retention
        self.clock = clock or WallClock()
        self._client: aioredis.Redis = rt.client
        self._shards: Shards = rt.shards
        self._scripts: Scripts = rt.scripts
        self._store = store
        # A DuckDB error (a full disk) is retried too, and shown in the health record: until the
        # archive holds a conversation, retention keeps it in Redis.
        self._loop = Loop("archiver", (*TRANSIENT_ERRORS, duckdb.Error), graceful=True)
        self.archived = 0
        self.store = ""  # the store's id, once read from it
        self.standby = False  # the store is not this process's to write now

    async def start(self) -> None:
        self._loop.rounds(self.round, lambda: self.settings.sweep_every_s)

    async def close(self) -> None:
        await self._loop.close()

    def health(self) -> dict[str, Any]:
        last_error = self._loop.last_error
        detail = last_error or (
            "standing by: the analytics store is not this process's to write"
            if self.standby
            else f"{self.archived} closed conversation(s) archived in store {self.store or '?'}"
        )
        return {
            "connected": not last_error,
            "detail": detail,
            "archived": self.archived,
            "store": self.store,
            "standby": self.standby,
        }

    async def round(self) -> bool:
        """Archive one batch of every shard's conversations due; True when a shard had more."""
        con = self._store()
        self.standby = con is None
        if con is None:
            return False
        try:
            self.store = await asyncio.to_thread(store_id, con)
            # Retention waits for the stores whose archivers run: this one, from now on.
            await self._client.hset(self._shards.home.archive_stores, self.store, self.clock.now_ms())
            more = False
            for shard, keys in enumerate(self._shards.shard):
                more = await self._shard(con, shard, keys) or more
            return more
        finally:
            con.close()

    async def _due(self, keys: Keys, upto: int) -> tuple[list[str], tuple[int, str] | None, bool]:
        """The index's conversations after the position, closed at or before ``upto``: their ids,
        the position after them, and whether more are due."""
        batch = self.settings.batch
        position = _position(await self._client.get(keys.archive_cursor(self.store)))
        low = position[0] if position else "-inf"
        limit = batch
        while True:
            # From the position's score on (equal scores too: the member decides), filtered.
            found = await self._client.zrangebyscore(keys.closed, low, upto, start=0, num=limit, withscores=True)
            due = [(int(score), m.decode()) for m, score in found if _after(int(score), m.decode(), position)]
            if due or len(found) < limit:
                break
            limit *= 2  # a page all at the position's score and before it: look further
        due = due[:batch]
        return [m for _, m in due], (due[-1] if due else None), len(due) == batch

    async def _shard(self, con: duckdb.DuckDBPyConnection, shard: int, keys: Keys) -> bool:
        now = self.clock.now_ms()
        fresh, position, more = await self._due(keys, now - int(self.settings.archive_after_s * 1000))
        again_key = keys.archive_again(self.store)
        again = [m.decode() for m in await self._client.zrange(again_key, 0, self.settings.batch - 1)]
        ids = list(dict.fromkeys(fresh + again))
        if not ids:
            return False
        replies = await self._scripts.archive(args=argv(keys.prefix, self.store, *ids, at=now))
        snaps = [Snapshot.parse(shard, r) for r in replies if r[1] == b"snap"]
        if snaps:
            await asyncio.to_thread(write, con, snaps, now)
        # Only once committed: a crash before this archives them again next round (an upsert).
        pipe = self._client.pipeline(transaction=True)
        if snaps:
            pipe.hset(keys.archived(self.store), mapping={s.conv: s.digest for s in snaps})
        if position is not None:
            pipe.set(keys.archive_cursor(self.store), f"{position[0]} {position[1]}")
        if again:
            pipe.zrem(again_key, *again)
        await pipe.execute()
        self.archived += len(snaps)
        if snaps:
            log.info("archive: %d closed conversation(s) of shard %d archived", len(snaps), shard)
        return more or len(again) == self.settings.batch


def service(rt: Runtime, store: StoreConnection) -> Archiver | None:
    """The archiver when ``[retention] archive`` is on, writing through ``store``."""
    return Archiver(rt, store) if rt.settings.retention.archive else None
