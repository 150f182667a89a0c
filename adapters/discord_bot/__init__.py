"""The Discord channel: a bot account taking DMs, support channels and their threads.

``from_config(ctx, section)`` builds the adapter from the ``[discord]`` configuration section;
see docs/discord.md for the bot setup and the configuration keys.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from adapters.base import Adapter
from adapters.discord_bot.adapter import DiscordAdapter, intents
from adapters.discord_bot.config import DiscordConfig, parse_config
from adapters.discord_bot.convert import CHANNEL
from adapters.discord_bot.outbound import split
from router.channel import ChannelContext

__all__ = ["CHANNEL", "DiscordAdapter", "DiscordConfig", "from_config", "intents", "parse_config", "split"]


def from_config(
    ctx: ChannelContext, section: Mapping[str, Any], clock: Callable[[], float] = time.time
) -> list[Adapter]:
    """The Discord adapter the section configures; none when it is empty or ``enabled = false``.

    Raises ConfigError for an invalid section or a missing token (the token itself is checked
    against Discord in ``start()``).
    """
    if not section:
        return []
    config = parse_config(section)
    if not config.enabled:
        return []
    config.read_token()
    if not config.guilds:
        # Valid (a DM-only bot), but worth saying: a forgotten table would look like lost messages.
        import logging

        logging.getLogger("switchboard.discord").info(
            "[discord] %s: no support channels configured; only DMs are taken in", config.name
        )
    return [DiscordAdapter(ctx, config, clock)]
