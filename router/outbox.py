"""The outbox API adapters use: consume their channel's replies, send, record the outcome.

Each channel has one outbox stream and one consumer group (``senders``). ``OutboxConsumer.run``
reads replies, hands each to the adapter's ``send`` and records delivered or failed in the
conversation's history while acknowledging the entry in the same atomic step. Temporary errors are
retried with backoff; ``PermanentFailure`` (user blocked the bot, DMs closed, 5xx SMTP reply) is
recorded at once. Recording a final outcome deletes the entry: the stream holds only what is in flight.

Replies left pending by a crashed sender (idle longer than ``claim_idle_ms``) are reclaimed and sent
by a live one. Before each attempt a sender checks, atomically (lua/lease.lua), that the reply has
no recorded outcome yet and that the entry is still its own, and resets the entry's idle time: a
sender waiting between retries keeps its reply, and one whose reply was taken over, or sent and
recorded by another, does not send it again. What remains is the window of one send call longer
than ``claim_idle_ms``: the reply may then go out twice (at least once, never lost); it is recorded once.

The first reply of a conversation carries the safety notice ("staff never DM first ...",
``[safety_notice]``, in the conversation's language): added here, at send time, so that routing
(route.lua) pays nothing for it. "First" is the reply with the smallest id (ids are ULIDs: in
creation order to the millisecond, ties broken by their random part) among the conversation's
delivery records, which every reply gets when queued: so exactly one reply carries it, whatever is
sent concurrently, retried or reclaimed. The history
keeps the reply as written (without the notice).

A failed reply stays failed until an admin sends it again (``retry_failed``, `switchboard outbox
retry`): after a configuration fix (SMTP settings, a bot token) the replies that failed because of
it go out as first written, with their ids (an e-mail keeps its Message-ID). What is failed is read
from the conversations' delivery records (``delivery:{conv}``, reply id -> status) and the reply
itself from the conversation's history, where it was written when queued: no second copy to keep.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from router.config import SafetyNoticeSettings
from router.errors import SwitchboardError
from router.inbox import ensure_group
from router.keys import SENDER_GROUP, Keys, Shards
from router.lifecycle import Backoff, keep_running
from router.model import OutboxItem, decode_outbox, now
from router.redis import TRANSIENT_ERRORS
from router.scripts import Scripts, argv, map_error
from rules.locale import localized

log = logging.getLogger("switchboard.outbox")


class PermanentFailure(SwitchboardError):
    """The platform refused the reply for good; it is recorded as failed and not retried."""


class TemporaryFailure(SwitchboardError):
    """Worth retrying; ``retry_after`` (seconds) when the platform said how long to wait."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class FailedReply:
    """A reply whose recorded outcome is ``failed``, with the reason recorded with it."""

    conversation: str
    reply: str
    channel: str
    reason: str
    item: str  # the outbox item as first queued (JSON)

    def to_dict(self) -> dict[str, str]:
        return {"conversation": self.conversation, "reply": self.reply, "channel": self.channel, "reason": self.reason}


async def failed_replies(
    client: aioredis.Redis, shards: Shards, *, channel: str | None = None, conversation: str | None = None
) -> list[FailedReply]:
    """The failed replies of one conversation, or of every conversation (a SCAN of the delivery
    records of every shard: an admin's occasional command), optionally only those on ``channel``."""
    if conversation is not None:
        convs = [conversation]
    else:
        found = set()
        async for key in client.scan_iter(
            match=shards.glob(shards.home.delivery("*")[len(shards.prefix) :]), count=1000
        ):
            where = shards.split(key.decode())
            if where is not None and where[1].startswith("delivery:"):
                found.add(where[1].removeprefix("delivery:"))
        convs = sorted(found, key=_conv_order)
    out: list[FailedReply] = []
    for cid in convs:
        keys = shards.conv_keys(cid)
        records = await client.hgetall(keys.delivery(cid))
        failed = {k.decode() for k, v in records.items() if v == b"failed"}
        if failed:
            out.extend(await _from_history(client, keys, cid, failed, channel))
    return out


def _conv_order(cid: str) -> tuple[int, str]:
    return (int(cid), "") if cid.isdigit() else (0, cid)


async def _from_history(
    client: aioredis.Redis, keys: Keys, cid: str, failed: set[str], channel: str | None
) -> list[FailedReply]:
    items: dict[str, tuple[str, str]] = {}
    reasons: dict[str, str] = {}
    for _, fields in await client.xrange(keys.history(cid)):
        kind, data = fields.get(b"type"), fields.get(b"data") or b"{}"
        if kind == b"outbound":
            found = json.loads(data)
            if found.get("id") in failed:
                items[found["id"]] = (found.get("channel", ""), data.decode())
        elif kind == b"delivery":
            record = json.loads(data)
            if record.get("reply") in failed and record.get("status") == "failed":
                reasons[record["reply"]] = record.get("detail", "")
    return [
        FailedReply(cid, reply, chan, reasons.get(reply, ""), raw)
        for reply, (chan, raw) in items.items()
        if channel is None or chan == channel
    ]


async def retry_failed(client: aioredis.Redis, shards: Shards, replies: list[FailedReply], by: str) -> int:
    """Queue each failed reply on its channel's outbox again; how many were (one already retried
    by someone else, or recorded otherwise meanwhile, is skipped)."""
    scripts = Scripts.register(client)
    queued = 0
    for failed in replies:
        entry = {"reply": failed.reply, "status": "queued", "detail": f"sent again by {by}", "by": by, "at": now()}
        answer = await scripts.requeue(
            args=argv(
                shards.conv_keys(failed.conversation).prefix,
                failed.conversation,
                failed.reply,
                failed.channel,
                failed.item,
                json.dumps(entry),
            )
        )
        if (answer.decode() if isinstance(answer, bytes) else str(answer)) == "ok":
            queued += 1
            log.info("reply %s of #%s on %s queued again by %s", failed.reply, failed.conversation, failed.channel, by)
    return queued


SendFn = Callable[[OutboxItem], Awaitable[str | None]]


class OutboxConsumer:
    """The sender of one channel's replies: it consumes the channel's outbox stream of every shard
    (a reader per shard, sharing the concurrency), and records each outcome in the reply's
    conversation, whose shard is the stream's."""

    def __init__(
        self,
        client: aioredis.Redis,
        shards: Shards,
        channel: str,
        consumer: str,
        *,
        max_attempts: int = 8,
        claim_idle_ms: int = 60_000,
        concurrency: int = 8,
        block_ms: int = 250,
        notice: SafetyNoticeSettings | None = None,
    ) -> None:
        self.client = client
        self.shards = shards
        self.channel = channel
        self.consumer = consumer
        self.max_attempts = max_attempts
        self.claim_idle_ms = claim_idle_ms
        # How long one read waits for a reply; also how long stop() may take to be noticed.
        self.block_ms = block_ms
        self.scripts = Scripts.register(client)
        self.notice = notice if notice is not None and notice.enabled else None
        self._stopping = asyncio.Event()
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        # (stream, entry id) being sent here: never reclaimed from ourselves.
        self._in_hand: set[tuple[str, str]] = set()
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
            # The sends first: the reader's `finally` waits for them (one may sleep out a retry_after).
            for send in list(self._tasks):
                send.cancel()
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
                    self.shards.conv_keys(item.conversation).prefix,
                    "delivery",
                    item.conversation,
                    json.dumps(payload, ensure_ascii=False),
                )
            )
        except ResponseError as exc:
            raise map_error(exc) from None

    async def run(self, send: SendFn) -> None:
        """Consume until ``stop()``; in-flight sends are awaited before returning."""
        try:
            await asyncio.gather(*(self._run_stream(keys.outbox(self.channel), send) for keys in self.shards.shard))
        finally:
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _run_stream(self, stream: str, send: SendFn) -> None:
        """Consume one shard's outbox stream until ``stop()``."""
        await ensure_group(self.client, stream, SENDER_GROUP)
        # First our own pending entries (a restart after a crash), then new ones.
        start_id = "0"

        async def turn() -> None:
            nonlocal start_id
            if start_id == ">":
                await self._reclaim(stream, send)
            streams = await self.client.xreadgroup(
                SENDER_GROUP,
                self.consumer,
                {stream: start_id},
                count=50,
                block=None if start_id == "0" else self.block_ms,
            )
            entries = streams[0][1] if streams else []
            # Our own pending entries are read again until each one is in hand: then new ones.
            if start_id == "0" and all((stream, e.decode()) in self._in_hand for e, _ in entries):
                start_id = ">"
            for entry_id, fields in entries:
                await self._spawn(stream, entry_id.decode(), fields, send)

        await keep_running(
            turn, self._stopping, what=f"outbox {self.channel}: redis unavailable", retry_on=TRANSIENT_ERRORS
        )

    async def _reclaim(self, stream: str, send: SendFn) -> None:
        """Take over and send the replies another sender read and left idle (it died)."""
        claimed = await self.client.xautoclaim(stream, SENDER_GROUP, self.consumer, self.claim_idle_ms, "0-0", count=50)
        for raw_id, fields in claimed[1]:
            entry_id = raw_id.decode()
            if (stream, entry_id) not in self._in_hand:  # else a slow send of ours, not a dead sender's
                log.info("outbox %s: reclaimed entry %s left by a stopped sender", self.channel, entry_id)
            await self._spawn(stream, entry_id, fields or {}, send)

    async def _spawn(self, stream: str, entry_id: str, fields: dict[bytes, bytes], send: SendFn) -> None:
        """Deliver in a task of its own, unless this consumer has the entry in hand already (its
        pending entries are read again until none is left, and a slow send may look idle)."""
        if (stream, entry_id) in self._in_hand:
            return
        await self._slots.acquire()
        self._in_hand.add((stream, entry_id))
        task = asyncio.create_task(self._deliver(stream, entry_id, fields, send))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, stream: str, entry_id: str, fields: dict[bytes, bytes], send: SendFn) -> None:
        try:
            try:
                item = decode_outbox(fields[b"item"])
            except (KeyError, msgspec.ValidationError, msgspec.DecodeError) as exc:
                # Also an entry deleted while pending (Redis returns it without fields).
                log.error("outbox %s: unreadable entry %s (%s); acknowledged", self.channel, entry_id, exc)
                async with self.client.pipeline(transaction=True) as pipe:
                    await pipe.xack(stream, SENDER_GROUP, entry_id).xdel(stream, entry_id).execute()
                return
            await self._attempts(entry_id, item, send)
        finally:
            self._in_hand.discard((stream, entry_id))
            self._slots.release()

    async def _lease(self, entry_id: str, item: OutboxItem) -> bool:
        """True when this consumer may send the reply now (see lua/lease.lua); its claim is renewed."""
        answer = await self.scripts.lease(
            args=argv(
                self.shards.conv_keys(item.conversation).prefix,
                self.channel,
                entry_id,
                self.consumer,
                item.conversation,
                item.id,
            )
        )
        verdict = answer.decode() if isinstance(answer, bytes) else str(answer)
        if verdict == "done":
            log.info("reply %s on %s: outcome already recorded; acknowledged, not sent", item.id, self.channel)
        elif verdict == "lost":
            log.info("reply %s on %s: taken over by another sender", item.id, self.channel)
        return verdict == "ok"

    async def _wait(self, entry_id: str, item: OutboxItem, delay: float) -> bool:
        """Sleep ``delay`` seconds before a retry, renewing the claim so that no other sender
        reclaims the reply meanwhile; False when it was taken over or recorded in between."""
        loop = asyncio.get_running_loop()
        until, renew_s = loop.time() + delay, self.claim_idle_ms / 3000
        while until - loop.time() > renew_s:
            await asyncio.sleep(renew_s)
            if not await self._lease(entry_id, item):
                return False
        await asyncio.sleep(max(0.0, until - loop.time()))
        return True

    async def with_notice(self, item: OutboxItem) -> OutboxItem:
        """``item`` with the safety notice appended when it is its conversation's first reply."""
        if self.notice is None:
            return item
        keys = self.shards.conv_keys(item.conversation)
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hkeys(keys.delivery(item.conversation)).hget(keys.conv(item.conversation), "language")
            replies, language = await pipe.execute()
        if any(reply.decode() < item.id for reply in replies):
            return item
        text = localized(self.notice.text, language.decode() if language else None)
        return msgspec.structs.replace(item, text=f"{item.text}\n\n{text}")

    async def _attempts(self, entry_id: str, item: OutboxItem, send: SendFn) -> None:
        item = await self.with_notice(item)
        backoff = Backoff(base=0.5, cap=60.0)
        for attempt in range(1, self.max_attempts + 1):
            if not await self._lease(entry_id, item):
                return
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
                if not await self._wait(entry_id, item, delay):
                    return
                continue
            self.sent += 1
            await self.record(item, "delivered", detail or "", entry_id)
            return
        self.failed += 1
        await self.record(item, "failed", f"gave up after {self.max_attempts} attempts: {reason}", entry_id)
