"""Agents' presence and assignment profile: status, heartbeat, groups, skills, capacity per channel.

One hash per agent at the home prefix (``ag:{name}``, router/keys.py), beside its load, so that
the reservation script (lua/assign.lua) reads status, heartbeat, capacity and load of every
candidate in one atomic step. The agent sets its status (online / away / offline) and keeps it
alive with a heartbeat (the console tab, ``switchboard agent online``); whether it is alive is
judged by the clock passed in, with ``assign.grace_s``:

* **eligible** for a new conversation: status ``online`` and a heartbeat within the grace;
* **gone**: no heartbeat within the grace (setting ``offline`` counts as the last one, and an
  offline agent's heartbeat does not renew it): its open conversations go back to the queue.

Away keeps the agent's conversations but takes no new one. The profile (groups, languages, tags,
capacity per channel) is an admin's: groups default to the console user's (router/accounts.py).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from router.accounts import check_name, user_groups
from router.config import AssignSettings
from router.errors import BadRequest, NotFound
from router.keys import Keys
from router.leases import Clock, WallClock
from sla.assignment import Agent

STATUSES = ("online", "away", "offline")
#: Capacity of an agent per channel when its profile names none for that channel: no automatic
#: assignment on it (an admin opts an agent in by giving it capacity).
NO_CAPACITY = 0


def parse_capacity(items: list[str] | dict[str, Any]) -> dict[str, int]:
    """``["telegram=3", "email=10"]`` (or a mapping) -> {channel: n}; a clear error otherwise."""
    pairs = items.items() if isinstance(items, dict) else (item.partition("=")[::2] for item in items)
    out: dict[str, int] = {}
    for channel, raw in pairs:
        channel = str(channel).strip()
        try:
            n = int(raw)
        except (TypeError, ValueError):
            n = -1
        if not channel or not channel.replace("_", "").isalnum() or not 0 <= n <= 1000:
            raise BadRequest(f"capacity must be CHANNEL=N with N from 0 to 1000, e.g. telegram=3, not {channel}={raw}")
        out[channel] = n
    return out


def _words(values: list[str] | tuple[str, ...], what: str) -> tuple[str, ...]:
    out = tuple(dict.fromkeys(v.strip().lower() for v in values if v.strip()))
    for v in out:
        if len(v) > 64 or any(c.isspace() or c in ",\"'" for c in v):
            raise BadRequest(f"{what}: {v!r} is not a word (letters, digits, '-', ':')")
    return out


@dataclass(frozen=True, slots=True)
class AgentState:
    name: str
    status: str
    beat_ms: int
    groups: tuple[str, ...]
    languages: tuple[str, ...]
    tags: tuple[str, ...]
    capacity: dict[str, int]
    load: dict[str, int]
    last_ms: int

    def eligible(self, now_ms: int, grace_ms: int) -> bool:
        return self.status == "online" and self.beat_ms + grace_ms >= now_ms

    def gone(self, now_ms: int, grace_ms: int) -> bool:
        return self.beat_ms + grace_ms < now_ms

    def profile(self) -> Agent:
        return Agent(self.name, frozenset(self.groups), frozenset(self.languages), frozenset(self.tags))

    def to_dict(self, now_ms: int, grace_ms: int) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": "offline" if self.gone(now_ms, grace_ms) else self.status,
            "set_status": self.status,
            "beat_ms": self.beat_ms,
            "groups": list(self.groups),
            "languages": list(self.languages),
            "tags": list(self.tags),
            "capacity": self.capacity,
            "load": self.load,
        }


def _state(name: str, raw: dict[bytes, bytes], default_groups: tuple[str, ...]) -> AgentState:
    d = {k.decode(): v.decode() for k, v in raw.items()}
    groups = tuple(json.loads(d["groups"])) if "groups" in d else default_groups
    return AgentState(
        name=name,
        status=d.get("status", "offline"),
        beat_ms=int(d.get("beat", 0)),
        groups=groups,
        languages=tuple(json.loads(d.get("langs", "[]"))),
        tags=tuple(json.loads(d.get("tags", "[]"))),
        capacity={k[4:]: int(v) for k, v in d.items() if k.startswith("cap:")},
        load={k[2:]: int(v) for k, v in d.items() if k.startswith("n:") and int(v)},
        last_ms=int(d.get("last", 0)),
    )


class Presence:
    """The agents' presence and profiles (home keys ``agents``, ``ag:{name}``)."""

    def __init__(
        self, client: aioredis.Redis, keys: Keys, settings: AssignSettings, clock: Clock | None = None
    ) -> None:
        self._client = client
        self._keys = keys
        self.clock = clock or WallClock()
        self.grace_ms = round(settings.grace_s * 1000)

    async def set_status(self, name: str, status: str) -> AgentState:
        """Set ``name``'s status; it counts as a heartbeat (for ``offline``: the last one)."""
        check_name(name)
        if status not in STATUSES:
            raise BadRequest(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hset(self._keys.agent_state(name), mapping={"status": status, "beat": self.clock.now_ms()})
            pipe.sadd(self._keys.agents, name)
            await pipe.execute()
        return await self.get(name)

    async def beat(self, name: str) -> str:
        """A heartbeat: keeps an online or away agent alive; an offline one stays offline.
        Returns the status (``NotFound`` for an agent that never set one)."""
        key = self._keys.agent_state(name)
        status = await self._client.hget(key, "status")
        if status is None:
            raise NotFound(f"agent {name} has no status: set one first (online, away)")
        if status != b"offline":
            await self._client.hset(key, "beat", self.clock.now_ms())
        return str(status.decode())

    async def set_profile(
        self,
        name: str,
        *,
        groups: list[str] | None = None,
        languages: list[str] | None = None,
        tags: list[str] | None = None,
        capacity: dict[str, int] | None = None,
    ) -> AgentState:
        """Change what is given (an admin's): the rest of the profile stays."""
        check_name(name)
        fields: dict[str, str | int] = {}
        if groups is not None:
            fields["groups"] = json.dumps(list(_words(groups, "groups")))
        if languages is not None:
            langs = _words(languages, "languages")
            for lang in langs:
                if not (2 <= len(lang) <= 3 and lang.isalpha()):
                    raise BadRequest(f"languages: {lang!r} is not an ISO 639-1 code such as en, zh, ru")
            fields["langs"] = json.dumps(list(langs))
        if tags is not None:
            fields["tags"] = json.dumps(list(_words(tags, "tags")))
        for channel, n in (capacity or {}).items():
            fields[f"cap:{channel}"] = n
        if fields:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hset(self._keys.agent_state(name), mapping=fields)
                pipe.sadd(self._keys.agents, name)
                await pipe.execute()
        return await self.get(name)

    async def get(self, name: str) -> AgentState:
        found = await self.many([name])
        if not found:
            raise NotFound(f"agent {name}")
        return found[0]

    async def get_or_offline(self, name: str) -> AgentState:
        """``name``'s state, or an offline one with no profile for an agent never seen."""
        found = await self.many([name])
        groups = await user_groups(self._client, self._keys, [name])
        return found[0] if found else _state(name, {}, groups.get(name, ()))

    async def names(self) -> list[str]:
        return sorted(m.decode() for m in await self._client.smembers(self._keys.agents))

    async def many(self, names: list[str]) -> list[AgentState]:
        pipe = self._client.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(self._keys.agent_state(name))
        raw = await pipe.execute()
        groups = await user_groups(self._client, self._keys, names)
        out = []
        for i, (name, fields) in enumerate(zip(names, raw, strict=True)):
            if i and not i % 100:
                await asyncio.sleep(0)  # hundreds of agents: let the assigner's decisions in between
            if fields:
                out.append(_state(name, fields, groups.get(name, ())))
        return out

    async def all(self) -> list[AgentState]:
        return await self.many(await self.names())
