"""Agents' corrections as training labels (issue 15).

Every transfer to another group, every priority change and every close (with its reason) an agent
or admin makes (console, API or CLI: they all go through ``Conversations``) is recorded by
``lua/conv.lua``, in the same atomic step, on the ``labels`` stream: the conversation's latest
inbound message as its history stores it (the rules' decision included, secrets already masked)
and the group and priority the conversation has after the change. A close says the group and
priority it ended in were right. ``Labels.examples`` turns the stream into training examples in
the corpus format of ``triage/corpus/`` (one per message: its latest label wins), which
``switchboard model export`` writes as JSON lines.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from router.keys import Shards, entry_order


@dataclass(frozen=True, slots=True)
class Correction:
    """One recorded correction: which change, on which message, by whom, and the labels after it."""

    entry: str  # the labels stream's id (its time is the correction's)
    kind: str  # "transfer", "priority" or "close" (a close confirms the group and priority it ends in)
    conversation: str
    channel: str
    group: str
    priority: int
    by: str
    reason: str  # the agent's, if given ("routed wrong" from the console's one-click button)
    message: dict[str, Any]  # the inbound history record

    def example(self) -> dict[str, Any]:
        """The corrected message as a corpus example (``triage/corpus/`` format)."""
        decision = self.message.get("decision", {})
        example: dict[str, Any] = {
            "id": f"agent-{self.message.get('msg') or self.entry}",
            "channel": self.channel,
            "lang": decision.get("language") or "",
            "text": self.message.get("text", ""),
            "expect": {"group": self.group, "priority": f"P{self.priority}"},
            "note": f"{self.kind} by {self.by}{f' ({self.reason})' if self.reason else ''}; "
            f"routed {decision.get('group')} {decision.get('priority')}",
        }
        if self.message.get("subject"):
            example["subject"] = self.message["subject"]
        return example


class Labels:
    """The ``labels`` streams (one per shard: the conversation script of each writes its own), read
    oldest first across the shards."""

    def __init__(self, client: aioredis.Redis, shards: Shards) -> None:
        self._client = client
        self._shards = shards

    async def corrections(self, *, batch: int = 1000) -> AsyncIterator[Correction]:
        """Every correction, by time (stream id) over all shards: to the millisecond, since two
        shards' streams number their entries each on its own (and on its node's clock)."""
        parts = [[c async for c in self._of_shard(keys.labels, batch)] for keys in self._shards.shard]
        for correction in heapq.merge(*parts, key=lambda c: entry_order(c.entry)):
            yield correction

    async def _of_shard(self, stream: str, batch: int) -> AsyncIterator[Correction]:
        after = "-"
        while True:
            entries = await self._client.xrange(stream, min=after, max="+", count=batch)
            for raw_id, fields in entries:
                f = {k.decode(): v.decode() for k, v in fields.items()}
                yield Correction(
                    entry=raw_id.decode(),
                    kind=f["kind"],
                    conversation=f["conv"],
                    channel=f["channel"],
                    group=f["group"],
                    priority=int(f["prio"]),
                    by=f["by"],
                    reason=f.get("reason", ""),
                    message=json.loads(f["message"]),
                )
            if len(entries) < batch:
                return
            after = "(" + entries[-1][0].decode()

    async def examples(self) -> list[dict[str, Any]]:
        """One example per corrected or closed message, with its latest labels, in the order of
        first label. A message closed as spam is left out (and drops an earlier label of it): it
        says nothing about where support messages belong."""
        latest: dict[str, dict[str, Any]] = {}
        async for correction in self.corrections():
            example = correction.example()
            if correction.kind == "close" and correction.reason == "spam":
                latest.pop(example["id"], None)
                continue
            latest[example["id"]] = example  # a dict keeps the first insertion's place
        return list(latest.values())
