"""What is in flight, and for how long: the inbox, each channel's outbox, Redis memory, and alerts.

The one read behind every place that shows it — ``switchboard stats`` and ``check``
(``router.stats.StatsReader``), the dashboard's samples and ``/metrics`` — so that they agree. Per stream:
its length, the lag (entries the consumer group has not read yet; Redis 6.2 does not report it, so
lua/backlog.lua counts it, up to ``LAG_COUNT_CAP``), the pending entries (read, not acknowledged)
and the age of the oldest pending one since it was appended. An outbox's depth is lag + pending:
replies not yet sent and recorded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import redis.asyncio as aioredis

from router.cluster import each_node
from router.config import AlertSettings
from router.keys import ROUTER_GROUP, SENDER_GROUP, Keys, Shards
from router.scripts import Scripts, argv, run_per_prefix

#: The most entries counted for a lag when Redis does not report it: bounds the cost of a scrape
#: (the count runs inside Redis, ~500 entries per step); a larger lag shows as this number.
LAG_COUNT_CAP = 10_000


@dataclass(frozen=True, slots=True)
class StreamBacklog:
    length: int
    lag: int
    pending: int
    oldest_pending_s: float | None

    @property
    def depth(self) -> int:
        """Entries not acknowledged yet: not read (lag) or read and in hand (pending)."""
        return self.lag + self.pending

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "depth": self.depth}


@dataclass(frozen=True, slots=True)
class Backlog:
    inbox: StreamBacklog
    outboxes: dict[str, StreamBacklog]
    used_memory: int
    maxmemory: int  # 0: no limit

    @property
    def memory_ratio(self) -> float | None:
        return self.used_memory / self.maxmemory if self.maxmemory else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "inbox": self.inbox.as_dict(),
            "outbox": {channel: s.as_dict() for channel, s in self.outboxes.items()},
            "redis": {"used_memory": self.used_memory, "maxmemory": self.maxmemory, "memory_ratio": self.memory_ratio},
        }


async def read_backlog(
    client: aioredis.Redis, shards: Shards, scripts: Scripts, clock: Callable[[], float] = time.time
) -> Backlog:
    """The inbox and the outbox of every channel that ever had a reply (its ``out:`` counter),
    each summed over the shards (its oldest pending entry: the oldest of any shard's), and the
    memory of the fullest Redis node holding a shard."""
    pipe = client.pipeline(transaction=False)
    for keys in shards.shard:
        pipe.hkeys(keys.stats)
    counted = {k.decode() for found in await pipe.execute() for k in found}
    channels = sorted(k.removeprefix("out:") for k in counted if k.startswith("out:"))
    streams = [("inbox", ROUTER_GROUP)] + [(Keys("").outbox(ch), SENDER_GROUP) for ch in channels]
    calls = [argv(keys.prefix, name, group, LAG_COUNT_CAP) for name, group in streams for keys in shards.shard]
    answers = await run_per_prefix(client, scripts.backlog, calls)
    now_ms = clock() * 1000
    n = shards.count
    inbox, *outboxes = (_sum([_stream(a, now_ms) for a in answers[i : i + n]]) for i in range(0, len(answers), n))
    memories = [await client.info("memory", **node) for node in each_node(client, [k.inbox for k in shards.shard])]
    memory = max(memories, key=_fullness)
    return Backlog(
        inbox, dict(zip(channels, outboxes, strict=True)), int(memory["used_memory"]), int(memory["maxmemory"])
    )


def _fullness(memory: dict[str, Any]) -> tuple[float, int]:
    used, limit = int(memory["used_memory"]), int(memory["maxmemory"])
    return (used / limit if limit else 0.0, used)


def _stream(answer: list[Any], now_ms: float) -> StreamBacklog:
    length, lag, pending, oldest = answer
    oldest_id = oldest.decode() if isinstance(oldest, bytes) else str(oldest)
    age = max(0.0, (now_ms - int(oldest_id.split("-")[0])) / 1000) if oldest_id else None
    return StreamBacklog(int(length), int(lag), int(pending), age)


def _sum(parts: list[StreamBacklog]) -> StreamBacklog:
    """One stream's figures over its shards."""
    ages = [p.oldest_pending_s for p in parts if p.oldest_pending_s is not None]
    return StreamBacklog(
        sum(p.length for p in parts), sum(p.lag for p in parts), sum(p.pending for p in parts), max(ages, default=None)
    )


def alerts(backlog: Backlog, limits: AlertSettings) -> list[str]:
    """Each threshold exceeded, as a sentence naming the stream, the figure and the limit."""
    found = []
    if backlog.inbox.lag > limits.inbox_lag:
        found.append(f"inbox lag {backlog.inbox.lag} > {limits.inbox_lag} (entries no worker has read)")
    streams = [("inbox", backlog.inbox)] + [(f"outbox {ch}", s) for ch, s in backlog.outboxes.items()]
    for name, s in streams:
        if s.oldest_pending_s is not None and s.oldest_pending_s > limits.pending_age_s:
            found.append(
                f"{name}: oldest pending entry {s.oldest_pending_s:.0f}s old > {limits.pending_age_s:.0f}s"
                " (read, never acknowledged)"
            )
    for channel, s in backlog.outboxes.items():
        if s.depth > limits.outbox_depth:
            found.append(f"outbox {channel} depth {s.depth} > {limits.outbox_depth} (replies not sent yet)")
    ratio = backlog.memory_ratio
    if ratio is not None and ratio > limits.memory_ratio:
        found.append(
            f"redis memory {backlog.used_memory} of {backlog.maxmemory} bytes"
            f" ({ratio:.0%}) > {limits.memory_ratio:.0%} of maxmemory"
        )
    return found
