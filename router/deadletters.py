"""The dead-letter stream: what could not be routed, with the reason; retry or drop."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from router.keys import Keys


class DeadLetters:
    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys

    async def entries(self, count: int = 100) -> list[dict[str, Any]]:
        entries = await self.client.xrange(self.keys.dead, count=count)
        out = []
        for eid, fields in entries:
            f = {k.decode(): v.decode(errors="replace") for k, v in fields.items()}
            out.append({"id": eid.decode(), **f})
        return out

    async def _select(self, ids: list[str] | None) -> list[tuple[bytes, dict[bytes, bytes]]]:
        if ids is None:
            return list(await self.client.xrange(self.keys.dead))
        out = []
        for i in ids:
            out.extend(await self.client.xrange(self.keys.dead, i, i))
        return out

    async def retry(self, ids: list[str] | None) -> int:
        """Append each dead letter's payload to the inbox again (a fresh entry) and remove it here."""
        n = 0
        for eid, fields in await self._select(ids):
            payload = fields.get(b"payload", b"")
            if not payload:
                continue
            pipe = self.client.pipeline(transaction=True)
            pipe.xadd(self.keys.inbox, {"env": payload})
            pipe.xdel(self.keys.dead, eid)
            await pipe.execute()
            n += 1
        return n

    async def drop(self, ids: list[str] | None) -> int:
        selected = await self._select(ids)
        if not selected:
            return 0
        return int(await self.client.xdel(self.keys.dead, *[eid for eid, _ in selected]))
