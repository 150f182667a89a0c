"""Rounds of work per shard under a fenced lease: one process at a time does a shard's work.

The SLA timer (router/slatimer.py), the satisfaction surveys (router/csat.py) and the incident
broadcast (router/incident_broadcast.py) work alike: every replica runs one; each round, for
every shard, it keeps or takes the shard's lease (``lease:{name}`` under the shard's prefix,
router/leases.py) and does the shard's work only while it holds it, under the lease's fence,
which the scripts doing the effects check (a process paused past its lease's expiry writes
nothing). A standby takes a shard over at its first round after the holder's lease expired.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from router.errors import LeaseLost
from router.keys import Keys
from router.leases import Clock, keep_or_take, shard_leases
from router.lifecycle import keep_running, wait_or_stop
from router.redis import TRANSIENT_ERRORS
from router.runtime import Runtime

log = logging.getLogger("switchboard.leases")

#: A shard's work in a round: (shard index, its keys, the lease's fence) -> effects done.
Work = Callable[[int, Keys, int], Awaitable[int]]


class ShardRounds:
    def __init__(self, rt: Runtime, name: str, owner: str, clock: Clock) -> None:
        self.name = name
        self._shards = rt.shards
        self.leases = shard_leases(rt.client, rt.scripts, rt.shards, rt.settings.leases, name, owner, clock)
        self.last_error = ""

    def held(self) -> list[int]:
        return [i for i, lease in enumerate(self.leases) if lease.fence is not None]

    async def round(self, work: Work) -> int:
        """One round over the shards: keep or take each lease, then ``work`` on each shard held."""
        done = 0
        for i, lease in enumerate(self.leases):
            fence = await keep_or_take(lease)
            if fence is None:
                continue
            try:
                done += await work(i, self._shards.shard[i], fence)
            except LeaseLost as exc:
                log.warning("%s of shard %d: %s", self.name, i, exc)
                lease.fence = None
        return done

    async def run(self, round_: Callable[[], Awaitable[object]], stopping: asyncio.Event, every_s: float) -> None:
        """``round_`` every ``every_s`` until ``stopping``; Redis errors are retried (and kept in
        ``last_error`` for health)."""

        async def step() -> None:
            await round_()
            self.last_error = ""
            await wait_or_stop(stopping, every_s)

        async def failed(exc: BaseException) -> None:
            self.last_error = str(exc) or type(exc).__name__

        what = f"{self.name} rounds: redis unavailable"
        await keep_running(step, stopping, what=what, retry_on=TRANSIENT_ERRORS, on_error=failed)

    async def release(self) -> None:
        """Give the leases up: a standby takes the shards over at its next round."""
        for lease in self.leases:
            with contextlib.suppress(*TRANSIENT_ERRORS):
                await lease.release()
