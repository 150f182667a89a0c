"""The dashboard's time series: a capped stream of samples, one per interval across all processes."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis

from router.keys import Keys

#: A day at the default interval; approximate trimming keeps XADD O(1).
MAX_SAMPLES = 6000


class Samples:
    def __init__(self, client: aioredis.Redis, keys: Keys, interval_s: float) -> None:
        self._client = client
        self._keys = keys
        self._interval = max(1, int(interval_s))

    async def recent(self, count: int = 240) -> list[dict[str, Any]]:
        """The last ``count`` samples, oldest first."""
        entries = await self._client.xrevrange(self._keys.samples, count=count)
        return [json.loads(fields[b"s"]) for _, fields in reversed(entries)]

    async def take(self, measure: Callable[[], Awaitable[dict[str, Any]]]) -> bool:
        """Append ``measure()``'s sample unless another process took one in this interval (a lock
        with the interval as its TTL); True when this one did."""
        if not await self._client.set(self._keys.samples_lock, "1", ex=self._interval, nx=True):
            return False
        sample = await measure()
        await self._client.xadd(self._keys.samples, {"s": json.dumps(sample)}, maxlen=MAX_SAMPLES, approximate=True)
        return True
