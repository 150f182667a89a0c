"""Suggested incidents: a tag whose rate rises N times above its baseline (issue 18, item 3:
"or the system, when a tag's rate rises N× above its baseline"; docs/incidents.md).

The linker (router/incident_link.py) counts each new conversation's tags once (lua/incident.lua
``count``, the conversation's field ``tag_counted``) in per-shard minute and hour buckets
(``tagrate:m:{minute}``, ``tagrate:h:{hour}``). A tag is suggested when, over the last
``surge_window_m`` minutes, at least ``surge_min`` new conversations carried it and that is at least
``surge_factor`` times its average for a window as long over the ``surge_baseline_h`` hours before
the current hour. Nothing is opened automatically: an admin reads the suggestion in the console (or
``switchboard incident suggest``) and opens an incident with a matcher of their own.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

import redis.asyncio as aioredis

from router.config import IncidentSettings
from router.keys import Shards


@dataclass(frozen=True, slots=True)
class Suggestion:
    tag: str
    recent: int  # new conversations with the tag in the last window
    baseline: float  # its average per window over the baseline hours
    ratio: float | None  # recent / baseline; None without a baseline (a tag never seen before)
    window_m: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


async def suggestions(
    client: aioredis.Redis, shards: Shards, settings: IncidentSettings, now_ms: int
) -> list[Suggestion]:
    """The surging tags at ``now_ms``, the steepest first."""
    minute, hour = now_ms // 60_000, now_ms // 3_600_000
    window, hours = settings.surge_window_m, settings.surge_baseline_h
    pipe = client.pipeline(transaction=False)
    for keys in shards.shard:
        for m in range(minute - window + 1, minute + 1):
            pipe.hgetall(keys.tag_rate("m", m))
        for h in range(hour - hours, hour):
            pipe.hgetall(keys.tag_rate("h", h))
    read = await pipe.execute()
    per_shard = window + hours
    recent: Counter[str] = Counter()
    base: Counter[str] = Counter()
    for s in range(shards.count):
        part = read[s * per_shard : (s + 1) * per_shard]
        for bucket in part[:window]:
            recent.update({k.decode(): int(v) for k, v in bucket.items()})
        for bucket in part[window:]:
            base.update({k.decode(): int(v) for k, v in bucket.items()})
    windows = hours * 60 / window
    out = []
    for tag, n in recent.items():
        baseline = base[tag] / windows
        if n < settings.surge_min or (baseline and n < settings.surge_factor * baseline):
            continue
        out.append(Suggestion(tag, n, round(baseline, 2), round(n / baseline, 1) if baseline else None, window))
    # A tag never seen before first, then the steepest.
    return sorted(out, key=lambda s: (-(s.ratio if s.ratio is not None else math.inf), -s.recent))
