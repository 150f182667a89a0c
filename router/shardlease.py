"""Shard leases: each worker process reads only the virtual shards it holds a lease on.

With ``redis.shards`` > 1 and ``worker.shard_leases`` on (the default), a worker process is a
member of the ``routers`` group (router/membership.py); from the live members it computes its
shards with ``assign()`` (rendezvous hashing: every process computes the same answer), and for
each one acquires the fenced lease ``shard:{i}`` under that shard's prefix — so the route script,
which runs in the shard's slot, can compare the worker's fence with it (lua/common.lua
fence_refused) — and runs that shard's loop only while it holds it.

Each round (every ``leases.retry_s``) it beats its membership and rebalances (``rebalance``,
pure): a shard no longer assigned to it is stopped (its batch finished) and its lease released at
once; an assigned shard it does not run yet is tried, and started when its lease is free or
expired (the previous holder released it, or died and it expired). A loop whose lease is lost
(no renewal in time, or a script refused its fence) stops; the next round tries it again. On stop
every loop stops and every lease is released, and the process leaves the group, so the others
take its shards over at their next round rather than after a TTL.

While membership changes, two processes may briefly both want a shard: the lease decides, the
loser tries again next round. A process that computes no shard (more members than shards) idles.

Each round also writes the process's own health record (``health_key``, ``worker:<member>``:
pid, host and the shards it runs), so that an idle worker process counts as alive
(``switchboard check``, router/processes.py ``missing``); each shard loop writes its own too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import socket
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Protocol

import redis.asyncio as aioredis

from router.errors import LeaseLost
from router.keys import Shards
from router.leases import Clock, Holder, Lease
from router.lifecycle import wait_or_stop
from router.membership import Membership, assign
from router.redis import TRANSIENT_ERRORS
from router.scripts import Scripts

log = logging.getLogger("switchboard.shardlease")

#: The membership group of worker processes (``members:routers``).
GROUP = "routers"


def lease_name(shard: int) -> str:
    """The lease of ``shard``, kept under the shard's own prefix (``lease:shard:{i}``)."""
    return f"shard:{shard}"


def rebalance(running: Collection[int], assigned: Collection[int]) -> tuple[list[int], list[int]]:
    """What one round does: (shards to stop and release, shards to try to acquire and start)."""
    mine = set(assigned)
    return sorted(set(running) - mine), sorted(mine - set(running))


class ShardLoop(Protocol):
    """What runs one shard (router/worker.py ``Worker``)."""

    @property
    def processed(self) -> int: ...

    async def run(self) -> None: ...

    def stop(self) -> None: ...


@dataclass
class _Running:
    loop: ShardLoop
    lease: Lease
    task: asyncio.Task[None]


class ShardLeases:
    """Run ``make(shard, fence)``'s loop for each shard this process (``member``) holds the lease of.

    ``ttl_ms``, ``max_skew_ms`` and ``retry_s`` are the [leases] settings; the membership heartbeat
    lives ``ttl_ms`` too, so a dead process leaves the group about when its leases expire.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        shards: Shards,
        scripts: Scripts,
        membership: Membership,
        make: Callable[[int, int], ShardLoop],
        ttl_ms: int,
        max_skew_ms: int,
        retry_s: float,
        health_key: str,
        clock: Clock | None = None,
    ) -> None:
        self.client = client
        self.health_key = health_key
        self.shards = shards
        self.scripts = scripts
        self.membership = membership
        self.member = membership.member
        self.make = make
        self.ttl_ms = ttl_ms
        self.max_skew_ms = max_skew_ms
        self.retry_s = retry_s
        self.clock = clock
        self.running: dict[int, _Running] = {}
        #: Messages routed by loops that have ended (``processed`` adds the running ones').
        self.done = 0
        self._stopping = asyncio.Event()

    @property
    def processed(self) -> int:
        return self.done + sum(r.loop.processed for r in self.running.values())

    def held(self) -> list[int]:
        """The shards whose loop runs now."""
        return sorted(self.running)

    def stop(self) -> None:
        """Stop every loop (each finishes its batch), release the leases and leave the group."""
        self._stopping.set()

    async def run(self) -> None:
        try:
            while not self._stopping.is_set():
                try:
                    await self.round()
                except TRANSIENT_ERRORS as exc:
                    # Redis away: the loops wait it out themselves; their leases lapse if it lasts.
                    log.warning("shard leases of %s: redis unavailable: %s", self.member, exc or type(exc).__name__)
                if await wait_or_stop(self._stopping, self.retry_s):
                    break
        finally:
            await asyncio.gather(*(self._stop(shard) for shard in list(self.running)))
            with contextlib.suppress(*TRANSIENT_ERRORS):
                await self.membership.leave()
                await self.client.delete(self.health_key)

    async def round(self) -> None:
        """One rebalancing round: beat, reap ended loops, stop the unassigned, try the assigned."""
        await self.membership.beat()
        for shard, r in list(self.running.items()):
            if r.task.done():
                await self._stop(shard)
        assigned = assign(self.shards.count, await self.membership.live()).get(self.member, [])
        release, want = rebalance(self.running, assigned)
        if release or want:
            log.debug("%s: assigned %s; releasing %s, trying %s", self.member, assigned, release, want)
        for shard in release:
            await self._stop(shard)
        for shard in want:
            await self._start(shard)
        record = {"pid": os.getpid(), "host": socket.gethostname(), "shards": self.held(), "at": time.time()}
        # Three rounds: a round that starts loops takes longer than retry_s.
        await self.client.set(self.health_key, json.dumps(record), ex=max(1, math.ceil(3 * self.retry_s)))

    async def _start(self, shard: int) -> None:
        lease = Lease(
            self.client,
            self.scripts,
            self.shards.shard[shard].prefix,
            lease_name(shard),
            self.member,
            ttl_ms=self.ttl_ms,
            max_skew_ms=self.max_skew_ms,
            clock=self.clock,
        )
        got = await lease.acquire()
        if lease.fence is None:
            log.debug("shard %d: lease held by %s (fence %d)", shard, got.owner, got.fence)
            return
        log.info("%s: shard %d lease acquired (fence %d)", self.member, shard, lease.fence)
        loop = self.make(shard, lease.fence)
        self.running[shard] = _Running(loop, lease, asyncio.create_task(self._hold(shard, loop, lease)))

    async def _hold(self, shard: int, loop: ShardLoop, lease: Lease) -> None:
        """Run ``loop`` while the lease is held; stop it at the lease's loss; release at the end
        (after its last batch: a new holder must not start while this one still writes)."""
        async with Holder(lease) as holder:
            run = asyncio.create_task(loop.run())
            lost = asyncio.create_task(holder.lost.wait())
            try:
                await asyncio.wait({run, lost}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                loop.stop()
                lost.cancel()
                await asyncio.wait({run})
            try:
                run.result()
            except LeaseLost as exc:
                log.warning("%s: shard %d: %s", self.member, shard, exc)

    async def _stop(self, shard: int) -> None:
        r = self.running.pop(shard)
        r.loop.stop()
        try:
            await r.task  # a loop that crashed brings the process down (router/supervisor.py)
        finally:
            self.done += r.loop.processed
