"""The inbox cap and Redis' memory limit: an append is kept or refused, never silently dropped."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.errors import InboxFull, RedisFull
from router.keys import ROUTER_GROUP
from router.model import Envelope
from router.redis import EmbeddedRedis
from router.runtime import Runtime
from router.worker import Worker
from tests.conftest import free_port
from tests.router.helpers import drain, inbound_ids, message

pytestmark = pytest.mark.cluster


async def _send(rt: Runtime, envs: list[Envelope]) -> tuple[list[Envelope], list[Envelope]]:
    """Append one at a time, as adapters confirm each: (those that got an entry id, those refused)."""
    kept: list[Envelope] = []
    refused: list[Envelope] = []
    for env in envs:
        try:
            await rt.inbox.append(env)
        except InboxFull:
            refused.append(env)
        else:
            kept.append(env)
    return kept, refused


async def _dedup_keys(rt: Runtime, envs: list[Envelope]) -> int:
    keys = [rt.keys.prefix + f"dedup:{e.channel}:{e.account}:{e.platform_id}" for e in envs]
    return int(await rt.client.exists(*keys))


async def test_backlog_above_the_cap_is_refused_not_trimmed_unrouted(rt: Runtime) -> None:
    """The drill of issue 12: 5,000 appends to an inbox capped at 1,000 with no worker running
    lost 3,988 that had got an entry id (and whose dedup key then hid them for 7 days)."""
    rt.settings.inbox.maxlen = 1000
    envs = [message(f"my deposit {i} is missing", user=f"b{i}") for i in range(5000)]
    kept, refused = await _send(rt, envs)
    assert (len(kept), len(refused)) == (1000, 4000)
    assert int(await rt.client.hget(rt.keys.stats, "refused:telegram") or 0) == 4000
    assert await _dedup_keys(rt, refused) == 0  # the platform's redelivery is not mistaken for a duplicate

    worker = Worker(rt)
    await drain(worker)
    # The platform sends the refused messages again, with workers running: each gets in once room is made.
    todo = refused
    while todo:
        _, todo = await _send(rt, todo)
        await drain(worker)
    routed = await inbound_ids(rt)
    assert set(routed) == {e.id for e in envs}
    assert set(routed.values()) == {1}
    # Routed entries are kept up to the cap (the console replays recent traffic from them).
    assert 900 <= await rt.client.xlen(rt.keys.inbox) <= 1000


async def test_only_acknowledged_entries_make_room(rt: Runtime) -> None:
    rt.settings.inbox.maxlen = 1000
    kept, _ = await _send(rt, [message(f"hello {i}", user=f"p{i}") for i in range(1000)])
    assert len(kept) == 1000
    # Delivered to a worker that has not acknowledged them yet: pending, not routed.
    [(_, entries)] = await rt.client.xreadgroup(ROUTER_GROUP, "slow", {rt.keys.inbox: ">"}, count=1000)
    with pytest.raises(InboxFull, match="inbox full: 1000 entries"):
        await rt.inbox.append(message("one more", user="late"))
    await rt.client.xack(rt.keys.inbox, ROUTER_GROUP, *[entry_id for entry_id, _ in entries[:30]])
    await rt.inbox.append(message("one more", user="late"))
    # Only the 30 acknowledged entries went; every pending one is still there.
    ids = [entry_id for entry_id, _ in await rt.client.xrange(rt.keys.inbox)]
    assert ids[:970] == [entry_id for entry_id, _ in entries[30:]]
    assert len(ids) == 971


async def test_an_out_of_memory_redis_refuses_appends_cleanly(tmp_path: Path, rt: Runtime) -> None:
    server = EmbeddedRedis(tmp_path / "redis", port=free_port(), maxmemory="3mb", private=True)
    with server:
        async with Runtime(rt.settings, server.url) as small:
            policy = await small.client.config_get("maxmemory-policy")
            assert policy["maxmemory-policy"] in ("noeviction", b"noeviction")
            big = "x" * 20_000
            with pytest.raises(RedisFull, match=r"Redis is out of memory \(maxmemory 3145728 bytes"):
                for i in range(1000):
                    await small.inbox.append(message(big, user=f"m{i}"))
            last = message(big, user="last")
            with pytest.raises(RedisFull):
                await small.inbox.append(last)
            assert await _dedup_keys(small, [last]) == 0
            await small.client.config_set("maxmemory", "0")
            appended = await small.inbox.append(last)
            assert not appended.duplicate
