"""Reading the group event streams (``events:{group}`` of every shard, written by the route
script and the conversation writes) for live views: where each stream ends now, and what came
after a position.

A live view keeps a position per stream, named by ``streams``: the group itself with one shard
(as before shards), ``group@shard`` with several. On a single server every stream is read in one
XREAD; on a Redis Cluster an XREAD stays in one slot, so the streams are read per slot at once
(``_per_slot``): first without blocking, and only when no slot has anything, blocking for at most
``CLUSTER_BLOCK_MS``. Every read is awaited, none is cancelled: a cancelled redis-py cluster
command drops its connection in the middle of a reply (CI saw those sockets leak and a step
return before the slots that had events answered).

Reads that block (XREAD ... BLOCK) use a pool of their own, so that open live views never starve
the rest of the process of connections.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from router.keys import Shards
from router.redis import reply_text

# On a cluster a blocking read waits for every slot's answer, so the wait is bounded: an event in
# one slot is seen at most this late. An idle reader then costs one XREAD per slot this often.
CLUSTER_BLOCK_MS = 250


def entry_id(entry: str) -> tuple[int, int]:
    """A stream entry id ("1796548478990-3") as a pair that compares like Redis does."""
    ms, _, seq = entry.partition("-")
    return int(ms), int(seq or 0)


def deleted_past(info: dict[str, Any], position: str) -> bool | None:
    """From a stream's XINFO STREAM reply: whether entries past ``position`` were deleted (its
    cap, XTRIM, XDEL), by ``max-deleted-entry-id``; None when the server cannot tell (before 7)."""
    deleted = info.get("max-deleted-entry-id")
    return None if deleted is None else entry_id(reply_text(deleted)) > entry_id(position)


@dataclass(frozen=True, slots=True)
class GroupEvent:
    group: str
    stream: str  # the name of its stream's position (``GroupEvents.streams``)
    entry: str  # the stream entry id: the position after this event
    type: str
    conv: str
    at: int  # ms
    data: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"group": self.group, "type": self.type, "conv": self.conv, "at": self.at, "data": self.data}


class GroupEvents:
    def __init__(self, client: aioredis.Redis, blocking: aioredis.Redis, shards: Shards) -> None:
        self._client = client
        self._blocking = blocking
        self._shards = shards

    def streams(self, groups: list[str]) -> dict[str, tuple[str, str]]:
        """The position names of ``groups``' event streams: name -> (group, stream key)."""
        if self._shards.count == 1:
            return {g: (g, self._shards.home.events(g)) for g in groups}
        return {f"{g}@{i}": (g, keys.events(g)) for g in groups for i, keys in enumerate(self._shards.shard)}

    async def ends(self, groups: list[str]) -> dict[str, str]:
        """The id of each stream's newest event ("0-0": none yet), by position name: reading from
        there gives what comes next."""
        streams = self.streams(groups)
        pipe = self._client.pipeline(transaction=False)
        for _, key in streams.values():
            pipe.xrevrange(key, count=1)
        return {
            name: last[0][0].decode() if last else "0-0"
            for name, last in zip(streams, await pipe.execute(), strict=True)
        }

    async def after(self, positions: dict[str, str], block_ms: int, count: int = 100) -> list[GroupEvent]:
        """Events after each stream's position (``streams``' names), waiting up to ``block_ms``
        for the first one."""
        by_key = {key: (name, group) for name in positions for group, key in [self._stream(name)]}
        if isinstance(self._blocking, RedisCluster):
            parts: dict[int, dict[str, str]] = {}
            for key, (name, _) in by_key.items():
                parts.setdefault(self._blocking.keyslot(key), {})[key] = positions[name]
            reply = await self._per_slot(list(parts.values()), block_ms, count)
        else:
            reply = await self._blocking.xread(
                {key: positions[name] for key, (name, _) in by_key.items()}, block=block_ms, count=count
            )
        out = []
        for key, entries in reply or []:
            name, group = by_key[key.decode()]
            for entry_id, fields in entries:
                f = {k.decode(): v.decode() for k, v in fields.items()}
                out.append(
                    GroupEvent(
                        group,
                        name,
                        entry_id.decode(),
                        f.get("type", ""),
                        f.get("conv", ""),
                        int(f.get("at") or 0),
                        json.loads(f.get("data") or "{}"),
                    )
                )
        return out

    async def resume(self, cursor: str, groups: list[str]) -> dict[str, str]:
        """The positions of a reader that keeps them in the hash ``cursor`` (the reviewer, the
        incident linker): each of ``groups``' streams from its stored position, a stream without
        one from its end (a first start reads from now on), stored at once. Only those are written:
        a replica standing by must not set back what the running one stored meanwhile."""
        stored = {k.decode(): v.decode() for k, v in (await self._client.hgetall(cursor)).items()}
        ends = await self.ends(groups)
        first = {name: end for name, end in ends.items() if not stored.get(name)}
        if first:
            await self._client.hset(cursor, mapping=first)
        return {name: stored.get(name) or end for name, end in ends.items()}

    async def follow(self, cursor: str, positions: dict[str, str], groups: list[str]) -> None:
        """Adds to ``positions`` (and ``cursor``) the streams of groups published since: from their
        start, so that nothing they hold is missed."""
        new = {name: "0-0" for name in self.streams(groups) if name not in positions}
        if new:
            positions.update(new)
            await self._client.hset(cursor, mapping=new)

    async def trimmed(self, positions: dict[str, str]) -> bool:
        """Whether any of these streams (position names) lost entries past its position to its
        cap (``deleted_past``; before Redis 7, its oldest entry being past the position, which may
        also be an entry deleted by hand)."""
        pipe = self._client.pipeline(transaction=False)
        for name in positions:
            pipe.xinfo_stream(self._stream(name)[1])
        for position, info in zip(positions.values(), await pipe.execute(), strict=True):
            past = deleted_past(info, position)
            if past is None:
                first = info.get("first-entry")
                past = bool(first) and entry_id(reply_text(first[0])) > entry_id(position)
            if past:
                return True
        return False

    def _stream(self, name: str) -> tuple[str, str]:
        """The group and stream key of a position name (one of ``streams``')."""
        if self._shards.count == 1:
            return name, self._shards.home.events(name)
        group, _, shard = name.rpartition("@")
        return group, self._shards.shard[int(shard)].events(group)

    async def _per_slot(self, parts: list[dict[str, str]], block_ms: int, count: int) -> list[Any]:
        """XREAD of each slot's streams at once, every reply awaited: all that is there now, or
        else what came within ``min(block_ms, CLUSTER_BLOCK_MS)``."""

        async def read(block: int | None) -> list[Any]:
            replies = await asyncio.gather(*(self._blocking.xread(part, block=block, count=count) for part in parts))
            return [stream for reply in replies for stream in reply or []]

        return await read(None) or (await read(min(block_ms, CLUSTER_BLOCK_MS)) if block_ms else [])

    async def close(self) -> None:
        await self._blocking.aclose()
