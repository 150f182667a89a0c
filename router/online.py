"""Agents online per group, where the wait estimates read them (docs/waits.md, issue 18 item 4).

The route script estimates a wait from the group's departures over the last minutes. Those came
from the agents who were online then; when more (or fewer) are online now, the queue moves
faster (or slower). Presence is kept at the home prefix (router/presence.py) and the route script
runs in a shard's slot, where it cannot read it, so this service copies one number per group into
every shard, every ``waits.online_every_s``:

* ``online:{group}``: agents eligible now (status online, a heartbeat within ``assign.grace_s``),
  kept three periods: once every replica has stopped, it lapses and estimates go unscaled again;
* ``online:{group}:{minute}``: the same count for that minute (the last one written), kept as long
  as the departures counts (121 minutes), so the script knows how many served in the window.

Only groups that at least one agent with a presence record belongs to are written: a team that
does not use presence (no console heartbeat, no ``switchboard agent online``) gets the unscaled
estimate, not a "nobody is online". Every replica may run it: they write the same numbers.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from redis.exceptions import RedisError

from router.config import Settings
from router.keys import Shards
from router.leases import Clock, WallClock
from router.lifecycle import Loop, wait_or_stop
from router.presence import Presence

#: How long a minute's count is kept: the departures counts' TTL (lua/common.lua SERVED_TTL_MS).
MINUTE_TTL_MS = 7_260_000


class OnlineCounts:
    """A ``Service`` of ``switchboard run``: the agents-online copy described above."""

    name = "online"

    def __init__(self, rt: Any, settings: Settings, *, clock: Clock | None = None) -> None:
        self._client = rt.client
        self._shards: Shards = rt.shards
        self.clock = clock or WallClock()
        self._presence = Presence(rt.client, rt.keys, settings.assign, self.clock)
        self._every_s = settings.waits.online_every_s
        self._loop = Loop("online counts", (RedisError, OSError))
        self.online: dict[str, int] = {}  # the last counts written, for health

    async def start(self) -> None:
        self._loop.start(self._step)

    async def close(self) -> None:
        await self._loop.close()

    def health(self) -> dict[str, Any]:
        return {
            **self._loop.health(
                ", ".join(f"{g} {n}" for g, n in sorted(self.online.items())) or "no agent with a presence"
            ),
            "online": self.online,
        }

    async def _step(self) -> bool:
        await self.write()
        return await wait_or_stop(self._loop.stopping, self._every_s)

    async def write(self) -> dict[str, int]:
        """Count the agents online per group now and write the counts into every shard."""
        now = self.clock.now_ms()
        agents = await self._presence.all()
        grace = self._presence.grace_ms
        counts: Counter[str] = Counter({g: 0 for a in agents for g in a.groups})
        counts.update(g for a in agents if a.eligible(now, grace) for g in a.groups)
        minute = now // 60_000
        ttl_ms = round(self._every_s * 3000)
        pipe = self._client.pipeline(transaction=False)
        for keys in self._shards.shard:
            for group, n in counts.items():
                pipe.set(keys.online(group), n, px=ttl_ms)
                pipe.set(keys.online(group, minute), n, px=MINUTE_TTL_MS)
        if counts:
            await pipe.execute()
        self.online = dict(counts)
        return self.online
