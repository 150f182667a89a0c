"""Satisfaction surveys (CSAT) on the conversation's own channel, after close (docs/csat.md).

Closing a conversation (conv.lua's ``close``, an agent's: ``[csat]`` on, a reason and a group that
survey) marks it ``csat_state = due`` and puts it on its shard's ``csat:due`` (conversation id ->
when the survey is due, ms). The knowledge base's closes (lua/answer.lua) schedule nothing.

This service, in whichever process holds the shard's survey lease (``lease:csat``, fenced as the
SLA timer's), reads the due ids every ``tick_s`` and sends each survey with lua/csat.lua's
``send``: "How did we do?" in the conversation's language with five buttons (data
``csat:{conversation}:{survey}:{1-5}``), on its channel and thread, as any reply goes (the outbox).
The due entry, the checks (still closed, the user not asked within ``cooldown_days``) and the send
are one script call: a crash before it sends nothing, after it nothing again; a paused holder's
call is refused by its fence.

Presses come through the press streams (router/actions.py) in this service's consumer group
(``csat``): lua/csat.lua's ``press`` records the first one as a ``csat`` history entry (survey,
rating, comment null, at, agent, group, channel, language) and in the counters; a later press of the
same survey is ignored silently (counted ``csat:late``). A rating at or under
``follow_up_at_most`` sends "What could we have done better?"; the user's next message within
``comment_window_s`` is the comment (route.lua): a second ``csat`` entry of the same survey, with
the comment — a reader keeps one row per survey, the last entry.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from redis.exceptions import ResponseError

from router.actions import ActionReader, Actions, Pressed
from router.config import CsatSettings
from router.errors import LeaseLost
from router.keys import CSAT_GROUP, Keys
from router.leases import Clock, WallClock
from router.lifecycle import cancel_all, keep_running, wait_or_stop
from router.model import Button, new_id
from router.redis import TRANSIENT_ERRORS
from router.runtime import Runtime
from router.scripts import argv, run_many
from router.shardrounds import ShardRounds

log = logging.getLogger("switchboard.csat")

#: The survey lease's name under each shard's prefix (lease:csat), checked by lua/csat.lua's ``send``.
LEASE = "csat"
RATINGS = range(1, 6)
COUNTS = ("sent", "skipped", "presses", "rated", "late", "ignored")


def button_data(conv_id: str, survey: str, rating: int) -> str:
    return f"csat:{conv_id}:{survey}:{rating}"


def parse_button(data: str) -> tuple[str, str, int] | None:
    """(conversation id, survey id, rating) of a survey's button data, or None for another
    consumer's button (or a forged one)."""
    parts = data.split(":")
    if len(parts) != 4 or parts[0] != "csat" or not parts[1].isdigit() or not parts[2]:
        return None
    if parts[3] not in {str(r) for r in RATINGS}:
        return None
    return parts[1], parts[2], int(parts[3])


def service(rt: Runtime) -> CsatService | None:
    """The survey service ``switchboard run`` starts, or None (``[csat] enabled = false``)."""
    return CsatService(rt) if rt.settings.csat.enabled else None


class CsatService:
    """A ``Service``: every ``tick_s``, sends the due surveys of each shard whose lease it holds
    (or takes); reads presses all the while. ``clock`` judges time (the leases, what is due, what
    the scripts record): a fake one in tests, which call ``tick`` and ``press_step`` themselves."""

    name = "csat"

    def __init__(
        self,
        rt: Runtime,
        *,
        owner: str | None = None,
        clock: Clock | None = None,
        settings: CsatSettings | None = None,
        block_ms: int = 1000,
        claim_idle_ms: int = 30_000,
    ) -> None:
        self.clock = clock or WallClock()
        self.settings = settings or rt.settings.csat
        self._client = rt.client
        self._shards = rt.shards
        self._scripts = rt.scripts
        self.owner = owner or rt.instance
        self.rounds = ShardRounds(rt, LEASE, self.owner, self.clock)
        self.leases = self.rounds.leases
        self._block_ms = block_ms
        self._presses: ActionReader = Actions(rt.client, rt.shards, rt.scripts).reader(
            CSAT_GROUP, self.owner, claim_idle_ms=claim_idle_ms
        )
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.counts = dict.fromkeys(COUNTS, 0)
        self.last_error = ""

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        self._stopping.clear()
        await self._presses.start()

        async def ticks() -> None:
            await self.tick()
            await wait_or_stop(self._stopping, self.settings.tick_s)

        async def failed(exc: BaseException) -> None:
            self.last_error = str(exc) or type(exc).__name__

        self._tasks = [
            asyncio.create_task(
                keep_running(step, self._stopping, what=what, retry_on=TRANSIENT_ERRORS, on_error=failed)
            )
            for step, what in ((ticks, "CSAT surveys"), (self.press_step, "CSAT presses"))
        ]

    async def close(self) -> None:
        self._stopping.set()
        await cancel_all(self._tasks)
        self._tasks = []
        await self.rounds.release()  # a standby takes the shards over at its next tick

    def health(self) -> dict[str, Any]:
        held = self.rounds.held()
        return {
            "connected": not self.last_error and bool(self._tasks) and not any(t.done() for t in self._tasks),
            "detail": self.last_error
            or f"survey lease of shard(s) {held or 'none'}; " + ", ".join(f"{k} {v}" for k, v in self.counts.items()),
            "held": held,
            **self.counts,
        }

    # -- sending ---------------------------------------------------------------------------------
    async def tick(self) -> int:
        """One round over the shards: keep or take each survey lease, then send what is due in the
        shards held. Returns the surveys sent."""
        return await self.rounds.round(lambda _, keys, fence: self._shard(keys, fence))

    async def _shard(self, keys: Keys, fence: int) -> int:
        now = self.clock.now_ms()
        found = await self._client.zrangebyscore(keys.csat_due, "-inf", now, 0, self.settings.batch)
        due = [raw.decode() for raw in found]
        if not due:
            return 0
        pipe = self._client.pipeline(transaction=False)
        for cid in due:
            pipe.hget(keys.conv(cid), "language")
        languages = await pipe.execute()
        calls = []
        for cid, lang in zip(due, languages, strict=True):
            survey = new_id()
            args = {
                "conv": cid,
                "fence": fence,
                "survey": survey,
                "item": self._item(self.settings.text("question", _lang(lang)), now, cid, survey),
                "cooldown_ms": round(self.settings.cooldown_days * 86_400_000),
            }
            calls.append(argv(keys.prefix, "send", json.dumps(args, ensure_ascii=False), at=now))
        results = await run_many(self._client, self._scripts.csat, calls, raise_on_error=False)
        sent = 0
        for cid, result in zip(due, results, strict=True):
            if isinstance(result, Exception):
                if str(result).startswith("FENCED"):
                    raise LeaseLost(str(result))
                # Left on csat:due (nothing is lost): tried again at the next tick.
                log.error("CSAT survey of conversation %s: %s", cid, result)
                continue
            outcome = result.decode() if isinstance(result, bytes) else str(result)
            if outcome == "sent":
                sent += 1
            elif outcome in ("reopened", "cooldown"):
                self.counts["skipped"] += 1
        self.counts["sent"] += sent
        return sent

    def _item(self, text: str, now_ms: int, cid: str | None = None, survey: str | None = None) -> dict[str, Any]:
        """An outbox item (the script adds its address); with the five rating buttons when it is
        the question (``cid`` and ``survey``)."""
        item: dict[str, Any] = {"id": new_id(), "text": text, "author": "csat", "auto": True}
        item["created_at"] = now_ms / 1000
        if cid is not None and survey is not None:
            # Built as the outbox reads them: a bad button fails here, not in the adapter.
            item["buttons"] = [
                {"label": b.label, "data": b.data}
                for b in (Button(label=str(r), data=button_data(cid, survey, r)) for r in RATINGS)
            ]
        return item

    # -- presses ---------------------------------------------------------------------------------
    async def press_step(self) -> None:
        """Reads presses (the ``csat`` consumer group on the press streams), records each one that
        is a survey's button, and acknowledges them all (other consumers read their own group)."""
        await self._presses.step(self.handle_press, block_ms=self._block_ms)

    async def handle_press(self, pressed: Pressed) -> str:
        """What a press did: ``rated``, ``follow-up`` (rated, and the follow-up question sent),
        ``late`` (the survey was answered before: the first press wins), ``foreign`` (another
        member of a group chat), ``unknown`` (no such survey), ``ignored`` (not a survey's)."""
        press = pressed.press
        parsed = parse_button(press.data)
        if parsed is None:
            return "ignored"
        self.counts["presses"] += 1
        cid, survey, rating = parsed
        keys = self._shards.conv_keys(cid)
        now = self.clock.now_ms()
        args: dict[str, Any] = {
            "conv": cid,
            "survey": survey,
            "rating": rating,
            "user": press.user,
            "window_ms": self.settings.comment_window_s * 1000,
        }
        try:
            if rating <= self.settings.follow_up_at_most:
                lang = _lang(await self._client.hget(keys.conv(cid), "language"))
                args["follow_up"] = self._item(self.settings.text("follow_up", lang), now)
            result = await self._scripts.csat(
                args=argv(keys.prefix, "press", json.dumps(args, ensure_ascii=False), at=now)
            )
        except ResponseError as exc:
            if isinstance(exc, TRANSIENT_ERRORS):
                raise  # a failover's MOVED, CLUSTERDOWN ...: the press stays pending, read again
            # Not transient (a script error, a key of another type): it would fail again on every
            # read. The press stays in the stream (acknowledging deletes nothing) and is said here.
            log.error("CSAT press %s on conversation %s not recorded: %s", press.id, cid, exc)
            self.counts["ignored"] += 1
            return "failed"
        outcome = result.decode() if isinstance(result, bytes) else str(result)
        if outcome in ("rated", "follow-up"):
            self.counts["rated"] += 1
        elif outcome == "late":
            self.counts["late"] += 1
        else:
            self.counts["ignored"] += 1
        return outcome


def _lang(raw: bytes | str | None) -> str:
    if isinstance(raw, bytes):
        raw = raw.decode()
    return raw or "en"
