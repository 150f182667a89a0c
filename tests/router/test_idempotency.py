"""Writes safe to send twice: a reply lost with its connection, after the write ran in Redis.

Each test loses one write's reply through tests/cutproxy.py, then behaves as a client would: if
the call raised ConnectionError it calls again. The effect must have happened exactly once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from router.conversations import Conversations
from router.redis import connect
from router.rulestore import RuleStore
from router.runtime import Runtime
from router.worker import Worker
from tests.conftest import RedisProcess
from tests.cutproxy import CutProxy, cut_proxy
from tests.router.helpers import drain, message

T = TypeVar("T")

RULES = (Path(__file__).parent / "rules.yaml").read_text()


def rules(name: str) -> str:
    return f"{RULES}\n# {name}\n"


@dataclass
class Proxied:
    proxy: CutProxy
    conversations: Conversations
    rules: RuleStore

    async def lose_reply(self, call: Callable[[], Awaitable[T]], command: bytes = b"EVALSHA") -> T:
        """Lose the reply of ``call``'s write (its first request holding ``command``); call again
        once if it raised, as a client that got a connection error would."""
        await self.conversations.client.ping()  # connected: the cut hits the call, not a handshake
        self.proxy.cut_next_reply(command=command)
        try:
            return await call()
        except RedisConnectionError:
            return await call()
        finally:
            assert self.proxy.cuts == 1


@pytest.fixture
async def proxied(rt: Runtime, redis_proc: RedisProcess) -> AsyncIterator[Proxied]:
    async with cut_proxy(redis_proc.url) as proxy:
        client = connect(proxy.url)
        try:
            # The script loaded beforehand: the reply lost is the script's, not a NOSCRIPT.
            await rt.client.script_load(rt.scripts.conv.script)
            yield Proxied(proxy, Conversations(client, rt.settings), RuleStore(client, rt.keys))
        finally:
            await client.aclose()


async def _queued(rt: Runtime, n: int) -> list[str]:
    await rt.inbox.append_many([message("my deposit is missing", user=f"user{i}") for i in range(n)])
    await drain(Worker(rt))
    return [c.id for c in await rt.queues.head("payments")]


async def _claimed(rt: Runtime) -> str:
    (cid,) = await _queued(rt, 1)
    assert await rt.conversations.claim("payments", "ann", cid) == cid
    return cid


async def _history(rt: Runtime, cid: str, typ: str) -> list[dict[str, object]]:
    return [h.data for h in await rt.conversations.history(cid) if h.type == typ]


async def test_a_claim_sent_twice_claims_one_conversation(rt: Runtime, proxied: Proxied) -> None:
    first, second = await _queued(rt, 2)
    cid = await proxied.lose_reply(lambda: proxied.conversations.claim("payments", "ann"))
    assert cid == first
    assert [c.id for c in await rt.queues.head("payments")] == [second]
    assert [c.id for c in await rt.conversations.of_agent("ann")] == [first]


async def test_a_reply_sent_twice_is_queued_once(rt: Runtime, proxied: Proxied) -> None:
    cid = await _claimed(rt)
    reply_id = await proxied.lose_reply(lambda: proxied.conversations.reply(cid, "We are on it", "ann"))
    conv = await rt.conversations.get(cid)
    items = await rt.client.xrange(rt.keys.outbox(conv.channel))
    assert len(items) == 1
    assert [h["id"] for h in await _history(rt, cid, "outbound")] == [reply_id]
    assert list(await rt.conversations.deliveries(cid)) == [reply_id]


async def test_a_transfer_sent_twice_moves_once(rt: Runtime, proxied: Proxied) -> None:
    cid = await _claimed(rt)
    await proxied.lose_reply(lambda: proxied.conversations.transfer(cid, "verification", "ann", "KYC"))
    assert [c.id for c in await rt.queues.head("verification")] == [cid]
    moves = [h for h in await _history(rt, cid, "status") if h.get("group")]
    assert moves == [{"group": "verification", "from": "payments", "by": "ann", "reason": "KYC"}]


async def test_a_close_sent_twice_closes_once_without_error(rt: Runtime, proxied: Proxied) -> None:
    cid = await _claimed(rt)
    await proxied.lose_reply(lambda: proxied.conversations.close(cid, "ann"))
    assert (await rt.conversations.get(cid)).status == "closed"
    assert [h for h in await _history(rt, cid, "status") if h.get("status") == "closed"] == [
        {"status": "closed", "by": "ann", "reason": "resolved"}
    ]


async def test_a_priority_change_sent_twice_is_recorded_once(rt: Runtime, proxied: Proxied) -> None:
    cid = await _claimed(rt)
    await proxied.lose_reply(lambda: proxied.conversations.set_priority(cid, 1, "lead"))
    assert (await rt.conversations.get(cid)).priority == 1
    assert len([h for h in await _history(rt, cid, "status") if "prio" in h]) == 1


async def test_a_release_sent_twice_releases_once(rt: Runtime, proxied: Proxied) -> None:
    cid = await _claimed(rt)
    await proxied.lose_reply(lambda: proxied.conversations.release(cid, "ann"))
    assert [c.id for c in await rt.queues.head("payments")] == [cid]
    assert len([h for h in await _history(rt, cid, "status") if h.get("reason") == "released"]) == 1


async def test_a_publish_sent_twice_makes_one_version(rt: Runtime, proxied: Proxied) -> None:
    await rt.rules.publish(rules("first"), "admin")
    published = await proxied.lose_reply(lambda: proxied.rules.publish(rules("second"), "admin"), b"EXEC")
    assert published.number == 2 == await rt.rules.active_number()
    assert [e["action"] for e in await rt.rules.log()] == ["publish", "publish"]
    assert await rt.client.exists(rt.keys.published_version("rules", 3)) == 0


async def test_a_rollback_sent_twice_steps_back_once(rt: Runtime, proxied: Proxied) -> None:
    for name in ("one", "two", "three"):
        await rt.rules.publish(rules(name), "admin")
    target = await proxied.lose_reply(lambda: proxied.rules.rollback("admin"), b"EXEC")
    assert target.number == 2 == await rt.rules.active_number()
    assert [e["action"] for e in await rt.rules.log()] == ["rollback", "publish", "publish", "publish"]


async def test_the_same_request_id_from_a_client_retry_returns_the_first_result(rt: Runtime) -> None:
    first, second = await _queued(rt, 2)
    claims = [await rt.conversations.claim("payments", "ann", request_id="req-1") for _ in range(2)]
    assert claims == [first, first]
    replies = [await rt.conversations.reply(first, "Hello", "ann", request_id="req-2") for _ in range(2)]
    assert replies[0] == replies[1]
    assert len(await _history(rt, first, "outbound")) == 1
    # A new request id is a new write.
    assert await rt.conversations.claim("payments", "ann", request_id="req-3") == second
