"""The sandbox channel: a local channel to try Switchboard without any bot token.

``switchboard send --from alice TEXT`` appends a message as user ``alice``; replies to sandbox
conversations are delivered to the stream ``sandbox:alice``, read by ``switchboard sandbox inbox``
(and by the web console's simulator).
"""

from __future__ import annotations

import json
from typing import Any

import redis.asyncio as aioredis

from adapters.base import AdapterContext
from router.keys import Keys
from router.model import Envelope, OutboxItem, Sender, encode, new_id, now

CHANNEL = "sandbox"


def envelope(user: str, text: str, *, subject: str | None = None, attributes: dict[str, str] | None = None) -> Envelope:
    """A sandbox message from ``user``: one conversation per user, like a private chat."""
    msg_id = new_id()
    return Envelope(
        id=msg_id,
        channel=CHANNEL,
        account="default",
        platform_id=msg_id,
        conversation_key=user,
        sender=Sender(id=user, name=user, attributes=attributes or {}),
        text=text,
        subject=subject,
        received_at=now(),
        meta={"user": user},
    )


async def user_inbox(client: aioredis.Redis, keys: Keys, user: str, count: int = 100) -> list[dict[str, Any]]:
    """The replies delivered to a sandbox user, oldest first."""
    entries = await client.xrange(keys.sandbox(user), count=count)
    return [json.loads(fields[b"item"]) for _, fields in entries]


class SandboxAdapter:
    channel = CHANNEL
    name = "sandbox"

    def __init__(self, ctx: AdapterContext) -> None:
        self._ctx = ctx
        self._outbox = ctx.outbox(CHANNEL)

    async def _send(self, item: OutboxItem) -> str:
        user = item.meta.get("user") or item.conversation_key
        await self._ctx.client.xadd(self._ctx.keys.sandbox(user), {"item": encode(item)}, maxlen=1000, approximate=True)
        return f"delivered to sandbox user {user}"

    async def start(self) -> None:
        self._outbox.start(self._send)

    async def close(self) -> None:
        await self._outbox.close()

    def health(self) -> dict[str, Any]:
        return {
            "connected": self._outbox.running,
            "detail": "local",
            "sent": self._outbox.sent,
            "failed": self._outbox.failed,
        }
