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
``incident`` field). Every ``switchboard run`` starts one, and one replica at a time runs it, the
holder of the deployment's lease ``incident-linker`` (router/leases.py): the others stand by and
take over, from the stored position, when it stops or dies.

The event streams keep their newest ~10,000 entries (lua/common.lua ``event``). A linker that fell
further behind (a surge: the drill linked 13% before this) finds the streams trimmed past its
position (XINFO's ``max-deleted-entry-id``, as the exporter checks): it then jumps to the streams'
ends and **sweeps** the groups' queues instead, matching every waiting conversation that is not
linked and collapsing again the linked ones a follow-up put back. The sweep reads each waiting
conversation once, where the events would have been several per conversation. A sweep also runs
when this linker first sees an incident: conversations already waiting when it was opened are
linked too.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from redis.exceptions import RedisError

from router.conversations import Conversation, first_inbound, parse_history
from router.events import GroupEvent, GroupEvents
from router.incidents import Incident, Incidents, status_item
from router.lifecycle import Loop
from router.runtime import Runtime
from router.scripts import argv, run_per_prefix
from rules import MessageIn
from rules.locale import localized
from rules.matcher import Matcher
from rules.placeholders import PLACEHOLDERS, has_placeholders, without_estimate

log = logging.getLogger("switchboard.incidents")

#: How often the collapsed sets are cleared of conversations taken out of them by other scripts.
PRUNE_EVERY_S = 30.0
#: Events read per stream per step (router/events.py); a stream that gave this many is lagging,
#: and only then is it checked for a gap.
READ_COUNT = 100
#: Waiting conversations read per round of a sweep.
SWEEP_BATCH = 500


class Linker:
    """A ``Service``: ``switchboard run`` starts one in every replica, and the one that holds the
    deployment's lease ``incident-linker`` runs it (they share the cursor); the others stand by.
    ``clock``: ms, for the scripts and the replies; ``instance``: the lease owner (tests)."""

    name = "incident-linker"

    def __init__(
        self,
        rt: Runtime,
        incidents: Incidents,
        *,
        clock: Callable[[], int] | None = None,
        block_ms: int = 1000,
        instance: str | None = None,
    ) -> None:
        self._rt = rt
        self._instance = instance
        self._incidents = incidents
        self._clock = clock or incidents.clock
        self._block_ms = block_ms
        self._events = GroupEvents(rt.client, rt.client, rt.shards)
        self._cursor = rt.keys.incident_cursor
        self._positions: dict[str, str] = {}
        self._matchers: dict[tuple[str, int], Matcher] = {}
        self._open: list[Incident] = []
        self._next_prune = 0.0
        self._loop = Loop("incident linker", (RedisError, OSError))
        self.counts = {
            "linked": 0,
            "collapsed": 0,
            "recollapsed": 0,
            "unmatched": 0,
            "pruned": 0,
            "gaps": 0,
            "swept": 0,
        }
        self._swept_for: set[str] = set()  # the incidents a sweep has run for since they were seen

    async def start(self) -> None:
        # Where the cursor is now (a first start: the streams' ends), then again each time this
        # replica takes the lease over: the holder in between moved the cursor on.
        await self.resume()
        exclusive = self._rt.exclusive(self.name, self._instance)
        self._loop.start(exclusive.resuming(self.resume, self.step), under=exclusive)

    async def close(self) -> None:
        await self._loop.close()

    def health(self) -> dict[str, Any]:
        return {
            **self._loop.health(", ".join(f"{k} {v}" for k, v in self.counts.items())),
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
        before = dict(self._positions)
        events = await self._events.after(self._positions, self._block_ms, READ_COUNT)
        read: dict[str, int] = {}
        for event in events:
            read[event.stream] = read.get(event.stream, 0) + 1
        lagging = {name: before[name] for name, n in read.items() if n >= READ_COUNT}
        if self._open and lagging and await self._events.trimmed(lagging):
            # Events were lost to the streams' cap: what they said is read from the queues.
            self.counts["gaps"] += 1
            log.warning("incident linker: the event streams were trimmed past its position; sweeping the queues")
            self._positions = await self._events.ends(sorted((await self._rt.engine()).groups))
            await self._rt.client.hset(self._cursor, mapping=self._positions)
            await self.sweep()
            return
        await self.handle(events)
        for event in events:
            self._positions[event.stream] = event.entry
        if events:
            await self._rt.client.hset(self._cursor, mapping=self._positions)
        if unseen := {i.id for i in self._open} - self._swept_for:
            self._swept_for |= unseen
            await self.sweep()

    async def refresh(self) -> None:
        """The open incidents, oldest first, each matcher compiled once per change."""
        self._open = sorted(await self._incidents.recent("open"), key=lambda i: int(i.id))
        live = {(i.id, i.updated_ms) for i in self._open}
        self._matchers = {k: m for k, m in self._matchers.items() if k in live}
        for inc in self._open:
            if (inc.id, inc.updated_ms) not in self._matchers:
                self._matchers[(inc.id, inc.updated_ms)] = Matcher(inc.when)

    async def handle(self, events: list[GroupEvent]) -> list[str]:
        """A batch of events: what they need read in one pipelined round, the link scripts run in
        one round per shard. Returns each call's result (for logs and tests)."""
        # Only the router's creations ('created' with 'from' is a transfer), and follow-ups.
        created = [e.conv for e in events if e.type == "created" and "from" not in e.data]
        follow_ups = [e.conv for e in events if e.type == "message"] if self._open else []
        return await self._examine(created, follow_ups, sweep=False)

    async def sweep(self) -> int:
        """Every group queue's waiting conversations, as if just created (not counted again for the
        surge detector): the unlinked ones matched, the linked ones collapsed again. Returns how
        many were read."""
        groups = sorted((await self._rt.engine()).groups)
        n = 0
        for keys in self._rt.shards.shard:
            for group in groups:
                waiting = [c.decode() for c in await self._rt.client.zrange(keys.queue(group), 0, -1)]
                for i in range(0, len(waiting), SWEEP_BATCH):
                    await self._examine(waiting[i : i + SWEEP_BATCH], [], sweep=True)
                n += len(waiting)
        self.counts["swept"] += n
        return n

    async def _examine(self, created: list[str], follow_ups: list[str], *, sweep: bool) -> list[str]:
        """Link ``created`` conversations that match an open incident (and count them for the
        surge detector, unless in a ``sweep``); collapse again ``follow_ups`` linked to an open
        incident. In a sweep, a "created" one already linked is a follow-up: a sweep finds both
        in the queues."""
        shards = self._rt.shards
        pipe = self._rt.client.pipeline(transaction=False)
        for cid in created:
            keys = shards.conv_keys(cid)
            pipe.hgetall(keys.conv(cid))
            pipe.xrange(keys.history(cid), count=5)
        for cid in follow_ups:
            pipe.hget(shards.conv_keys(cid).conv(cid), "incident")
        read = await pipe.execute()
        now = self._clock()
        calls: list[tuple[str, dict[str, Any]]] = []
        counts: list[tuple[str, dict[str, Any]]] = []
        linked_before: list[tuple[str, bytes | None]] = list(zip(follow_ups, read[2 * len(created) :], strict=True))
        for i, cid in enumerate(created):
            raw, history = read[2 * i], read[2 * i + 1]
            message = first_inbound(parse_history(history)) if raw else None
            if message is None:
                continue  # gone (retention) or without a message
            if sweep and raw.get(b"incident"):
                linked_before.append((cid, raw[b"incident"]))
                continue
            conv = Conversation.from_hash(raw)
            if not sweep:
                # The surge detector's counts (router/surge.py), language tags aside.
                counts.append((cid, {"conv": cid, "tags": [t for t in conv.tags if not t.startswith("lang:")]}))
            args = self._link(cid, conv, message, now) if self._open else None
            if args is None:
                self.counts["unmatched"] += bool(self._open)
            else:
                calls.append((cid, args))
        if counts:
            await self._run("count", counts, now)
        open_ids = {i.id for i in self._open}
        for cid, linked in linked_before:
            if linked and linked.decode() in open_ids:
                calls.append((cid, {"conv": cid, "incident": linked.decode(), "recollapse": True}))
        if not calls:
            return []
        out = [r.decode() if isinstance(r, bytes) else str(r) for r in await self._run("link", calls, now)]
        for result in out:
            if result in ("linked", "collapsed", "recollapsed"):
                self.counts["linked" if result != "recollapsed" else "recollapsed"] += 1
                self.counts["collapsed"] += result == "collapsed"
        return out

    async def _run(self, op: str, calls: list[tuple[str, dict[str, Any]]], now: int) -> list[Any]:
        """lua/incident.lua ``op`` once per (conversation, arguments), one round per shard."""
        shards = self._rt.shards
        return await run_per_prefix(
            self._rt.client,
            self._rt.scripts.incident,
            [argv(shards.conv_keys(c).prefix, op, json.dumps(a, ensure_ascii=False), at=now) for c, a in calls],
        )

    def _link(self, cid: str, conv: Conversation, message: dict[str, Any], now: int) -> dict[str, Any] | None:
        """The link script's arguments for the first open incident whose matcher takes the
        conversation's first message; None when none does."""
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
            if self._matchers[(inc.id, inc.updated_ms)].matches(msg):
                lang = conv.language or msg.language
                text = localized(inc.texts, lang)
                link = {"conv": cid, "incident": inc.id, "title": inc.title, "item": status_item(text, now / 1000)}
                if has_placeholders(text):
                    # The script fills them (docs/waits.md); these are its texts without an estimate.
                    waits = self._rt.settings.waits
                    phrase = waits.phrase(lang or "")
                    link["wait"] = {
                        "fallback": without_estimate(text, phrase),
                        "unqueued": without_estimate(text, phrase, PLACEHOLDERS),
                        "w": waits.window_min,
                        "b": waits.band,
                        "shards": self._rt.shards.count,
                    }
                return link
        return None

    async def prune(self) -> int:
        groups = sorted((await self._rt.engine()).groups)
        n = 0
        for inc in self._open:
            args = json.dumps({"incident": inc.id, "groups": groups})
            for keys in self._rt.shards.shard:
                n += int(await self._rt.scripts.incident(args=argv(keys.prefix, "prune", args, at=self._clock())))
        self.counts["pruned"] += n
        return n
