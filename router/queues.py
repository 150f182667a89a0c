"""Group queues: unassigned open conversations ordered by priority, then SLA due time."""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis.asyncio as aioredis

from router.conversations import Conversation, Conversations
from router.keys import Keys


@dataclass(frozen=True, slots=True)
class QueueStats:
    group: str
    depth: int
    oldest_wait_s: float | None
    overdue: int


class Queues:
    def __init__(self, client: aioredis.Redis, keys: Keys, conversations: Conversations) -> None:
        self.client = client
        self.keys = keys
        self.conversations = conversations

    async def head(self, group: str, limit: int = 50) -> list[Conversation]:
        ids = [m.decode() for m in await self.client.zrange(self.keys.queue(group), 0, limit - 1)]
        return await self.conversations.get_many(ids)

    async def stats(self, groups: list[str]) -> list[QueueStats]:
        now_ms = time.time() * 1000
        pipe = self.client.pipeline(transaction=False)
        for g in groups:
            pipe.zcard(self.keys.queue(g))
            pipe.zrange(self.keys.waiting(g), 0, 0, withscores=True)
            # Overdue = due time passed; one score band per priority keeps this O(log n).
            for prio in range(1, 5):
                pipe.zcount(self.keys.queue(g), prio * 1e13, prio * 1e13 + now_ms)
        raw = await pipe.execute()
        out = []
        for i, g in enumerate(groups):
            depth, oldest, *bands = raw[6 * i : 6 * i + 6]
            overdue = sum(int(b) for b in bands)
            out.append(QueueStats(g, int(depth), (now_ms - oldest[0][1]) / 1000 if oldest else None, overdue))
        return out

    async def groups_with_queues(self) -> list[str]:
        groups = []
        async for key in self.client.scan_iter(match=self.keys.queue("*"), count=500):
            groups.append(key.decode().removeprefix(self.keys.queue("")))
        return sorted(groups)
