"""Durable per-channel positions: the last message id appended from each channel, thread or DM.

Stored in the adapter's cursor hash (``cursor:discord:{account}``):

- ``last:{channel_id}``  the id of the newest message appended from that channel (a snowflake);
- ``place:{channel_id}`` what the channel is (``Place.encode()``), so a backfill after a restart
  knows DMs and threads it has no cache for;
- ``since``              a snowflake of the first connection ever: channels and threads without a
  ``last`` cursor are backfilled from there, never from the beginning of their history.

While the gateway session is being replaced, cursors are *held*: live messages are appended as
they come but their ids are only kept in memory, so the backfill still starts from the position
before the outage. After a channel's backfill the held ids are written. Each hold is a numbered
gap: a backfill that began before the latest gap (a slow one, still reading when the connection
dropped again) must not end the hold, or the live messages of the new session would move the
cursors past the messages of the gap before its own backfill reads them.

A backfill also reads the channels known only from held messages (a DM whose first message came
during a hold has no stored cursor, and discord.py has no list of a bot's DMs): ``snapshot``
gives each of them the position just before the first message held, so a gap after it is read
back even when no backfill has released the hold since. The same for a DM or thread whose first
message could not be appended (``block`` with ``missed``) and whose next one was.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import discord

from adapters.discord_bot.convert import CHANNEL, Place
from router.channel import ChannelContext


@dataclass
class Snapshot:
    """The stored cursors at the moment a backfill starts."""

    since: int
    last: dict[int, int] = field(default_factory=dict)
    places: dict[int, Place] = field(default_factory=dict)


class Cursors:
    def __init__(self, ctx: ChannelContext, account: str) -> None:
        self._ctx = ctx
        self._account = account
        self._written: dict[int, int] = {}
        self._placed: set[int] = set()
        self._pending: dict[int, tuple[Place, int]] = {}
        # Per channel, the first message held or missed (not appended) and its place: where a
        # backfill reads it from when no cursor of it is stored yet.
        self._first: dict[int, tuple[Place, int]] = {}
        # Channels whose cursor must not move until a backfill covered them (a failed backfill or
        # a message that could not be appended).
        self._blocked: set[int] = set()
        self._lock = asyncio.Lock()
        self.held = True
        #: Holds so far (each disconnect) and the last one whose events a RESUME replayed.
        self.gap = 0
        self._replayed = 0

    async def snapshot(self) -> Snapshot:
        fields = await self._ctx.cursor_all(CHANNEL, self._account)
        since = int(fields.get("since") or 0)
        if not since:
            since = discord.utils.time_snowflake(discord.utils.utcnow())
            await self._ctx.cursor_set(CHANNEL, self._account, "since", str(since))
        snap = Snapshot(since)
        for name, value in fields.items():
            kind, _, ident = name.partition(":")
            if not ident.isdigit():
                continue
            if kind == "last" and value.isdigit():
                snap.last[int(ident)] = int(value)
            elif kind == "place" and (place := Place.decode(value)) is not None:
                snap.places[int(ident)] = place
        for channel_id, (place, first) in self._first.items():
            # A support channel without a cursor is read from ``since`` (backfill.targets).
            if place.kind != "channel" and channel_id not in snap.last:
                snap.last[channel_id] = first - 1
                snap.places.setdefault(channel_id, place)
        return snap

    async def advance(self, channel_id: int, place: Place, message_id: int, *, backfill: bool = False) -> None:
        """Record ``message_id`` as appended from ``channel_id`` (never moves a cursor back)."""
        if not backfill and (self.held or channel_id in self._blocked):
            known = self._pending.get(channel_id)
            if known is None or known[1] < message_id:
                self._pending[channel_id] = (place, message_id)
            self._note_first(channel_id, place, message_id)
            return
        await self._write(channel_id, place, message_id)

    def block(self, channel_id: int, missed: tuple[Place, int] | None = None) -> None:
        """Keep ``channel_id``'s cursor where it is until the next backfill of it succeeds.

        ``missed``: the place and id of a message that could not be appended. A DM or thread
        without a stored cursor is then read back from just before it, not from the first message
        that was appended after it."""
        self._blocked.add(channel_id)
        if missed is not None:
            self._note_first(channel_id, *missed)

    def _note_first(self, channel_id: int, place: Place, message_id: int) -> None:
        known = self._first.get(channel_id)
        if known is None or message_id < known[1]:
            self._first[channel_id] = (place, message_id)

    @property
    def blocked(self) -> set[int]:
        """The channels waiting for a backfill to cover them."""
        return set(self._blocked)

    def hold(self) -> None:
        self.held = True
        self.gap += 1

    def resumed(self) -> None:
        """The session was resumed: Discord replayed what the gap missed. The hold ends now, or,
        with a backfill running, when it ends."""
        self._replayed = self.gap

    async def release(self, covered: set[int] | None = None, *, after_gap: int | None = None) -> None:
        """Stop holding; write the held positions, except for channels still blocked.

        ``covered``: channels a backfill just covered; they are unblocked first. ``after_gap``: the
        gap the backfill began after; a later gap not replayed keeps the hold for its own backfill.
        """
        self._blocked -= covered or set()
        if after_gap is not None and after_gap != self.gap and self._replayed != self.gap:
            return
        self.held = False
        for channel_id, (place, message_id) in list(self._pending.items()):
            if channel_id in self._blocked:
                continue
            del self._pending[channel_id]
            await self._write(channel_id, place, message_id)
        for channel_id in list(self._first):
            if channel_id not in self._pending and channel_id not in self._blocked:
                del self._first[channel_id]

    async def _write(self, channel_id: int, place: Place, message_id: int) -> None:
        async with self._lock:
            known = self._written.get(channel_id)
            if known is None:
                raw = await self._ctx.cursor_get(CHANNEL, self._account, f"last:{channel_id}")
                known = int(raw) if raw and raw.isdigit() else 0
            if message_id <= known:
                self._written[channel_id] = known
                return
            if channel_id not in self._placed:
                await self._ctx.cursor_set(CHANNEL, self._account, f"place:{channel_id}", place.encode())
                self._placed.add(channel_id)
            await self._ctx.cursor_set(CHANNEL, self._account, f"last:{channel_id}", str(message_id))
            self._written[channel_id] = message_id
