"""The one reader of what the deployment is doing: queue depths, counters, dead letters, what is in
flight (router/backlog.py) with its alerts, health records, recent tags and routing latencies.

``switchboard stats`` and ``check``, the dashboard, the JSON API's ``/api/stats`` and ``/metrics``
all read through ``StatsReader``, so that they agree and a new figure is added in one place. Every
number lives in Redis, shared by every process: any process answers for the whole deployment.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from router.backlog import Backlog, alerts, read_backlog
from router.config import Settings
from router.health import dead_adapters, shard_holders
from router.keys import Shards
from router.queues import Queues, QueueStats
from router.rulestore import RuleStore
from router.scripts import Scripts
from rules import Engine

#: Recent routed messages per group behind the routing latency.
LATENCY_SAMPLE = 20
#: The assigner's counters (``assign:{name}:{group}`` in the shards' stats hashes).
ASSIGN_COUNTERS = ("assigned", "reoffered", "overflowed", "requeued_offline")


@dataclass(frozen=True, slots=True)
class Totals:
    """The counters hash and the dead-letter stream's length, read in one round trip."""

    counters: dict[str, int]
    dead_letters: int

    def by_prefix(self, prefix: str) -> dict[str, int]:
        """``{"telegram": 3}`` for the counters ``in:telegram`` ... with ``prefix`` ``"in:"``."""
        return {k[len(prefix) :]: v for k, v in sorted(self.counters.items()) if k.startswith(prefix)}

    def sla(self) -> dict[str, dict[str, Any]]:
        """Per SLA target: ``met`` and ``breached`` (each measurement counted once, by the SLA
        timer, router/slatimer.py) and ``attainment``, the share met (None before any)."""
        met, breached = self.by_prefix("sla_met:"), self.by_prefix("sla_breached:")
        out: dict[str, dict[str, Any]] = {}
        for target in sorted(met.keys() | breached.keys()):
            m, b = met.get(target, 0), breached.get(target, 0)
            out[target] = {"met": m, "breached": b, "attainment": m / (m + b) if m + b else None}
        return out

    def assignment(self) -> dict[str, dict[str, int]]:
        """Per ``ASSIGN_COUNTERS`` name, by group: automatic assignments, re-offers, overflows
        (by the group moved from) and offline agents' conversations requeued, each counted by the
        script that made the change (lua/conv.lua)."""
        return {name: self.by_prefix(f"assign:{name}:") for name in ASSIGN_COUNTERS}


class StatsReader:
    """Read-only figures over one client; ``engine`` gives the rule set in force (for its groups),
    ``settings.alerts`` the alert thresholds."""

    def __init__(
        self,
        client: aioredis.Redis,
        shards: Shards,
        scripts: Scripts,
        queues: Queues,
        rules: RuleStore,
        engine: Callable[[], Awaitable[Engine]],
        settings: Settings,
    ) -> None:
        self._client = client
        self._shards = shards
        self._keys = shards.home  # health records
        self._scripts = scripts
        self._queues = queues
        self._rules = rules
        self._engine = engine
        self._settings = settings  # read at each call: alert limits may be changed in place

    async def groups(self) -> list[str]:
        """Every group of the rules in force, plus any queue left by groups since removed."""
        return sorted(set((await self._engine()).groups) | set(await self._queues.groups_with_queues()))

    async def queues(self, groups: list[str]) -> list[QueueStats]:
        return await self._queues.stats(groups)

    async def totals(self) -> Totals:
        """The counters and dead letters, summed over the shards."""
        pipe = self._client.pipeline(transaction=False)
        for keys in self._shards.shard:
            pipe.hgetall(keys.stats)
            pipe.xlen(keys.dead)
        raw = await pipe.execute()
        counters: Counter[str] = Counter()
        for part in raw[0::2]:
            counters.update({k.decode(): int(v) for k, v in part.items()})
        return Totals(dict(counters), sum(int(n) for n in raw[1::2]))

    async def backlog(self) -> Backlog:
        return await read_backlog(self._client, self._shards, self._scripts)

    async def health(self) -> dict[str, Any]:
        """Every live health record (workers, adapters, supervisors), by ``kind:name``."""
        records: dict[str, Any] = {}
        async for key in self._client.scan_iter(match=self._keys.health_pattern(), count=500):
            raw = await self._client.get(key)
            if raw:
                records[key.decode().removeprefix(self._keys.prefix + "health:")] = json.loads(raw)
        return records

    async def workers_alive(self) -> int:
        alive = 0
        async for _ in self._client.scan_iter(match=self._keys.health("worker", "*"), count=500):
            alive += 1
        return alive

    async def read(self) -> dict[str, Any]:
        """Inbox, outboxes, Redis memory, alerts, queues, dead letters, counters, the health of
        workers and adapters, and the rule set in force (``switchboard stats --json``)."""
        qstats = await self.queues(await self.groups())
        totals = await self.totals()
        flight = await self.backlog()
        health = await self.health()
        return {
            **flight.as_dict(),
            "alerts": alerts(flight, self._settings.alerts) + dead_adapters(health),
            "dead_letters": totals.dead_letters,
            "queues": queue_dict(qstats),
            "counters": totals.counters,
            "answers": answer_stats(totals),
            "csat": csat_stats(totals),
            "health": health,
            "shard_holders": shard_holders(health),
            "rules": {"active": await self._rules.active_number()},
            "sla": totals.sla(),
            "assignment": totals.assignment(),
        }

    async def sample(self) -> dict[str, Any]:
        """One point of the dashboard's time series: depths, lag, outbox and the running totals."""
        qstats = await self.queues(await self.groups())
        totals = await self.totals()
        flight = await self.backlog()
        return {
            "at": time.time(),
            "depth": {q.group: q.depth for q in qstats},
            "overdue": {q.group: q.overdue for q in qstats},
            "lag": flight.inbox.lag,
            "outbox": sum(box.depth for box in flight.outboxes.values()),
            **{name: sum(totals.by_prefix(f"{name}:").values()) for name in ("in", "out", "routed")},
        }

    async def top_tags(self, last: int = 500, top: int = 12) -> list[tuple[str, int]]:
        """The most frequent tags over the last ``last`` conversations created (language tags aside):
        the newest ``last / shards`` of each shard."""
        pipe = self._client.pipeline(transaction=False)
        for keys in self._shards.shard:
            pipe.get(keys.conv_seq)
        newest = [int(n or 0) for n in await pipe.execute()]
        each = -(-last // self._shards.count)
        for shard, (keys, top_n) in enumerate(zip(self._shards.shard, newest, strict=True)):
            for n in range(top_n, max(0, top_n - each), -1):
                cid = str(self._shards.conv_id(n, shard))
                pipe.hget(keys.conv(cid), "tags")
        counts: Counter[str] = Counter()
        for tags in await pipe.execute():
            if tags:
                value = json.loads(tags)
                if isinstance(value, list):
                    counts.update(t for t in value if not t.startswith("lang:"))
        return counts.most_common(top)

    async def routing_latencies(self, groups: list[str]) -> list[float]:
        """Seconds from reception (the message's ``received_at``) to routing (the history entry's
        time) of the last ``LATENCY_SAMPLE`` messages routed into each group."""
        pipe = self._client.pipeline(transaction=False)
        for g in groups:
            for keys in self._shards.shard:
                pipe.xrevrange(keys.events(g), count=LATENCY_SAMPLE * 3)
        convs: list[tuple[str, int]] = []
        for entries in await pipe.execute():
            picked = 0
            for _, fields in entries:
                if fields.get(b"type") in (b"created", b"message", b"reopened") and picked < LATENCY_SAMPLE:
                    convs.append((fields[b"conv"].decode(), int(fields[b"at"])))
                    picked += 1
        pipe = self._client.pipeline(transaction=False)
        for cid, _ in convs:
            pipe.xrevrange(self._shards.conv_keys(cid).history(cid), count=5)
        out: list[float] = []
        for (_, at_ms), entries in zip(convs, await pipe.execute(), strict=True):
            for _, fields in entries:
                if fields.get(b"type") == b"inbound" and int(fields[b"at"]) == at_ms:
                    received = json.loads(fields[b"data"]).get("received_at")
                    if received:
                        out.append(max(0.0, at_ms / 1000 - float(received)))
                    break
        return out


#: The outcomes of a knowledge-base answer (router/answerer.py), each counted once per answer.
OUTCOMES = ("confirmed", "assumed", "reopened", "human")


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def answer_stats(totals: Totals) -> dict[str, Any]:
    """The knowledge-base answerer's figures from the ``kb:`` counters (lua/answer.lua): the
    auto-answer rate (answered / eligible) and each outcome, in all, per language and per
    article; what the shadow would have answered; why eligible messages were not answered."""

    def split(name: str) -> tuple[dict[str, int], dict[str, int]]:
        return totals.by_prefix(f"kb:{name}:lang:"), totals.by_prefix(f"kb:{name}:article:")

    c = totals.counters
    names = ("answered", *OUTCOMES)
    langs = {name: split(name)[0] for name in (*names, "eligible")}
    articles = {name: split(name)[1] for name in names}
    by_language = {
        lang: {
            "eligible": langs["eligible"].get(lang, 0),
            **{name: langs[name].get(lang, 0) for name in names},
            "rate": _rate(langs["answered"].get(lang, 0), langs["eligible"].get(lang, 0)),
        }
        for lang in sorted(set().union(*langs.values()))
    }
    by_article = {
        article: {name: articles[name].get(article, 0) for name in names}
        for article in sorted(set().union(*articles.values()))
    }
    would_lang, would_article = split("shadow:would")
    return {
        "eligible": c.get("kb:eligible", 0),
        **{name: c.get(f"kb:{name}", 0) for name in (*names, "taken")},
        "rate": _rate(c.get("kb:answered", 0), c.get("kb:eligible", 0)),
        "declined": totals.by_prefix("kb:declined:"),
        "by_language": by_language,
        "by_article": by_article,
        "shadow": {
            "eligible": c.get("kb:shadow:eligible", 0),
            "would": c.get("kb:shadow:would", 0),
            "rate": _rate(c.get("kb:shadow:would", 0), c.get("kb:shadow:eligible", 0)),
            "by_language": would_lang,
            "by_article": would_article,
        },
    }


#: The ratings of a satisfaction survey (router/csat.py).
RATINGS = ("1", "2", "3", "4", "5")


def csat_stats(totals: Totals) -> dict[str, Any]:
    """The satisfaction surveys' figures from the ``csat:`` counters (lua/csat.lua, route.lua):
    surveys sent and skipped, ratings in all, by group and by agent (rating -> count), the
    average, the share of 4 and 5 (CSAT as usually quoted), presses after the first, comments."""
    c = totals.counters

    def split(prefix: str) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for key, n in totals.by_prefix(prefix).items():
            who, _, rating = key.rpartition(":")
            if rating in RATINGS:
                out.setdefault(who, {})[rating] = n
        return out

    ratings = {r: c.get(f"csat:rating:{r}", 0) for r in RATINGS}
    rated = sum(ratings.values())
    return {
        "sent": c.get("csat:sent", 0),
        "skipped": totals.by_prefix("csat:skipped:"),
        "rated": rated,
        "ratings": ratings,
        "average": round(sum(int(r) * n for r, n in ratings.items()) / rated, 2) if rated else None,
        "satisfied": _rate(ratings["4"] + ratings["5"], rated),
        "by_group": split("csat:group:"),
        "by_agent": split("csat:agent:"),
        "late": c.get("csat:late", 0),
        "follow_ups": c.get("csat:follow_ups", 0),
        "comments": c.get("csat:comments", 0),
    }


def queue_dict(qstats: list[QueueStats]) -> dict[str, dict[str, Any]]:
    """The JSON shape of queue figures, by group (``stats --json``, ``/api/stats``, ``/api/groups``)."""
    return {q.group: {"depth": q.depth, "oldest_wait_s": q.oldest_wait_s, "overdue": q.overdue} for q in qstats}
