"""The outbox API adapters use: consume their channel's replies, send, record the outcome.

Each channel has one outbox stream and one consumer group (``senders``). ``OutboxConsumer.run``
reads replies, hands each to the adapter's ``send`` and records delivered or failed in the
conversation's history while acknowledging the entry in the same atomic step. Temporary errors are
retried with backoff; ``PermanentFailure`` (user blocked the bot, DMs closed, 5xx SMTP reply) is
recorded at once. Replies left pending by a crashed sender are reclaimed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from router.errors import SwitchboardError
from router.inbox import ensure_group
from router.keys import SENDER_GROUP, Keys
from router.model import OutboxItem, decode_outbox, now
from router.redis import TRANSIENT_ERRORS, Backoff
from router.scripts import Scripts, argv, map_error

log = logging.getLogger("switchboard.outbox")


class PermanentFailure(SwitchboardError):
    """The platform refused the reply for good; it is recorded as failed and not retried."""


class TemporaryFailure(SwitchboardError):
    """Worth retrying; ``retry_after`` (seconds) when the platform said how long to wait."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


SendFn = Callable[[OutboxItem], Awaitable[str | None]]


class OutboxConsumer:
    def __init__(
        self,
        client: aioredis.Redis,
        keys: Keys,
        channel: str,
        consumer: str,
        *,
        max_attempts: int = 8,
        claim_idle_ms: int = 60_000,
        concurrency: int = 8,
        block_ms: int = 250,
    ) -> None:
        self.client = client
        self.keys = keys
        self.channel = channel
        self.consumer = consumer
        self.max_attempts = max_attempts
        self.claim_idle_ms = claim_idle_ms
        # How long one read waits for a reply; also how long stop() may take to be noticed.
        self.block_ms = block_ms
        self.scripts = Scripts.register(client)
        self._stopping = asyncio.Event()
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self.sent = 0
        self.failed = 0

    def stop(self) -> None:
        self._stopping.set()

    def start(self, send: SendFn) -> None:
        """Consume in a task of its own until ``close()`` (the outbound half of an adapter)."""
        self._task = asyncio.create_task(self.run(send), name=f"outbox-{self.channel}")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def close(self, grace: float | None = None) -> None:
        """Stop reading and wait for the sends in hand; after ``grace`` seconds they are cancelled
        (a cancelled reply stays pending in the stream and is sent again after a reclaim)."""
        self.stop()
        task, self._task = self._task, None
        if task is None:
            return
        done, _ = await asyncio.wait({task}, timeout=grace)
        if not done:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def record(self, item: OutboxItem, status: str, detail: str = "", entry: str = "") -> None:
        payload = {
            "reply": item.id,
            "status": status,
            "detail": detail,
            "at": now(),
            "entry": entry,
        }
        try:
            await self.scripts.conv(
                args=argv(
                    self.keys.prefix,
                    "delivery",
                    item.conversation,
                    json.dumps(payload, ensure_ascii=False),
                )
            )
        except ResponseError as exc:
            raise map_error(exc) from None

    async def run(self, send: SendFn) -> None:
        """Consume until ``stop()``; in-flight sends are awaited before returning."""
        stream = self.keys.outbox(self.channel)
        await ensure_group(self.client, stream, SENDER_GROUP)
        backoff = Backoff()
        start_id = "0"  # first our own pending entries (a restart after a crash), then new ones
        try:
            while not self._stopping.is_set():
                try:
                    if start_id == ">":
                        await self._reclaim(stream)
                    streams = await self.client.xreadgroup(
                        SENDER_GROUP,
                        self.consumer,
                        {stream: start_id},
                        count=50,
                        block=None if start_id == "0" else self.block_ms,
                    )
                    entries = streams[0][1] if streams else []
                    if start_id == "0" and not entries:
                        start_id = ">"
                    for entry_id, fields in entries:
                        await self._slots.acquire()
                        task = asyncio.create_task(self._deliver(entry_id.decode(), fields, send))
                        self._tasks.add(task)
                        task.add_done_callback(self._tasks.discard)
                    backoff.reset()
                except TRANSIENT_ERRORS as exc:
                    delay = backoff.next_delay()
                    log.warning(
                        "outbox %s: redis unavailable (%s); retrying in %.2fs",
                        self.channel,
                        exc,
                        delay,
                    )
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), delay)
        finally:
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _reclaim(self, stream: str) -> None:
        claimed = await self.client.xautoclaim(stream, SENDER_GROUP, self.consumer, self.claim_idle_ms, "0-0", count=50)
        for entry_id, fields in claimed[1]:
            if fields:
                await self._slots.acquire()
                task = asyncio.create_task(self._deliver(entry_id.decode(), fields, None))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _deliver(self, entry_id: str, fields: dict[bytes, bytes], send: SendFn | None) -> None:
        try:
            try:
                item = decode_outbox(fields[b"item"])
            except (KeyError, msgspec.ValidationError, msgspec.DecodeError) as exc:
                log.error("outbox %s: unreadable entry %s (%s); acknowledged", self.channel, entry_id, exc)
                await self.client.xack(self.keys.outbox(self.channel), SENDER_GROUP, entry_id)
                return
            if send is None:
                return
            await self._attempts(entry_id, item, send)
        finally:
            self._slots.release()

    async def _attempts(self, entry_id: str, item: OutboxItem, send: SendFn) -> None:
        backoff = Backoff(base=0.5, cap=60.0)
        for attempt in range(1, self.max_attempts + 1):
            try:
                detail = await send(item)
            except PermanentFailure as exc:
                self.failed += 1
                log.warning("reply %s on %s failed: %s", item.id, self.channel, exc)
                await self.record(item, "failed", str(exc), entry_id)
                return
            except Exception as exc:
                reason = str(exc) or type(exc).__name__
                if attempt == self.max_attempts:
                    break
                delay = (
                    exc.retry_after if isinstance(exc, TemporaryFailure) and exc.retry_after else backoff.next_delay()
                )
                log.info(
                    "reply %s on %s: %s; retry %d in %.1fs",
                    item.id,
                    self.channel,
                    reason,
                    attempt,
                    delay,
                )
                await self.record(item, "retrying", f"attempt {attempt}: {reason}")
                await asyncio.sleep(delay)
                continue
            self.sent += 1
            await self.record(item, "delivered", detail or "", entry_id)
            return
        self.failed += 1
        await self.record(item, "failed", f"gave up after {self.max_attempts} attempts: {reason}", entry_id)
