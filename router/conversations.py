"""Conversations: reading state and history, and the agents' operations on them.

Every change runs in router/lua/conv.lua, atomically with its history entry and group event.
Each write takes an optional ``request_id`` (one is made when absent): the write is safe to send
twice, and a reply lost with its connection is recovered by sending it once more with the same id
(router/requests.py).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from router.config import Settings
from router.errors import BadRequest, NotFound
from router.keys import Keys, Shards
from router.model import Button, new_id, now
from router.requests import REQUEST_TTL_MS, retry_once
from router.scripts import Scripts, argv, map_error

log = logging.getLogger("switchboard.conversations")


def priority_label(prio: int) -> str:
    return f"P{prio}"


#: Why an agent closed a conversation. Each close is a label on the message the rules routed
#: (issue 15): the group and priority it was closed in held, except for spam, which says nothing
#: about where support messages belong (``router/labels.py`` leaves it out of the training export).
CLOSE_REASONS = ("resolved", "duplicate", "no_reply", "spam")
#: The assigner's counters a release or transfer may add to (lua/conv.lua; router/stats.py reads them).
AssignCounter = Literal["assign:overflowed", "assign:requeued_offline"]


def parse_close_reason(value: str) -> str:
    reason = value.strip().lower().replace(" ", "_") or CLOSE_REASONS[0]
    if reason not in CLOSE_REASONS:
        raise BadRequest(f"close reason must be one of {', '.join(CLOSE_REASONS)}, not {value!r}")
    return reason


def parse_priority(value: str | int) -> int:
    text = str(value).upper().removeprefix("P")
    if text not in {"1", "2", "3", "4"}:
        raise BadRequest(f"priority must be P1..P4, not {value!r}")
    return int(text)


@dataclass(frozen=True, slots=True)
class Conversation:
    id: str
    channel: str
    account: str
    key: str
    group: str
    priority: int
    status: str
    agent: str
    sender_id: str
    sender_name: str
    subject: str
    language: str
    tags: tuple[str, ...]
    last_text: str
    created_ms: int
    updated_ms: int
    waiting_ms: int
    due_ms: int
    messages: int
    routed_by: str
    rules_version: str
    sla_policy: int | None = None  # the SLA policy number it started under (router/slastore.py)
    held: str = ""  # status "held": why (banned, muted, spam; router/admission.py)
    throttled: int = 0  # its messages over the sender's admission limit (in its history, marked)

    @classmethod
    def from_hash(cls, data: dict[bytes, bytes]) -> Conversation:
        d = {k.decode(): v.decode() for k, v in data.items()}
        tags = json.loads(d.get("tags") or "[]")
        return cls(
            id=d["id"],
            channel=d.get("channel", ""),
            account=d.get("account", ""),
            key=d.get("ckey", ""),
            group=d["group"],
            priority=int(d["prio"]),
            status=d["status"],
            agent=d.get("agent", ""),
            sender_id=d.get("sender_id", ""),
            sender_name=d.get("sender_name", ""),
            subject=d.get("subject", ""),
            language=d.get("language", ""),
            # Lua's cjson writes an empty list as {}.
            tags=tuple(tags) if isinstance(tags, list) else (),
            last_text=d.get("last_text", ""),
            created_ms=int(d.get("created_ms", 0)),
            updated_ms=int(d.get("updated_ms", 0)),
            waiting_ms=int(d.get("waiting_ms", 0)),
            due_ms=int(d.get("due_ms", 0)),
            messages=int(d.get("messages", 0)),
            routed_by=d.get("routed_by", ""),
            rules_version=d.get("rules_version", ""),
            sla_policy=int(d["sla_v"]) if d.get("sla_v") else None,
            held=d.get("held", ""),
            throttled=int(d.get("throttled", 0)),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "channel": self.channel,
            "account": self.account,
            "key": self.key,
            "group": self.group,
            "priority": priority_label(self.priority),
            "status": self.status,
            "agent": self.agent,
            "sender": {"id": self.sender_id, "name": self.sender_name},
            "subject": self.subject,
            "language": self.language,
            "tags": list(self.tags),
            "last_text": self.last_text,
            "created_ms": self.created_ms,
            "updated_ms": self.updated_ms,
            "waiting_ms": self.waiting_ms,
            "due_ms": self.due_ms,
            "messages": self.messages,
            "routed_by": self.routed_by,
            "rules_version": self.rules_version,
            "sla_policy": self.sla_policy,
            "held": self.held,
            "throttled": self.throttled,
        }


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    id: str
    type: str  # inbound, outbound, status, delivery, edit, delete, note
    at_ms: int
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, "at_ms": self.at_ms, "data": self.data}


def parse_history(entries: list[tuple[bytes, dict[bytes, bytes]]]) -> list[HistoryEntry]:
    """A history stream's entries (XRANGE), in write order."""
    out = []
    for eid, fields in entries:
        f = {k.decode(): v.decode() for k, v in fields.items()}
        out.append(HistoryEntry(eid.decode(), f["type"], int(f["at"]), json.loads(f.get("data") or "{}")))
    return out


def _arrival(entry: HistoryEntry) -> tuple[int, int] | None:
    """The inbox entry id of a message's record (inbound, edit, delete) as a sortable pair."""
    raw = entry.data.get("entry") if entry.type in {"inbound", "edit", "delete"} else None
    if not isinstance(raw, str):
        return None  # not a message, or written before records carried their entry id
    ms, _, seq = raw.partition("-")
    return int(ms), int(seq or 0)


def arrival_order(history: list[HistoryEntry]) -> list[HistoryEntry]:
    """``history`` (in write order) with each message routed after a message of the conversation
    that arrived later — its worker died holding it, another routed the later one, then took it
    over — moved to just before the first such message. Everything else keeps its place."""
    out: list[HistoryEntry] = []
    arrivals: list[tuple[int, int] | None] = []
    latest: tuple[int, int] | None = None
    for entry in history:
        arrival = _arrival(entry)
        place = len(out)
        if arrival is not None and latest is not None and arrival < latest:
            place = next(i for i, a in enumerate(arrivals) if a is not None and a > arrival)
        out.insert(place, entry)
        arrivals.insert(place, arrival)
        if arrival is not None and (latest is None or arrival > latest):
            latest = arrival
    return out


def first_inbound(history: list[HistoryEntry]) -> dict[str, Any] | None:
    """The conversation's first inbound message, as its history stores it (secrets masked, with
    the routing decision): the one the router routed the conversation by."""
    return next((e.data for e in history if e.type == "inbound"), None)


class Conversations:
    """Conversations over the deployment's shards: a conversation's keys are in the shard its id
    tells (router/keys.py Shards); a group's queue is a partition per shard, merged on read."""

    def __init__(
        self,
        client: aioredis.Redis,
        settings: Settings,
        scripts: Scripts | None = None,
        *,
        shards: Shards | None = None,
        clock: Callable[[], int] | None = None,
    ) -> None:
        """``clock``: the time (ms) the writes record; tests of SLA clocks inject one (default:
        wall time)."""
        self.client = client
        self._clock = clock
        self.shards = shards or Shards(settings.prefix, settings.redis.shards)
        self.scripts = scripts or Scripts.register(client)
        # By priority number: the script picks the SLA of the priority the conversation has then.
        self._sla_ms = {k[1:]: v * 1000 for k, v in settings.conversations.sla_s.items()}
        self._csat = settings.csat

    def keys(self, conv_id: str) -> Keys:
        """The keys of the shard holding ``conv_id`` (``NotFound`` for what is no conversation id)."""
        try:
            return self.shards.conv_keys(conv_id)
        except ValueError:
            raise NotFound(f"conversation {conv_id}") from None

    async def _op(self, op: str, conv_id: str, request_id: str, *, keys: Keys | None = None, **args: Any) -> str:
        """``op`` in the shard of ``conv_id`` (of ``keys`` for claim-next, whose id is '')."""
        try:
            result = await self.scripts.conv(
                args=argv(
                    (keys or self.keys(conv_id)).prefix,
                    op,
                    conv_id,
                    json.dumps(args, ensure_ascii=False),
                    request_id,
                    REQUEST_TTL_MS,
                    at=self._clock() if self._clock else None,
                )
            )
        except ResponseError as exc:
            raise map_error(exc) from None
        return result.decode() if isinstance(result, bytes) else str(result)

    async def _write(
        self, op: str, conv_id: str, request_id: str | None, *, keys: Keys | None = None, **args: Any
    ) -> str:
        """``op`` keyed by ``request_id`` (made when None), sent once more on a lost connection."""
        rid = request_id or new_id()
        return await retry_once(lambda: self._op(op, conv_id, rid, keys=keys, **args), rid)

    async def get(self, conv_id: str) -> Conversation:
        data = await self.client.hgetall(self.keys(conv_id).conv(conv_id))
        if not data:
            raise NotFound(f"conversation {conv_id}")
        return Conversation.from_hash(data)

    async def exists(self, conv_id: str) -> bool:
        return bool(await self.client.exists(self.keys(conv_id).conv(conv_id)))

    async def get_many(self, ids: list[str]) -> list[Conversation]:
        pipe = self.client.pipeline(transaction=False)
        for cid in ids:
            pipe.hgetall(self.keys(cid).conv(cid))
        return [Conversation.from_hash(d) for d in await pipe.execute() if d]

    async def history(self, conv_id: str, count: int | None = None) -> list[HistoryEntry]:
        """The conversation's history, inbound messages in arrival order (``arrival_order``)."""
        entries = await self.client.xrange(self.keys(conv_id).history(conv_id), count=count)
        return arrival_order(parse_history(entries))

    async def histories(self, ids: Sequence[str]) -> list[list[HistoryEntry]]:
        """Several conversations' histories in one round trip, as ``history`` gives each."""
        pipe = self.client.pipeline(transaction=False)
        for cid in ids:
            pipe.xrange(self.keys(cid).history(cid))
        return [arrival_order(parse_history(entries)) for entries in await pipe.execute()]

    async def deliveries(self, conv_id: str) -> dict[str, str]:
        data = await self.client.hgetall(self.keys(conv_id).delivery(conv_id))
        return {k.decode(): v.decode() for k, v in data.items()}

    async def of_agent(self, agent: str) -> list[Conversation]:
        """The agent's conversations: the union of its set in every shard."""
        pipe = self.client.pipeline(transaction=False)
        for keys in self.shards.shard:
            pipe.smembers(keys.agent(agent))
        ids = sorted((m.decode() for members in await pipe.execute() for m in members), key=int)
        return await self.get_many(ids)

    async def claim(self, group: str, agent: str, conv_id: str = "", request_id: str | None = None) -> str | None:
        """Claim the head of ``group``'s queue (or one conversation in it); None when there is none.

        Atomic: concurrent claims never hand one conversation to two agents; a claim sent again
        with its request id returns the conversation it claimed the first time.
        """
        if conv_id or self.shards.count == 1:
            one = None if conv_id else self.shards.shard[0]
            result = await self._write("claim", conv_id, request_id, keys=one, group=group, by=agent)
            return result or None
        rid = request_id or new_id()
        # A request id of the caller's may have claimed before; one made here, only if sent again.
        sent = request_id is not None

        async def once() -> str | None:
            nonlocal sent
            repeat, sent = sent, True
            return await self._claim_next(group, agent, rid, repeat=repeat)

        return await retry_once(once, rid)

    async def _claim_next(self, group: str, agent: str, rid: str, *, repeat: bool) -> str | None:
        """Claim-next over the queue's partitions: read every shard's head (one pipelined round),
        then pop the head of the shard whose head is the most urgent, with that shard's atomic
        claim-next. Another agent may have popped it meanwhile: then this one gets the shard's
        next, never nothing (a claim of the read id would lose the race, and 60 agents on 40
        conversations got 9). Only a partition emptied meanwhile sends it back to read the heads,
        up to shards + 2 times. Try ``n`` records its result under request id ``{rid}.{n}``
        in its shard; a ``repeat`` of the request first looks for a try that claimed."""
        shards = self.shards.shard
        tries = self.shards.count + 2
        if repeat:
            pipe = self.client.pipeline(transaction=False)
            for keys in shards:
                for n in range(tries):
                    pipe.get(keys.request(f"{rid}.{n}"))
            claimed = [str(done.decode()) for done in await pipe.execute() if done]
            if claimed:
                return claimed[0]
        for n in range(tries):
            pipe = self.client.pipeline(transaction=False)
            for keys in shards:
                pipe.zrange(keys.queue(group), 0, 0, withscores=True)
            heads = [(head[0][1], i) for i, head in enumerate(await pipe.execute()) if head]
            if not heads:
                return None
            _, shard = min(heads)  # the lowest score: priority, then due time
            result = await self._op("claim", "", f"{rid}.{n}", keys=shards[shard], group=group, by=agent)
            if result:
                return result
        log.info("claim-next of %s for %s: %d partitions emptied under it; none claimed", group, agent, tries)
        return None

    async def release(
        self,
        conv_id: str,
        by: str,
        request_id: str | None = None,
        *,
        reason: str = "released",
        count: AssignCounter | None = None,
    ) -> None:
        """Back to the queue; ``count``: the assigner's counter this adds one to (per group)."""
        extra: dict[str, Any] = {"count": count} if count else {}
        await self._write("release", conv_id, request_id, by=by, reason=reason, sla_ms=self._sla_ms, **extra)

    async def assign(
        self,
        conv_id: str,
        group: str,
        agent: str,
        token: str,
        until_ms: int,
        *,
        policy: str,
        reason: str,
        reoffer_at_ms: int,
    ) -> bool:
        """Step 2 of an automatic assignment (router/assignment.py): ``conv_id`` to ``agent`` only
        while it waits in ``group``'s queue and before ``until_ms`` (its reservation's expiry);
        the reservation's ``token`` is the request id, so a lost reply is recovered once;
        ``reoffer_at_ms``: when the sweep re-offers it without a first reply (0: never)."""
        result = await self._write(
            "assign",
            conv_id,
            token,
            group=group,
            agent=agent,
            token=token,
            until=until_ms,
            policy=policy,
            reason=reason,
            reoffer_at=reoffer_at_ms,
        )
        return result == conv_id

    async def reoffer(self, conv_id: str, token: str, max_hops: int) -> bool:
        """Back to the queue for another agent: only the assignment ``token`` made, still not
        answered, re-offered fewer than ``max_hops`` times before; False when not."""
        result = await self._write("reoffer", conv_id, None, token=token, max_hops=max_hops, sla_ms=self._sla_ms)
        return result == "ok"

    async def transfer(
        self,
        conv_id: str,
        group: str,
        by: str,
        reason: str = "",
        request_id: str | None = None,
        *,
        review: str | None = None,
        count: AssignCounter | None = None,
    ) -> bool:
        """Move the conversation to ``group`` (a label, unless ``review``). ``review``: the group
        the reviewer (router/review.py) read it in; then it moves only if still unclaimed there,
        and returns False where it did not. ``count``: as for ``release``, per group moved from."""
        extra: dict[str, Any] = {"review": review} if review else {}
        if count:
            extra["count"] = count
        result = await self._write(
            "transfer", conv_id, request_id, group=group, by=by, reason=reason, sla_ms=self._sla_ms, **extra
        )
        return result != "stale"

    async def set_priority(
        self, conv_id: str, priority: int, by: str, request_id: str | None = None, *, review: str | None = None
    ) -> bool:
        """Set the priority (a label, unless ``review``: as for ``transfer``)."""
        extra: dict[str, Any] = {"review": review} if review else {}
        return await self._write("priority", conv_id, request_id, prio=priority, by=by, **extra) != "stale"

    async def wait_on_user(self, conv_id: str, on: bool, by: str, request_id: str | None = None) -> None:
        """Mark the conversation waiting on the user (``on``) or not: its next-response and
        resolution clocks pause until the user's next message or ``on=False`` (docs/sla.md);
        ``Conflict`` while it waits in the queue."""
        await self._write("on_user", conv_id, request_id, on=on, by=by)

    def sla_call(self, conv_id: str, fence: int, **args: Any) -> list[Any]:
        """The arguments of the SLA timer's step (router/slatimer.py; conv.lua op ``sla``), for
        ``scripts.run_many``: outcomes counted and escalation steps carried out once each, the
        next wake-up set; refused (``FENCED``) unless the shard's timer lease is held under
        ``fence``. The call returns the steps carried out."""
        payload = json.dumps({"fence": fence, "sla_ms": self._sla_ms, **args}, ensure_ascii=False)
        at = self._clock() if self._clock else None
        return argv(self.keys(conv_id).prefix, "sla", conv_id, payload, "", REQUEST_TTL_MS, at=at)

    async def close(self, conv_id: str, by: str, reason: str = "", request_id: str | None = None) -> None:
        """Close the conversation; ``reason``: one of ``CLOSE_REASONS`` (default ``resolved``). With
        ``[csat]`` on, schedules its satisfaction survey (router/csat.py) unless the reason or the
        group skips it."""
        reason = parse_close_reason(reason)
        args: dict[str, Any] = {"by": by, "reason": reason}
        if self._csat.enabled and reason not in self._csat.skip_reasons:
            # The survey's delay by group (conv.lua knows the group): -1 for a group that skips.
            groups = {g: self._csat.delay_ms(g) for g in self._csat.group_delay_s} | dict.fromkeys(
                self._csat.skip_groups, -1
            )
            args["csat"] = {"delay": self._csat.delay_s * 1000, "groups": groups}
        await self._write("close", conv_id, request_id, **args)

    async def hold(self, conv_id: str, by: str, reason: str, request_id: str | None = None) -> None:
        """Hold a conversation out of the queues and off its agent (an admin's ban from it; the
        route script holds one itself for a blocked sender's message, docs/admission.md)."""
        await self._write("hold", conv_id, request_id, by=by, reason=reason)

    async def restore(self, conv_id: str, by: str, request_id: str | None = None) -> None:
        """Put a conversation admission control held (a banned or muted sender, spam) back in its
        queue with a fresh SLA (``Conflict`` when it is not held; docs/admission.md)."""
        await self._write("restore", conv_id, request_id, by=by, sla_ms=self._sla_ms)

    async def note(self, conv_id: str, by: str, text: str, request_id: str | None = None) -> None:
        await self._write("note", conv_id, request_id, by=by, text=text)

    async def reply(
        self,
        conv_id: str,
        text: str,
        by: str,
        request_id: str | None = None,
        *,
        buttons: Sequence[Button] = (),
    ) -> str:
        """Queue a reply on the conversation's channel; returns the reply id (one outbox item and
        one history entry however often it is sent with the same request id). ``buttons`` go
        under it, drawn the channel's way (router/actions.py)."""
        if not text.strip():
            raise BadRequest("a reply needs text")
        item: dict[str, Any] = {"id": new_id(), "text": text, "author": by, "auto": False, "created_at": now()}
        if buttons:
            try:
                # Checked here, not by the adapter that would refuse the whole reply later.
                raw = msgspec.to_builtins(list(buttons))
                item["buttons"] = msgspec.to_builtins(msgspec.convert(raw, list[Button]))
            except msgspec.ValidationError as exc:
                raise BadRequest(f"a reply's button is invalid: {exc}") from None
        return await self._write("reply", conv_id, request_id, by=by, item=item)
