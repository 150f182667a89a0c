from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from router.actions import Actions, Pressed
from router.bench_failover import routed
from router.keys import ROUTER_GROUP, STREAMS
from router.model import Envelope, Sender, new_id, now
from router.runtime import Runtime
from router.shardlease import ShardLeases
from router.worker import Worker, Workers

#: The head of a small rule set (three groups, defaults, ``rules:``) that tests complete with their rules.
THREE_GROUPS = """
version: 1
groups:
  - {id: security, name: Security}
  - {id: payments, name: Payments}
  - {id: general, name: General}
defaults: {group: general, priority: P3}
rules:
"""


def message(text: str, *, user: str = "u1", channel: str = "telegram", key: str | None = None, **kw: Any) -> Envelope:
    msg_id = new_id()
    return Envelope(
        id=msg_id,
        channel=channel,
        account=kw.pop("account", "bot1"),
        platform_id=kw.pop("platform_id", msg_id),
        conversation_key=key or user,
        sender=Sender(id=user, name=user.title(), attributes=kw.pop("attributes", {})),
        text=text,
        received_at=now(),
        **kw,
    )


async def drain(worker: Worker | Workers) -> int:
    """Route everything in the P1 lane and the inbox (own pending entries first) and wait for the
    last batch; with ``Workers``, in every shard (holding their leases, with several shards: see
    ``_run_until_drained``)."""
    if isinstance(worker, Workers):
        if worker.leases is not None:
            return await _run_until_drained(worker, worker.leases)
        return sum([await drain(w) for w in worker.each])
    lane = await worker.lane.drain() if worker.lane is not None else 0
    return lane + await worker.drain()


async def _run_until_drained(workers: Workers, leases: ShardLeases) -> int:
    """Run ``workers`` (alone in its group: it takes every shard's lease) until every shard's
    inbox is delivered and acknowledged, then stop it; returns the messages it routed."""
    run = asyncio.create_task(workers.run())
    try:
        for _ in range(1500):  # 30 s
            if leases.held() == list(range(leases.shards.count)) and await _all_acked(leases):
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError(f"the inbox was not drained in 30 s (shards held: {leases.held()})")
    finally:
        workers.stop()
        await run
    return workers.processed


async def _all_acked(leases: ShardLeases) -> bool:
    for stream in (keys.stream(name) for keys in leases.shards.shard for name in STREAMS):
        if not await leases.client.exists(stream):
            continue
        last = (await leases.client.xinfo_stream(stream))["last-generated-id"]
        for group in await leases.client.xinfo_groups(stream):
            ours = group["name"] in (ROUTER_GROUP, ROUTER_GROUP.encode())
            if ours and (group["pending"] or group["last-delivered-id"] != last):
                return False
    return True


async def inbound_ids(rt: Runtime) -> Counter[str]:
    """Every inbound message id over every conversation's history in every shard (what the
    workers routed)."""
    return await routed(rt)


async def presses(rt: Runtime) -> list[Pressed]:
    """Every button press recorded so far and not yet read by the tests' own consumer group."""
    reader = Actions(rt.client, rt.shards, rt.scripts).reader("tests", "t")
    await reader.start()
    return await reader.read(block_ms=10)
