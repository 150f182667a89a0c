"""How good the wait estimates were (docs/waits.md): each estimate an auto-reply said, beside the
real wait of its conversation, is on its shard's ``waits`` stream (lua/common.lua ``served``);
this reads them all and sums them up per group.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import redis.asyncio as aioredis

from router.keys import Shards


@dataclass(frozen=True, slots=True)
class Observed:
    """One estimate and what happened: the wait said (point estimate and its range in whole
    minutes) and the real one, from the auto-reply to the conversation's first claim,
    assignment or agent's reply."""

    group: str
    conv: str
    est_ms: int
    min_m: int
    max_m: int
    real_ms: int

    @property
    def inside(self) -> bool:
        return self.min_m * 60_000 <= self.real_ms <= self.max_m * 60_000


@dataclass(frozen=True, slots=True)
class WaitAccuracy:
    group: str
    n: int
    #: The median of |real - estimate| (seconds).
    median_abs_error_s: float
    #: The share of real waits within the range said, [wait_min, wait_max] minutes.
    inside: float


def _observed(fields: dict[bytes, bytes]) -> Observed:
    f = {k.decode(): v.decode() for k, v in fields.items()}
    return Observed(f["group"], f["conv"], int(f["est_ms"]), int(f["min"]), int(f["max"]), int(f["real_ms"]))


async def observations(client: aioredis.Redis, shards: Shards) -> list[Observed]:
    """Every estimate still on the shards' ``waits`` streams (each capped ~10,000)."""
    pipe = client.pipeline(transaction=False)
    for keys in shards.shard:
        pipe.xrange(keys.waits)
    return [_observed(fields) for entries in await pipe.execute() for _, fields in entries]


def accuracy(found: list[Observed], group: str | None = None) -> list[WaitAccuracy]:
    """Per group (sorted; only ``group`` if given): n, the median absolute error, the share inside."""
    by_group: dict[str, list[Observed]] = {}
    for o in found:
        if group is None or o.group == group:
            by_group.setdefault(o.group, []).append(o)
    return [
        WaitAccuracy(
            g,
            len(obs),
            statistics.median(abs(o.real_ms - o.est_ms) for o in obs) / 1000,
            sum(o.inside for o in obs) / len(obs),
        )
        for g, obs in sorted(by_group.items())
    ]
