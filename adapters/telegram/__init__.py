"""The Telegram channel: bots as accounts, on aiogram 3, long polling or webhook.

``from_config(ctx, section)`` returns one ``TelegramAdapter`` that runs every configured bot:
the channel has one outbox stream, so one consumer per process sends for all its bots, each reply
through the bot named by its ``account``. See docs/telegram.md for setup.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from adapters.base import Adapter, Health
from adapters.telegram.bot import AttachmentTooLarge, BotRunner
from adapters.telegram.config import BotSettings, parse_section
from adapters.telegram.convert import CHANNEL
from adapters.telegram.outbound import split_text
from adapters.telegram.webhook import WebhookServer
from router.channel import ChannelContext, NotFound, OutboxItem, PermanentFailure

__all__ = ["AttachmentTooLarge", "BotRunner", "TelegramAdapter", "from_config", "split_text"]

log = logging.getLogger("switchboard.telegram")


def from_config(ctx: ChannelContext, section: Mapping[str, Any]) -> list[Adapter]:
    """The adapter for the ``[telegram]`` section; raises ConfigError on a bad section."""
    bots = parse_section(section)
    return [TelegramAdapter(ctx, bots)] if bots else []


class TelegramAdapter:
    """All configured bots of this process, their inbound loops and the channel's outbox."""

    channel = CHANNEL
    name = CHANNEL

    def __init__(self, ctx: ChannelContext, bots: list[BotSettings], *, shutdown_grace_s: float = 5.0) -> None:
        self.bots = {b.name: BotRunner(ctx, b) for b in bots}
        self._outbox = ctx.outbox(CHANNEL)
        self._grace = shutdown_grace_s
        self._servers: dict[tuple[str, int], WebhookServer] = {}

    async def start(self) -> None:
        """getMe for every bot (a refused token raises ConfigError), then inbound and outbound."""
        try:
            for runner in self.bots.values():
                await runner.identify()
            for runner in self.bots.values():
                hook = runner.cfg.webhook
                if runner.cfg.mode == "webhook" and hook is not None:
                    server = self._servers.setdefault((hook.host, hook.port), WebhookServer(hook.host, hook.port))
                    server.route(hook.local_path, runner.webhook_secret, runner.accept_webhook)
            # Listen before setWebhook, so Telegram's first delivery finds the server.
            for server in self._servers.values():
                await server.start()
            for runner in self.bots.values():
                await runner.start_inbound()
            self._outbox.start(self._send)
        except BaseException:
            # The runtime closes only adapters that started: leave no session or socket behind.
            await self.close()
            raise

    async def close(self) -> None:
        """Stop inbound first, let in-flight sends finish (up to the grace time), disconnect."""
        for runner in self.bots.values():
            await runner.stop_inbound()
        for server in self._servers.values():
            await server.close()
        # A send waiting out a long 429 past the grace time stays pending and is reclaimed.
        await self._outbox.close(self._grace)
        for runner in self.bots.values():
            await runner.close()

    async def _send(self, item: OutboxItem) -> str:
        runner = self.bots.get(item.account)
        if runner is None:
            raise PermanentFailure(f"no Telegram bot {item.account!r} is configured in this process")
        return await runner.send(item)

    async def fetch_attachment(self, account: str, ref: str, max_bytes: int | None = None) -> bytes:
        """An attachment's bytes, for an agent who asked for it (``Attachment.ref`` is the file id)."""
        runner = self.bots.get(account)
        if runner is None:
            raise NotFound(f"telegram bot {account!r}")
        return await runner.fetch_file(ref, max_bytes)

    def health(self) -> dict[str, Any]:
        bots = {name: runner.health() for name, runner in self.bots.items()}
        running = self._outbox.running
        connected = running and all(b["connected"] for b in bots.values())
        detail = ", ".join(
            f"@{b['username'] or name} {b['mode']}{'' if b['connected'] else ' (disconnected)'}"
            + ("" if b["lease"] == "held" else f" (standby: {b['holder'] or 'lease free'} polls)")
            for name, b in bots.items()
        )
        errors = [f"{name}: {b['last_error']}" for name, b in bots.items() if b["last_error"]]
        state = Health(connected=connected, detail=detail, last_error="; ".join(errors))
        return {**state.count_outbox(self._outbox).as_dict(), "bots": bots}
