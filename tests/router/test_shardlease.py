"""Shard leases (router/shardlease.py): the rebalancing decisions, the rounds of two processes'
``ShardLeases`` against a real Redis (an injectable clock: no sleeps), and the fence the route and
dead-letter scripts check (a worker paused past its lease's expiry cannot route or dead-letter).
The real-process takeover on the cluster is tests/router/test_shardlease_run.py."""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass, field

import pytest

from router.errors import LeaseLost
from router.keys import ROUTER_GROUP, Shards
from router.leases import Lease
from router.membership import Membership, assign
from router.runtime import Runtime
from router.scripts import now_ms
from router.shardlease import GROUP, ShardLeases, lease_name, rebalance
from router.worker import Worker
from tests.router.helpers import inbound_ids, message
from tests.router.test_leases import FakeClock

pytestmark = pytest.mark.cluster  # the tests that use Redis run on the single server and the cluster

# -- pure ----------------------------------------------------------------------------------------


def test_rebalance_stops_what_is_no_longer_assigned_and_tries_what_is_new() -> None:
    assert rebalance([], [0, 2, 5]) == ([], [0, 2, 5])
    assert rebalance([0, 2, 5], [0, 2, 5]) == ([], [])
    assert rebalance([0, 2, 5], [2, 3]) == ([0, 5], [3])
    assert rebalance([1, 4], []) == ([1, 4], [])


def test_a_member_joining_takes_only_shards_from_others_and_leaving_gives_back_only_its_own() -> None:
    before = assign(6, ["a", "b"])
    after = assign(6, ["a", "b", "c"])
    for member in ("a", "b"):
        release, want = rebalance(before[member], after[member])
        assert want == [] and set(release) <= set(after["c"])
    assert sorted(s for shards in after.values() for s in shards) == list(range(6))
    # c leaves again: a and b get exactly what they had, and only c's shards move.
    assert assign(6, ["a", "b"]) == before


def test_more_members_than_shards_leaves_some_idle() -> None:
    owned = assign(2, ["a", "b", "c", "d"])
    assert sorted(s for shards in owned.values() for s in shards) == [0, 1]
    assert sum(1 for shards in owned.values() if not shards) == 2


# -- rounds of two processes ------------------------------------------------------------------------


@dataclass
class Loop:
    """A stand-in for one shard's worker loop: runs until stopped, records its fence."""

    shard: int
    fence: int
    processed: int = 0
    stopped: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        await self.stopped.wait()

    def stop(self) -> None:
        self.stopped.set()


def leases(rt: Runtime, shards: Shards, member: str, clock: FakeClock, loops: list[Loop]) -> ShardLeases:
    def make(shard: int, fence: int) -> Loop:
        loops.append(Loop(shard, fence))
        return loops[-1]

    return ShardLeases(
        rt.client,
        shards=shards,
        scripts=rt.scripts,
        membership=Membership(rt.client, shards.home, GROUP, member, ttl_ms=3000, clock=clock),
        make=make,
        ttl_ms=3000,
        max_skew_ms=0,
        retry_s=0.05,
        health_key=shards.home.health("worker", member),
        clock=clock,
    )


async def test_two_processes_split_the_shards_rebalance_when_one_joins_and_take_over_at_a_clean_stop(
    rt: Runtime,
) -> None:
    shards = Shards(rt.keys.prefix, 5)
    clock = FakeClock(now=now_ms())
    a_loops: list[Loop] = []
    b_loops: list[Loop] = []
    a, b = leases(rt, shards, "a", clock, a_loops), leases(rt, shards, "b", clock, b_loops)

    await a.round()
    assert a.held() == [0, 1, 2, 3, 4]  # alone: every shard
    await b.round()
    # b joined: it wants its shards but a still holds them, so b runs none yet (never two holders).
    want_b = assign(5, ["a", "b"])["b"]
    assert want_b and b.held() == []
    await a.round()  # a sees b: stops and releases b's shards at once
    assert a.held() == assign(5, ["a", "b"])["a"]
    await b.round()  # no TTL to wait: the leases were released
    assert b.held() == want_b
    # Each process's own health record names its shards (an idle one's too: it counts as alive).
    record = json.loads(await rt.client.get(shards.home.health("worker", "b")))
    assert (record["shards"], record["pid"]) == (want_b, os.getpid())
    assert all(loop.stopped.is_set() for loop in a_loops if loop.shard in want_b)
    # Each holding got a fence larger than the previous holder's.
    first = {loop.shard: loop.fence for loop in a_loops}
    assert all(loop.fence == first[loop.shard] + 1 for loop in b_loops)

    # A clean stop releases everything and leaves the group: b takes all over in its next round.
    a.stop()
    await a.run()
    assert await rt.client.get(shards.home.health("worker", "a")) is None
    assert await Membership(rt.client, shards.home, GROUP, "x", ttl_ms=3000, clock=clock).live() == ["b"]
    await b.round()
    assert b.held() == [0, 1, 2, 3, 4]
    b.stop()
    await b.run()
    for shard in range(5):
        probe = Lease(rt.client, rt.scripts, shards.shard[shard].prefix, lease_name(shard), "p", ttl_ms=3000)
        assert await probe.holder() is None


async def test_a_dead_process_leaves_the_group_when_its_heartbeat_expires_and_its_leases_with_it(
    rt: Runtime,
) -> None:
    shards = Shards(rt.keys.prefix, 3)
    clock = FakeClock(now=now_ms())
    dead = Membership(rt.client, shards.home, GROUP, "dead", ttl_ms=3000, clock=clock)
    await dead.beat()
    for shard in range(3):  # "dead" held every shard, then stopped beating and renewing
        prefix = shards.shard[shard].prefix
        await Lease(rt.client, rt.scripts, prefix, lease_name(shard), "dead", ttl_ms=3000, clock=clock).acquire()
    loops: list[Loop] = []
    b = leases(rt, shards, "b", clock, loops)
    await b.round()
    assert b.held() == []  # every lease still held
    clock.now += 3001
    await b.round()
    assert b.held() == [0, 1, 2]
    assert [loop.fence for loop in loops] == [2, 2, 2]
    b.stop()
    await b.run()


# -- the fence in the scripts ---------------------------------------------------------------------


async def _pending(rt: Runtime) -> int:
    return int((await rt.client.xpending(rt.shards.shard[0].inbox, ROUTER_GROUP))["pending"])


async def test_a_paused_worker_whose_lease_was_taken_routes_nothing_and_the_next_holder_routes_it_once(
    rt: Runtime,
) -> None:
    keys = rt.shards.shard[0]
    clock = FakeClock(now=now_ms())
    old = Lease(rt.client, rt.scripts, keys.prefix, lease_name(0), "old", ttl_ms=1000, max_skew_ms=0, clock=clock)
    await old.acquire()
    assert old.fence is not None
    paused = Worker(rt, "old-s0", shard=0, fence=old.fence)
    msg = message("where is my order?")
    await rt.inbox.append(msg)
    await rt.client.xadd(keys.inbox, {"junk": "not an envelope"})  # one for the dead-letter script
    entries = await paused._read()
    assert len(entries) == 2 and await _pending(rt) == 2

    # Paused past its expiry: another process took the lease (its clock moved on).
    clock.now += 1500
    new = Lease(rt.client, rt.scripts, keys.prefix, lease_name(0), "new", ttl_ms=60_000, max_skew_ms=0, clock=clock)
    await new.acquire()
    assert new.fence == old.fence + 1

    with pytest.raises(LeaseLost, match="FENCED"):
        await paused.process(entries, attempts=1)
    # Refused without any effect: nothing routed or dead-lettered, both entries still pending.
    assert await inbound_ids(rt) == {}
    assert await rt.client.xlen(keys.dead) == 0
    assert set(await rt.client.hgetall(keys.stats)) == {b"in:telegram"}  # the append's count only
    assert await _pending(rt) == 2

    # The new holder takes the paused holder's entries over at once (its heartbeat may be alive).
    successor = Worker(rt, "new-s0", shard=0, fence=new.fence)
    await paused._heartbeat()
    assert await successor.take_over() == 2
    assert await inbound_ids(rt) == {msg.id: 1}
    assert await rt.client.xlen(keys.dead) == 1
    assert await _pending(rt) == 0


async def test_a_worker_whose_lease_expired_unclaimed_is_refused_too(rt: Runtime) -> None:
    keys = rt.shards.shard[0]
    # Its clock at acquisition is 10 s behind the scripts' now: the lease expired 9 s ago.
    clock = FakeClock(now=now_ms() - 10_000)
    lease = Lease(rt.client, rt.scripts, keys.prefix, lease_name(0), "w", ttl_ms=1000, max_skew_ms=0, clock=clock)
    await lease.acquire()
    assert lease.fence is not None
    worker = Worker(rt, "w-s0", shard=0, fence=lease.fence)
    await rt.inbox.append(message("hi"))
    entries = await worker._read()
    with pytest.raises(LeaseLost):
        await worker.process(entries, attempts=1)
    assert await inbound_ids(rt) == {}
    # Leases off (fence 0): the same entries route.
    await Worker(rt, "w-s0", shard=0).process(entries, attempts=1)
    assert len(await inbound_ids(rt)) == 1
