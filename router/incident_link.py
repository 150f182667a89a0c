"""The incident linker: new conversations that match an open incident are linked to it, off the
hot path (docs/incidents.md).

Workers route as before. This service reads the group event streams (``events:{group}`` of every
shard, router/events.py) from a position kept in Redis (``incident:cursor``), like the reviewer:

* ``created`` (by the router, not a transfer): the conversation's first message is matched against
  each open incident's matcher (rules/matcher.py), oldest incident first; the first that matches
  gets it: lua/incident.lua ``link`` records the link, queues the status text in the user's
  language on the conversation's own channel (the outbox) and collapses it out of its queue (not
  a P1, not one an agent has), all in one step.
* ``message`` on a linked conversation: a follow-up put it back in its queue (route.lua); while
  the incident is open it is collapsed again (``recollapse``: no second status text).

A crash loses nothing and doubles nothing: the position is stored after the events were handled
(so some are read again), and the script does nothing the second time (the conversation's
``incident`` field). Every process may run one; they do the same idempotent work.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from redis.exceptions import RedisError

from router.conversations import first_inbound
from router.errors import NotFound
from router.events import GroupEvent, GroupEvents
from router.incidents import Incident, Incidents, status_item, text_for
from router.lifecycle import keep_running
from router.runtime import Runtime
from router.scripts import argv
from rules import MessageIn
from rules.matcher import Matcher

log = logging.getLogger("switchboard.incidents")

#: How often the collapsed sets are cleared of conversations taken out of them by other scripts.
PRUNE_EVERY_S = 30.0


class Linker:
    """A ``Service`` (``switchboard run``). ``clock``: ms, for the scripts and the replies."""

    name = "incident-linker"

    def __init__(
        self,
        rt: Runtime,
        incidents: Incidents,
        *,
        clock: Callable[[], int] | None = None,
        block_ms: int = 1000,
    ) -> None:
        self._rt = rt
        self._incidents = incidents
        self._clock = clock or incidents.clock
        self._block_ms = block_ms
        self._events = GroupEvents(rt.client, rt.client, rt.shards)
        self._cursor = rt.keys.incident_cursor
        self._positions: dict[str, str] = {}
        self._matchers: dict[tuple[str, int], Matcher] = {}
        self._open: list[Incident] = []
        self._next_prune = 0.0
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.counts = {"linked": 0, "collapsed": 0, "recollapsed": 0, "unmatched": 0, "pruned": 0}

    async def start(self) -> None:
        await self.resume()
        self._task = asyncio.create_task(
            keep_running(self.step, self._stopping, what="incident linker", retry_on=(RedisError, OSError))
        )

    async def close(self) -> None:
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def health(self) -> dict[str, Any]:
        return {
            "connected": self._task is not None and not self._task.done(),
            "detail": ", ".join(f"{k} {v}" for k, v in self.counts.items()),
            **self.counts,
        }

    async def resume(self) -> None:
        """Each group stream from the stored position; a stream without one from its end (a first
        start links conversations created from now on)."""
        self._positions = await self._events.resume(self._cursor, sorted((await self._rt.engine()).groups))

    async def follow_groups(self) -> None:
        """A group published since the start is read from its stream's start."""
        await self._events.follow(self._cursor, self._positions, sorted((await self._rt.engine()).groups))

    async def step(self) -> None:
        await self.follow_groups()
        await self.refresh()
        if self._open and time.monotonic() >= self._next_prune:
            self._next_prune = time.monotonic() + PRUNE_EVERY_S
            await self.prune()
        events = await self._events.after(self._positions, self._block_ms)
        for event in events:
            await self.handle(event)
            self._positions[event.stream] = event.entry
        if events:
            await self._rt.client.hset(self._cursor, mapping=self._positions)

    async def refresh(self) -> None:
        """The open incidents, oldest first, each matcher compiled once per change."""
        self._open = sorted(await self._incidents.recent("open"), key=lambda i: int(i.id))
        live = {(i.id, i.updated_ms) for i in self._open}
        self._matchers = {k: m for k, m in self._matchers.items() if k in live}
        for inc in self._open:
            if (inc.id, inc.updated_ms) not in self._matchers:
                self._matchers[(inc.id, inc.updated_ms)] = Matcher(inc.when)

    async def handle(self, event: GroupEvent) -> str:
        """What the linker did with one event (for logs and tests)."""
        if not self._open:
            return "none open"
        if event.type == "message":
            return await self._recollapse(event.conv)
        if event.type != "created" or "from" in event.data:
            return "ignored"
        convs = self._rt.conversations
        try:
            conv = await convs.get(event.conv)
        except NotFound:
            return "gone"
        message = first_inbound(await convs.history(event.conv, count=5))
        if message is None:
            return "no message"
        sender = message.get("sender") or {}
        decision = message.get("decision") or {}
        received = message.get("received_at")
        msg = MessageIn(
            channel=conv.channel,
            text=str(message.get("text") or ""),
            subject=message.get("subject"),
            account=conv.account,
            sender={str(k): str(v) for k, v in (sender.get("attributes") or {}).items()},
            language=decision.get("language") or sender.get("language"),
            new_conversation=True,
            received_at=datetime.fromtimestamp(float(received), UTC) if received else None,
        )
        for inc in self._open:
            if not self._matchers[(inc.id, inc.updated_ms)].matches(msg):
                continue
            now = self._clock()
            item = status_item(text_for(inc.texts, conv.language or msg.language), now / 1000)
            args = {"conv": event.conv, "incident": inc.id, "title": inc.title, "item": item}
            result = await self._op(event.conv, args, now)
            if result in ("linked", "collapsed"):
                self.counts["linked"] += 1
                self.counts["collapsed"] += result == "collapsed"
            return result
        self.counts["unmatched"] += 1
        return "unmatched"

    async def _recollapse(self, conv_id: str) -> str:
        keys = self._rt.shards.conv_keys(conv_id)
        linked = await self._rt.client.hget(keys.conv(conv_id), "incident")
        if not linked or linked.decode() not in {i.id for i in self._open}:
            return "ignored"
        args = {"conv": conv_id, "incident": linked.decode(), "recollapse": True}
        result = await self._op(conv_id, args, self._clock())
        self.counts["recollapsed"] += result == "recollapsed"
        return result

    async def _op(self, conv_id: str, args: dict[str, Any], now: int) -> str:
        keys = self._rt.shards.conv_keys(conv_id)
        raw = await self._rt.scripts.incident(
            args=argv(keys.prefix, "link", json.dumps(args, ensure_ascii=False), at=now)
        )
        return str(raw.decode() if isinstance(raw, bytes) else raw)

    async def prune(self) -> int:
        groups = sorted((await self._rt.engine()).groups)
        n = 0
        for inc in self._open:
            args = json.dumps({"incident": inc.id, "groups": groups})
            for keys in self._rt.shards.shard:
                n += int(await self._rt.scripts.incident(args=argv(keys.prefix, "prune", args, at=self._clock())))
        self.counts["pruned"] += n
        return n
