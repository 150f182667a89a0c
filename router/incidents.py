"""Incidents: one known problem ("TRON withdrawals delayed") and the conversations it explains
(issue 18, docs/incidents.md).

An admin opens an incident with a matcher (a rule's conditions, rules/matcher.py) and a status
text per language. New conversations that match are linked to it by the linker
(router/incident_link.py): answered at once with the status text and collapsed out of their
group's queue under the incident (never a P1). Resolving it sends the resolution text to every
linked conversation (router/incident_broadcast.py), once each, and closes or re-queues them.

This module is the incident's record: the definition and state at the home prefix, each shard's
view (open / resolving, linked, sent, collapsed: lua/incident.lua), the history, the audit entries.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import redis.asyncio as aioredis

from router.audit import Audit
from router.errors import BadRequest, Conflict, NotFound
from router.keys import Shards
from router.model import new_id
from router.scripts import Scripts, argv
from rules.locale import FALLBACK_LANGUAGE
from rules.matcher import Matcher, MatcherError
from rules.placeholders import check_text, has_placeholders

MAX_TITLE = 200
MAX_TEXT = 2000
LOG_MAX = 1000
STATES = ("open", "resolving", "resolved")
MODES = ("close", "requeue")
Mode = Literal["close", "requeue"]


def check_texts(texts: Mapping[str, str], what: str, *, placeholders: bool = True) -> dict[str, str]:
    """``texts`` cleaned, or BadRequest naming the problem: an unknown ``{placeholder}``, or
    without ``placeholders`` (resolution texts: nobody waits any more) any (docs/waits.md)."""
    out = {str(k).strip().lower(): str(v).strip() for k, v in texts.items()}
    if not out.get(FALLBACK_LANGUAGE):
        raise BadRequest(f"{what}: a text in '{FALLBACK_LANGUAGE}' is required (users without their language get it)")
    for lang, text in out.items():
        if not lang.replace("-", "").isalpha() or len(lang) > 8:
            raise BadRequest(f"{what}: {lang!r} is not a language code (en, zh, ru ...)")
        if not text or len(text) > MAX_TEXT:
            raise BadRequest(f"{what}.{lang}: needs 1 to {MAX_TEXT} characters")
        try:
            check_text(text)
        except ValueError as exc:
            raise BadRequest(f"{what}.{lang}: {exc}") from None
        if not placeholders and has_placeholders(text):
            raise BadRequest(f"{what}.{lang}: placeholders are filled in status texts only, not here")
    return out


def check_matcher(when: Any) -> Matcher:
    try:
        return Matcher(when)
    except MatcherError as exc:
        raise BadRequest("matcher: " + "; ".join(exc.reasons)) from None


@dataclass(frozen=True, slots=True)
class Incident:
    id: str
    title: str
    when: Any  # the matcher's conditions, as the admin gave them
    texts: dict[str, str]
    state: str
    created_by: str
    created_ms: int
    updated_ms: int
    resolution: dict[str, str] = field(default_factory=dict)
    mode: str = ""
    resolved_by: str = ""
    resolving_ms: int = 0
    resolved_ms: int = 0

    @classmethod
    def from_hash(cls, raw: dict[bytes, bytes]) -> Incident:
        d = {k.decode(): v.decode() for k, v in raw.items()}
        return cls(
            id=d["id"],
            title=d["title"],
            when=json.loads(d["when"]),
            texts=json.loads(d["texts"]),
            state=d["state"],
            created_by=d.get("created_by", ""),
            created_ms=int(d.get("created_ms", 0)),
            updated_ms=int(d.get("updated_ms", 0)),
            resolution=json.loads(d.get("resolution") or "{}"),
            mode=d.get("mode", ""),
            resolved_by=d.get("resolved_by", ""),
            resolving_ms=int(d.get("resolving_ms", 0)),
            resolved_ms=int(d.get("resolved_ms", 0)),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Counts:
    linked: int  # conversations ever linked
    held: dict[str, int]  # collapsed now, by group (may count a few just taken: see lua/incident.lua)
    sent: int  # resolution texts queued

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Incidents:
    """The incidents of a deployment. ``clock``: ms (an injected one in tests)."""

    def __init__(
        self,
        client: aioredis.Redis,
        shards: Shards,
        scripts: Scripts,
        audit: Audit,
        *,
        clock: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self._client = client
        self._shards = shards
        self._keys = shards.home
        self._scripts = scripts
        self._audit = audit
        self.clock = clock

    # -- reading ---------------------------------------------------------------------------------
    async def get(self, incident_id: str) -> Incident:
        raw = await self._client.hgetall(self._keys.incident(incident_id))
        if not raw:
            raise NotFound(f"incident {incident_id}")
        return Incident.from_hash(raw)

    async def recent(self, state: str | None = None, limit: int = 200) -> list[Incident]:
        """Newest first; ``state``: only those in it."""
        ids = [i.decode() for i in await self._client.zrevrange(self._keys.incidents, 0, limit - 1)]
        pipe = self._client.pipeline(transaction=False)
        for i in ids:
            pipe.hgetall(self._keys.incident(i))
        found = [Incident.from_hash(raw) for raw in await pipe.execute() if raw]
        return [i for i in found if state is None or i.state == state]

    async def counts(self, incident_id: str, groups: list[str]) -> Counts:
        pipe = self._client.pipeline(transaction=False)
        for keys in self._shards.shard:
            pipe.scard(keys.incident_linked(incident_id))
            pipe.scard(keys.incident_sent(incident_id))
            for g in groups:
                pipe.zcard(keys.incident_held(incident_id, g))
        read = iter(await pipe.execute())
        linked = sent = 0
        held = dict.fromkeys(groups, 0)
        for _ in self._shards.shard:
            linked += next(read)
            sent += next(read)
            for g in groups:
                held[g] += next(read)
        return Counts(linked, {g: n for g, n in held.items() if n}, sent)

    async def linked(self, incident_id: str, limit: int = 200) -> list[str]:
        """Ids of linked conversations (at most ``limit``), oldest first."""
        pipe = self._client.pipeline(transaction=False)
        for keys in self._shards.shard:
            pipe.smembers(keys.incident_linked(incident_id))
        ids = sorted((m.decode() for members in await pipe.execute() for m in members), key=int)
        return ids[:limit]

    async def history(self, incident_id: str) -> list[dict[str, Any]]:
        rows = await self._client.xrange(self._keys.incident_log(incident_id))
        return [{"id": eid.decode(), **json.loads(f[b"event"])} for eid, f in rows]

    async def collapsed(self, group: str) -> list[tuple[Incident, int]]:
        """The group queue's incident rows: each open (or resolving) incident with conversations of
        ``group`` collapsed under it, and how many."""
        found = [i for i in await self.recent() if i.state != "resolved"]
        pipe = self._client.pipeline(transaction=False)
        for inc in found:
            for keys in self._shards.shard:
                pipe.zcard(keys.incident_held(inc.id, group))
        counts = await pipe.execute()
        n = self._shards.count
        rows = [(inc, sum(counts[k * n : (k + 1) * n])) for k, inc in enumerate(found)]
        return [(inc, c) for inc, c in rows if c]

    # -- changes ---------------------------------------------------------------------------------
    async def open(self, title: str, when: Any, texts: Mapping[str, str], by: str) -> Incident:
        """Validate and open; linking starts at once (the linker reads the open set each step)."""
        title = title.strip()
        if not 0 < len(title) <= MAX_TITLE:
            raise BadRequest(f"title: needs 1 to {MAX_TITLE} characters")
        check_matcher(when)
        clean = check_texts(texts, "texts")
        incident_id = str(await self._client.incr(self._keys.incident_seq))
        now = self.clock()
        record = {
            "id": incident_id,
            "title": title,
            "when": json.dumps(when, ensure_ascii=False),
            "texts": json.dumps(clean, ensure_ascii=False),
            "state": "open",
            "created_by": by,
            "created_ms": now,
            "updated_ms": now,
        }
        pipe = self._client.pipeline(transaction=True)
        pipe.hset(self._keys.incident(incident_id), mapping=record)
        pipe.zadd(self._keys.incidents, {incident_id: now})
        self._log(pipe, incident_id, "opened", by, title=title, texts=clean, when=when)
        self._audit.stage(pipe, "incident.open", actor=by, target=f"incident {incident_id}", detail=title)
        await pipe.execute()
        # Then each shard's open set, which the link script checks (a shard per slot).
        for keys in self._shards.shard:
            await self._client.sadd(keys.incidents_open, incident_id)
        return await self.get(incident_id)

    async def update(
        self, incident_id: str, by: str, *, title: str | None = None, texts: Mapping[str, str] | None = None,
        when: Any = None,
    ) -> Incident:  # fmt: skip
        """New title, status texts (for conversations linked from now on) or matcher."""
        inc = await self.get(incident_id)
        if inc.state != "open":
            raise Conflict(f"incident {incident_id} is {inc.state}: only an open incident changes")
        change: dict[str, Any] = {}
        if title is not None:
            title = title.strip()
            if not 0 < len(title) <= MAX_TITLE:
                raise BadRequest(f"title: needs 1 to {MAX_TITLE} characters")
            change["title"] = title
        if texts is not None:
            change["texts"] = check_texts(texts, "texts")
        if when is not None:
            check_matcher(when)
            change["when"] = when
        if not change:
            raise BadRequest("nothing to change: give a title, texts or a matcher")
        stored = {k: v if k == "title" else json.dumps(v, ensure_ascii=False) for k, v in change.items()}
        pipe = self._client.pipeline(transaction=True)
        pipe.hset(self._keys.incident(incident_id), mapping={**stored, "updated_ms": self.clock()})
        self._log(pipe, incident_id, "updated", by, **change)
        self._audit.stage(pipe, "incident.update", actor=by, target=f"incident {incident_id}", detail=",".join(change))
        await pipe.execute()
        return await self.get(incident_id)

    async def resolve(self, incident_id: str, by: str, texts: Mapping[str, str], mode: str) -> Incident:
        """Stop linking, and have the broadcasters send ``texts`` to every linked conversation,
        then close or re-queue (``mode``) those still collapsed. Resolving an incident whose
        resolution is under way again completes a resolve that stopped midway (same texts)."""
        if mode not in MODES:
            raise BadRequest(f"mode: one of {', '.join(MODES)}, not {mode!r}")
        inc = await self.get(incident_id)
        if inc.state == "resolved":
            raise Conflict(f"incident {incident_id} is resolved already")
        if inc.state == "open":
            clean = check_texts(texts, "resolution", placeholders=False)
            key = self._keys.incident(incident_id)
            async with self._client.pipeline(transaction=True) as pipe:
                await pipe.watch(key)
                if (await pipe.hget(key, "state")) != b"open":
                    raise Conflict(f"incident {incident_id} changed meanwhile: try again")
                pipe.multi()
                now = self.clock()
                pipe.hset(
                    key,
                    mapping={
                        "state": "resolving",
                        "resolution": json.dumps(clean, ensure_ascii=False),
                        "mode": mode,
                        "resolved_by": by,
                        "resolving_ms": now,
                        "updated_ms": now,
                    },
                )
                self._log(pipe, incident_id, "resolving", by, resolution=clean, mode=mode)
                self._audit.stage(pipe, "incident.resolve", actor=by, target=f"incident {incident_id}", detail=mode)
                await pipe.execute()
        for keys in self._shards.shard:
            await self._scripts.incident(args=argv(keys.prefix, "resolving", json.dumps({"incident": incident_id})))
        return await self.get(incident_id)

    async def shard_done(self, incident_id: str, shard: int) -> bool:
        """Record that ``shard``'s broadcast is over; the last shard marks the incident resolved,
        with its counts in the history. True when the incident is resolved."""
        keys = self._keys
        await self._client.sadd(keys.incident_done(incident_id), shard)
        if await self._client.scard(keys.incident_done(incident_id)) < self._shards.count:
            return False
        key = keys.incident(incident_id)
        async with self._client.pipeline(transaction=True) as pipe:
            await pipe.watch(key)
            if (await pipe.hget(key, "state")) != b"resolving":
                return True  # another process marked it
            counts = await self.counts(incident_id, [])
            pipe.multi()
            now = self.clock()
            pipe.hset(key, mapping={"state": "resolved", "resolved_ms": now, "updated_ms": now})
            self._log(pipe, incident_id, "resolved", "broadcast", linked=counts.linked, sent=counts.sent)
            await pipe.execute()
        return True

    async def claim(self, incident_id: str, group: str, agent: str, conv_id: str = "") -> str | None:
        """An agent who opened the incident takes a collapsed conversation of ``group``: the most
        urgent (over the shards, the first shard with one), or ``conv_id``. None when none."""
        shards = [self._shards.conv_keys(conv_id)] if conv_id else list(self._shards.shard)
        args = json.dumps({"incident": incident_id, "group": group, "by": agent, "conv": conv_id})
        for keys in shards:
            got = await self._scripts.incident(args=argv(keys.prefix, "claim", args, at=self.clock()))
            if got:
                return str(got.decode() if isinstance(got, bytes) else got)
        return None

    def _log(self, pipe: Any, incident_id: str, event: str, by: str, **data: Any) -> None:
        entry = {"event": event, "by": by, "at_ms": self.clock(), **data}
        pipe.xadd(
            self._keys.incident_log(incident_id),
            {"event": json.dumps(entry, ensure_ascii=False)},
            maxlen=LOG_MAX,
            approximate=True,
        )


def status_item(text: str, at_s: float) -> dict[str, Any]:
    """An incident's reply to a user (status or resolution): the outbox item's own fields; the
    script addresses it to the conversation (common.lua send_reply). ``auto``: stops no SLA clock."""
    return {"id": new_id(), "text": text, "author": "incident", "auto": True, "created_at": at_s}
