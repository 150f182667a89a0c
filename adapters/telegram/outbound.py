"""Outbound helpers: where a reply goes, how long text is split, its buttons, send rates, error mapping."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiogram.exceptions import (
    AiogramError,
    TelegramAPIError,
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramRetryAfter,
)
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

from adapters.text import split_text as _split
from router.channel import Button, OutboxItem, PermanentFailure, TemporaryFailure

#: sendMessage's limit, counted by Telegram in UTF-16 code units.
MAX_TEXT = 4096
#: Buttons whose labels are all this short share one row (a 1-5 rating); longer ones get a row each.
SHORT_LABEL = 4
#: Telegram's most buttons in one row.
ROW_MAX = 8


@dataclass(frozen=True, slots=True)
class Target:
    """The chat, topic and message a reply goes to."""

    chat_id: int
    thread_id: int | None
    reply_to: int | None

    @property
    def is_group(self) -> bool:
        # Private chats have the user's (positive) id; groups and supergroups negative ids.
        return self.chat_id < 0

    @classmethod
    def of(cls, item: OutboxItem) -> Target:
        """From the meta of the conversation's last inbound message (the conversation key as fallback)."""
        meta = item.meta
        key_chat, _, key_thread = item.conversation_key.partition(":")
        try:
            chat_id = int(meta.get("chat_id") or key_chat)
            thread = meta.get("thread_id") or key_thread
            thread_id = int(thread) if thread else None
            reply_to = _reply_target(item, chat_id)
        except ValueError:
            raise PermanentFailure(f"not a Telegram conversation key: {item.conversation_key!r}") from None
        return cls(chat_id, thread_id, reply_to)


def _reply_target(item: OutboxItem, chat_id: int) -> int | None:
    if item.meta.get("message_id"):
        return int(item.meta["message_id"])
    if item.reply_to:
        chat, _, rest = item.reply_to.partition(":")
        message = rest.split(":", 1)[0]
        if chat == str(chat_id) and message.isdigit():
            return int(message)
    return None


def split_text(text: str, limit: int = MAX_TEXT) -> list[str]:
    """Split ``text`` into parts of at most ``limit`` UTF-16 units (see adapters.text.split_text)."""
    return _split(text, limit)


def keyboard(buttons: tuple[Button, ...]) -> InlineKeyboardMarkup | None:
    """The inline keyboard of a reply's buttons (callback data = the button's data), or None.

    Short labels ("1" ... "5", an emoji) go side by side; sentences ("✅ This solved it") one per
    row, where a phone shows them whole."""
    if not buttons:
        return None
    keys = [InlineKeyboardButton(text=b.label, callback_data=b.data) for b in buttons]
    if all(len(b.label) <= SHORT_LABEL for b in buttons):
        rows = [keys[i : i + ROW_MAX] for i in range(0, len(keys), ROW_MAX)]
    else:
        rows = [[key] for key in keys]
    return InlineKeyboardMarkup(inline_keyboard=rows)


class RateLimiter:
    """Per-chat spacing and one global rate, so replies stay under Telegram's flood limits.

    Each send reserves its chat's next slot first and only then a global slot, so a chat that
    must wait (e.g. the third part of a long reply) does not hold up replies to other chats.
    """

    def __init__(
        self,
        global_per_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._spacing = 1.0 / global_per_s
        self._clock = clock
        self._sleep = sleep
        self._next_chat: dict[int, float] = {}
        self._next_global = 0.0
        self.waited_s = 0.0

    async def wait(self, chat_id: int, interval: float) -> None:
        now = self._clock()
        at = max(now, self._next_chat.get(chat_id, 0.0))
        self._next_chat[chat_id] = at + interval
        await self._pause(at - now)
        now = self._clock()
        at = max(now, self._next_global)
        self._next_global = at + self._spacing
        await self._pause(at - now)
        if len(self._next_chat) > 10_000:
            self._next_chat = {c: t for c, t in self._next_chat.items() if t > now}

    def hold(self, chat_id: int, seconds: float) -> None:
        """Telegram said 429 for this chat: nothing more to it before ``seconds`` passed."""
        self._next_chat[chat_id] = max(self._next_chat.get(chat_id, 0.0), self._clock() + seconds)

    async def _pause(self, seconds: float) -> None:
        if seconds > 0:
            self.waited_s += seconds
            await self._sleep(seconds)


def classify(exc: AiogramError) -> PermanentFailure | TemporaryFailure:
    """Map an aiogram error from a send to the outbox's outcome.

    400 (chat not found, topic closed ...) and 403 (user blocked the bot, bot removed from the
    group) will not get better by retrying; 429, 5xx, network errors, and 401/404/409 (a problem of
    the bot or the service, not of this reply) are retried with the outbox's backoff.
    """
    if isinstance(exc, TelegramRetryAfter):
        return TemporaryFailure(f"429 Too Many Requests: retry after {exc.retry_after}s", exc.retry_after)
    if isinstance(exc, TelegramForbiddenError):
        return PermanentFailure(f"403 {exc.message}")
    if isinstance(exc, TelegramBadRequest):
        return PermanentFailure(f"400 {exc.message}")
    if isinstance(exc, TelegramAPIError):
        return TemporaryFailure(f"{type(exc).__name__}: {exc.message}")
    return TemporaryFailure(f"{type(exc).__name__}: {exc}")
