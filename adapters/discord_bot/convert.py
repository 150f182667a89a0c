"""Discord messages -> Switchboard envelopes, and where a message belongs.

The conversation key is the DM channel id, the thread id, or ``{channel_id}:{author_id}`` for a
message posted directly in a support channel (one conversation per user there, as in a shared
help desk channel several users talk at once).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import discord

from router.channel import Attachment, Envelope, MessageKind, Sender, new_id, now

CHANNEL = "discord"

#: User-written messages; joins, pins, "thread created" notices and the like are not support messages.
USER_MESSAGE_TYPES = frozenset({discord.MessageType.default, discord.MessageType.reply})

PlaceKind = Literal["dm", "channel", "thread"]


@dataclass(frozen=True, slots=True)
class Place:
    """Where a message was posted, in the terms the router needs (all ids as Discord ids)."""

    kind: PlaceKind
    channel_id: int  # the DM, the support channel, or the thread's parent channel
    guild_id: int | None = None
    thread_id: int | None = None

    @property
    def target(self) -> int:
        """The channel id a message is read from or sent to: the thread if any."""
        return self.thread_id or self.channel_id

    def conversation_key(self, author_id: int | str) -> str:
        if self.kind == "dm":
            return str(self.channel_id)
        if self.thread_id is not None:
            return str(self.thread_id)
        return f"{self.channel_id}:{author_id}"

    def meta(self, message_id: int | str) -> dict[str, str]:
        return {
            "channel_id": str(self.channel_id),
            "guild_id": str(self.guild_id or ""),
            "thread_id": str(self.thread_id or ""),
            "message_id": str(message_id),
        }

    def encode(self) -> str:
        """A compact form stored beside the cursor, so a backfill knows what a channel id was."""
        return f"{self.kind}:{self.channel_id}:{self.guild_id or ''}:{self.thread_id or ''}"

    @classmethod
    def decode(cls, text: str) -> Place | None:
        try:
            kind, channel, guild, thread = text.split(":")
        except ValueError:
            return None
        if kind not in ("dm", "channel", "thread"):
            return None
        return cls(kind, int(channel), int(guild) if guild else None, int(thread) if thread else None)  # type: ignore[arg-type]


def place_of(channel: object, support: dict[int, int]) -> Place | None:
    """The place of a message's channel when Switchboard serves it, else None.

    ``support`` maps support channel ids to guild ids. Returns None for a channel discord.py did
    not resolve (a ``PartialMessageable`` that is not a support channel): the caller looks it up.
    """
    if isinstance(channel, discord.DMChannel):
        return Place("dm", channel.id)
    if isinstance(channel, discord.Thread):
        parent = channel.parent_id
        if parent in support:
            return Place("thread", parent, support[parent], channel.id)
        return None
    channel_id = getattr(channel, "id", None)
    if isinstance(channel_id, int) and channel_id in support:
        return Place("channel", channel_id, support[channel_id])
    return None


def sender_of(author: discord.User | discord.Member, *, forwarded: bool = False) -> Sender:
    """``forwarded``: the message forwards another (its words are someone else's; a rule can
    tell by the attribute ``forwarded``, as for Telegram's forwards)."""
    attributes = {"bot": "true"} if author.bot else {}
    if forwarded:
        attributes["forwarded"] = "message"
    return Sender(
        id=str(author.id),
        name=author.display_name,
        handle=author.name,
        attributes=attributes,
    )


def attachments_of(message: discord.Message) -> tuple[Attachment, ...]:
    """The message's attachments and those of the messages it forwards. ``ref`` names the
    attachment by channel, message and attachment id (``attachment_ref``), not by its CDN url:
    Discord signs those urls for about a day, so a fresh one is fetched when an agent opens it."""
    found = [(message.id, a) for a in message.attachments]
    found += [(message.id, a) for snapshot in message.message_snapshots for a in snapshot.attachments]
    return tuple(
        Attachment(
            name=a.filename,
            type=a.content_type or "",
            size=a.size,
            ref=attachment_ref(message.channel.id, message_id, a.id),
        )
        for message_id, a in found
    )


def attachment_ref(channel_id: int, message_id: int, attachment_id: int) -> str:
    return f"{channel_id}/{message_id}/{attachment_id}"


def text_of(message: discord.Message) -> str:
    """The text to route: the message's own, else (a forwarded message has none) the text of the
    messages it forwards."""
    if message.content:
        return message.content
    return "\n\n".join(snapshot.content for snapshot in message.message_snapshots if snapshot.content)


def envelope_of(
    message: discord.Message,
    place: Place,
    account: str,
    *,
    kind: MessageKind = "message",
) -> Envelope:
    """The envelope of a new or edited message."""
    platform_id = str(message.id)
    if kind == "edit":
        # A distinct id per edit: the append is idempotent on it, and a second edit is news.
        stamp = message.edited_at.isoformat() if message.edited_at else "unknown"
        platform_id = f"{message.id}:edit:{stamp}"
    ref = message.reference
    # A forward's reference points at the original message, elsewhere: it is not a reply.
    replying = ref is not None and ref.message_id and ref.type == discord.MessageReferenceType.reply
    reply_to = str(ref.message_id) if replying and ref is not None else None
    meta = place.meta(message.id)
    forwarded = ref is not None and ref.type == discord.MessageReferenceType.forward
    if forwarded and ref is not None:
        # Discord gives a forward's words and attachments, not its author: where it was is all.
        meta["forwarded_from"] = f"a Discord message in channel {ref.channel_id}"
    return Envelope(
        id=new_id(),
        channel=CHANNEL,
        account=account,
        platform_id=platform_id,
        conversation_key=place.conversation_key(message.author.id),
        sender=sender_of(message.author, forwarded=forwarded),
        text=text_of(message),
        attachments=attachments_of(message),
        received_at=message.created_at.timestamp() if kind == "message" else now(),
        reply_to=reply_to,
        kind=kind,
        meta=meta,
    )


def deletion(message_id: int, author_id: int, place: Place, account: str) -> Envelope:
    """The envelope recording that a user deleted a message."""
    return Envelope(
        id=new_id(),
        channel=CHANNEL,
        account=account,
        platform_id=f"{message_id}:delete",
        conversation_key=place.conversation_key(author_id),
        sender=Sender(id=str(author_id)),
        received_at=now(),
        reply_to=str(message_id),
        kind="delete",
        meta=place.meta(message_id),
    )
