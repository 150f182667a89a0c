"""Sending a reply: where it goes, how a long text is split, its buttons, and how Discord's errors
are recorded."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import discord

from adapters.text import split_text
from router.channel import TRANSIENT_ERRORS, Button, ChannelStore, OutboxItem, PermanentFailure, TemporaryFailure

log = logging.getLogger("switchboard.discord")

#: Discord's limit for a message's content.
LIMIT = 2000

#: Discord error codes that mean "never going to work here", with what the agent can do about it
#: (the reason lands in the conversation's history as the reply's failed delivery).
CANNOT_DM = 50007
PERMANENT = {
    CANNOT_DM: "the user does not accept DMs from the bot (DMs from server members closed, or the bot blocked)",
    10003: "the channel or thread was deleted: the user cannot be answered there any more; reach them by DM",
    50001: "the bot has no access to this channel or thread any more (removed from the private thread, or "
    "the channel's permissions changed): add it back, then send the reply again",
    50013: "the bot lacks a permission here (Send Messages, Send Messages in Threads): grant it, then send "
    "the reply again",
    50083: "the thread is archived and locked by a moderator, so the bot cannot post in it: unlock it in "
    "Discord (Manage Threads), then send the reply again, or reach the user by DM",
    160002: "the bot lacks Read Message History here, which a reply quoting the user's message needs",
}

#: Discord's most buttons on one message (5 rows of 5).
MAX_BUTTONS = 25
#: How long a reply's buttons can be pressed: the message -> conversation record lives this long.
BUTTONS_TTL_S = 30 * 86400


def buttons_key(account: str, message_id: int | str) -> str:
    """The store key (namespace ``discord``) of the conversation whose reply is message ``message_id``."""
    return f"buttons:{account}:{message_id}"


class ButtonRow(discord.ui.View):
    """A reply's buttons as message components (custom_id = the button's data, at most 5 a row).

    Drawn only: presses arrive as INTERACTION_CREATE and are taken in ``on_interaction``, for any
    message however old, so discord.py must not keep a view per message in memory (its view store
    keeps a view without timeout forever). A view that says it is finished is not stored."""

    def __init__(self, buttons: tuple[Button, ...]) -> None:
        super().__init__(timeout=None)
        for b in buttons:
            self.add_item(discord.ui.Button(label=b.label, custom_id=b.data, style=discord.ButtonStyle.secondary))

    def is_finished(self) -> bool:
        return True


def split(text: str, limit: int = LIMIT) -> list[str]:
    """Split ``text`` into parts of at most ``limit`` units, cutting cleanly where possible
    (Discord counts UTF-16 units like JavaScript; see adapters.text.split_text)."""
    return split_text(text.strip(), limit)


def target_of(item: OutboxItem) -> int:
    """The channel to answer in: the thread, else the DM or support channel of the last message."""
    meta = item.meta
    target = meta.get("thread_id") or meta.get("channel_id")
    if not target or not target.isdigit():
        raise PermanentFailure(f"reply {item.id} has no Discord channel in its metadata ({meta!r})")
    return int(target)


def reference_of(item: OutboxItem) -> discord.MessageReference | None:
    """Quote the user's last message in guild channels and threads, where several people talk.

    In a DM the quote adds nothing. ``fail_if_not_exists=False``: a message the user deleted must
    not make the reply fail.
    """
    meta = item.meta
    if not meta.get("guild_id"):
        return None
    raw = (item.reply_to or meta.get("message_id") or "").split(":", 1)[0]
    if not raw.isdigit():
        return None
    return discord.MessageReference(
        message_id=int(raw),
        channel_id=target_of(item),
        guild_id=int(meta["guild_id"]),
        fail_if_not_exists=False,
    )


def failure(exc: BaseException) -> Exception:
    """Discord's answer as a permanent or temporary failure for the outbox's history."""
    if isinstance(exc, discord.DiscordServerError):
        # discord.py already retried 500/502/504/524 itself; the outbox backs off and tries again.
        return TemporaryFailure(f"discord {exc.status}: {exc.text or 'server error'}")
    if isinstance(exc, discord.RateLimited):
        return TemporaryFailure(f"rate limited for {exc.retry_after:.1f}s", exc.retry_after)
    if isinstance(exc, discord.HTTPException) and exc.code in PERMANENT:
        return PermanentFailure(f"discord {exc.status} ({exc.code}): {PERMANENT[exc.code]} [{exc.text}]")
    if isinstance(exc, discord.Forbidden):
        return PermanentFailure(f"discord 403 ({exc.code}): missing permission: {exc.text}")
    if isinstance(exc, discord.NotFound):
        return PermanentFailure(f"discord 404 ({exc.code}): the channel or thread no longer exists: {exc.text}")
    if isinstance(exc, discord.HTTPException):
        if exc.status >= 500 or exc.status == 429:
            return TemporaryFailure(f"discord {exc.status}: {exc.text}")
        return PermanentFailure(f"discord {exc.status} ({exc.code}): {exc.text}")
    if isinstance(exc, aiohttp.ClientError | OSError | asyncio.TimeoutError):
        return TemporaryFailure(f"network: {exc!r}")
    return TemporaryFailure(f"{type(exc).__name__}: {exc}")


class Sender:
    """Sends replies through a logged-in client, resuming a split reply where a retry left off."""

    def __init__(self, client: discord.Client, store: ChannelStore, account: str) -> None:
        self._client = client
        self._store = store
        self._account = account
        # reply id -> parts already delivered, so a retry does not repeat the first parts.
        self._progress: dict[str, int] = {}

    async def send(self, item: OutboxItem) -> str:
        parts = split(item.text)
        if not parts:
            raise PermanentFailure("empty reply")
        if len(item.buttons) > MAX_BUTTONS:
            raise PermanentFailure(
                f"a Discord message takes at most {MAX_BUTTONS} buttons, this reply has {len(item.buttons)}"
            )
        target = target_of(item)
        meta = item.meta
        channel = self._client.get_partial_messageable(
            target, guild_id=int(meta["guild_id"]) if meta.get("guild_id") else None
        )
        reference = reference_of(item)
        done = self._progress.get(item.id, 0)
        ids: list[str] = []
        try:
            for index in range(done, len(parts)):
                # Never ping: agents paste user text, and users may write "@everyone" on purpose.
                mentions = discord.AllowedMentions.none()
                last = index == len(parts) - 1
                # Options given only when set: discord.py's overloads take no None for them.
                options: dict[str, Any] = {"allowed_mentions": mentions}
                if index == 0 and reference is not None:
                    options["reference"] = reference
                if last and item.buttons:
                    options["view"] = ButtonRow(item.buttons)
                sent = await channel.send(parts[index], **options)
                ids.append(str(sent.id))
                self._progress[item.id] = index + 1
                if last and item.buttons:
                    await self._remember(sent.id, item)
        except Exception as exc:
            mapped = failure(exc)
            if isinstance(mapped, PermanentFailure):
                self._progress.pop(item.id, None)
            raise mapped from exc
        self._progress.pop(item.id, None)
        return f"sent to channel {target} as {len(parts)} message(s): {', '.join(ids)}"

    async def _remember(self, message_id: int, item: OutboxItem) -> None:
        """The conversation a press on this message belongs to (a press names only the message).

        Not retried as a failed send: the message is out, and sending it again would show the
        user two copies; its buttons then answer "no longer works" (logged here)."""
        try:
            await self._store.set(buttons_key(self._account, message_id), item.conversation_key, ttl_s=BUTTONS_TTL_S)
        except TRANSIENT_ERRORS as exc:
            log.error("discord %s: reply %s sent, but its buttons cannot be pressed: %s", self._account, item.id, exc)
