"""The sandbox channel: a local channel to try Switchboard without any bot token.

``switchboard send --from alice TEXT`` appends a message as user ``alice``; replies to sandbox
conversations are delivered to the log ``alice`` of the channel's store (Redis key
``{prefix}sandbox:alice``), read by ``switchboard sandbox inbox`` and by the web console's
simulator through ``SandboxUsers``. Enabled by ``[sandbox] enabled`` (on by default).

A reply's buttons are kept with it; the user presses one with ``SandboxUsers.press`` (the
simulator's buttons, ``switchboard sandbox press alice 1``): button 1 of their latest reply that
has buttons, or of a given reply. The press id is the reply id and the button's number, so a
button pressed twice is kept once (as an e-mail link is).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from adapters.base import Adapter, Health
from router.channel import (
    ChannelContext,
    Envelope,
    InvalidPress,
    NotFound,
    OutboxItem,
    Press,
    Sender,
    config_error,
    decode_outbox,
    encode,
    new_id,
    now,
)

CHANNEL = "sandbox"
#: Replies kept per sandbox user (the oldest are trimmed), and how many ``inbox`` returns.
INBOX_CAP = 1000
INBOX_READ = 100
#: How far back ``press`` looks for the latest reply with buttons.
PRESS_LOOKBACK = 50


class SandboxConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True


def from_config(ctx: ChannelContext, section: Mapping[str, Any]) -> list[Adapter]:
    """The sandbox adapter, unless ``[sandbox] enabled = false``."""
    try:
        config = SandboxConfig.model_validate(dict(section))
    except ValidationError as exc:
        raise config_error(exc, "[sandbox] configuration", loc_prefix="sandbox.") from None
    return [SandboxAdapter(ctx)] if config.enabled else []


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


class SandboxUsers:
    """Writing as a sandbox user and reading what they received: what the web console's simulator
    and the CLI are given."""

    def __init__(self, ctx: ChannelContext) -> None:
        self._ctx = ctx
        self._store = ctx.store(CHANNEL)

    async def send(self, user: str, text: str, attributes: dict[str, str] | None = None) -> str:
        """Append a sandbox message as ``user``; the inbox entry id. ValueError without a user or a text."""
        if not user.strip() or not text.strip():
            raise ValueError("a sandbox message needs a user and a text")
        appended = await self._ctx.append(envelope(user.strip(), text, attributes=attributes or {}))
        return appended.entry_id

    async def inbox(self, user: str) -> list[dict[str, Any]]:
        """The replies delivered to ``user``, oldest first (the first ``INBOX_READ`` kept)."""
        return [json.loads(record) for record in await self._store.log_read(user, INBOX_READ)]

    async def press(self, user: str, number: int, reply: str | None = None) -> str:
        """Press button ``number`` (from 1) of ``reply`` (default: the user's latest reply with
        buttons) as ``user``; the button's label. NotFound without such a reply; InvalidPress (400
        in the console) without such a button, or when the press does not validate."""
        records = [decode_outbox(r) for r in await self._store.log_tail(user, PRESS_LOOKBACK)]
        found = next((r for r in records if (r.id == reply if reply else r.buttons)), None)
        if found is None:
            raise NotFound(f"sandbox user {user!r} has no {'reply ' + reply if reply else 'reply with buttons'}")
        if not 1 <= number <= len(found.buttons):
            raise InvalidPress(f"reply {found.id} has {len(found.buttons)} button(s), not a button {number}")
        button = found.buttons[number - 1]
        await self._ctx.press(
            Press(
                id=f"{found.id}.{number}",
                channel=CHANNEL,
                account=found.account,
                conversation_key=found.conversation_key,
                user=user,
                data=button.data,
                at=now(),
            )
        )
        return button.label


class SandboxAdapter:
    """Delivers the sandbox outbox's replies to each user's log."""

    channel = CHANNEL
    name = "sandbox"

    def __init__(self, ctx: ChannelContext) -> None:
        self._store = ctx.store(CHANNEL)
        self._outbox = ctx.outbox(CHANNEL)
        self.state = Health(detail="local")

    async def _send(self, item: OutboxItem) -> str:
        user = item.meta.get("user") or item.conversation_key
        await self._store.log_append(user, encode(item).decode(), cap=INBOX_CAP)
        return f"delivered to sandbox user {user}"

    async def start(self) -> None:
        self._outbox.start(self._send)

    async def close(self) -> None:
        await self._outbox.close()

    def health(self) -> dict[str, Any]:
        self.state.connected = self._outbox.running
        return self.state.count_outbox(self._outbox).as_dict()
