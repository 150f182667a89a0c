"""The resolution broadcast: an incident's resolution text to every linked conversation, once each,
at the platforms' rates (docs/incidents.md).

Resolving an incident (router/incidents.py) puts it in each shard's ``incidents:resolving``. In
whichever process holds the shard's broadcast lease (``lease:incident``, router/leases.py, like
the SLA timer's), each round takes the shard's linked conversations not yet sent to
(``incident:linked`` minus ``incident:sent``), as many per channel as the channel's rate allows
this round (``[incidents] rates``, divided among the shards), and hands them to lua/incident.lua
``send``, which in one step checks the lease fence, adds each to ``incident:sent`` and, only if it
was not there, queues its resolution text on the conversation's own channel (the outbox, whose
sender retries within the platform's limits) and closes or re-queues it. So a conversation gets
the resolution once whichever broadcaster sends it, across crashes and takeovers; a broadcaster
that dies midway leaves the rest to the next holder of the lease.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from typing import Any

from router.config import IncidentSettings
from router.errors import LeaseLost
from router.incidents import Incident, Incidents, status_item
from router.keys import Keys
from router.leases import Clock, WallClock
from router.runtime import Runtime
from router.scripts import argv
from router.shardrounds import ShardRounds
from rules.locale import localized

log = logging.getLogger("switchboard.incidents")

#: The lease's name under each shard's prefix (lease:incident), checked by lua/incident.lua.
LEASE = "incident"
#: Conversations per script call (one atomic step; a few ms).
BATCH = 100
#: Conversations not yet sent to whose channel a round reads (the oldest first): far more than a
#: round's rates allow, without reading tens of thousands every second.
CANDIDATES = 2000


class Broadcaster:
    """A ``Service``: every ``tick_s``, for each shard whose lease it holds (or takes), sends what
    its rates allow. Tests call ``tick`` with an injected ``clock``."""

    name = "incident-broadcast"

    def __init__(
        self,
        rt: Runtime,
        incidents: Incidents,
        *,
        owner: str | None = None,
        clock: Clock | None = None,
        settings: IncidentSettings | None = None,
    ) -> None:
        self.clock = clock or WallClock()
        self.settings = settings or rt.settings.incidents
        self._rt = rt
        self._client = rt.client
        self._incidents = incidents
        self._sla_ms = {k[1:]: v * 1000 for k, v in rt.settings.conversations.sla_s.items()}
        self.owner = owner or rt.instance
        self.rounds = ShardRounds(rt, LEASE, self.owner, self.clock)
        self.leases = self.rounds.leases
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.sent = 0

    async def start(self) -> None:
        self._stopping.clear()
        self._task = asyncio.create_task(self.rounds.run(self.tick, self._stopping, self.settings.tick_s))

    async def close(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await self._task
            self._task = None
        await self.rounds.release()

    def health(self) -> dict[str, Any]:
        held, error = self.rounds.held(), self.rounds.last_error
        return {
            "connected": not error,
            "detail": error or f"broadcast lease of shard(s) {held or 'none'}; {self.sent} sent",
            "held": held,
            "sent": self.sent,
        }

    async def tick(self) -> int:
        """One round over the shards; returns the resolution texts queued."""
        done = await self.rounds.round(self._shard)
        self.sent += done
        return done

    async def _shard(self, shard: int, keys: Keys, fence: int) -> int:
        ids = sorted(m.decode() for m in await self._client.smembers(keys.incidents_resolving))
        # Each channel's share of this round, over every incident the shard resolves.
        budget: dict[str, int] = {}
        sent = 0
        for incident_id in ids:
            inc = await self._incidents.get(incident_id)
            unsent = await self._client.sdiff(keys.incident_linked(inc.id), keys.incident_sent(inc.id))
            left = sorted((m.decode() for m in unsent), key=int)[:CANDIDATES]
            if not left:
                if await self._call(keys, "finish", {"incident": inc.id, "fence": fence}) == 1:
                    log.info("incident %s: the resolution broadcast of shard %d is done", inc.id, shard)
                    await self._incidents.shard_done(inc.id, shard)
                continue
            sent += await self._send(keys, inc, left, fence, budget)
        return sent

    async def _send(self, keys: Keys, inc: Incident, left: list[str], fence: int, budget: dict[str, int]) -> int:
        pipe = self._client.pipeline(transaction=False)
        for cid in left:
            pipe.hmget(keys.conv(cid), ["channel", "language"])
        fields = await pipe.execute()
        now = self.clock.now_ms()
        items: dict[str, dict[str, Any]] = {}
        for cid, (channel_raw, lang_raw) in zip(left, fields, strict=True):
            channel = channel_raw.decode() if channel_raw else ""
            if channel not in budget:
                share = self.settings.rate(channel) * self.settings.tick_s / self._rt.shards.count
                budget[channel] = max(1, math.floor(share))
            if budget[channel] <= 0:
                continue
            budget[channel] -= 1
            lang = lang_raw.decode() if lang_raw else None
            items[cid] = status_item(localized(inc.resolution, lang), now / 1000)
        sent = 0
        batch = list(items.items())
        for start in range(0, len(batch), BATCH):
            part = dict(batch[start : start + BATCH])
            args = {"incident": inc.id, "mode": inc.mode, "sla_ms": self._sla_ms, "items": part, "fence": fence}
            result = await self._call(keys, "send", args)
            sent += int(result[0])
        return sent

    async def _call(self, keys: Keys, op: str, args: dict[str, Any]) -> Any:
        try:
            return await self._rt.scripts.incident(
                args=argv(keys.prefix, op, json.dumps(args, ensure_ascii=False), at=self.clock.now_ms())
            )
        except Exception as exc:
            if str(exc).startswith("FENCED"):
                raise LeaseLost(str(exc)) from None
            raise
