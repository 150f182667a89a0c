"""The weekly summary in a Telegram chat (router/weekly.py): the text form, split at Telegram's
limit, sent by a configured ``[telegram]`` bot to ``[reports] telegram_chat``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import AiogramError

from adapters.telegram.config import BotSettings, parse_section
from adapters.telegram.outbound import classify, split_text
from router.channel import ConfigError


class ReportChat:
    """A ``router.weekly.Recipient``: a bot session opened for the send and closed after it."""

    name = "telegram"

    def __init__(self, bot: BotSettings, chat_id: int) -> None:
        self.bot = bot
        self.chat_id = chat_id

    def describe(self) -> str:
        return f"Telegram chat {self.chat_id} (bot {self.bot.name})"

    async def send(self, subject: str, text: str, html: str) -> str:
        """Send the text (plain, no parse mode: nothing in it is markup); raises the outbox's
        TemporaryFailure (429, 5xx, network) or PermanentFailure (chat not found, bot blocked).
        A retry after a failed part sends every part again."""
        cfg = self.bot.config
        session = AiohttpSession(api=TelegramAPIServer.from_base(cfg.api_base), timeout=cfg.request_timeout_s)
        ids = []
        try:
            bot = Bot(self.bot.token, session=session)
            for part in split_text(text):
                ids.append((await bot.send_message(chat_id=self.chat_id, text=part)).message_id)
        except AiogramError as exc:
            raise classify(exc) from exc
        finally:
            await session.close()
        return f"telegram message {self.chat_id}:{','.join(map(str, ids))}"


def report_chat(section: Mapping[str, Any], bot: str, chat_id: int) -> ReportChat:
    """The recipient for ``[reports] telegram_chat``, sent by bot ``bot`` of the ``[telegram]``
    section; ConfigError when there is no such bot."""
    bots = {b.name: b for b in parse_section(section)} if section else {}
    found = bots.get(bot.lower())
    if found is None:
        known = ", ".join(bots) or "none configured"
        raise ConfigError(f"[reports] telegram_bot {bot!r}: no such [telegram] bot ({known})")
    return ReportChat(found, chat_id)
