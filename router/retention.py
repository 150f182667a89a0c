"""Retention: delete from Redis what is past its keeping time, in bounded batches.

Redis holds what is in flight; what is no longer in flight is kept for a configurable time and
then deleted (docs/operations.md, "Retention"):

- closed conversations — state, history, delivery records, conversation-key mapping — some days
  after closing, through the ``closed`` index (id -> closed at) that the close op fills and a
  reopen empties (router/lua/retention.lua does the deleting, atomically per batch). With
  ``retention.archive`` on, only those the archive holds as they are (router/archive.py): one not
  archived yet, or changed since, is kept and handed to the archivers (``archive:again:{store}``);
- dead letters older than a number of days or beyond a count;
- conversations closed before the index existed (an upgrade) are indexed first, by a SCAN whose
  cursor is kept in Redis (``retention:backfill``), a bounded number of keys per sweep, once;
- failure records (``failures``) of inbox entries that are no longer pending: routed by a retry
  that did not clear them, or acknowledged elsewhere. A pending entry's record is kept.

Each worker calls ``tick()`` from its housekeeping; a lock (SET NX PX, one interval long) lets one
worker sweep per interval. The sweep runs in a task of its own beside the worker's routing: its
Redis calls interleave with the worker's, so a batch waits for at most one of them (~5 ms of Redis),
never for a whole sweep. (Slices run inline between batches, 20 ms each, moved the router's p99 at
2,000 msg/s from ~8 ms to ~50 ms in `switchboard bench`; 2 ms slices still to 16–27 ms.)
``sweep(now_ms)`` takes the time as an argument: tests pass a clock.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import redis.asyncio as aioredis

from router.cluster import scan_step
from router.config import Settings
from router.keys import ROUTER_GROUP, Keys
from router.scripts import Scripts, argv, now_ms

log = logging.getLogger("switchboard.retention")

DAY_MS = 86_400_000
#: Keys examined per sweep by the backfill SCAN, in units of ``retention.batch``.
BACKFILL_BATCHES = 100
DONE = b"done"


@dataclass(frozen=True, slots=True)
class SweepResult:
    conversations: int = 0
    dead_letters: int = 0
    failures: int = 0

    def __add__(self, other: SweepResult) -> SweepResult:
        return SweepResult(
            self.conversations + other.conversations,
            self.dead_letters + other.dead_letters,
            self.failures + other.failures,
        )


@dataclass(slots=True)
class _Run:
    """A sweep under way: its remaining steps and what it deleted so far."""

    steps: AsyncIterator[SweepResult]
    total: SweepResult = field(default_factory=SweepResult)
    started: float = field(default_factory=time.perf_counter)


def _entry_key(entry_id: bytes) -> tuple[int, int]:
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq or 0)


class Retention:
    def __init__(
        self,
        client: aioredis.Redis,
        settings: Settings,
        name: str,
        scripts: Scripts | None = None,
        *,
        keys: Keys | None = None,
    ) -> None:
        """The sweeps of one shard's keys (``keys``; the home prefix's when None: one shard)."""
        self.client = client
        self.settings = settings.retention
        self.keys = keys or Keys(settings.prefix)
        self._home = Keys(settings.prefix)
        self.name = name
        self.scripts = scripts or Scripts.register(client)
        self._reopen_window_s = settings.conversations.reopen_window_s
        self._last = float("-inf")
        self._warned = False
        self._task: asyncio.Task[None] | None = None

    def warn_once(self) -> None:
        """Say loudly, once, what becomes of closed conversations: kept for ever, deleted once
        archived, or deleted unarchived (their history gone)."""
        if self._warned:
            return
        self._warned = True
        days = self.settings.closed_conversation_days
        if not days:
            log.warning(
                "retention: closed conversations are kept in Redis for ever "
                "(retention.closed_conversation_days = 0): Redis memory grows with every conversation"
            )
            return
        if self.settings.archive:
            log.info(
                "retention: closed conversations are deleted from Redis %g days after closing once the archive "
                "holds them (an archiver runs beside the analytics exporter; until it has, they stay)",
                days,
            )
        else:
            log.warning(
                "retention: the history of closed conversations is DELETED %g days after closing, because no "
                "archive is configured (retention.closed_conversation_days; retention.archive = true keeps it)",
                days,
            )
        if days * 86400 < self._reopen_window_s:
            log.warning(
                "retention: closed conversations are deleted before conversations.reopen_window_s ends: "
                "a message after %g days starts a new conversation instead of reopening",
                days,
            )

    @property
    def sweeping(self) -> bool:
        """Whether a sweep started by ``tick`` is still going on."""
        return self._task is not None and not self._task.done()

    async def finish(self) -> None:
        """Wait for the sweep under way, if any (its error, if it failed, is raised here)."""
        task, self._task = self._task, None
        if task is not None:
            await task

    async def close(self) -> None:
        """Stop the sweep under way: what it deleted so far stays deleted, the rest waits for the
        next sweep (each batch is one atomic script call)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])

    async def tick(self) -> None:
        """Start a sweep, in a task of its own, when this worker's interval is up and no other
        worker swept in this interval; a sweep under way is left to go on. The error of a sweep
        that failed is raised by the next tick (the worker's loop backs off on Redis errors)."""
        self.warn_once()
        if self.sweeping:
            return
        await self.finish()
        now = time.monotonic()
        if now - self._last < self.settings.sweep_every_s:
            return
        self._last = now
        interval_ms = int(self.settings.sweep_every_s * 1000)
        if not await self.client.set(self.keys.retention_lock, self.name, px=interval_ms, nx=True):
            return
        self._task = asyncio.create_task(self._advance(_Run(self._steps(now_ms()))), name="retention-sweep")

    async def sweep(self, now: int) -> SweepResult:
        """Delete everything past its retention at ``now`` (ms since the epoch), in one go."""
        run = _Run(self._steps(now))
        await self._advance(run)
        return run.total

    async def _advance(self, run: _Run) -> None:
        """Run ``run``'s steps to the end, and report what they deleted."""
        async for step in run.steps:
            run.total += step
        if run.total != SweepResult():
            log.info(
                "retention: deleted %d closed conversations, %d dead letters, %d failure records in %.2f s",
                run.total.conversations,
                run.total.dead_letters,
                run.total.failures,
                time.perf_counter() - run.started,
            )

    async def _steps(self, now: int) -> AsyncIterator[SweepResult]:
        """The sweep, one Redis call (or pipeline) per step, each step's deletions yielded."""
        if self.settings.closed_conversation_days:
            async for _ in self._backfill():
                yield SweepResult()
            cutoff = now - int(self.settings.closed_conversation_days * DAY_MS)
            archive, kept = int(self.settings.archive), 0
            stores = await self._archive_stores(now) if self.settings.archive else []
            while True:
                deleted, examined, kept_now = await self.scripts.retention(
                    args=argv(self.keys.prefix, cutoff, self.settings.batch, archive, kept, *stores, at=now)
                )
                kept += int(kept_now)
                yield SweepResult(conversations=int(deleted))
                if int(examined) < self.settings.batch:
                    break
        yield SweepResult(dead_letters=await self._dead_letters(now))
        yield SweepResult(failures=await self._failures())

    async def _archive_stores(self, now: int) -> list[str]:
        """The archive stores whose archivers ran within ``archive_forget_store_days``: a closed
        conversation is deleted once each of them holds it (none: nothing is deleted)."""
        seen = await self.client.hgetall(self._home.archive_stores)
        since = now - self.settings.archive_forget_store_days * DAY_MS
        return sorted(store.decode() for store, at in seen.items() if int(at) >= since)

    async def _backfill(self) -> AsyncIterator[None]:
        """Index the closed conversations that the ``closed`` index does not know (those closed
        before it existed), walking the keyspace once across sweeps; a step per SCAN call."""
        cursor_raw = await self.client.get(self.keys.retention_backfill)
        if cursor_raw == DONE:
            return
        cursor, examined = int(cursor_raw or 0), 0
        match = self.keys.conv("*")
        while examined < BACKFILL_BATCHES * self.settings.batch:
            cursor, found = await scan_step(self.client, cursor, match=match, count=self.settings.batch)
            examined += self.settings.batch
            pipe = self.client.pipeline(transaction=False)
            for key in found:
                pipe.hmget(key, "status", "closed_ms")
            closed = {
                key.decode().removeprefix(self.keys.conv("")): int(closed_ms)
                for key, (status, closed_ms) in zip(found, await pipe.execute(), strict=True)
                if status == b"closed" and closed_ms
            }
            if closed:
                # NX: a conversation indexed by its close meanwhile keeps that entry.
                await self.client.zadd(self.keys.closed, closed, nx=True)
            if cursor == 0:
                await self.client.set(self.keys.retention_backfill, DONE)
                log.info("retention: closed conversations indexed")
                return
            await self.client.set(self.keys.retention_backfill, cursor)
            yield

    async def _dead_letters(self, now: int) -> int:
        trimmed = 0
        if self.settings.dead_letter_days:
            cutoff = max(0, now - int(self.settings.dead_letter_days * DAY_MS))
            trimmed += int(await self.client.xtrim(self.keys.dead, minid=cutoff, approximate=False))
        trimmed += int(await self.client.xtrim(self.keys.dead, maxlen=self.settings.dead_letter_max, approximate=False))
        return trimmed

    async def _failures(self) -> int:
        """Drop failure records older than the oldest pending inbox entry (all, when none is
        pending): an entry older than that is no longer pending, and its record says nothing."""
        pending = await self.client.xpending(self.keys.inbox, ROUTER_GROUP)
        oldest = _entry_key(pending["min"]) if pending["pending"] else None
        stale: list[bytes] = []
        async for entry_id, _ in self.client.hscan_iter(self.keys.failures, count=self.settings.batch):
            if oldest is None or _entry_key(entry_id) < oldest:
                stale.append(entry_id)
        for i in range(0, len(stale), self.settings.batch):
            await self.client.hdel(self.keys.failures, *stale[i : i + self.settings.batch])
        return len(stale)
