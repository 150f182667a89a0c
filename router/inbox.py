"""The append API every adapter uses: one inbox stream, idempotent on (channel, account, platform id)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from router import durability
from router.cluster import at_slot
from router.config import InboxSettings
from router.errors import AppendRefused, InboxFull, RedisFull
from router.keys import ROUTER_GROUP, STREAMS, Keys, Shards
from router.model import Envelope, encode
from router.routing import conversation_ref
from router.scripts import Scripts, argv, run_many
from rules import Precheck, redact_secrets

log = logging.getLogger("switchboard.inbox")
_NOT_SUSPECT = Precheck(False)


#: The ingest precheck of the P1 lane (router/runtime.py): for scrubbed envelopes, whether each
#: looks like a P1 situation, and the triage model's prediction made on the way (carried).
Prechecks = Callable[[Sequence[Envelope]], Awaitable[list[Precheck]]]


@dataclass(frozen=True, slots=True)
class Appended:
    entry_id: str
    duplicate: bool


class Inbox:
    """Appends envelopes to the inbox stream of their conversation's shard (router/keys.py Shards).

    An adapter confirms a message to its platform (update offset, IMAP cursor ...) only after
    ``append`` returned: the append is in Redis (on disk, with ``inbox.durability = "durable"``)
    and a second append of the same platform message returns the first entry's id with
    ``duplicate=True`` instead of adding it again.

    An append that cannot be kept raises an ``AppendRefused`` — ``InboxFull`` (at ``inbox.maxlen``
    and nothing routed to trim), ``RedisFull`` (Redis out of memory), ``NotDurable`` — and the
    adapter confirms nothing and tries again later. Nothing unrouted is ever trimmed, so the
    dedup key of an append that returned always names a message that is in the inbox or routed.

    With ``precheck`` (and ``inbox.p1_lane`` on), a message it suspects of a P1 situation goes to
    its shard's lane stream instead, which the workers read first (lua/append.lua, docs/surge.md).
    The triage model's prediction made by the precheck goes with the envelope (``triage``), unless
    it would take the entry past ``inbox.max_message_bytes``: the router uses it instead of
    predicting again.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        shards: Shards,
        settings: InboxSettings,
        scripts: Scripts | None = None,
        precheck: Prechecks | None = None,
    ) -> None:
        self._client = client
        self._shards = shards
        self._settings = settings
        self._scripts = scripts or Scripts.register(client)
        self._precheck = precheck
        # Per shard, learnt at start from the server holding it (on a cluster, a shard's node).
        self._wait: list[durability.Wait | None] = []
        self._started = False

    async def start(self) -> None:
        """Create the routers' groups and learn how the server makes an append durable (a
        ConfigError when it cannot give ``inbox.durability``)."""
        await self.ensure_group()
        self._wait = [await durability.plan(self._client, self._settings, k.inbox) for k in self._shards.shard]
        self._started = True

    def _args(self, keys: Keys, env: Envelope, checked: Precheck | None) -> list[object]:
        """The append script's arguments for ``env`` (scrubbed); ``checked``: the precheck's
        answer, None with the lane off."""
        cfg = self._settings
        lane = (
            ()
            if checked is None
            else (conversation_ref(env), int(checked.suspect), cfg.lane_maxlen, cfg.lane_order_ttl_s)
        )
        if checked is not None and checked.triage is not None:
            data = encode(msgspec.structs.replace(env, triage=checked.triage))
            if len(data) > cfg.max_message_bytes:  # the prediction must not cost the message
                data = encode(env)
        else:
            data = encode(env)
        return argv(
            keys.prefix,
            f"{env.channel}:{env.account}:{env.platform_id}",
            cfg.dedup_ttl_s,
            cfg.maxlen,
            data,
            env.channel,
            ROUTER_GROUP,
            *lane,
        )

    async def append(self, env: Envelope) -> Appended:
        [appended] = await self.append_many([env])
        return appended

    async def append_many(self, envs: Sequence[Envelope]) -> list[Appended]:
        """Append a burst in one round trip; each envelope is still deduplicated on its own.

        Raises ``AppendRefused`` when any of them was refused (after every one was tried: those
        appended are deduplicated when the burst is sent again) or the burst was not made durable.
        A burst over several shards is one round trip per shard, at once.
        """
        if not self._started:
            await self.start()
        envs = [scrubbed(env) for env in envs]
        # With the lane on, every append writes its conversation's marker, suspect or not.
        checked: list[Precheck | None] = [None if self._settings.p1_lane == "off" else _NOT_SUSPECT] * len(envs)
        if self._precheck is not None and self._settings.p1_lane != "off":
            checked = list(await self._precheck(envs))
        where = [self._shards.of_key(env.channel, env.account, env.conversation_key) for env in envs]
        by_shard: dict[int, list[int]] = {}
        for i, shard in enumerate(where):
            by_shard.setdefault(shard, []).append(i)
        sent = await asyncio.gather(
            *(self._append_shard(n, [(envs[i], checked[i]) for i in at]) for n, at in by_shard.items())
        )
        results: list[Any] = [None] * len(envs)
        for at, (got, _) in zip(by_shard.values(), sent, strict=True):
            for i, result in zip(at, got, strict=True):
                results[i] = result
        failed = [i for i, r in enumerate(results) if isinstance(r, Exception) or r[0] == -1]
        if failed:
            first = results[failed[0]]
            if isinstance(first, Exception):
                exc = await self._refusal(first, self._shards.shard[where[failed[0]]])
            else:
                exc = InboxFull(_str(first[1]))
            if isinstance(exc, AppendRefused):
                log.warning("inbox append refused for %d of %d messages: %s", len(failed), len(envs), exc)
            raise exc
        for shard, (_, wait_reply) in zip(by_shard, sent, strict=True):
            wait = self._wait[shard]
            if wait is not None:
                wait.check(wait_reply)
        return [Appended(_str(entry), status == 0) for status, entry in results]

    async def _append_shard(
        self, shard: int, envs: Sequence[tuple[Envelope, Precheck | None]]
    ) -> tuple[list[Any], Any]:
        """The append script's results for ``envs`` (each with the precheck's answer) of one
        shard, and the reply of the command that waits for their durability (None when there is
        none)."""
        keys, wait = self._shards.shard[shard], self._wait[shard]
        calls = [self._args(keys, env, checked) for env, checked in envs]
        then = wait.command if wait is not None else ()
        results = await run_many(self._client, self._scripts.append, calls, raise_on_error=False, then=then)
        return results, results.pop() if wait is not None else None

    async def _refusal(self, exc: Exception, keys: Keys) -> Exception:
        """A script's error in ``keys``' shard as the refusal it is (Redis out of memory), else as
        it came."""
        if "OOM" not in str(exc):
            return exc
        try:
            node = at_slot(self._client, keys.inbox)
            limit = (await self._client.config_get("maxmemory", **node)).get("maxmemory", "?")
        except ResponseError:  # managed services may refuse CONFIG
            limit = "?"
        return RedisFull(
            f"Redis is out of memory (maxmemory {_str(limit)} bytes, policy noeviction): appends are "
            "refused until memory is freed or maxmemory is raised (redis.embedded_maxmemory for the "
            f"embedded server); {exc}"
        )

    async def unreadable(self, source: str, platform_id: str, reason: str, original: dict[str, Any]) -> bool:
        """Keep what a channel received but cannot read (an update or event its client library
        refuses) in the dead-letter stream, with the reason and its JSON, so that it neither blocks
        what comes after it nor is lost: ``switchboard dead list`` shows it. Once per
        ``platform_id`` of ``source`` within the dedup TTL (False: kept before), as an append.

        Its secrets are masked first, as in an envelope (it holds a person's words): each string
        on its own (masking the serialised text could take its quotes with a phrase). Not an
        envelope, so never retried: an operator reads it and drops it."""
        text = json.dumps(_masked(original), ensure_ascii=False)
        keys = self._shards.shard[0]  # where `switchboard dead list` reads (a shard's keys share one slot)
        reason = f"{source}: unreadable: {reason}"[:2000]
        args = argv(keys.prefix, f"{source}:{platform_id}", self._settings.dedup_ttl_s, reason, text)
        return bool(await self._scripts.unreadable(args=args))

    async def ensure_group(self) -> None:
        """Create the routers' consumer groups (and the streams: the inbox, the P1 lane) of every
        shard if missing."""
        for keys in self._shards.shard:
            for stream in STREAMS:
                await ensure_group(self._client, keys.stream(stream), ROUTER_GROUP)


def _masked(value: Any) -> Any:
    """A JSON value with every string masked (``redact_secrets``), keys and structure kept."""
    if isinstance(value, str):
        return redact_secrets(value)
    if isinstance(value, dict):
        return {k: _masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v) for v in value]
    return value


_IDENTIFIER = re.compile(r"(^|_)ids?$|references|reply_to")


def scrubbed(env: Envelope) -> Envelope:
    """``env`` with every seed phrase and private key masked in each field a person wrote.

    Done before the first write: what reaches Redis, and so its AOF and RDB files, never holds a
    pasted secret in clear (docs/security.md). The rules still see that one was there: they read
    the ``[redacted:KIND]`` marker as a finding of that kind (rules/detectors.py). Platform ids
    and the ``meta`` entries that are identifiers (``*id``, references) are left alone: masking
    a 64-hex Message-ID would break the thread; the rest of ``meta`` (an e-mail's subject, the
    whole body, names) is masked like the text.
    """
    sender = env.sender
    name, handle = redact_secrets(sender.name), redact_secrets(sender.handle)
    changes: dict[str, object] = {}
    if (text := redact_secrets(env.text)) != env.text:
        changes["text"] = text
    if env.subject and (subject := redact_secrets(env.subject)) != env.subject:
        changes["subject"] = subject
    if name != sender.name or handle != sender.handle:
        changes["sender"] = msgspec.structs.replace(sender, name=name, handle=handle)
    if env.attachments:
        names = [redact_secrets(a.name) for a in env.attachments]
        if any(n != a.name for n, a in zip(names, env.attachments, strict=True)):
            changes["attachments"] = tuple(
                msgspec.structs.replace(a, name=n) for n, a in zip(names, env.attachments, strict=True)
            )
    meta = {k: v if _IDENTIFIER.search(k) else redact_secrets(v) for k, v in env.meta.items()}
    if meta != env.meta:
        changes["meta"] = meta
    if env.triage is not None:
        changes["triage"] = None  # only the inbox's own precheck says what the model predicted
    return msgspec.structs.replace(env, **changes) if changes else env


async def ensure_group(client: aioredis.Redis, stream: str, group: str) -> None:
    try:
        await client.xgroup_create(stream, group, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def _str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
