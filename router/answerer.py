"""The answerer: answers to users from the knowledge base, off the hot path (issue 19).

Workers route as before. This service reads the ``created`` events of the group event streams
(``events:{group}``, every group of every shard) through a consumer group of its own, and for a
new conversation that ``[answers]`` makes eligible asks the knowledge base (kb/, in a thread:
tens of ms an embedding). What it does then depends on ``[answers] mode``:

* ``live``: a sure answer is sent with two buttons, "this solved it" (``kb:<answer id>:solved``)
  and "talk to a person" (``kb:<answer id>:human``), by lua/answer.lua in one step: only if the
  conversation is still unclaimed with its one message (an agent who claimed first wins), it
  leaves its queue, becomes ``answered``, and gets the answer's history entry, outbox item and
  record. A further message (route.lua) or "talk to a person" puts it back in its queue at once;
  "this solved it" closes it; silence for ``assume_resolved_after_s`` closes it too (the sweeper).
* ``shadow``: the same decision, nothing sent nor held: a would-be answer is recorded in the
  capped stream ``answers:shadow`` and counted (``switchboard kb shadow``).

Every outcome is counted once per answer: confirmed, assumed, reopened, human (common.lua
``answer_outcome``: the first outcome stands, except an ``assumed`` one, which a later message or
press replaces). A crash at any point loses nothing and answers nothing twice: events and presses
are acknowledged after their script ran, and the scripts do nothing the second time (the
conversation's ``kb`` field, the answer's outcome).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from router.actions import ActionReader, Actions, Pressed
from router.config import AnswerSettings, Settings
from router.conversations import first_inbound
from router.errors import ConfigError, NotFound
from router.keys import ANSWER_GROUP, Keys, Shards, entry_order
from router.lifecycle import cancel_all, keep_running
from router.model import Button, new_id
from router.scripts import Scripts

if TYPE_CHECKING:
    import kb

# kb/ (bm25s, numpy) is imported where an answerer is built, not by the console's shadow view.

log = logging.getLogger("switchboard.answerer")

#: Findings and tags that need a person: a pasted secret, a transaction id or an address.
SENSITIVE = frozenset({"secret-leak", "txid", "address"})
SENSITIVE_KINDS = frozenset({"seed_phrase", "private_key", "txid", "btc_address", "eth_address", "tron_address"})
CHOICES = ("solved", "human")
COUNTS = ("read", "eligible", "sent", "declined", "taken", "shadow", "skipped", "trimmed", "failed", "presses")


class AnswererSource(Protocol):
    """Where the knowledge base's answerer comes from: the version in force and its answerer
    (``KnowledgeBaseStore.answerer``, router/kbstore.py)."""

    async def answerer(self) -> tuple[int | None, kb.Answerer]: ...


def service(rt: Any, settings: Settings) -> Answerer | None:
    """The answerer ``switchboard run`` starts, or None (``[answers] mode = "off"``). A knowledge
    base with a problem is a configuration error, every problem listed."""
    if settings.answers.mode == "off":
        return None
    import kb
    from router.kb_cli import rule_groups

    # The knowledge base in force until one is published, and the calibration's example questions
    # (they name articles): checked now (no embedding), not at the first answer, so that a
    # knowledge base without its own calibration fails at start. A published version was checked
    # when it was published.
    try:
        base = kb.load_dir(settings.kb.directory or kb.default_dir(), rule_groups(settings))
    except kb.KBError as exc:
        raise ConfigError("kb.directory: " + "; ".join(exc.errors)) from None
    path = settings.kb.calibration or kb.calibration_file()
    try:
        kb.load_question_files(kb.Calibration.load(path).examples_paths(path), base)
    except kb.KBError as exc:
        raise ConfigError("kb.calibration: " + "; ".join(exc.errors[:5])) from None
    return Answerer(rt, settings.answers, rt.kb)


def eligibility(message: dict[str, Any], settings: AnswerSettings) -> str | None:
    """Why the first message of a conversation may not be answered by itself, or None when it may:
    ``p1``, ``sensitive`` (a secret, a transaction id or an address was found), ``not-configured``
    (neither its group nor a tag is one ``[answers]`` names)."""
    decision = message.get("decision") or {}
    tags = set(decision.get("tags") or ())
    if decision.get("priority") == "P1":
        return "p1"
    kinds = {r.get("kind") for r in decision.get("redactions") or ()}
    if tags & SENSITIVE or kinds & SENSITIVE_KINDS:
        return "sensitive"
    if decision.get("group") not in settings.groups and not tags & set(settings.tags):
        return "not-configured"
    return None


def button_data(answer_id: str, choice: str) -> str:
    return f"kb:{answer_id}:{choice}"


def parse_button(data: str) -> tuple[str, str] | None:
    """(answer id, choice) of an answer's button data, or None for another consumer's button."""
    head, _, rest = data.partition(":")
    answer_id, _, choice = rest.rpartition(":")
    if head != "kb" or not answer_id or choice not in CHOICES:
        return None
    return answer_id, choice


class Event(NamedTuple):
    shard: int
    stream: str
    group: str
    entry: str
    type: str  # "" for an entry the stream's cap deleted while it was pending
    conv: str
    data: dict[str, Any]


class Answerer:
    """A ``Service``: ``switchboard run`` starts one per process when ``[answers] mode`` is not
    ``off``; processes share the work through the consumer groups (``answerer``)."""

    name = "answerer"

    def __init__(
        self,
        rt: Any,  # router.runtime.Runtime (not imported: the runtime builds the services)
        settings: AnswerSettings,
        source: AnswererSource,
        *,
        clock: Callable[[], float] = time.time,
        block_ms: int = 1000,
        claim_idle_ms: int = 30_000,
        consumer: str | None = None,
    ) -> None:
        self._rt = rt
        self._client: aioredis.Redis = rt.client
        self._shards: Shards = rt.shards
        self._scripts: Scripts = rt.scripts
        self.settings = settings
        self._source = source
        self._clock = clock
        self._block_ms = block_ms
        self._claim_idle_ms = claim_idle_ms
        self._consumer = consumer or rt.instance
        self._presses: ActionReader = Actions(rt.client, rt.shards, rt.scripts).reader(
            ANSWER_GROUP, self._consumer, claim_idle_ms=claim_idle_ms
        )
        self._groups: list[str] = []
        self._streams: set[str] = set()
        self._recovered = False
        self._next_claim = 0.0
        self._sla_ms = {k[1:]: v * 1000 for k, v in rt.settings.conversations.sla_s.items()}
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.counts = dict.fromkeys(COUNTS, 0)

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        await self.follow_groups()
        await self._presses.start()
        loops = [(self.step, "answerer"), (self.press_step, "answerer presses"), (self.sweep_step, "answerer sweep")]
        self._tasks = [
            asyncio.create_task(keep_running(step, self._stopping, what=what, retry_on=(RedisError, OSError)))
            for step, what in loops
        ]

    async def close(self) -> None:
        self._stopping.set()
        await cancel_all(self._tasks)

    def health(self) -> dict[str, Any]:
        return {
            "connected": bool(self._tasks) and not any(t.done() for t in self._tasks),
            "detail": f"{self.settings.mode}: " + ", ".join(f"{k} {v}" for k, v in self.counts.items()),
            "mode": self.settings.mode,
            **self.counts,
        }

    # -- new conversations -----------------------------------------------------------------------
    async def follow_groups(self) -> None:
        """Creates the consumer group on the event stream of every group of the rule set in force
        (a group published since is taken up at its next step). A group made now starts at the
        stream's end: turning the answerer on never answers conversations that waited before."""
        self._groups = sorted((await self._rt.engine()).groups)
        for keys in self._shards.shard:
            for group in self._groups:
                stream = keys.events(group)
                if stream in self._streams:
                    continue
                try:
                    await self._client.xgroup_create(stream, ANSWER_GROUP, id="$", mkstream=True)
                except ResponseError as exc:
                    if "BUSYGROUP" not in str(exc):
                        raise
                self._streams.add(stream)

    async def step(self) -> None:
        """Reads new events (after a start, this consumer's own pending ones; then those a dead
        consumer left ``claim_idle_ms``), handles each, and acknowledges it."""
        await self.follow_groups()
        for event in await self.read():
            try:
                await self.handle(event)
            except (RedisError, OSError):
                raise  # keep_running retries; the event stays pending and is read again
            except Exception:
                # Anything else would fail again on every read: the conversation stays in its
                # queue for an agent, as without the answerer.
                log.exception("answering conversation %s failed; left to the agents", event.conv)
                self.counts["failed"] += 1
            await self._client.xack(event.stream, ANSWER_GROUP, event.entry)

    async def read(self) -> list[Event]:
        if not self._recovered:
            self._recovered = True
            found = await self._read_all("0", None)
            if found:
                return found
        claimed: list[Event] = []
        # A dead consumer's events, looked for twice per claim_idle_ms, not on every read.
        if time.monotonic() >= self._next_claim:
            self._next_claim = time.monotonic() + self._claim_idle_ms / 2000
            claimed = await self._claim()
        return claimed or await self._read_all(">", self._block_ms)

    async def _claim(self) -> list[Event]:
        claimed: list[Event] = []
        for shard, keys in enumerate(self._shards.shard):
            for group in self._groups:
                stream = keys.events(group)
                reply = await self._client.xautoclaim(
                    stream, ANSWER_GROUP, self._consumer, self._claim_idle_ms, "0-0", count=100
                )
                claimed += _events(shard, stream, group, reply[1])
        return claimed

    async def _read_all(self, start: str, block_ms: int | None) -> list[Event]:
        """One XREADGROUP per shard over its groups' streams (one slot per shard), all at once."""

        async def shard_read(shard: int, keys: Keys) -> list[Event]:
            group_of = {keys.events(g): g for g in self._groups}
            streams = dict.fromkeys(group_of, start)
            reply = await self._client.xreadgroup(ANSWER_GROUP, self._consumer, streams, count=100, block=block_ms)
            return [
                e
                for stream, entries in reply or []
                for e in _events(shard, stream.decode(), group_of[stream.decode()], entries)
            ]

        parts = await asyncio.gather(*(shard_read(i, keys) for i, keys in enumerate(self._shards.shard)))
        return [e for part in parts for e in part]

    async def handle(self, event: Event) -> str:
        """The answerer's decision on one event; returns what it did (for logs and tests)."""
        if not event.type:
            # The stream's cap (~10,000 events per group and shard) deleted it before it was
            # handled: an answerer stopped that long. Its conversation waits for an agent.
            log.warning("event %s of %s was trimmed before the answerer read it", event.entry, event.stream)
            self.counts["trimmed"] += 1
            return "trimmed"
        # Only the router's creations: a 'created' with 'from' is a transfer.
        if event.type != "created" or "from" in event.data:
            return "ignored"
        self.counts["read"] += 1
        convs = self._rt.conversations
        message = first_inbound(await convs.history(event.conv, count=5))
        if message is None:
            self.counts["skipped"] += 1
            return "skipped"
        why = eligibility(message, self.settings)
        if why is not None:
            self.counts["skipped"] += 1
            return why
        self.counts["eligible"] += 1
        decision = message.get("decision") or {}
        lang = decision.get("language") or (message.get("sender") or {}).get("language") or "en"
        version, answerer = await self._source.answerer()
        text = str(message.get("text") or "")
        if message.get("subject"):
            text = f"{message['subject']}\n{text}"
        answer = await asyncio.to_thread(answerer.answer, text, lang, p1=False, sensitive=False)
        kb_version = str(version) if version is not None else answerer.kb.digest
        keys = self._shards.conv_keys(event.conv)
        sent = answer.send
        args: dict[str, Any] = {"conv": event.conv, "group": event.group, "lang": lang}
        if self.settings.mode == "shadow":
            if sent is not None:
                args |= _record(sent, lang, answer.gap, kb_version) | {"shadow_max": self.settings.shadow_max}
            result = await self._answer_op(keys, "shadow", args)
            self.counts["shadow"] += result == "recorded"
            return "shadow"
        if sent is None:
            result = await self._answer_op(keys, "decline", args | {"reason": answer.reason.value})
            self.counts["declined"] += result == "declined"
            return "declined"
        answer_id = new_id()
        solved, human = self.settings.button_labels(sent.variant.lang)
        item = {
            "id": new_id(),
            "text": f"{sent.variant.title}\n\n{sent.variant.body}",
            "author": "kb",
            "auto": True,
            "created_at": self._clock(),
            "buttons": [
                {"label": solved, "data": button_data(answer_id, "solved")},
                {"label": human, "data": button_data(answer_id, "human")},
            ],
        }
        # The buttons as the outbox reads them: a bad label fails here, not in the adapter.
        for label, data in ((solved, button_data(answer_id, "solved")), (human, button_data(answer_id, "human"))):
            Button(label=label, data=data)
        record = {"id": answer_id, **_record(sent, lang, answer.gap, kb_version)}
        result = await self._answer_op(keys, "answer", args | {"item": item, "record": record})
        if result == "sent":
            self.counts["sent"] += 1
            log.info("answered %s with %s (%s)", event.conv, sent.article.id, sent.variant.lang)
        elif result == "taken":
            self.counts["taken"] += 1
        return result

    async def _answer_op(self, keys: Keys, op: str, args: dict[str, Any]) -> str:
        result = await self._scripts.answer(
            args=[keys.prefix, int(self._clock() * 1000), op, json.dumps(args, ensure_ascii=False)]
        )
        return result.decode() if isinstance(result, bytes) else str(result)

    # -- presses ---------------------------------------------------------------------------------
    async def press_step(self) -> None:
        """Reads presses (its own consumer group on the press streams) and records each one that
        is an answer's button; acknowledges them all (other consumers read their own group)."""
        await self._presses.step(self.handle_press, block_ms=self._block_ms)

    async def handle_press(self, pressed: Pressed) -> str:
        press = pressed.press
        parsed = parse_button(press.data)
        if parsed is None:
            return "ignored"
        self.counts["presses"] += 1
        answer_id, choice = parsed
        ref = f"{press.channel}:{press.account}:{press.conversation_key}"
        args = {"ref": ref, "answer": answer_id, "choice": choice, "user": press.user, "sla_ms": self._sla_ms}
        return await self._answer_op(self._shards.shard[pressed.shard], "press", args)

    # -- assumed resolved ------------------------------------------------------------------------
    async def sweep_step(self) -> None:
        await self.sweep()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), self.settings.sweep_every_s)

    async def sweep(self, batch: int = 100) -> int:
        """Closes, as assumed resolved, every answered conversation silent for
        ``assume_resolved_after_s`` (by the clock) in each shard whose sweep lock this process
        holds or gets; returns how many."""
        now_ms = int(self._clock() * 1000)
        args = {
            "cutoff": now_ms - self.settings.assume_resolved_after_s * 1000,
            "batch": batch,
            "owner": self._consumer,
            "lock_ms": int(self.settings.sweep_every_s * 2000),
        }
        closed = 0
        for keys in self._shards.shard:
            while True:
                n, examined = await self._scripts.answer(args=[keys.prefix, now_ms, "sweep", json.dumps(args)])
                closed += max(n, 0)
                if n < 0 or examined < batch:
                    break
        return closed


async def shadow_answers(rt: Any, limit: int = 50) -> list[dict[str, Any]]:
    """The newest ``limit`` would-be answers of shadow mode (every shard's ``answers:shadow``,
    newest first), each with what became of its conversation since: its status and group now
    (the group it was closed in, once closed), and whether an agent replied."""
    pipe = rt.client.pipeline(transaction=False)
    for keys in rt.shards.shard:
        pipe.xrevrange(keys.answers_shadow, count=limit)
    entries = [(entry_order(eid), f) for part in await pipe.execute() for eid, f in part]
    entries.sort(key=lambda e: e[0], reverse=True)
    out = []
    for _, fields in entries[:limit]:
        f = {k.decode(): v.decode() for k, v in fields.items()}
        cid = f["conv"]
        row: dict[str, Any] = {
            "conversation": cid,
            "group": f["group"],
            "article": f["article"],
            "lang": f["lang"],
            "score": float(f["score"]),
            "gap": float(f["gap"]),
            "kb": f["kb"],
            "at_ms": int(f["at"]),
            "status": "gone",
            "group_now": None,
            "agent_replied": False,
        }
        with contextlib.suppress(NotFound):
            conv = await rt.conversations.get(cid)
            history = await rt.conversations.history(cid)
            row["status"], row["group_now"] = conv.status, conv.group
            row["agent_replied"] = any(h.type == "outbound" and not h.data.get("auto") for h in history)
        out.append(row)
    return out


def _record(sent: kb.Suggestion, lang: str, gap: float, version: str) -> dict[str, Any]:
    """What an answer's record, history entry and shadow entry say: ``lang`` the user's (the
    counters' language), ``variant`` the language of the article sent."""
    return {
        "article": sent.article.id,
        "lang": lang,
        "variant": sent.variant.lang,
        "score": round(sent.score, 4),
        "gap": round(gap, 4),
        "kb": version,
    }


def _events(shard: int, stream: str, group: str, entries: Sequence[Any]) -> list[Event]:
    out = []
    for entry_id, fields in entries:
        f = {k.decode(): v.decode() for k, v in (fields or {}).items()}
        data = json.loads(f.get("data") or "{}")
        out.append(Event(shard, stream, group, entry_id.decode(), f.get("type", ""), f.get("conv", ""), data))
    return out
