"""Group queues: unassigned open conversations ordered by priority, then SLA due time.

A group's queue is a partition per shard (``queue:{group}`` under each shard's prefix, kept by the
route and conversation scripts of that shard); reads merge the partitions.
"""

from __future__ import annotations

import heapq
import time
from dataclasses import dataclass

import redis.asyncio as aioredis

from router.conversations import Conversation, Conversations
from router.keys import Shards


@dataclass(frozen=True, slots=True)
class QueueStats:
    group: str
    depth: int
    oldest_wait_s: float | None
    overdue: int


class Queues:
    def __init__(self, client: aioredis.Redis, shards: Shards, conversations: Conversations) -> None:
        self.client = client
        self.shards = shards
        self.conversations = conversations

    async def head(self, group: str, limit: int = 50) -> list[Conversation]:
        """The ``limit`` most urgent of the group: each partition's first ``limit``, merged."""
        pipe = self.client.pipeline(transaction=False)
        for keys in self.shards.shard:
            pipe.zrange(keys.queue(group), 0, limit - 1, withscores=True)
        partitions = [[(score, m.decode()) for m, score in part] for part in await pipe.execute()]
        ids = [cid for _, cid in heapq.merge(*partitions)][:limit]
        return await self.conversations.get_many(ids)

    async def stats(self, groups: list[str]) -> list[QueueStats]:
        now_ms = time.time() * 1000
        pipe = self.client.pipeline(transaction=False)
        for g in groups:
            for keys in self.shards.shard:
                pipe.zcard(keys.queue(g))
                pipe.zrange(keys.waiting(g), 0, 0, withscores=True)
                # Overdue = due time passed; one score band per priority keeps this O(log n).
                for prio in range(1, 5):
                    pipe.zcount(keys.queue(g), prio * 1e13, prio * 1e13 + now_ms)
        raw = await pipe.execute()
        out = []
        per_group = 6 * self.shards.count
        for i, g in enumerate(groups):
            part = raw[per_group * i : per_group * (i + 1)]
            depth = sum(int(n) for n in part[0::6])
            oldest = min((first[0][1] for first in part[1::6] if first), default=None)
            overdue = sum(int(b) for j in range(2, 6) for b in part[j::6])
            out.append(QueueStats(g, depth, (now_ms - oldest) / 1000 if oldest is not None else None, overdue))
        return out

    async def groups_with_queues(self) -> list[str]:
        groups = set()
        async for key in self.client.scan_iter(match=self.shards.glob("queue:*"), count=500):
            found = self.shards.split(key.decode())
            if found is not None and found[1].startswith("queue:"):
                groups.add(found[1].removeprefix("queue:"))
        return sorted(groups)
