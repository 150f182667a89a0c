"""Reading the group event streams (``events:{group}``, written by the route script and the
conversation writes) for live views: where each stream ends now, and what came after a position.

Reads that block (XREAD ... BLOCK) use a pool of their own, so that open live views never starve
the rest of the process of connections.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from router.keys import Keys


@dataclass(frozen=True, slots=True)
class GroupEvent:
    group: str
    entry: str  # the stream entry id: the position after this event
    type: str
    conv: str
    at: int  # ms
    data: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"group": self.group, "type": self.type, "conv": self.conv, "at": self.at, "data": self.data}


class GroupEvents:
    def __init__(self, client: aioredis.Redis, blocking: aioredis.Redis, keys: Keys) -> None:
        self._client = client
        self._blocking = blocking
        self._keys = keys

    async def ends(self, groups: list[str]) -> dict[str, str]:
        """The id of each group's newest event ("0-0": none yet): reading from there gives what comes next."""
        out = {}
        for g in groups:
            last = await self._client.xrevrange(self._keys.events(g), count=1)
            out[g] = last[0][0].decode() if last else "0-0"
        return out

    async def after(self, positions: dict[str, str], block_ms: int, count: int = 100) -> list[GroupEvent]:
        """Events after each group's position, waiting up to ``block_ms`` for the first one."""
        keys = {self._keys.events(g): g for g in positions}
        reply = await self._blocking.xread({k: positions[g] for k, g in keys.items()}, block=block_ms, count=count)
        out = []
        for key, entries in reply or []:
            group = keys[key.decode()]
            for entry_id, fields in entries:
                f = {k.decode(): v.decode() for k, v in fields.items()}
                out.append(
                    GroupEvent(
                        group,
                        entry_id.decode(),
                        f.get("type", ""),
                        f.get("conv", ""),
                        int(f.get("at") or 0),
                        json.loads(f.get("data") or "{}"),
                    )
                )
        return out

    async def close(self) -> None:
        await self._blocking.aclose()
