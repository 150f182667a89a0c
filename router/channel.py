"""The public API for channel modules: the only ``router`` module that ``adapters/`` imports.

A channel module (``adapters/<channel>``) exposes ``from_config(ctx, section) -> list[Adapter]``
and reaches the core only through the ``ChannelContext`` it is given and the names re-exported
here (the envelope model, the errors, the outbox's failure types, the retry loop). It never holds
the Redis client nor builds a key: its own data goes in its namespaced ``ChannelStore``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from typing import Any

import redis.asyncio as aioredis

from router.actions import Actions, InvalidPress, Press
from router.config import LeaseSettings, SafetyNoticeSettings, WebSettings, config_error, read_secret
from router.errors import AppendRefused, ConfigError, NotFound, SwitchboardError
from router.impostors import Flag, ImpostorGuard
from router.inbox import Appended, Inbox
from router.keys import Keys, Shards
from router.leases import Exclusive
from router.lifecycle import Backoff, Service, keep_running, wait_or_stop
from router.links import PressLinks, load_links
from router.model import (
    Attachment,
    Button,
    Envelope,
    MessageKind,
    OutboxItem,
    Sender,
    decode_outbox,
    encode,
    new_id,
    now,
)
from router.outbox import OutboxConsumer, PermanentFailure, TemporaryFailure
from router.redis import TRANSIENT_ERRORS
from router.scripts import Scripts

__all__ = [
    "TRANSIENT_ERRORS",
    "AppendRefused",
    "Appended",
    "Attachment",
    "Backoff",
    "Button",
    "ChannelContext",
    "ChannelStore",
    "ConfigError",
    "Envelope",
    "Exclusive",
    "Flag",
    "ImpostorGuard",
    "InvalidPress",
    "MessageKind",
    "NotFound",
    "OutboxConsumer",
    "OutboxItem",
    "PermanentFailure",
    "Press",
    "PressLinks",
    "Sender",
    "Service",
    "SwitchboardError",
    "TemporaryFailure",
    "config_error",
    "decode_outbox",
    "encode",
    "keep_running",
    "new_id",
    "now",
    "read_secret",
    "wait_or_stop",
]

log = logging.getLogger("switchboard.actions")

#: A store namespace is one key segment: a channel's name (``email``, ``sandbox`` ...).
_NAMESPACE = re.compile(r"[a-z][a-z0-9_]*")


class ChannelStore:
    """A channel's private data in Redis: strings with an optional TTL, and capped logs.

    Every key lives under ``{prefix}{namespace}:``, so ``store("email").set("mid:support:<id>", …)``
    is the Redis key ``{prefix}email:mid:support:<id>`` (the key layout is in router/keys.py).
    """

    #: The field a log entry's record is kept in (``sandbox:{user}`` streams predate the store).
    LOG_FIELD = "item"

    def __init__(self, client: aioredis.Redis, prefix: str, namespace: str) -> None:
        if not _NAMESPACE.fullmatch(namespace):
            raise ValueError(f"store namespace {namespace!r}: one segment of a-z, 0-9 and _")
        self._client = client
        self._prefix = f"{prefix}{namespace}:"

    def _key(self, key: str) -> str:
        return self._prefix + key

    async def get(self, key: str) -> str | None:
        raw = await self._client.get(self._key(key))
        return raw.decode() if raw is not None else None

    async def get_many(self, keys: Sequence[str]) -> list[str | None]:
        """The values of ``keys`` in one round trip, None where a key is unset."""
        if not keys:
            return []
        values = await self._client.mget([self._key(k) for k in keys])
        return [v.decode() if v is not None else None for v in values]

    async def set(self, key: str, value: str, *, ttl_s: int | None = None) -> None:
        """Set ``key``; with ``ttl_s`` it expires that many seconds later."""
        await self._client.set(self._key(key), value, ex=ttl_s)

    async def delete(self, key: str) -> None:
        await self._client.delete(self._key(key))

    async def log_append(self, key: str, record: str, *, cap: int) -> None:
        """Add ``record`` at the end of the log ``key``, which keeps about its last ``cap`` records."""
        await self._client.xadd(self._key(key), {self.LOG_FIELD: record}, maxlen=cap, approximate=True)

    async def log_read(self, key: str, count: int = 100) -> list[str]:
        """The first ``count`` records of the log ``key``, oldest first."""
        entries = await self._client.xrange(self._key(key), count=count)
        return [fields[self.LOG_FIELD.encode()].decode() for _, fields in entries]

    async def log_tail(self, key: str, count: int = 100) -> list[str]:
        """The last ``count`` records of the log ``key``, newest first."""
        entries = await self._client.xrevrange(self._key(key), count=count)
        return [fields[self.LOG_FIELD.encode()].decode() for _, fields in entries]


class ChannelContext:
    """What the runtime hands a channel module, and all it hands it.

    - ``append`` / ``append_many``: the inbox append (idempotent on the platform message id);
      confirm a message to its platform only after it returned. ``unreadable``: what cannot be
      read at all goes to the dead-letter stream with the reason and its bytes instead.
    - ``outbox(channel)``: the consumer of the channel's outbox stream; a reply's ``buttons`` are
      drawn the channel's way and each press recorded with ``press`` (router/actions.py).
    - ``cursor_get`` / ``cursor_set`` / ``cursor_all``: durable positions (update offset, UIDs ...).
    - ``store(namespace)``: a namespaced key-value store for the channel's private data.
    - ``conversation_states`` / ``conversation_exists``: what the router knows of conversations.
    - ``press(Press)``: record a press of a reply's button; ``press_links()``: the signer of
      button links for channels without buttons of their own (e-mail, router/links.py).
    - ``exclusive(channel, account)``: the lease that keeps an account's inbound loop (a bot's
      long poll, a mailbox's IDLE) on one replica at a time (router/leases.py).
    - ``impostors``: the impostor check (router/impostors.py) for members of the groups and
      servers the bots sit in, and the answer to ``/verify``.
    - ``instance`` (this process's unique name) and ``stop_all(reason)`` (stop the process).
    Health is not pushed: the runtime reads each adapter's ``health()`` and publishes it.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        shards: Shards,
        inbox: Inbox,
        instance: str,
        stop_all: Callable[[str], None] = lambda reason: None,
        *,
        scripts: Scripts,
        leases: LeaseSettings,
        web: WebSettings | None = None,
        impostors: ImpostorGuard,
        safety_notice: SafetyNoticeSettings | None = None,
    ) -> None:
        self._client = client
        self._shards = shards
        self._keys = shards.home
        self._inbox = inbox
        self._scripts = scripts
        self._leases = leases
        self._actions = Actions(client, shards, scripts)
        self._web = web or WebSettings()
        #: The impostor check and ``/verify`` (one per process: it remembers whom it checked).
        self.impostors = impostors
        self._notice = safety_notice
        #: Unique name of this process, for consumer names.
        self.instance = instance
        #: Stop the whole process with this reason (``serve`` then exits non-zero).
        self.stop_all = stop_all

    async def append(self, env: Envelope) -> Appended:
        return await self._inbox.append(env)

    async def append_many(self, envs: Sequence[Envelope]) -> list[Appended]:
        """A burst in one round trip; raises ``AppendRefused`` when any was refused."""
        return await self._inbox.append_many(envs)

    async def unreadable(
        self, channel: str, account: str, platform_id: str, reason: str, original: dict[str, Any]
    ) -> bool:
        """Keep an input the channel's client cannot read in the dead-letter stream, with the
        reason and its JSON (secrets masked): confirm it to the platform only after this returned,
        and go on with what came after it. Once per ``platform_id`` (False: kept before), so a
        batch read again keeps nothing twice (router/inbox.py ``Inbox.unreadable``)."""
        return await self._inbox.unreadable(f"{channel} {account}", platform_id, reason, original)

    async def press(self, press: Press) -> bool:
        """Record a press of a reply's button (router/actions.py); False when this platform press
        was recorded before. Acknowledge the press to the platform only after it returned.

        InvalidPress (logged here, nothing recorded) when the press does not validate: tell the
        user the button no longer works, and confirm the platform's delivery all the same."""
        try:
            return await self._actions.append(press)
        except InvalidPress as exc:
            log.warning("%s", exc)
            raise

    async def press_links(self) -> PressLinks | None:
        """The signer of button links (``[web] public_url``/a/{token}), None when that is unset."""
        return await load_links(self._client, self._keys, self._web)

    def outbox(self, channel: str, **options: Any) -> OutboxConsumer:
        options.setdefault("notice", self._notice)
        return OutboxConsumer(self._client, self._shards, channel, f"{channel}-{self.instance}", **options)

    def exclusive(self, channel: str, account: str) -> Exclusive:
        """The lease ``adapter:{channel}:{account}``, held by this process (its ``instance``) while
        it runs the account's inbound loop under ``Exclusive.run``; other replicas stand by."""
        return Exclusive.named(
            self._client, self._scripts, self._keys.prefix, f"adapter:{channel}:{account}", self.instance, self._leases
        )

    def store(self, namespace: str) -> ChannelStore:
        return ChannelStore(self._client, self._keys.prefix, namespace)

    async def cursor_get(self, channel: str, account: str, name: str) -> str | None:
        """An adapter's durable position (e.g. Telegram's update offset), None when never set."""
        raw = await self._client.hget(self._keys.cursor(channel, account), name)
        return raw.decode() if raw is not None else None

    async def cursor_set(self, channel: str, account: str, name: str, value: str) -> None:
        await self._client.hset(self._keys.cursor(channel, account), name, value)

    async def cursor_all(self, channel: str, account: str) -> dict[str, str]:
        """Every durable position of one account, by name."""
        raw = await self._client.hgetall(self._keys.cursor(channel, account))
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def conversation_states(self, channel: str, account: str, keys: list[str]) -> dict[str, str]:
        """The status (``waiting``, ``assigned``, ``closed`` ...) of each key's conversation, for
        the keys that have one; two pipelined round trips however many keys."""
        pipe = self._client.pipeline(transaction=False)
        for key in keys:
            pipe.get(self._conv_keys(channel, account, key).conv_key(channel, account, key))
        ids = await pipe.execute()
        known = [(key, raw.decode()) for key, raw in zip(keys, ids, strict=True) if raw is not None]
        for key, conv_id in known:
            pipe.hget(self._conv_keys(channel, account, key).conv(conv_id), "status")
        statuses = await pipe.execute()
        return {key: status.decode() for (key, _), status in zip(known, statuses, strict=True) if status is not None}

    async def conversation_exists(self, channel: str, account: str, key: str) -> bool:
        """Whether the router knows a conversation with this key (open or closed)."""
        ck = self._conv_keys(channel, account, key).conv_key(channel, account, key)
        return bool(await self._client.exists(ck))

    def _conv_keys(self, channel: str, account: str, key: str) -> Keys:
        """The keys of the shard of a conversation key's messages (and so of its conversation)."""
        return self._shards.shard[self._shards.of_key(channel, account, key)]
