"""The adapter interface: one module per channel, built on the core model and stream API only.

An adapter
- turns platform messages into ``router.model.Envelope`` and appends them with ``Inbox.append``,
  confirming a message to its platform only after the append returned;
- sends the replies of its channel's outbox through ``OutboxConsumer.run(send)``, raising
  ``PermanentFailure`` / ``TemporaryFailure`` from ``send`` so the outcome is recorded;
- reports its health (connected, last error, counters) for ``switchboard stats``; an adapter that
  stopped for good after start-up (credentials revoked, say) puts the reason in ``fatal``, which
  ``switchboard check`` fails on, and calls ``AdapterContext.stop_all`` when the process should stop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import redis.asyncio as aioredis

from router.inbox import Inbox
from router.keys import Keys
from router.outbox import OutboxConsumer


@dataclass(frozen=True)
class AdapterContext:
    """What the runtime hands an adapter: the append API and a way to consume its outbox."""

    client: aioredis.Redis
    keys: Keys
    inbox: Inbox
    instance: str  # unique name of this process, for consumer names
    #: Stop the whole process with this reason (``serve`` then exits non-zero); default: do nothing.
    stop_all: Callable[[str], None] = lambda reason: None

    def outbox(self, channel: str, **options: Any) -> OutboxConsumer:
        return OutboxConsumer(self.client, self.keys, channel, f"{channel}-{self.instance}", **options)

    async def cursor_get(self, channel: str, account: str, name: str) -> str | None:
        """An adapter's durable position (e.g. Telegram's update offset), None when never set."""
        raw = await self.client.hget(self.keys.cursor(channel, account), name)
        return raw.decode() if raw is not None else None

    async def cursor_set(self, channel: str, account: str, name: str, value: str) -> None:
        await self.client.hset(self.keys.cursor(channel, account), name, value)

    async def cursor_all(self, channel: str, account: str) -> dict[str, str]:
        """Every durable position of one account, by name."""
        raw = await self.client.hgetall(self.keys.cursor(channel, account))
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def conversation_states(self, channel: str, account: str, keys: list[str]) -> dict[str, str]:
        """The status (``waiting``, ``assigned``, ``closed`` ...) of each key's conversation, for
        the keys that have one; two pipelined round trips however many keys."""
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.get(self.keys.conv_key(channel, account, key))
        ids = await pipe.execute()
        known = [(key, raw.decode()) for key, raw in zip(keys, ids, strict=True) if raw is not None]
        for _, conv_id in known:
            pipe.hget(self.keys.conv(conv_id), "status")
        statuses = await pipe.execute()
        return {key: status.decode() for (key, _), status in zip(known, statuses, strict=True) if status is not None}

    async def conversation_exists(self, channel: str, account: str, key: str) -> bool:
        """Whether the router knows a conversation with this key (open or closed)."""
        return bool(await self.client.exists(self.keys.conv_key(channel, account, key)))


class Adapter(Protocol):
    channel: str
    name: str

    async def start(self) -> None:
        """Connect and start the inbound and outbound loops; raise a clear error on bad credentials."""

    async def close(self) -> None:
        """Stop taking new work, finish what is in hand, disconnect."""

    def health(self) -> dict[str, Any]:
        """A JSON-able status: at least ``connected`` (bool) and ``detail``; ``fatal`` (the reason)
        and ``fatal_at`` (epoch seconds) once the adapter stopped for good."""
