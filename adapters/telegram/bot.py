"""One bot: its aiogram client, its inbound loop (long polling or webhook), its sends, its health.

No loss, no duplicate: a batch of updates is appended to the inbox first; only then does the
in-memory offset move past it (so the next getUpdates confirms it to Telegram) and is the offset
saved as the adapter's cursor (so a restart does not even fetch it again). A crash in between makes
Telegram send the batch again, and the idempotent append absorbs it.

A tap on a reply's inline button (a callback query) is recorded the same way: ``ctx.press`` first
(kept once per callback query id), then answerCallbackQuery, which stops the spinner on the
user's button, then the offset.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import OrderedDict
from typing import Any

import aiohttp
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    AiogramError,
    ClientDecodeError,
    TelegramBadRequest,
    TelegramMigrateToChat,
    TelegramNotFound,
    TelegramRetryAfter,
    TelegramUnauthorizedError,
)
from aiogram.types import CallbackQuery, InlineKeyboardMarkup, Message, ReplyParameters, Update
from pydantic import ValidationError

from adapters.base import Health
from adapters.telegram.config import BotSettings
from adapters.telegram.convert import ALLOWED_UPDATES, CHANNEL, BotIdentity, Ignored, Policy, convert, press_of
from adapters.telegram.guard import GroupGuard
from adapters.telegram.outbound import RateLimiter, Target, classify, keyboard, split_text
from router.channel import (
    TRANSIENT_ERRORS,
    AppendRefused,
    Backoff,
    ChannelContext,
    ConfigError,
    Envelope,
    InvalidPress,
    OutboxItem,
    PermanentFailure,
    Press,
    SwitchboardError,
    keep_running,
)

log = logging.getLogger("switchboard.telegram")

#: The figures each bot counts (in its health record).
COUNTERS = (
    "received", "duplicates", "ignored", "unreadable", "verified", "sent", "failed", "rate_limited", "presses",
    "presses_refused",
)  # fmt: skip
#: What the user's Telegram shows for a moment after a tap (answerCallbackQuery's text).
PRESS_NOTED = "Thanks, noted."
PRESS_REFUSED = "This button no longer works."


class AttachmentTooLarge(SwitchboardError):
    """The file is larger than the configured cap (``max_file_bytes``)."""


class BotRunner:
    """One configured bot (one Switchboard account)."""

    def __init__(self, ctx: ChannelContext, settings: BotSettings) -> None:
        self.ctx = ctx
        self.name = settings.name
        self.cfg = settings.config
        self._token = settings.token
        session = AiohttpSession(api=TelegramAPIServer.from_base(self.cfg.api_base), timeout=self.cfg.request_timeout_s)
        self.bot = Bot(settings.token, session=session)
        self.policy = Policy(frozenset(self.cfg.allowed_chats), self.cfg.private_chats)
        # A random secret is enough when this process is the only one that calls setWebhook.
        self.webhook_secret = settings.webhook_secret or secrets.token_urlsafe(32)
        self.limiter = RateLimiter(self.cfg.global_per_s)
        self.guard = GroupGuard(ctx, self.bot, self.name, self.limiter, self.cfg.group_interval_s)
        self.me: BotIdentity | None = None
        self.state = Health.counting(COUNTERS)
        self.offset: int | None = None
        self._offset_loaded = False
        self._webhook_set = False
        self._webhook_cleared = False
        self._stopping = asyncio.Event()
        self._backoff = Backoff(base=0.5, cap=30.0)
        self._task: asyncio.Task[None] | None = None
        # One poller per bot across replicas: this runner polls only while it holds the lease.
        self.exclusive = ctx.exclusive(CHANNEL, self.name)
        # Parts of a split reply already sent, by reply id: a retry resumes instead of repeating.
        self._progress: OrderedDict[str, int] = OrderedDict()
        self._unknown_chats: set[int] = set()
        self.last_update_at: float | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    async def identify(self) -> None:
        """getMe at start: a refused token is a ConfigError now; an unreachable API is retried later."""
        try:
            await self._get_me()
        except (TelegramUnauthorizedError, TelegramNotFound) as exc:
            raise ConfigError(
                f"[telegram] bot {self.name!r}: the Bot API at {self.cfg.api_base} refused the token "
                f"({exc.message}); check it with @BotFather (/mybots -> API Token)"
            ) from None
        except AiogramError as exc:
            self._fail(f"getMe: {self._describe(exc)}; retrying in the background")
            log.warning("telegram bot %s: %s", self.name, self.state.last_error)

    async def start_inbound(self) -> None:
        """Webhook mode: setWebhook now (a refused URL is a ConfigError). Then start the loop."""
        if self.cfg.mode == "webhook" and self.me is not None:
            try:
                await self._set_webhook()
            except TelegramBadRequest as exc:
                raise ConfigError(f"[telegram] bot {self.name!r}: setWebhook refused: {exc.message}") from None
            except AiogramError as exc:
                self._fail(f"setWebhook: {self._describe(exc)}; retrying in the background")
        self._task = asyncio.create_task(self._run(), name=f"telegram-{self.name}")

    async def stop_inbound(self) -> None:
        """Stop taking updates: cancel the long poll in flight; the holder removes the webhook."""
        self._stopping.set()
        if self._task is not None:
            # wait(), not await: a loop that died (or was cancelled) must not fail the shutdown.
            await asyncio.wait({self._task})
            self._task = None

    async def close(self) -> None:
        await self.guard.close()
        await self.bot.session.close()

    # -- inbound -----------------------------------------------------------------------------
    async def _run(self) -> None:
        await self.exclusive.run(self._inbound_loop, self._stopping)

    async def _inbound_loop(self) -> None:
        """The inbound loop, run while this replica holds the bot's lease (cancelled once lost)."""
        # Another replica may have polled since this one last did: start from the saved offset.
        self._offset_loaded = False
        await keep_running(
            self._inbound,
            self._stopping,
            what=f"telegram bot {self.name}",
            # Every error: a bug must not silently end the bot's inbound loop.
            retry_on=(Exception,),
            backoff=self._backoff,
            on_error=self._inbound_failed,
            describe=lambda exc: self.state.last_error,  # redacted: aiohttp's errors may quote the token
        )

    async def _inbound(self) -> bool:
        """Identify, then poll (or serve the webhook) until the adapter stops."""
        if self.me is None:
            await self._get_me()
        if self.cfg.mode == "webhook":
            if not self._webhook_set:
                await self._set_webhook()
            await self._stopping.wait()
            # Still holding the lease: a standby's setWebhook, once it takes over, comes after this.
            await self._delete_webhook()
        else:
            await self._poll()
        return True

    async def _inbound_failed(self, exc: BaseException) -> float | None:
        """Record why the inbound loop failed; the wait before the next try (None: the backoff's)."""
        if isinstance(exc, TelegramRetryAfter):
            self._fail(self._describe(exc))
            return float(exc.retry_after)
        if isinstance(exc, TelegramUnauthorizedError):
            # The token was revoked while running: keep the process up (other channels work),
            # show it in health, and try again slowly.
            self._fail(f"token refused ({exc.message}): revoked in @BotFather?")
            return self._backoff.cap
        if isinstance(exc, AiogramError):
            self._fail(self._describe(exc))
        elif isinstance(exc, TRANSIENT_ERRORS):
            self._fail(f"redis: {exc}")
        elif isinstance(exc, AppendRefused):
            # The inbox is full or Redis out of memory: the batch is not confirmed to Telegram
            # (the offset stays), and is taken again after the backoff.
            self._fail(f"inbox: {exc}", disconnected=False)
        else:
            log.exception("telegram bot %s: inbound loop failed", self.name)
            self._fail(f"{type(exc).__name__}: {exc}")
            return self._backoff.cap
        return None

    async def _poll(self) -> None:
        if not self._offset_loaded:
            raw = await self.ctx.cursor_get(CHANNEL, self.name, "offset")
            self.offset = int(raw) if raw else None
            self._offset_loaded = True
        if not self._webhook_cleared:
            # getUpdates answers 409 while a webhook is set (e.g. after switching modes).
            await self.bot.delete_webhook(drop_pending_updates=False)
            self._webhook_cleared = True
        while not self._stopping.is_set():
            try:
                updates = await self._get_updates()
                last = None
            except ClientDecodeError as exc:
                updates, last = await self._salvage(exc)
            if updates is None:
                return
            self.state.connected = True
            if updates or last is not None:
                await self._ingest(updates, last)
            self._backoff.reset()  # only once the batch is in the inbox: refused appends back off

    async def _get_updates(self) -> list[Update] | None:
        """One long poll, abandoned (None) when the adapter stops or the lease is lost (then the
        loop is cancelled): nothing of it was confirmed. None at once when the lease's deadline
        passed (this process was paused): another replica may be polling."""
        if not self.exclusive.held:
            return None
        poll = asyncio.ensure_future(
            self.bot.get_updates(
                offset=self.offset,
                timeout=self.cfg.poll_timeout_s,
                allowed_updates=ALLOWED_UPDATES,
                request_timeout=self.cfg.poll_timeout_s + self.cfg.request_timeout_s,
            )
        )
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({poll, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not poll.done():
                # Also when the loop is cancelled (lease lost): no request left polling behind.
                poll.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await poll
        return None if poll.cancelled() else poll.result()

    async def _salvage(self, exc: ClientDecodeError) -> tuple[list[Update], int]:
        """A batch aiogram could not read as a whole (one update it refuses, e.g. a field Telegram
        left out that aiogram requires: aiogram#1587, #1840): the updates it can read, and the
        last update id of the batch. The others go to the dead-letter stream, with the reason and
        their JSON, before anything is confirmed: one bad update would otherwise come back first
        in every poll, and block the bot for good. A response that is not a batch of updates with
        ids is not salvaged (the error goes on to the backoff)."""
        data = exc.data
        raw = data.get("result") if isinstance(data, dict) and data.get("ok") is True else None
        ids_known = isinstance(raw, list) and all(
            isinstance(u, dict) and isinstance(u.get("update_id"), int) for u in raw
        )
        if not ids_known or not raw:
            raise exc  # not a batch of updates with ids: nothing to tell apart
        updates: list[Update] = []
        for item in raw:
            try:
                updates.append(Update.model_validate(item, context={"bot": self.bot}))
            except ValidationError as error:
                await self._unreadable(item, error)
        return updates, max(u["update_id"] for u in raw)

    async def _unreadable(self, item: dict[str, Any], error: ValidationError) -> None:
        update_id = item.get("update_id")
        reason = f"update {update_id}: " + "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()[:5]
        )
        log.warning("telegram bot %s: unreadable %s; kept as a dead letter", self.name, reason)
        if await self.ctx.unreadable(CHANNEL, self.name, str(update_id), reason, item):
            self.state.counters["unreadable"] += 1

    async def _ingest(self, updates: list[Update], last: int | None = None) -> None:
        """Append a batch and confirm it (``last``: the batch's last update id, when some of it
        could not be read and is not in ``updates``)."""
        me = self.me
        assert me is not None  # _run identifies before polling
        envelopes: list[Envelope] = []
        queries: list[CallbackQuery] = []
        for update in updates:
            if update.callback_query is not None:
                queries.append(update.callback_query)
                continue
            env = await self._take(update, me)
            if env is not None:
                envelopes.append(env)
        if envelopes:
            results = await self.ctx.append_many(envelopes)
            dups = sum(r.duplicate for r in results)
            self.state.counters["received"] += len(results) - dups
            self.state.counters["duplicates"] += dups
        for query in queries:
            await self._press(query)
        # Only now is the batch safe: the next getUpdates confirms it to Telegram.
        self.offset = max([u.update_id for u in updates] + ([last] if last is not None else [])) + 1
        self.last_update_at = time.time()
        await self.ctx.cursor_set(CHANNEL, self.name, "offset", str(self.offset))

    async def _take(self, update: Update, me: BotIdentity) -> Envelope | None:
        """The impostor screen (a Redis failure fails the batch, which comes again), then the
        envelope; a ``/verify`` is answered by the guard and is not a support message."""
        if await self.guard.screen(update, me):
            self.state.counters["verified"] += 1
            return None
        return self._convert(update, me)

    def _convert(self, update: Update, me: BotIdentity) -> Envelope | None:
        try:
            result = convert(update, self.name, me, self.policy)
        except Exception:
            # A malformed update must not block every update behind it.
            log.exception("telegram bot %s: cannot convert update %s; skipped", self.name, update.update_id)
            self.state.counters["ignored"] += 1
            return None
        if isinstance(result, Ignored):
            log.debug("telegram bot %s: update %s ignored: %s", self.name, update.update_id, result.reason)
            self.state.counters["ignored"] += 1
            chat = result.unknown_chat
            if chat is not None and chat not in self._unknown_chats and len(self._unknown_chats) < 1000:
                self._unknown_chats.add(chat)
                log.info(
                    "telegram bot %s: group %s (%s) addressed the bot but is not in allowed_chats; "
                    "add it there to take its messages",
                    self.name,
                    chat,
                    update.message.chat.title if update.message else "",
                )
            return None
        return result

    async def accept_webhook(self, data: dict[str, Any]) -> int:
        """One webhook update: 200 once appended (or ignored), 503 to make Telegram send it again."""
        me = self.me
        if me is None:
            return 503
        try:
            update = Update.model_validate(data, context={"bot": self.bot})
        except ValidationError as exc:
            try:
                await self._unreadable(data, exc)
            except TRANSIENT_ERRORS as error:
                self._fail(f"redis: {error}")
                return 503  # not kept yet: Telegram sends it again
            return 200
        try:
            if update.callback_query is not None:
                await self._press(update.callback_query)
                self.state.connected = True
                self.last_update_at = time.time()
                return 200
            env = await self._take(update, me)
        except TRANSIENT_ERRORS as exc:
            self._fail(f"redis: {exc}")
            return 503
        if env is not None:
            try:
                result = await self.ctx.append(env)
            except TRANSIENT_ERRORS as exc:
                self._fail(f"redis: {exc}")
                return 503
            except AppendRefused as exc:  # Telegram sends the update again later
                self._fail(f"inbox: {exc}", disconnected=False)
                log.warning("telegram bot %s: webhook update %s refused: %s", self.name, update.update_id, exc)
                return 503
            self.state.counters["duplicates" if result.duplicate else "received"] += 1
        self.state.connected = True
        self.last_update_at = time.time()
        return 200

    async def _press(self, query: CallbackQuery) -> None:
        """Record a tap on a reply's button, then answer the query (a Redis error propagates: the
        update is not confirmed, Telegram sends it again, and the press is kept once)."""
        press = press_of(query, self.name)
        text = PRESS_REFUSED
        if isinstance(press, Press):
            try:
                if await self.ctx.press(press):
                    self.state.counters["presses"] += 1
                else:
                    self.state.counters["duplicates"] += 1
                text = PRESS_NOTED
            except InvalidPress:  # logged by the context
                self.state.counters["presses_refused"] += 1
        else:
            log.warning("telegram bot %s: press %s refused: %s", self.name, query.id, press.reason)
            self.state.counters["presses_refused"] += 1
        try:
            await self.bot.answer_callback_query(query.id, text=text, request_timeout=self.cfg.request_timeout_s)
        except AiogramError as exc:
            # Past Telegram's answer window (a press taken again after a restart): the press is
            # recorded all the same; only the user's "noted" toast is lost.
            log.info("telegram bot %s: answerCallbackQuery %s: %s", self.name, query.id, self._describe(exc))

    async def _get_me(self) -> None:
        user = await self.bot.get_me(request_timeout=self.cfg.request_timeout_s)
        self.me = BotIdentity(user.id, user.username or "")
        self.state.connected = True

    async def _delete_webhook(self) -> None:
        """At stop: updates wait at Telegram until a replica (or the next start) sets it again."""
        try:
            await self.bot.delete_webhook(drop_pending_updates=False, request_timeout=5)
            self._webhook_set = False
        except AiogramError as exc:
            log.warning("telegram bot %s: deleteWebhook failed: %s", self.name, self._describe(exc))

    async def _set_webhook(self) -> None:
        hook = self.cfg.webhook
        assert hook is not None  # validated with the configuration
        await self.bot.set_webhook(
            url=hook.url,
            secret_token=self.webhook_secret,
            allowed_updates=ALLOWED_UPDATES,
            max_connections=hook.max_connections,
            drop_pending_updates=False,
        )
        self._webhook_set = True
        self.state.connected = True

    # -- outbound ----------------------------------------------------------------------------
    async def send(self, item: OutboxItem) -> str:
        """Send one reply (split when long) as plain text, its buttons under the last part; raise
        the outbox's failure types."""
        target = Target.of(item)
        parts = split_text(item.text)
        markup = keyboard(item.buttons)
        quote = self.cfg.quote == "always" or (self.cfg.quote == "groups" and target.is_group)
        chat_id = target.chat_id
        sent: list[int] = []
        first = self._progress.get(item.id, 0)
        for index in range(first, len(parts)):
            reply = None
            if index == 0 and quote and target.reply_to is not None:
                # If the user deleted the message, send anyway rather than fail.
                reply = ReplyParameters(message_id=target.reply_to, allow_sending_without_reply=True)
            last = index == len(parts) - 1
            message = await self._send_part(
                chat_id, target.thread_id, parts[index], reply, item.id, markup if last else None
            )
            chat_id = message.chat.id  # differs after a group -> supergroup migration
            sent.append(message.message_id)
            self._progress[item.id] = index + 1
            while len(self._progress) > 1000:
                self._progress.popitem(last=False)
        self._progress.pop(item.id, None)
        self.state.counters["sent"] += 1
        ids = ",".join(map(str, sent))
        more = f" ({len(parts)} parts)" if len(parts) > 1 else ""
        return f"telegram message {chat_id}:{ids}{more}"

    async def _send_part(
        self,
        chat_id: int,
        thread_id: int | None,
        text: str,
        reply: ReplyParameters | None,
        reply_id: str,
        markup: InlineKeyboardMarkup | None,
    ) -> Message:
        interval = self.cfg.group_interval_s if chat_id < 0 else self.cfg.chat_interval_s
        for _ in range(2):
            await self.limiter.wait(chat_id, interval)
            try:
                # No parse_mode: agents' text goes out verbatim, Markdown characters included.
                return await self.bot.send_message(
                    chat_id=chat_id,
                    text=text,
                    message_thread_id=thread_id,
                    reply_parameters=reply,
                    reply_markup=markup,
                )
            except TelegramMigrateToChat as exc:
                log.info("telegram chat %s became supergroup %s", chat_id, exc.migrate_to_chat_id)
                chat_id = exc.migrate_to_chat_id
            except AiogramError as exc:
                outcome = classify(exc)
                if isinstance(exc, TelegramRetryAfter):
                    self.state.counters["rate_limited"] += 1
                    self.limiter.hold(chat_id, float(exc.retry_after))
                if isinstance(outcome, PermanentFailure):
                    self.state.counters["failed"] += 1
                    self._progress.pop(reply_id, None)
                self._fail(f"sendMessage to {chat_id}: {outcome}", disconnected=False)
                raise outcome from None
        raise PermanentFailure(f"chat {chat_id} migrated more than once")

    async def fetch_file(self, file_id: str, max_bytes: int | None = None) -> bytes:
        """An attachment's bytes (getFile, then download), refused above the size cap."""
        cap = min(max_bytes or self.cfg.max_file_bytes, self.cfg.max_file_bytes)
        try:
            file = await self.bot.get_file(file_id)
            if file.file_size is not None and file.file_size > cap:
                raise AttachmentTooLarge(f"file is {file.file_size} bytes, over the {cap}-byte cap")
            if not file.file_path:
                raise SwitchboardError("Telegram gave no download path for this file")
            url = self.bot.session.api.file_url(self._token, file.file_path)
            data = bytearray()
            async for chunk in self.bot.session.stream_content(url, timeout=self.cfg.request_timeout_s):
                data += chunk
                if len(data) > cap:
                    raise AttachmentTooLarge(f"file exceeds the {cap}-byte cap")
            return bytes(data)
        except (AiogramError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            # aiohttp's errors quote the URL, which holds the token.
            raise SwitchboardError(f"telegram file {file_id}: {self._redact(str(exc))}") from None

    # -- health ------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        return {
            **self.state.as_dict(),
            "username": self.me.username if self.me else None,
            "id": self.me.id if self.me else None,
            "mode": self.cfg.mode,
            "offset": self.offset,
            "rate_wait_s": round(self.limiter.waited_s, 3),
            "last_update_at": self.last_update_at,
            **self.exclusive.state(),
        }

    def _fail(self, error: str, *, disconnected: bool = True) -> None:
        # A refused reply (blocked user, closed topic) says nothing about the connection.
        self.state.error(self._redact(error), disconnected=disconnected)

    def _describe(self, exc: AiogramError) -> str:
        return self._redact(f"{type(exc).__name__}: {exc}")

    def _redact(self, text: str) -> str:
        return text.replace(self._token, "<token>")
