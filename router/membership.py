"""Who is alive in a group of processes, and which of them takes which shard.

``Membership`` keeps one sorted set per group (``members:{group}``, router/keys.py): each member's
heartbeat writes its own expiry (now + TTL, by the injectable ``Clock``) as its score, and the
live members are those whose expiry is ahead. One key rather than one key per member: listing it
needs no SCAN, which on a Redis Cluster would have to visit every node; the set carries a PX TTL
too, so an abandoned group disappears.

``assign`` is pure: shard numbers 0..N-1 to members by rendezvous (highest random weight)
hashing. Every member computes the same answer from the same list, and a member joining or
leaving moves only the shards it wins or held (about N/members of them), none between the others.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import redis.asyncio as aioredis

from router.keys import Keys
from router.leases import Clock, WallClock


def _weight(member: str, shard: int) -> int:
    # A stable hash (not Python's hash(), which is salted per process): every process must agree.
    digest = hashlib.blake2b(f"{shard}\0{member}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def assign(shards: int, members: Iterable[str]) -> dict[str, list[int]]:
    """Each member's shards (ascending), every shard 0..``shards``-1 to exactly one member."""
    if shards < 0:
        raise ValueError(f"shards must be 0 or more, not {shards}")
    names = sorted(set(members))
    owned: dict[str, list[int]] = {name: [] for name in names}
    if not names:
        return owned
    for shard in range(shards):
        # Ties (a 64-bit collision) go to the larger name, so the answer never depends on order.
        owned[max(names, key=lambda name: (_weight(name, shard), name))].append(shard)
    return owned


class Membership:
    """``member``'s heartbeat in ``group``, and the group's live members."""

    def __init__(
        self, client: aioredis.Redis, keys: Keys, group: str, member: str, *, ttl_ms: int, clock: Clock | None = None
    ) -> None:
        self._client = client
        self.key = keys.members(group)
        self.member = member
        self.ttl_ms = ttl_ms
        self.clock = clock or WallClock()

    async def beat(self) -> None:
        """Say this member is alive for TTL more; the expired members are dropped meanwhile."""
        now = self.clock.now_ms()
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.zadd(self.key, {self.member: now + self.ttl_ms})
            pipe.zremrangebyscore(self.key, "-inf", now)
            pipe.pexpire(self.key, self.ttl_ms)
            await pipe.execute()

    async def live(self) -> list[str]:
        """The members whose heartbeat has not expired, sorted."""
        raw = await self._client.zrangebyscore(self.key, f"({self.clock.now_ms()}", "+inf")
        return sorted(m.decode() for m in raw)

    async def leave(self) -> None:
        """Leave the group now (a clean stop), rather than when the heartbeat expires."""
        await self._client.zrem(self.key, self.member)
