"""The SLA timer: deadlines and escalation steps kept in Redis, fired exactly once (docs/sla.md).

Each shard has a sorted set ``sla:due`` (router/keys.py): conversation id -> when its SLA clock
must be evaluated next. The route script adds a new conversation under a policy, and wakes one
(``ZADD LT now``) when a message may move its clock; the conversation script wakes it on a reply,
a priority or group change, waiting on the user and closing. The timer, in whichever process holds
the shard's timer lease (``lease:sla`` under the shard's prefix, router/leases.py), reads the due
ids each tick, evaluates each conversation's clock (sla/clock.py, a pure function of the policy
the conversation started under and its history) and hands the result to conv.lua's ``sla`` op,
which, in one atomic call: checks the lease fence (a timer paused past its lease writes nothing),
counts each target's outcome and carries out each due step only if its id is not yet in
``sla:fired:{id}`` (added in the same call), then sets the next wake-up. So a step fires once
whichever timer runs it and across restarts; the worst a crash does is fire it a tick later.

Off the hot path: routing pays one ZADD per new conversation (and per message answering an agent),
and only with a policy published; everything else happens here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

from router.config import SlaSettings
from router.conversations import Conversations, HistoryEntry, parse_history
from router.errors import LeaseLost
from router.keys import Keys
from router.leases import Clock, WallClock
from router.model import OutboxItem, new_id
from router.runtime import Runtime
from router.scripts import run_many
from router.shardrounds import ShardRounds
from sla import ClockError, ClockState, DueStep, Event, EventKind, PolicyError, evaluate

log = logging.getLogger("switchboard.sla")

#: The timer lease's name under each shard's prefix (lease:sla), checked by conv.lua's ``sla`` op.
LEASE = "sla"
#: How long a conversation whose SLA step failed (a script error) waits before the next try.
RETRY_MS = 60_000
#: What the clock needs of the conversation's hash (not its texts).
CONV_FIELDS = ("sla_v", "created_ms", "prio", "group", "tags")


def _instant(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def clock_events(created_ms: int, priority: int, history: Sequence[HistoryEntry]) -> tuple[int, list[Event]]:
    """The start (ms) and the SLA clock's events of a conversation's current life, from its
    history: a reopened conversation is a new one (its clock starts at the reopening).

    inbound -> user_message; outbound by an agent (not an auto-reply, not a notification) ->
    agent_reply; a status change of priority -> priority; waiting_on_user -> waiting_start/end;
    closed -> closed. ``priority`` is the conversation's priority now: the opening's is the
    ``from`` of the first change after the start, if any.
    """
    start, opened = 0, created_ms
    for i, h in enumerate(history):
        if h.type == "status" and h.data.get("reason") == "reopened":
            start, opened = i + 1, h.at_ms
    life = history[start:]
    changes = [h for h in life if h.type == "status" and "prio" in h.data]
    first = int(changes[0].data["from"]) if changes else priority
    events = [Event(_instant(opened), EventKind.OPENED, priority=first)]
    for h in life:
        at, data = _instant(h.at_ms), h.data
        if h.type == "inbound":
            events.append(Event(at, EventKind.USER_MESSAGE))
        elif h.type == "outbound" and not data.get("auto"):
            events.append(Event(at, EventKind.AGENT_REPLY))
        elif h.type == "status" and "prio" in data:
            events.append(Event(at, EventKind.PRIORITY, priority=int(data["prio"])))
        elif h.type == "status" and "waiting_on_user" in data:
            kind = EventKind.WAITING_START if data["waiting_on_user"] else EventKind.WAITING_END
            events.append(Event(at, kind))
        elif h.type == "status" and data.get("status") == "closed":
            events.append(Event(at, EventKind.CLOSED))
            break  # what follows a close belongs to no clock (a reopening starts a new one)
    return opened, events


def _ms(at: datetime | None) -> int | None:
    return None if at is None else round(at.timestamp() * 1000)


class SlaTimer:
    """A ``Service``: every ``tick_s``, for each shard whose timer lease it holds (or takes), fires
    what is due. ``clock`` judges time (the leases' expiry, what is due, what the scripts record):
    wall time in production, a fake one in tests, which call ``tick`` instead of running the loop."""

    name = "sla-timer"

    def __init__(
        self,
        rt: Runtime,
        *,
        owner: str | None = None,
        clock: Clock | None = None,
        settings: SlaSettings | None = None,
    ) -> None:
        self.clock = clock or WallClock()
        self.settings = settings or rt.settings.sla
        self._client = rt.client
        self._shards = rt.shards
        self._policies = rt.sla_policies
        self._scripts = rt.scripts
        self._conversations = Conversations(
            rt.client, rt.settings, rt.scripts, shards=rt.shards, clock=self.clock.now_ms
        )
        self.owner = owner or rt.instance
        self.rounds = ShardRounds(rt, LEASE, self.owner, self.clock)
        self.leases = self.rounds.leases
        self._encoder = msgspec.json.Encoder()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.fired = 0

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        self._stopping.clear()
        self._task = asyncio.create_task(self.run())

    async def run(self) -> None:
        await self.rounds.run(self.tick, self._stopping, self.settings.tick_s)

    async def close(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await self._task
            self._task = None
        await self.rounds.release()

    def health(self) -> dict[str, Any]:
        held = self.held()
        error = self.rounds.last_error
        return {
            "connected": not error,
            "detail": error or f"timer lease of shard(s) {held or 'none'}; {self.fired} step(s) fired",
            "held": held,
            "fired": self.fired,
        }

    def held(self) -> list[int]:
        return self.rounds.held()

    # -- the work --------------------------------------------------------------------------------
    async def tick(self) -> int:
        """One round over the shards: keep or take each timer lease, then fire what is due in the
        shards held. Returns the escalation steps carried out."""
        done = await self.rounds.round(lambda _, keys, fence: self._shard(keys, fence))
        self.fired += done
        return done

    async def _shard(self, keys: Keys, fence: int) -> int:
        """The shard's due conversations: read in one round, evaluated, their steps sent in one."""
        now = self.clock.now_ms()
        due = [
            raw.decode() for raw in await self._client.zrangebyscore(keys.sla_due, "-inf", now, 0, self.settings.batch)
        ]
        if not due:
            return 0
        pipe = self._client.pipeline(transaction=False)
        for cid in due:
            pipe.hmget(keys.conv(cid), CONV_FIELDS)
            pipe.xrange(keys.history(cid))
            pipe.smembers(keys.sla_fired(cid))
        read = await pipe.execute()
        calls: list[tuple[str, list[Any]]] = []
        leave: list[str] = []
        for i, cid in enumerate(due):
            call = await self._evaluate(cid, fence, now, *read[3 * i : 3 * i + 3])
            if call is None:
                leave.append(cid)
            else:
                calls.append((cid, call))
        if leave:
            await self._client.zrem(keys.sla_due, *leave)
        results = await run_many(self._client, self._scripts.conv, [c for _, c in calls], raise_on_error=False)
        done = 0
        for (cid, _), result in zip(calls, results, strict=True):
            if not isinstance(result, Exception):
                done += int(result)
            elif str(result).startswith("FENCED"):
                raise LeaseLost(str(result))
            elif str(result).startswith("NOTFOUND"):
                await self._client.zrem(keys.sla_due, cid)  # deleted (retention) since it was read
            else:
                # Kept (nothing is lost), looked at again in a minute rather than every tick.
                log.error("SLA timer: conversation %s: %s; trying again in %ds", cid, result, RETRY_MS // 1000)
                await self._client.zadd(keys.sla_due, {cid: now + RETRY_MS})
        return done

    async def _evaluate(
        self, cid: str, fence: int, now: int, raw: list[bytes | None], entries: Any, fired_raw: set[bytes]
    ) -> list[Any] | None:
        """The ``sla`` script call for a conversation; None when it has no clock to keep (gone,
        under no policy, or one that cannot be evaluated: said once) and leaves the timer."""
        conv = {k: v.decode() for k, v in zip(CONV_FIELDS, raw, strict=True) if v is not None}
        if not conv.get("sla_v"):
            return None
        history = parse_history(entries)
        try:
            policy = await self._policies.policy(int(conv["sla_v"]))
            opened, events = clock_events(int(conv["created_ms"]), int(conv["prio"]), history)
            tags = msgspec.json.decode(conv.get("tags") or "[]")
            state = evaluate(
                policy,
                conv["group"],
                tags if isinstance(tags, list) else [],
                events,
                _instant(now),
                fired={f.decode().partition("/")[2] for f in fired_raw if f.decode().startswith(f"{opened}/")},
            )
        except (PolicyError, ClockError) as exc:
            log.error("SLA timer: conversation %s cannot be timed: %s", cid, exc)
            return None
        return self._conversations.sla_call(
            cid,
            fence,
            seen=history[-1].id if history else "",
            todo=self._todo(conv, cid, opened, state),
            due=_queue_due(state),
            next=_ms(state.next_wakeup),
        )

    def _todo(self, conv: dict[str, str], cid: str, opened: int, state: ClockState) -> list[dict[str, Any]]:
        """The outcomes (a target met or breached: counted once) and the due steps, in the order
        they happened (an outcome first at the same instant: the breach, then its 100% step)."""
        timed: list[tuple[int, int, dict[str, Any]]] = []
        for m in state.measurements:
            if m.state == "breached" and m.deadline is not None:
                at = _ms(m.deadline)
            elif m.state == "met" and m.stopped is not None:
                at = _ms(m.stopped)
            else:
                continue
            outcome = {
                "id": f"{opened}/o:{m.target}:{m.cycle}",
                "outcome": m.state,
                "target": m.target,
                "cycle": m.cycle,
                "at": at,
            }
            timed.append((at or 0, 0, outcome))
        for step in state.due:
            timed.append((_ms(step.at) or 0, 1, self._step(conv, cid, opened, step)))
        return [entry for _, _, entry in sorted(timed, key=lambda t: (t[0], t[1]))]

    def _step(self, conv: dict[str, str], cid: str, opened: int, step: DueStep) -> dict[str, Any]:
        actions = [[a.kind, a.value] for a in step.actions]
        items: dict[str, dict[str, str]] = {}
        for action in step.actions:
            dest = self.settings.notify.get(str(action.value)) if action.kind == "notify" else None
            if dest is None:
                continue
            text = (
                f"SLA {step.target.replace('_', ' ')} {step.point} on conversation #{cid} "
                f"(group {conv['group']}, P{conv['prio']})"
            )
            item = OutboxItem(
                id=new_id(),
                conversation=cid,
                channel=dest.channel,
                account=dest.account,
                conversation_key=dest.to,
                text=text,
                author="sla",
                auto=True,  # not an agent's reply: it stops no clock
                created_at=self.clock.now_ms() / 1000,
            )
            items[str(action.value)] = {
                "channel": dest.channel,
                "id": item.id,
                "raw": self._encoder.encode(item).decode(),
            }
        return {
            "id": f"{opened}/{step.id}",
            "target": step.target,
            "point": step.point,
            "actions": actions,
            "items": items,
        }


def _queue_due(state: ClockState) -> int | None:
    """The queue's due time under the policy: the nearest running response deadline."""
    deadlines = [
        m.deadline
        for m in state.measurements
        if m.state == "running" and m.deadline is not None and m.target != "resolution"
    ]
    return _ms(min(deadlines)) if deadlines else None
