"""Complaint analysis from Redis (issue 20, item 4): what users complained about, by cause.

The complaints of a period are the conversations created in it that are tagged ``complaint`` (the
default rules tag complaints: docs/default-rules.md) — their first inbound message, as the
history keeps it (secrets masked) — and the comments of satisfaction surveys rated
``LOW_CSAT`` or lower (docs/csat.md) on conversations created in it. The analytics store has no
texts, so they are read here: a SCAN of the conversations (``conv:*``, every shard), their
creation time, tags, language and survey rating, then the histories of the ones that qualify.
Closed conversations stay in Redis ``retention.closed_conversation_days`` (30 by default), so a 7-day report
and its previous 7 days are there.

The clustering and the comparison are insight/ (pure); ``complaint_causes`` is the one call a
report (the CLI, a scheduled e-mail) needs. Embedding costs ~10 ms a text on a loaded 2-core
machine and runs in a thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from insight import Complaint, embed
from insight.causes import Causes, causes
from insight.cluster import DEFAULT_THRESHOLD
from router.conversations import HistoryEntry, first_inbound

if TYPE_CHECKING:
    from router.runtime import Runtime

__all__ = ["LOW_CSAT", "TAG", "ComplaintReport", "complaint_causes", "complaint_causes_between", "complaints_between"]

TAG = "complaint"
#: A survey rated at or under this is a complaint when it has a comment (the follow-up question).
LOW_CSAT = 3
DAY_MS = 86_400_000
#: Conversations read per pipeline.
BATCH = 500
_FIELDS = ("created_ms", "tags", "language", "csat_rating")


@dataclass(frozen=True, slots=True)
class ComplaintReport:
    """The causes of ``[start_ms, end_ms)`` beside the period of the same length before it."""

    start_ms: int
    end_ms: int
    days: float
    threshold: float
    found: Causes

    def to_dict(self) -> dict[str, Any]:
        return {
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
            "days": self.days,
            "threshold": self.threshold,
            "complaints": self.found.complaints,
            "previous_complaints": self.found.previous,
            "previous_unmatched": self.found.unmatched,
            "causes": [c.to_dict() for c in self.found.causes],
        }


def _complaints_of(
    cid: str, tags: list[str], lang: str, rated_low: bool, history: list[HistoryEntry]
) -> list[Complaint]:
    out = []
    message = first_inbound(history) if TAG in tags else None
    if message is not None and str(message.get("text") or "").strip():
        out.append(Complaint(cid, str(message["text"]), lang, tuple(tags)))
    if rated_low:
        # One row per survey, the last entry (router/csat.py): the comment is on the last one.
        last: dict[str, dict[str, Any]] = {}
        for e in history:
            if e.type == "csat":
                last[str(e.data.get("survey"))] = e.data
        for data in last.values():
            comment = data.get("comment")
            rating = data.get("rating")
            if isinstance(comment, str) and comment.strip() and isinstance(rating, int) and rating <= LOW_CSAT:
                out.append(Complaint(cid, comment, lang, (*tags, "csat")))
    return out


async def complaints_between(rt: Runtime, start_ms: int, end_ms: int) -> tuple[list[Complaint], list[Complaint]]:
    """The complaints of conversations created in ``[start_ms - (end_ms - start_ms), start_ms)``
    (the previous period) and in ``[start_ms, end_ms)``, in creation order."""
    span = end_ms - start_ms
    ids = []
    async for raw in rt.client.scan_iter(match=rt.shards.glob("conv:*"), count=1000):
        found = rt.shards.split(raw.decode())
        if found is not None and found[1].startswith("conv:"):
            ids.append(found[1].removeprefix("conv:"))
    picked: list[tuple[int, str, list[str], str, bool]] = []
    for i in range(0, len(ids), BATCH):
        chunk = ids[i : i + BATCH]
        pipe = rt.client.pipeline(transaction=False)
        for cid in chunk:
            pipe.hmget(rt.conversations.keys(cid).conv(cid), _FIELDS)
        for cid, (created, tags_raw, lang, rating) in zip(chunk, await pipe.execute(), strict=True):
            if created is None or not start_ms - span <= int(created) < end_ms:
                continue
            tags = json.loads(tags_raw or b"[]")
            # Lua's cjson writes an empty list as {}; lang:xx (every message has one) names no cause.
            tags = [t for t in tags if not t.startswith("lang:")] if isinstance(tags, list) else []
            low = rating is not None and int(rating) <= LOW_CSAT
            if TAG in tags or low:
                picked.append((int(created), cid, tags, (lang or b"").decode() or "und", low))
    picked.sort()
    previous: list[Complaint] = []
    current: list[Complaint] = []
    for i in range(0, len(picked), BATCH):
        some = picked[i : i + BATCH]
        histories = await rt.conversations.histories([cid for _, cid, _, _, _ in some])
        for (created, cid, tags, lang, low), history in zip(some, histories, strict=True):
            (current if created >= start_ms else previous).extend(_complaints_of(cid, tags, lang, low, history))
    return previous, current


async def complaint_causes(
    rt: Runtime, days: float = 7, now_ms: int | None = None, threshold: float = DEFAULT_THRESHOLD
) -> ComplaintReport:
    """The complaints of the last ``days`` grouped into causes, each with its size in the
    ``days`` before (docs/complaints.md)."""
    if days <= 0:
        raise ValueError(f"days must be positive, not {days}")
    end = now_ms if now_ms is not None else int(time.time() * 1000)
    return await complaint_causes_between(rt, end - int(days * DAY_MS), end, threshold)


async def complaint_causes_between(
    rt: Runtime, start_ms: int, end_ms: int, threshold: float = DEFAULT_THRESHOLD
) -> ComplaintReport:
    """The complaints of conversations created in ``[start_ms, end_ms)`` grouped into causes, each
    with its size in the period of the same length before (the weekly summary passes an ISO week's
    bounds, which a time zone's summer-time change makes 167 or 169 hours long)."""
    if end_ms <= start_ms:
        raise ValueError(f"the period must end after it starts, not [{start_ms}, {end_ms})")
    previous, current = await complaints_between(rt, start_ms, end_ms)

    def compute() -> Causes:
        vectors = embed([c.text for c in current + previous])
        return causes(current, vectors[: len(current)], previous, vectors[len(current) :], threshold)

    found = await asyncio.to_thread(compute)
    return ComplaintReport(start_ms, end_ms, (end_ms - start_ms) / DAY_MS, threshold, found)
