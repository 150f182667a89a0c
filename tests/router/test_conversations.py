"""Claims, releases, transfers, priorities, replies and deliveries against a real Redis."""

from __future__ import annotations

import asyncio

import pytest

from adapters.sandbox import SandboxAdapter, SandboxUsers, envelope
from router.conversations import HistoryEntry, arrival_order
from router.errors import Conflict, NotFound
from router.runtime import Runtime
from router.worker import Workers
from tests.router.helpers import drain, message

pytestmark = pytest.mark.cluster(shards=4)


async def _fill(rt: Runtime, n: int, text: str = "my deposit is missing") -> None:
    await rt.inbox.append_many([message(text, user=f"user{i}") for i in range(n)])
    await drain(Workers(rt))


async def test_fifty_concurrent_claims_never_double_assign(rt: Runtime) -> None:
    await _fill(rt, 30)
    results = await asyncio.gather(*(rt.conversations.claim("payments", f"agent{i}") for i in range(50)))
    claimed = [r for r in results if r is not None]
    assert len(claimed) == 30 and len(set(claimed)) == 30
    assert results.count(None) == 20
    for i, cid in enumerate(results):
        if cid is not None:
            assert (await rt.conversations.get(cid)).agent == f"agent{i}"


async def test_claim_specific_conversation_only_once(rt: Runtime) -> None:
    await _fill(rt, 2)
    target = (await rt.queues.head("payments"))[1].id
    first, second = await asyncio.gather(
        rt.conversations.claim("payments", "a", target),
        rt.conversations.claim("payments", "b", target),
    )
    assert sorted([first, second], key=str) == sorted([target, None], key=str)


async def test_release_transfer_priority_close(rt: Runtime) -> None:
    await _fill(rt, 1)
    cid = await rt.conversations.claim("payments", "agent-a")
    assert cid is not None
    await rt.conversations.release(cid, "agent-a")
    assert [c.id for c in await rt.queues.head("payments")] == [cid]
    await rt.conversations.transfer(cid, "verification", "agent-a", "needs KYC team")
    assert await rt.queues.head("payments") == []
    assert [c.id for c in await rt.queues.head("verification")] == [cid]
    await rt.conversations.set_priority(cid, 1, "lead")
    assert (await rt.conversations.get(cid)).priority == 1
    await rt.conversations.close(cid, "lead")
    assert await rt.queues.head("verification") == []
    with pytest.raises(Conflict):
        await rt.conversations.reply(cid, "hello?", "agent-a")
    types = [(h.type, h.data.get("by")) for h in await rt.conversations.history(cid)]
    assert ("status", "lead") in types and types.count(("status", "agent-a")) == 3


async def test_unknown_conversation_is_not_found(rt: Runtime) -> None:
    with pytest.raises(NotFound):
        await rt.conversations.close("999999", "x")


async def test_queue_stats_depth_and_oldest_wait(rt: Runtime) -> None:
    await _fill(rt, 3)
    await asyncio.sleep(0.05)
    [stats] = await rt.queues.stats(["payments"])
    assert stats.depth == 3 and stats.oldest_wait_s is not None and stats.oldest_wait_s > 0.04
    assert stats.overdue == 0


async def test_group_event_stream_sees_created_and_claimed(rt: Runtime) -> None:
    await _fill(rt, 1)
    cid = await rt.conversations.claim("payments", "agent-a")
    events = [
        (f[b"type"], f[b"conv"].decode())
        for _, f in await rt.client.xrange(rt.shards.conv_keys(cid or "").events("payments"))
    ]
    assert events == [(b"created", cid), (b"claimed", cid)]


async def test_sandbox_round_trip(rt: Runtime) -> None:
    adapter = SandboxAdapter(rt.channel_context())
    await adapter.start()
    try:
        await rt.inbox.append(envelope("alice", "my withdrawal has not arrived"))
        await drain(Workers(rt))
        [conv] = await rt.queues.head("payments")
        assert (conv.channel, conv.sender_id) == ("sandbox", "alice")
        cid = await rt.conversations.claim("payments", "agent-a")
        reply_id = await rt.conversations.reply(cid or "", "It is on its way: txid 0xabc", "agent-a")
        for _ in range(100):
            if (await rt.conversations.deliveries(conv.id)).get(reply_id) == "delivered":
                break
            await asyncio.sleep(0.02)
        [item] = await SandboxUsers(rt.channel_context()).inbox("alice")
        assert item["text"] == "It is on its way: txid 0xabc" and item["author"] == "agent-a"
        after = await rt.conversations.get(conv.id)
        assert after.status == "waiting"
        kinds = [h.type for h in await rt.conversations.history(conv.id)]
        assert kinds[-2:] == ["outbound", "delivery"] or kinds[-3:-1] == ["outbound", "delivery"]
    finally:
        await adapter.close()


async def test_failed_delivery_is_recorded_and_not_retried(rt: Runtime) -> None:
    from router.model import OutboxItem
    from router.outbox import OutboxConsumer, PermanentFailure

    await _fill(rt, 1)
    cid = await rt.conversations.claim("payments", "agent-a")
    assert cid
    await rt.conversations.reply(cid, "hi", "agent-a")
    consumer = OutboxConsumer(rt.client, rt.shards, "telegram", "t1")
    calls = 0

    async def send(item: OutboxItem) -> str:
        nonlocal calls
        calls += 1
        consumer.stop()
        raise PermanentFailure("403: bot was blocked by the user")

    await asyncio.wait_for(consumer.run(send), 5)
    assert calls == 1
    [status] = (await rt.conversations.deliveries(cid)).values()
    assert status == "failed"
    [last] = [h for h in await rt.conversations.history(cid) if h.type == "delivery"]
    assert "blocked" in last.data["detail"]
    pending = await rt.client.xpending(rt.shards.conv_keys(cid).outbox("telegram"), "senders")
    assert pending["pending"] == 0
    # Recorded, the entry leaves the outbox; the reply stays in the history.
    assert await rt.client.xlen(rt.shards.conv_keys(cid).outbox("telegram")) == 0
    assert [h.data["text"] for h in await rt.conversations.history(cid) if h.type == "outbound"] == ["hi"]


def test_history_reads_inbound_messages_in_arrival_order() -> None:
    def rec(hid: str, typ: str, entry: str | None = None) -> HistoryEntry:
        return HistoryEntry(hid, typ, 0, {"entry": entry} if entry else {})

    # Written: m2, its reply, m3, then m1 (held by a dead worker) and its edit; m0 predates
    # entry ids in records and stays where it was written.
    written = [
        rec("1-0", "inbound"),
        rec("5-0", "inbound", "20-0"),
        rec("6-0", "outbound"),
        rec("7-0", "inbound", "30-0"),
        rec("8-0", "inbound", "10-5"),
        rec("9-0", "edit", "25-0"),
        rec("9-1", "status"),
    ]
    assert [h.id for h in arrival_order(written)] == ["1-0", "8-0", "5-0", "6-0", "9-0", "7-0", "9-1"]
    in_order = [rec("1-0", "inbound", "1-0"), rec("2-0", "status"), rec("3-0", "inbound", "2-0")]
    assert arrival_order(in_order) == in_order
