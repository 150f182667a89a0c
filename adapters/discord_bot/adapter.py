"""The Discord adapter: one bot account, a real discord.py client, the inbox and the outbox.

Inbound: DMs to the bot, messages in the configured support channels and in threads under them.
Each is appended to the inbox; only then is the channel's cursor moved. After a reconnect that
could not resume the gateway session (``on_ready`` again), the configured channels, their active
threads and the recently active DMs are read back from their cursors (``history(after=...)``);
the inbox's idempotent append absorbs what was seen already.

Outbound: the outbox's replies go to the DM, channel or thread in the reply's metadata, split at
2,000 characters, with every mention disabled; a reply's buttons are a component row under its
last part, and a press on one (a component interaction) is recorded with ``ctx.press`` and then
answered with an ephemeral note, within Discord's 3 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import logging
import math
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, cast

import aiohttp
import discord

from adapters.base import Health
from adapters.discord_bot import backfill, notices
from adapters.discord_bot.config import DiscordConfig
from adapters.discord_bot.convert import CHANNEL, USER_MESSAGE_TYPES, Place, deletion, envelope_of, place_of
from adapters.discord_bot.cursors import Cursors
from adapters.discord_bot.fatal import reason_of
from adapters.discord_bot.guard import ServerGuard
from adapters.discord_bot.outbound import Sender, buttons_key
from router.channel import (
    TRANSIENT_ERRORS,
    Appended,
    AppendRefused,
    Backoff,
    ChannelContext,
    ConfigError,
    Envelope,
    InvalidPress,
    NotFound,
    OutboxItem,
    Press,
    SwitchboardError,
    TemporaryFailure,
    keep_running,
    now,
    wait_or_stop,
)
from rules import SECRET_KINDS, detect

log = logging.getLogger("switchboard.discord")

#: The figures the adapter counts (in its health record); ``left_public``: in private-thread mode,
#: messages the bot could not remove from the channel.
COUNTERS = (
    "sessions",
    "resumes",
    "disconnects",
    "received",
    "duplicates",
    "backfills",
    "backfilled",
    "left_public",
    "presses",
    "presses_refused",
    "unreadable",
)
#: The gateway events whose payload is a message someone wrote: one that discord.py cannot read
#: is kept as a dead letter (the others are logged and counted).
MESSAGE_EVENTS = frozenset({"MESSAGE_CREATE", "MESSAGE_UPDATE"})
#: The ephemeral answers to a press (only the presser sees them).
PRESS_NOTED = "Thanks, noted."
PRESS_REFUSED = "This button no longer works."
PRESS_FAILED = "That could not be recorded just now; please press again in a moment."
#: Locks that keep each channel's events in order (channels share a lock by id modulo this).
ORDER_STRIPES = 64
#: Messages per history request (Discord's maximum).
PAGE = 100
#: Errors of the network to Discord, for which the client is rebuilt and retried.
NETWORK = (aiohttp.ClientError, OSError, asyncio.TimeoutError)


def intents(members: bool = False) -> discord.Intents:
    """What the bot subscribes to: guilds (channels, threads), guild and DM messages, and their text;
    with ``members``, joins and member updates (for the impostor check, guard.py).

    ``message_content`` and ``members`` are privileged: they must be switched on in the developer
    portal, or the gateway closes with 4014 (and without message content guild messages arrive
    with empty text).
    """
    value = discord.Intents.none()
    value.guilds = True
    value.guild_messages = True
    value.dm_messages = True
    value.message_content = True
    value.members = members
    return value


class _Client(discord.Client):
    """discord.py's client, forwarding the events Switchboard uses to the adapter."""

    def __init__(self, adapter: DiscordAdapter, **options: Any) -> None:
        super().__init__(**options)
        self._adapter = adapter
        # discord.py reads each gateway event with its parser before any handler runs; one that
        # raises (a payload it cannot read) ends the session, and with it every event behind it.
        # Each parser is wrapped: what it cannot read is handed to the adapter instead.
        parsers = self._connection.parsers
        for event, parse in list(parsers.items()):
            parsers[event] = functools.partial(_guarded_parse, adapter, event, parse)

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        # discord.py waits 5 s before every IDENTIFY after the first (Discord allows one per 5 s
        # per bot); configurable so that tests against the emulator need not wait.
        if not initial:
            await asyncio.sleep(self._adapter.config.identify_delay_s)

    async def on_ready(self) -> None:
        self._adapter._on_ready()

    async def on_resumed(self) -> None:
        await self._adapter._on_resumed()

    async def on_disconnect(self) -> None:
        self._adapter._on_disconnect()

    async def on_message(self, message: discord.Message) -> None:
        await self._adapter._on_message(message)

    async def on_raw_message_edit(self, payload: discord.RawMessageUpdateEvent) -> None:
        await self._adapter._on_edit(payload)

    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        await self._adapter._on_delete(payload)

    async def on_member_join(self, member: discord.Member) -> None:
        await self._adapter._guard.screen(self, member, member.guild.id, None)

    async def on_member_update(self, before: discord.Member, after: discord.Member) -> None:
        # Not only when names_of(before) differs: ``before`` shares its inner user with ``after``
        # (discord.py), so a username or display-name change looks unchanged there. The guard
        # skips a member it checked with the same names, so a role change costs no Redis call.
        await self._adapter._guard.screen(self, after, after.guild.id, None)

    async def on_interaction(self, interaction: discord.Interaction[Any]) -> None:
        # Each looks at its own kind only: a button press (component) or ``/verify`` (a command).
        await self._adapter._on_interaction(interaction)
        await self._adapter._guard.interaction(interaction)

    async def on_error(self, event_method: str, /, *args: Any, **kwargs: Any) -> None:
        log.exception("discord %s: error in %s", self._adapter.account, event_method)
        self._adapter.state.error(f"{event_method}: handler failed (see log)", disconnected=False)


class DiscordAdapter:
    """One Discord bot (see the module docstring and docs/discord.md)."""

    channel = CHANNEL

    def __init__(self, ctx: ChannelContext, config: DiscordConfig, clock: Callable[[], float] = time.time) -> None:
        self._ctx = ctx
        self.config = config
        self._clock = clock
        self.account = config.name
        self.name = f"discord:{config.name}"
        self._support = config.support_channels
        self._outbox = ctx.outbox(CHANNEL)
        self._cursors = Cursors(ctx, self.account)
        self._store = ctx.store(CHANNEL)
        self._guard = ServerGuard(ctx, self.account, config.alert_channel)
        # One gateway session per bot across replicas: this one connects only while it holds the
        # lease; every replica stays logged in (REST) to send replies.
        self._exclusive = ctx.exclusive(CHANNEL, self.account)
        self._client: _Client | None = None
        self._sender: Sender | None = None
        self._runner: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._ready = asyncio.Event()
        self._started = False  # start() returned: a fatal close is no longer start()'s to raise
        self._closing = asyncio.Event()
        self._logged_in = False
        # Between attempts to reach Discord when discord.py gave up (its own reconnects aside).
        self._backoff = Backoff(base=1.0, cap=60.0)
        self._places: dict[int, Place | None] = {}
        self._private: dict[tuple[int, int], int] = {}
        # One opening at a time per user and channel: a live message and the backfill (or two
        # quick messages) would otherwise both find no thread and open one each.
        self._opening: dict[tuple[int, int], asyncio.Lock] = {}
        self._unpublished: set[int] = set()  # messages the bot deleted: not the user's deletions
        self._fresh_threads: set[int] = set()  # private threads opened here, not yet told why
        self._backfill_lock = asyncio.Lock()
        # discord.py runs every event handler as its own task; a lock per channel (striped, so
        # the number stays bounded) keeps one channel's messages, edits and deletions in order.
        self._order = [asyncio.Lock() for _ in range(ORDER_STRIPES)]
        self._backfill_failures = 0
        self._backfill_due = False  # a backfill is scheduled (channels left behind by a failure)
        self._budget = backfill.Budget(config.backfill_requests_per_pass, config.backfill_requests_per_10min, clock)
        # Health counters.
        self.state = Health.counting(COUNTERS, clock=clock)

    # -- lifecycle ---------------------------------------------------------------------------------
    def _new_client(self) -> _Client:
        client = _Client(
            self,
            intents=intents(self.config.members_intent),
            guild_ready_timeout=self.config.guild_ready_timeout_s,
            chunk_guilds_at_startup=False,
            # One rate-limit strategy: discord.py waits out short 429s itself; a longer one raises
            # RateLimited at once, so the outbox retries after `retry_after` instead of a send
            # holding its slot through five full waits.
            max_ratelimit_timeout=self.config.max_ratelimit_wait_s,
        )
        self._client = client
        self._sender = Sender(client, self._store, self.account)
        return client

    async def start(self) -> None:
        """Log in (a refused token is a ConfigError here), connect, wait for READY, start sending.

        When Discord cannot be reached at all, ``start`` does not hold up the rest of Switchboard:
        it returns at once and the client keeps trying in the background (see ``health()``).
        """
        token = self.config.read_token()
        client = self._new_client()
        try:
            await client.login(token)
            self._logged_in = True
        except discord.LoginFailure as exc:
            await client.close()
            raise ConfigError(f"[discord] {self.account}: {reason_of(exc)}") from None
        except NETWORK as exc:
            self.state.error(f"login: {_describe(exc)}", disconnected=False)
            log.warning(
                "discord %s: cannot reach Discord (%s); retrying in the background", self.account, self.state.last_error
            )
            await client.close()
        self._runner = asyncio.create_task(self._run(token))
        if self._logged_in:
            ready = asyncio.create_task(self._ready_or_standby())
            done, _ = await asyncio.wait(
                {ready, self._runner}, timeout=self.config.ready_timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
            ready.cancel()
            if self.state.fatal:
                await self.close()
                raise ConfigError(self.state.fatal)
            if not done:
                log.warning(
                    "discord %s: no READY after %.0fs; continuing, the client keeps connecting",
                    self.account,
                    self.config.ready_timeout_s,
                )
        self._outbox.start(self._send)
        self._started = True

    async def _ready_or_standby(self) -> None:
        """READY, or the answer that another replica holds the bot's gateway lease."""
        await self._exclusive.decided.wait()
        if self._exclusive.held:
            await self._ready.wait()

    async def _run(self, token: str) -> None:
        """Keep the gateway connected while this replica holds the bot's lease."""
        # After a failed login in start(): wait before trying again.
        if not self._logged_in and await wait_or_stop(self._closing, self._backoff.next_delay()):
            return
        await self._exclusive.run(lambda: self._gateway(token), self._closing)

    async def _gateway(self, token: str) -> None:
        """Keep one client connected; discord.py reconnects by itself, this covers what it gives up
        on. Cancelled when the lease is lost: the session ends at once (``_leave_gateway``)."""
        try:
            await keep_running(
                lambda: self._connect(token),
                self._closing,
                what=f"discord {self.account}",
                retry_on=NETWORK,
                backoff=self._backoff,
                on_error=self._connect_failed,
                describe=lambda exc: self.state.last_error,
            )
        except asyncio.CancelledError:
            await self._leave_gateway(token)
            raise

    async def _leave_gateway(self, token: str) -> None:
        """The lease was lost: close this gateway session (another replica's gets the events now)
        and what it spawned (backfills, handlers), then log a fresh client in, REST only, so that
        this replica still sends replies."""
        self._ready.clear()
        for task in list(self._tasks):
            task.cancel()
        if self._client is not None:
            await self._client.close()
        self._logged_in = False
        self.state.connected = False
        client = self._new_client()
        try:
            await client.login(token)
            self._logged_in = True
        except (discord.LoginFailure, *NETWORK) as exc:
            # The next holding logs in again (_connect); until then replies wait in the outbox.
            self.state.error(f"login: {_describe(exc)}", disconnected=False)

    async def _connect(self, token: str) -> bool:
        """Log in if need be and stay connected until the client is closed or gives up."""
        client = self._client if self._logged_in and self._client is not None else self._new_client()
        try:
            if not self._logged_in:
                await client.login(token)
                self._logged_in = True
            await client.connect(reconnect=True)
        except (discord.LoginFailure, discord.PrivilegedIntentsRequired, discord.ConnectionClosed) as exc:
            # 401, 4004 (token reset), 4010-4014 (shards, intents): configuration, not luck;
            # at start-up or an hour later alike.
            await client.close()
            self._die(reason_of(exc) or _describe(exc))
        except NETWORK:
            self._logged_in = False
            await client.close()
            raise
        return True

    async def _connect_failed(self, exc: BaseException) -> None:
        self.state.error(f"connect: {_describe(exc)}", disconnected=False)

    def _die(self, reason: str) -> None:
        """Stop for good, loudly: in ``health()`` (``switchboard check`` fails on it), in the log, and
        the whole process too when ``stop_on_fatal`` (start-up raises it from ``start()`` anyway)."""
        self.state.stop_for_good(f"[discord] {self.account}: {reason}")
        # Replies wait in the outbox for the restart rather than fail against a closed client.
        self._outbox.stop()
        if not self._started:
            return
        stop = self.config.stop_on_fatal
        log.error(
            "%s. The Discord adapter has stopped; %s",
            self.state.fatal,
            "stopping Switchboard ([discord] stop_on_fatal = true)"
            if stop
            else "Switchboard keeps running without it ([discord] stop_on_fatal = false) and `switchboard check` fails",
        )
        if stop:
            self._ctx.stop_all(self.state.fatal)

    async def close(self) -> None:
        """Finish the replies in hand, then disconnect."""
        self._closing.set()
        await self._outbox.close(self.config.close_grace_s)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.close()
        if self._runner is not None:
            # connect() returns once the client is closed, and the runner releases the lease (a
            # standby takes over at once); a runner waiting to retry is cancelled.
            await asyncio.wait({self._runner}, timeout=self.config.close_grace_s)
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
            if self._client is not None:
                await self._client.close()
        self.state.connected = False

    async def _send(self, item: OutboxItem) -> str:
        if self._sender is None:
            raise TemporaryFailure("the Discord client is not logged in yet")
        return await self._sender.send(item)

    async def attachment_url(self, ref: str) -> str:
        """A freshly signed CDN url for the attachment ``ref`` (``Attachment.ref``: channel, message
        and attachment ids). Discord signs attachment urls for about a day, so the url stored when
        the message came in is dead by the time an agent opens an older conversation: the message
        is fetched again (one request) for a current one."""
        return (await self._attachment(ref)).url

    async def fetch_attachment(self, account: str, ref: str, max_bytes: int | None = None) -> bytes:
        """An attachment's bytes, for an agent who asked for it (over a fresh url)."""
        if account != self.account:
            raise NotFound(f"discord bot {account!r}")
        attachment = await self._attachment(ref)
        if max_bytes is not None and attachment.size > max_bytes:
            raise SwitchboardError(f"attachment is {attachment.size} bytes, over the {max_bytes}-byte cap")
        try:
            return await attachment.read()
        except (discord.HTTPException, *NETWORK) as exc:
            raise SwitchboardError(f"discord attachment {ref}: {_describe(exc)}") from None

    async def _attachment(self, ref: str) -> discord.Attachment:
        ids = ref.split("/")
        if self._client is None or len(ids) != 3 or not all(part.isdigit() for part in ids):
            raise NotFound(f"discord attachment {ref!r}")
        channel_id, message_id, attachment_id = (int(part) for part in ids)
        try:
            message = await self._client.get_partial_messageable(channel_id).fetch_message(message_id)
        except discord.NotFound:
            raise NotFound(f"discord attachment {ref}: the message was deleted") from None
        except (discord.HTTPException, *NETWORK) as exc:
            raise SwitchboardError(f"discord attachment {ref}: {_describe(exc)}") from None
        found = [*message.attachments, *(a for snap in message.message_snapshots for a in snap.attachments)]
        for attachment in found:
            if attachment.id == attachment_id:
                return attachment
        raise NotFound(f"discord attachment {ref}: no longer on the message")

    def health(self) -> dict[str, Any]:
        client = self._client
        user = client.user if client is not None else None
        latency = client.latency if client is not None and self.state.connected else math.nan
        lease = self._exclusive.state()
        self.state.detail = f"bot {user} ({self.account})" if user else f"not logged in ({self.account})"
        if lease["lease"] != "held":
            self.state.detail += f" (standby: {lease['holder'] or 'lease free'} holds the gateway)"
        return {
            **self.state.count_outbox(self._outbox).as_dict(),
            **lease,
            "account": self.account,
            "backfill_requests": self._budget.requests,
            "latency_ms": round(latency * 1000, 1) if math.isfinite(latency) else None,
        }

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- connection events ---------------------------------------------------------------------------
    def _on_ready(self) -> None:
        # A new session (the first, or one that replaced a session that could not be resumed):
        # whatever happened in between was not replayed, so read it back.
        self.state.counters["sessions"] += 1
        self.state.connected = True
        self._ready.set()
        self._spawn(self._backfill())
        if self.config.verify_command and self._client is not None and self.state.counters["sessions"] == 1:
            self._spawn(self._guard.register(self._client, list(self.config.guilds)))

    async def _on_resumed(self) -> None:
        # Discord replayed the missed events: nothing to read back.
        self.state.counters["resumes"] += 1
        self.state.connected = True
        self._cursors.resumed()
        if not self._backfill_lock.locked():
            await self._cursors.release()

    def _on_disconnect(self) -> None:
        if self.state.connected:
            self.state.counters["disconnects"] += 1
        self.state.connected = False
        self._cursors.hold()

    # -- inbound -------------------------------------------------------------------------------------
    def _accept(self, message: discord.Message) -> bool:
        client = self._client
        if client is None or client.user is None or message.author.id == client.user.id:
            return False
        if message.author.bot and self.config.ignore_bots:
            return False
        return message.type in USER_MESSAGE_TYPES

    async def _place(self, channel: object) -> Place | None:
        """The place of a channel, looking it up once when discord.py has no cache for it."""
        place = place_of(channel, self._support)
        if place is not None or not isinstance(channel, discord.PartialMessageable):
            return place
        if channel.id in self._places:
            return self._places[channel.id]
        assert self._client is not None
        try:
            fetched = await self._client.fetch_channel(channel.id)
        except discord.HTTPException as exc:
            log.info("discord %s: channel %s not readable (%s); ignored", self.account, channel.id, exc)
            fetched = None
        place = place_of(fetched, self._support) if fetched is not None else None
        self._places[channel.id] = place
        return place

    async def _append(self, env: Envelope) -> Appended | None:
        """Append with retries over a short Redis outage or a full inbox; None when it could not
        be appended."""
        deadline = time.monotonic() + self.config.append_retry_s
        delay = 0.2
        while True:
            try:
                appended = await self._ctx.append(env)
            except (*TRANSIENT_ERRORS, AppendRefused) as exc:
                if time.monotonic() + delay > deadline or self._closing.is_set():
                    self.state.error(f"inbox append: {_describe(exc)}", disconnected=False)
                    log.error("discord %s: could not append message %s: %r", self.account, env.platform_id, exc)
                    return None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if appended.duplicate:
                self.state.counters["duplicates"] += 1
            else:
                self.state.counters["received"] += 1
            return appended

    async def _conversation_place(self, message: discord.Message, place: Place) -> Place:
        """In private-thread mode, a message posted directly in a support channel moves to a thread."""
        if place.kind != "channel" or not self.config.private_threads:
            return place
        thread_id = await self._private_thread(message, place)
        return Place("thread", place.channel_id, place.guild_id, thread_id) if thread_id else place

    async def _private_thread(self, message: discord.Message, place: Place) -> int | None:
        key = (place.channel_id, message.author.id)
        if key in self._private:
            return self._private[key]
        async with self._opening.setdefault(key, asyncio.Lock()):
            return await self._open_private_thread(message, place, key)

    async def _open_private_thread(self, message: discord.Message, place: Place, key: tuple[int, int]) -> int | None:
        name = f"pt:{place.channel_id}:{message.author.id}"
        if key not in self._private:
            stored = await self._ctx.cursor_get(CHANNEL, self.account, name)
            if stored and stored.isdigit():
                self._private[key] = int(stored)
        if key in self._private:
            return self._private[key]
        assert self._client is not None
        parent = self._client.get_channel(place.channel_id)
        if not isinstance(parent, discord.TextChannel):
            log.warning(
                "discord %s: support channel %s not in cache; no private thread", self.account, place.channel_id
            )
            return None
        try:
            thread = await parent.create_thread(
                name=f"support {message.author.name}"[:100],
                type=discord.ChannelType.private_thread,
                invitable=False,
            )
            await thread.add_user(message.author)
        except discord.HTTPException as exc:
            self.state.error(f"private thread: {exc}", disconnected=False)
            log.warning("discord %s: cannot open a private thread in %s: %s", self.account, place.channel_id, exc)
            return None
        self._private[key] = thread.id
        self._fresh_threads.add(thread.id)
        self._places[thread.id] = Place("thread", place.channel_id, place.guild_id, thread.id)
        await self._ctx.cursor_set(CHANNEL, self.account, name, str(thread.id))
        return thread.id

    async def _ingest(self, message: discord.Message, place: Place, *, backfill: bool = False) -> bool:
        """Append one message of ``place``'s channel, then move that channel's cursor.

        False when the append failed: the cursor then stays before this message until a backfill
        of the channel succeeds, so later messages cannot move it past the gap.
        """
        if not self._accept(message):
            return True
        where = await self._conversation_place(message, place)
        appended = await self._append(envelope_of(message, where, self.account))
        if appended is None:
            self._cursors.block(place.target, missed=(place, message.id))
            return False
        if backfill and not appended.duplicate:
            self.state.counters["backfilled"] += 1
        if where.kind == "thread" and place.kind == "channel" and not appended.duplicate:
            await self._unpublish(message, where)
        await self._cursors.advance(place.target, place, message.id, backfill=backfill)
        return True

    async def _unpublish(self, message: discord.Message, thread: Place) -> None:
        """Private-thread mode: the message went to the user's private thread; remove the public
        copy from the support channel (everyone there can read it: a pasted recovery phrase too).

        Without Manage Messages the bot tells the user to delete it, and when it holds a secret
        alerts the moderators (``alert_channel``) and the log.
        """
        assert self._client is not None and thread.thread_id is not None
        where = self._client.get_partial_messageable(thread.thread_id, guild_id=thread.guild_id)
        self._unpublished.add(message.id)
        try:
            await message.delete()
        except discord.NotFound:
            return  # the user deleted it first
        except (discord.HTTPException, *NETWORK) as exc:
            self._unpublished.discard(message.id)
            await self._left_public(message, where, exc)
            return
        if thread.thread_id in self._fresh_threads:
            self._fresh_threads.discard(thread.thread_id)
            await self._say(where, notices.MOVED.format(channel=message.channel.id))

    async def _left_public(self, message: discord.Message, thread: discord.PartialMessageable, exc: Exception) -> None:
        self.state.counters["left_public"] += 1
        kinds = sorted({f.kind for f in detect(message.content, SECRET_KINDS)})
        channel = message.channel.id
        log.warning(
            "discord %s: cannot delete message %s from support channel %s (%s): it stays public%s",
            self.account,
            message.id,
            channel,
            _describe(exc),
            f" and looks like it holds a {' and a '.join(kinds)}" if kinds else "",
        )
        await self._say(thread, notices.STILL_PUBLIC.format(channel=channel) + (notices.SECRET if kinds else ""))
        if kinds and self.config.alert_channel is not None:
            alert = self._client.get_partial_messageable(self.config.alert_channel) if self._client else None
            if alert is not None:
                what = " and a ".join(k.replace("_", " ") for k in kinds)
                await self._say(alert, notices.ALERT.format(what=what, author=message.author.id, url=message.jump_url))

    async def _say(self, channel: discord.PartialMessageable, text: str) -> None:
        """A notice from the bot itself (not an agent's reply: no outbox, no history)."""
        try:
            await channel.send(text, allowed_mentions=discord.AllowedMentions.none())
        except (discord.HTTPException, *NETWORK) as exc:
            log.warning("discord %s: cannot post a notice in %s: %s", self.account, channel.id, _describe(exc))

    # -- button presses ------------------------------------------------------------------------------
    async def _on_interaction(self, interaction: discord.Interaction[Any]) -> None:
        """A press on a reply's button: recorded, then answered (Discord sends it once; a user whose
        press could not be recorded is asked to press again)."""
        if interaction.type is not discord.InteractionType.component:
            return
        text = PRESS_REFUSED
        try:
            press = await self._press_of(interaction)
            if isinstance(press, str):
                log.warning("discord %s: press %s refused: %s", self.account, interaction.id, press)
                self.state.counters["presses_refused"] += 1
            else:
                self.state.counters["presses" if await self._ctx.press(press) else "duplicates"] += 1
                text = PRESS_NOTED
        except InvalidPress:  # logged by the context
            self.state.counters["presses_refused"] += 1
        except TRANSIENT_ERRORS as exc:
            self.state.error(f"press: {_describe(exc)}", disconnected=False)
            log.error("discord %s: press %s not recorded: %s", self.account, interaction.id, _describe(exc))
            text = PRESS_FAILED
        try:
            await interaction.response.send_message(text, ephemeral=True)
        except (discord.HTTPException, *NETWORK) as exc:
            log.info("discord %s: press %s not answered: %s", self.account, interaction.id, _describe(exc))

    async def _press_of(self, interaction: discord.Interaction[Any]) -> Press | str:
        """The press, or why it is refused: its data must be a button of the message, and the
        message a reply whose conversation was recorded when it was sent."""
        message = interaction.message
        data = cast(dict[str, Any], interaction.data or {})  # a component's: custom_id, component_type
        custom_id = data.get("custom_id")
        if message is None or not isinstance(custom_id, str):
            return "not a press on a message's button"
        offered = {
            child.custom_id
            for row in message.components
            if isinstance(row, discord.ActionRow)
            for child in row.children
            if isinstance(child, discord.Button)
        }
        if custom_id not in offered:
            return f"custom_id {custom_id!r} is not a button of message {message.id}"
        key = await self._store.get(buttons_key(self.account, message.id))
        if key is None:
            return f"message {message.id} is not a reply with buttons on record (or its buttons expired)"
        return Press(
            id=str(interaction.id),
            channel=CHANNEL,
            account=self.account,
            conversation_key=key,
            user=str(interaction.user.id),
            data=custom_id,
            at=now(),
        )

    def _in_order(self, channel_id: int) -> asyncio.Lock:
        return self._order[channel_id % ORDER_STRIPES]

    async def _on_message(self, message: discord.Message) -> None:
        if not self._accept(message):
            return
        if message.guild is not None and self._client is not None:
            # Any guild channel the bot reads, support channel or not: impostors talk everywhere.
            await self._guard.screen(self._client, message.author, message.guild.id, message.channel.id)
        # Taken before the first await, so the handlers of one channel queue in arrival order.
        async with self._in_order(message.channel.id):
            place = await self._place(message.channel)
            if place is not None and not await self._ingest(message, place):
                self._backfill_soon()

    async def _on_edit(self, payload: discord.RawMessageUpdateEvent) -> None:
        message = payload.message
        # An update without an edit time is Discord adding an embed preview, not the user editing.
        if message.edited_at is None or not self._accept(message):
            return
        async with self._in_order(message.channel.id):
            place = await self._place(message.channel)
            if place is not None:
                where = await self._conversation_place(message, place)
                await self._append(envelope_of(message, where, self.account, kind="edit"))

    def _unreadable_event(self, event: str, data: Any, exc: Exception) -> None:
        """A gateway event discord.py could not read (``_guarded_parse``); the session goes on."""
        reason = f"{event}: {_describe(exc)}"
        log.warning("discord %s: unreadable gateway event %s", self.account, reason)
        self.state.counters["unreadable"] += 1
        if event in MESSAGE_EVENTS and isinstance(data, dict):
            self._spawn(self._pass_unreadable(reason, data))

    async def _pass_unreadable(self, reason: str, data: dict[str, Any]) -> None:
        """A live message discord.py could not read: kept, or else its channel's cursor stays
        before it and a backfill soon reads it again."""
        if await self._keep_unreadable(f"message {data.get('id')}: {reason}", data):
            return
        assert self._client is not None
        channel_id, message_id, guild_id = (str(data.get(k) or "") for k in ("channel_id", "id", "guild_id"))
        if not (channel_id.isdigit() and message_id.isdigit()):
            log.error("discord %s: unreadable message %s without a channel is lost", self.account, message_id)
            return
        channel = self._client.get_channel(int(channel_id)) or self._client.get_partial_messageable(
            int(channel_id), guild_id=int(guild_id) if guild_id.isdigit() else None
        )
        place = await self._place(channel)
        if place is not None:
            self._cursors.block(place.target, missed=(place, int(message_id)))
            self._backfill_soon()

    async def _keep_unreadable(self, reason: str, data: Mapping[str, Any]) -> bool:
        """Keep a message discord.py cannot read as a dead letter (router/inbox.py
        ``Inbox.unreadable``); False when it could not be kept."""
        try:
            await self._ctx.unreadable(CHANNEL, self.account, str(data.get("id")), reason, dict(data))
        except TRANSIENT_ERRORS as exc:
            log.warning("discord %s: unreadable message not kept yet (%s); read again later", self.account, exc)
            self.state.error(f"unreadable message {data.get('id')} not kept: {_describe(exc)}", disconnected=False)
            return False
        return True

    async def _on_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        async with self._in_order(payload.channel_id):
            await self._record_delete(payload)

    async def _record_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        if payload.message_id in self._unpublished:
            self._unpublished.discard(payload.message_id)
            return  # moved to the user's private thread by the bot, not deleted by the user
        cached = payload.cached_message
        if cached is not None and not self._accept(cached):
            return
        assert self._client is not None
        channel: object = cached.channel if cached is not None else self._client.get_channel(payload.channel_id)
        if channel is None and payload.guild_id is None:
            channel = self._client.get_partial_messageable(payload.channel_id)
            place: Place | None = Place("dm", payload.channel_id)
        else:
            place = await self._place(channel) if channel is not None else None
        if place is None:
            return
        author = cached.author.id if cached is not None else 0
        if place.kind == "channel" and not author:
            # Without the cached message the author, hence the conversation, is unknown.
            return
        if cached is not None:
            place = await self._conversation_place(cached, place)
        env = deletion(payload.message_id, author, place, self.account)
        # A deletion must not start a conversation. A cached message passed the same checks as when
        # it was taken in, so its conversation exists or is being routed; otherwise ask the router.
        if cached is not None or await self._ctx.conversation_exists(CHANNEL, self.account, env.conversation_key):
            await self._append(env)

    # -- backfill ------------------------------------------------------------------------------------
    async def _backfill(self, only: set[int] | None = None) -> None:
        """Read back the served channels from their cursors (``only``: these channel ids), within
        the request budget (adapters/discord_bot/backfill.py), then release the cursors.

        Channels not covered (a failure, or no budget left) keep their cursor held and are read by
        a later pass, when the 10-minute window has room again.
        """
        async with self._backfill_lock:
            self.state.counters["backfills"] += 1
            gap = self._cursors.gap  # a disconnect from now on needs a backfill of its own
            snap = await self._cursors.snapshot()
            targets = await self._targets(snap.since, snap.last, snap.places)
            if only is not None:
                targets = [(place, after) for place, after in targets if place.target in only]
            self._budget.new_pass()
            covered: set[int] = set()
            slots = asyncio.Semaphore(4)

            async def one(place: Place, after: int) -> None:
                async with slots:
                    if await self._backfill_one(place, after):
                        covered.add(place.target)

            # Semaphore waiters are served in order: the most recent conversations go first.
            await asyncio.gather(*(one(place, after) for place, after in targets))
            left = {place.target for place, _ in targets} - covered
            for channel_id in left:
                self._cursors.block(channel_id)
            await self._cursors.release(covered, after_gap=gap)
            if left and not self._closing.is_set():
                self._backfill_soon()
                self._backfill_failures += 1
            else:
                self._backfill_failures = 0
            log.info(
                "discord %s: backfill of %d channel(s): %d done, %d left for a later pass; "
                "%d history request(s) so far, %d message(s) appended so far",
                self.account,
                len(targets),
                len(covered),
                len(left),
                self._budget.requests,
                self.state.counters["backfilled"],
            )

    async def _backfill_later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self._backfill_due = False
        if self.state.connected:
            await self._backfill(self._cursors.blocked)

    def _backfill_soon(self) -> None:
        """Read the channels whose cursor is blocked again (messages that could not be appended,
        or a pass that ran out of budget) after a backoff, no sooner than the budget's window
        allows — once, however many are waiting."""
        if not self._backfill_due and not self._closing.is_set():
            self._backfill_due = True
            backoff = min(300.0, self.config.backfill_retry_s * 2 ** min(self._backfill_failures, 4))
            self._spawn(self._backfill_later(max(backoff, self._budget.window_free_in())))

    async def _targets(self, since: int, last: dict[int, int], places: dict[int, Place]) -> list[tuple[Place, int]]:
        assert self._client is not None
        threads = [
            (thread.id, thread.parent_id, guild_id)
            for guild_id in self.config.guilds
            if (guild := self._client.get_guild(guild_id)) is not None
            for thread in guild.threads
        ]
        window = datetime.timedelta(seconds=self.config.backfill_dm_window_s)
        horizon = discord.utils.time_snowflake(discord.utils.utcnow() - window)
        forums = {cid for cid in self._support if isinstance(self._client.get_channel(cid), discord.ForumChannel)}
        found = backfill.targets(self._support, threads, since, last, places, horizon, forums)
        keys = [str(place.target) for place, _ in found if place.kind != "channel"]
        return backfill.worth_reading(found, await self._ctx.conversation_states(CHANNEL, self.account, keys))

    async def _backfill_one(self, place: Place, after: int) -> bool:
        """Read ``place`` from ``after`` one page (one request from the budget) at a time; True
        when it is read to its end."""
        assert self._client is not None
        channel: discord.TextChannel | discord.PartialMessageable | None = None
        if self.config.private_threads and place.kind == "channel":
            cached = self._client.get_channel(place.channel_id)
            channel = cached if isinstance(cached, discord.TextChannel) else None
        if channel is None:
            channel = self._client.get_partial_messageable(place.target, guild_id=place.guild_id)
        count = 0
        try:
            while self._budget.take():
                # One request: up to PAGE messages after `after`, newest first. Read here rather
                # than by `history()`, which reads the whole page as messages and fails it for one
                # that discord.py cannot read: that one is kept as a dead letter and passed.
                page = await self._client.http.logs_from(channel.id, PAGE, after=after)
                for data in reversed(page):
                    try:
                        message = self._client._connection.create_message(channel=channel, data=data)
                    except Exception as exc:  # as _guarded_parse: one message never blocks its channel
                        reason = f"message {data.get('id')}: history: {_describe(exc)}"
                        log.warning("discord %s: unreadable %s", self.account, reason)
                        self.state.counters["unreadable"] += 1
                        if not await self._keep_unreadable(reason, data):
                            return False  # the channel is left for a later pass, from here
                        await self._cursors.advance(place.target, place, int(data["id"]), backfill=True)
                    else:
                        if not await self._ingest(message, place, backfill=True):
                            return False
                    after = int(data["id"])
                count += len(page)
                if len(page) < PAGE:
                    return True
                if count >= self.config.backfill_limit:
                    # More may be left: keep the channel's live cursor held and read on in a later pass.
                    log.info(
                        "discord %s: backfill of %s reached its limit; continuing later", self.account, place.target
                    )
                    return False
        except (discord.HTTPException, *NETWORK) as exc:
            self.state.error(f"backfill of {place.target}: {_describe(exc)}", disconnected=False)
            log.warning("discord %s: %s", self.account, self.state.last_error)
        return False


def _guarded_parse(adapter: DiscordAdapter, event: str, parse: Callable[[Any], None], data: Any) -> None:
    try:
        parse(data)
    except Exception as exc:  # whatever discord.py cannot read must not end the session
        adapter._unreadable_event(event, data, exc)


def _describe(exc: BaseException) -> str:
    """A one-line reason for logs and health (aiohttp's reprs run to several hundred characters)."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
