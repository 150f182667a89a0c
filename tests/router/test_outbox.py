"""The outbox against a real Redis: replies of a dead sender are sent, once; delivered ones leave."""

from __future__ import annotations

import asyncio

import pytest

from router.keys import SENDER_GROUP
from router.model import OutboxItem
from router.outbox import OutboxConsumer, TemporaryFailure
from router.runtime import Runtime
from router.worker import Workers
from tests.router.helpers import drain, message

pytestmark = pytest.mark.cluster(shards=4)

CHANNEL = "telegram"
HOUR_MS = 3_600_000


class Sends:
    """A send function that records the replies it sent; ``done`` once it sent ``expect``."""

    def __init__(self, expect: int, detail: str = "") -> None:
        self.ids: list[str] = []
        self.expect = expect
        self.detail = detail
        self.done = asyncio.Event()

    async def __call__(self, item: OutboxItem) -> str:
        self.ids.append(item.id)
        if len(self.ids) >= self.expect:
            self.done.set()
        return self.detail


async def _replies(rt: Runtime, n: int) -> list[tuple[str, str]]:
    """``n`` agent replies queued on the outbox, as (conversation, reply id)."""
    await rt.inbox.append_many([message("my deposit is missing", user=f"user{i}") for i in range(n)])
    await drain(Workers(rt))
    out = []
    for i in range(n):
        cid = await rt.conversations.claim("payments", "agent-a")
        assert cid is not None
        out.append((cid, await rt.conversations.reply(cid, f"answer {i}", "agent-a")))
    return out


async def _run_until(consumer: OutboxConsumer, send: Sends) -> None:
    task = asyncio.create_task(consumer.run(send))
    try:
        await asyncio.wait_for(send.done.wait(), 5)
    finally:
        consumer.stop()
        await asyncio.wait_for(task, 5)


def _streams(rt: Runtime, replies: list[tuple[str, str]] | None = None) -> set[str]:
    """The channel's outbox streams of the shards of ``replies`` (of every shard: None)."""
    if replies is None:
        return {keys.outbox(CHANNEL) for keys in rt.shards.shard}
    return {rt.shards.conv_keys(cid).outbox(CHANNEL) for cid, _ in replies}


async def _take_over(rt: Runtime, consumer: str, **options: int) -> None:
    """Make every outbox entry pending to ``consumer``, as its XAUTOCLAIM would."""
    for stream in _streams(rt):
        ids = [entry for entry, _ in await rt.client.xrange(stream)]
        if ids:
            await rt.client.xclaim(stream, SENDER_GROUP, consumer, 0, ids, **options)


async def _delivery_records(rt: Runtime, cid: str) -> list[str]:
    return [h.data["status"] for h in await rt.conversations.history(cid) if h.type == "delivery"]


async def test_replies_left_by_a_dead_sender_are_reclaimed_and_sent(rt: Runtime) -> None:
    replies = await _replies(rt, 3)
    # A sender read the replies and died (kill -9): they stay pending under its name, and an hour
    # later (set, not slept: XCLAIM IDLE) a live sender with the default claim_idle_ms takes them.
    for stream in _streams(rt, replies):
        await rt.client.xreadgroup(SENDER_GROUP, "telegram-dead", {stream: ">"})
    await _take_over(rt, "telegram-dead", idle=HOUR_MS)
    send = Sends(3, "message 1")
    await _run_until(OutboxConsumer(rt.client, rt.shards, CHANNEL, "telegram-live"), send)
    assert sorted(send.ids) == sorted(r for _, r in replies)
    for cid, reply in replies:
        assert (await rt.conversations.deliveries(cid))[reply] == "delivered"
        assert await _delivery_records(rt, cid) == ["delivered"]
    for stream in _streams(rt, replies):
        assert (await rt.client.xpending(stream, SENDER_GROUP))["pending"] == 0


async def test_reply_taken_over_while_its_sender_waits_to_retry_is_not_sent_again(rt: Runtime) -> None:
    [(cid, reply)] = await _replies(rt, 1)
    slow = OutboxConsumer(rt.client, rt.shards, CHANNEL, "telegram-slow")
    slow_calls: list[str] = []
    refused = asyncio.Event()

    async def flaky(item: OutboxItem) -> str:
        slow_calls.append(item.id)
        if len(slow_calls) == 1:
            refused.set()
            raise TemporaryFailure("429 Too Many Requests", retry_after=1.0)
        return "sent by the slow sender"

    slow_task = asyncio.create_task(slow.run(flaky))
    await asyncio.wait_for(refused.wait(), 5)
    # While it waits, another sender takes the entry over and sends it.
    await _take_over(rt, "telegram-other")
    other = Sends(1, "sent by the reclaimer")
    await _run_until(OutboxConsumer(rt.client, rt.shards, CHANNEL, "telegram-other"), other)
    await asyncio.sleep(1.2)  # the slow sender's retry_after has passed: it looks again
    slow.stop()
    await asyncio.wait_for(slow_task, 5)
    assert slow_calls == [reply] and other.ids == [reply]
    assert await _delivery_records(rt, cid) == ["retrying", "delivered"]


async def test_reply_sent_by_a_slow_sender_and_a_reclaimer_is_recorded_once(rt: Runtime) -> None:
    [(cid, reply)] = await _replies(rt, 1)
    slow = OutboxConsumer(rt.client, rt.shards, CHANNEL, "telegram-slow")
    started, release = asyncio.Event(), asyncio.Event()

    async def hanging(item: OutboxItem) -> str:
        started.set()
        await release.wait()
        return "late"

    slow_task = asyncio.create_task(slow.run(hanging))
    await asyncio.wait_for(started.wait(), 5)
    await _take_over(rt, "telegram-other")
    other = Sends(1, "first")
    await _run_until(OutboxConsumer(rt.client, rt.shards, CHANNEL, "telegram-other"), other)
    release.set()  # the slow send (longer than claim_idle_ms) completes after all
    slow.stop()
    await asyncio.wait_for(slow_task, 5)
    assert other.ids == [reply]
    [record] = [h for h in await rt.conversations.history(cid) if h.type == "delivery"]
    assert (record.data["status"], record.data["detail"]) == ("delivered", "first")
    assert (await rt.conversations.deliveries(cid))[reply] == "delivered"


async def test_outbox_holds_only_replies_in_flight(rt: Runtime) -> None:
    replies = await _replies(rt, 20)
    # The senders' group exists from the first reply on, before any adapter started.
    streams = _streams(rt, replies)
    for stream in streams:
        assert [g["name"] for g in await rt.client.xinfo_groups(stream)] == [SENDER_GROUP.encode()]
    assert sum([await rt.client.xlen(stream) for stream in streams]) == 20
    send = Sends(20)
    await _run_until(OutboxConsumer(rt.client, rt.shards, CHANNEL, "telegram-1"), send)
    assert sorted(send.ids) == sorted(r for _, r in replies)
    for cid, reply in replies:
        assert (await rt.conversations.deliveries(cid))[reply] == "delivered"
    assert sum([await rt.client.xlen(stream) for stream in streams]) == 0
