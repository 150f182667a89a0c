"""The reviewer: a second opinion on new conversations the triage model was unsure of (issue 15).

Off the hot path. Workers route with the rules and the fastText model as before; this service
reads the group event streams (``events:{group}``) for conversations the router created, and for
each one that no rule routed and whose fastText group confidence is under ``review_below`` asks the
semantic model (rules/semantic.py, ~0.1 s an embedding, in a thread: the event loop never blocks).
Where the 50/50 ensemble prefers another group with at least ``move_min``, it moves the
conversation, by ``model:review`` with the reason "second opinion", **only if it is still
unclaimed in the group it was read in** (conv.lua checks that in the same step as the move); it
may raise it to P1 (never lowers). Its moves are not labels: the model would learn from itself.

* A surge never waits on it: it runs beside the workers, and a conversation created more than
  ``max_age_s`` ago is skipped (and counted), so a reviewer that fell behind catches up at once.
* Its position in each stream (the cursor) is kept in Redis after every event: a restart neither
  reviews a conversation twice nor misses one created meanwhile.
* One replica at a time runs it, the holder of the deployment's lease ``review``
  (router/leases.py); the others stand by and take over from the cursor when it stops or dies.
* fastText's full probabilities come from asking it again on the stored (masked) text: 50 µs,
  and the trace keeps only its top labels.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError

from router.config import ReviewSettings, RulesSettings, Settings
from router.conversations import first_inbound
from router.errors import ConfigError
from router.events import GroupEvent, GroupEvents
from router.lifecycle import Loop
from rules.intent import IntentModel, ModelError
from rules.semantic import ReviewPolicy, SemanticModel, needs_review, review

log = logging.getLogger("switchboard.review")

BY = "model:review"
REASON = "second opinion"
COUNTS = ("reviewed", "moved", "raised", "kept", "stale", "taken", "skipped")


def load_semantic(rules: RulesSettings, settings: ReviewSettings) -> SemanticModel | None:
    """The semantic model beside ``[rules] model`` (its ``semantic.json``), with the thresholds of
    ``[review]`` where set; None when the review or the model is off."""
    if not settings.enabled or rules.model == "off":
        return None
    try:
        model = SemanticModel.shipped() if rules.model == "shipped" else SemanticModel.load(Path(rules.model))
    except ModelError as exc:
        raise ConfigError(f"review: {exc}") from None
    p = model.policy
    model.policy = ReviewPolicy(
        p.review_below if settings.review_below is None else settings.review_below,
        p.move_min if settings.move_min is None else settings.move_min,
        p.p1_min if settings.p1_min is None else settings.p1_min,
    )
    return model


def service(rt: Any, settings: Settings) -> Reviewer | None:
    """The reviewer ``switchboard run`` starts, or None ([review] or [rules] model off)."""
    semantic = load_semantic(settings.rules, settings.review)
    if semantic is None or rt.model is None:
        return None
    return Reviewer(rt, rt.model, semantic, settings.review)


class Reviewer:
    """A ``Service``: ``switchboard run`` starts one in every replica, and the one that holds the
    deployment's lease ``review`` runs it (they share the cursor); the others stand by and take
    over when it stops or dies. ``instance``: the lease owner, another replica's in tests."""

    name = "review"

    def __init__(
        self,
        rt: Any,  # router.runtime.Runtime (not imported: the runtime builds the services)
        model: IntentModel,
        semantic: SemanticModel,
        settings: ReviewSettings,
        *,
        clock: Callable[[], float] = time.time,
        block_ms: int = 1000,
        instance: str | None = None,
    ) -> None:
        self._rt = rt
        self._instance = instance
        self._model = model
        self._semantic = semantic
        self._max_age_ms = settings.max_age_s * 1000
        self._clock = clock
        self._block_ms = block_ms
        self._events = GroupEvents(rt.client, rt.client, rt.shards)
        self._cursor_key = f"{rt.keys.prefix}review:cursor"
        self._positions: dict[str, str] = {}
        self._groups: set[str] = set()
        self._loop = Loop("review", (RedisError, OSError))
        self.counts = dict.fromkeys(COUNTS, 0)
        self.seconds = 0.0  # spent in the semantic model

    async def start(self) -> None:
        # Where the cursor is now (a first start: the streams' ends), then again each time this
        # replica takes the lease over: the holder in between moved the cursor on.
        await self.resume()
        exclusive = self._rt.exclusive(self.name, self._instance)
        self._loop.start(exclusive.resuming(self.resume, self.step), under=exclusive)

    async def resume(self) -> None:
        """Takes up each group stream where the cursor stored in Redis is (``step`` goes on from there)."""
        engine = await self._rt.engine()
        self._groups = set(engine.groups)  # the model may know groups this rule set has not
        # A stream without a cursor starts at its end: a first start reviews from now on.
        self._positions = await self._events.resume(self._cursor_key, sorted(self._groups))

    async def follow_groups(self) -> None:
        """Takes up the groups of a rule set published since the start, from their streams' start
        (what is older than ``max_age_s`` there is skipped as stale), and stops moving
        conversations to groups it dropped."""
        engine = await self._rt.engine()
        self._groups = set(engine.groups)
        await self._events.follow(self._cursor_key, self._positions, sorted(self._groups))

    async def close(self) -> None:
        await self._loop.close()

    def health(self) -> dict[str, Any]:
        reviewed = self.counts["reviewed"]
        return {
            **self._loop.health(", ".join(f"{k} {v}" for k, v in self.counts.items())),
            **self.counts,
            "ms_per_review": round(1000 * self.seconds / reviewed, 1) if reviewed else None,
        }

    async def step(self) -> None:
        """Reads what came after the cursor (waiting up to ``block_ms``), reviews it in order."""
        await self.follow_groups()
        for event in await self._events.after(self._positions, self._block_ms):
            await self.handle(event)
            self._positions[event.stream] = event.entry
            await self._rt.client.hset(self._cursor_key, event.stream, event.entry)

    async def handle(self, event: GroupEvent) -> None:
        # Only the router's creations: a 'created' with 'from' is a transfer (an agent's or ours).
        if event.type != "created" or "from" in event.data:
            return
        if self._clock() * 1000 - event.at > self._max_age_ms:
            self.counts["stale"] += 1
            return
        convs = self._rt.conversations
        message = first_inbound(await convs.history(event.conv))
        if message is None:
            self.counts["skipped"] += 1
            return
        text, subject = str(message.get("text") or ""), message.get("subject")
        fast = self._model.predict(text, subject)
        engine = await self._rt.engine()
        decision = message.get("decision") or {}
        if not needs_review(fast, self._semantic.policy, engine.hard_routed(decision.get("routed_by"))):
            self.counts["skipped"] += 1
            return
        started = time.perf_counter()
        semantic = await asyncio.to_thread(self._semantic.predict, text, subject)
        self.seconds += time.perf_counter() - started
        self.counts["reviewed"] += 1
        opinion = review(fast, semantic, self._semantic.policy, event.group)
        group = event.group
        if opinion.group is not None and opinion.group in self._groups:
            if not await convs.transfer(event.conv, opinion.group, BY, REASON, review=group):
                self.counts["taken"] += 1
                return
            group = opinion.group
            self.counts["moved"] += 1
            log.info("review moved %s from %s to %s", event.conv, event.group, group)
        # Only a conversation not at P1 already (the router's decision, or an agent's change since):
        # raising one that is would record a change from P1 to P1.
        if (
            opinion.raise_p1
            and (await convs.get(event.conv)).priority != 1
            and await convs.set_priority(event.conv, 1, BY, review=group)
        ):
            self.counts["raised"] += 1
        if group == event.group and not opinion.raise_p1:
            self.counts["kept"] += 1
