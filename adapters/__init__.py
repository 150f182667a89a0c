"""Channel adapters, and the channel registry: the one list of channels.

Each channel module exposes ``from_config(ctx, section) -> list[Adapter]``, where ``ctx`` is the
``router.channel.ChannelContext`` (the only way into the core) and ``section`` the channel's table
of the configuration (``[telegram]``, ``[discord]``, ``[email]``, ``[sandbox]``), validated by the
module's own pydantic model. An ``enabled = false`` section starts nothing, nor does an empty one
except for a channel on by default (the sandbox, which needs nothing configured).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from adapters.base import Adapter
from router.channel import ChannelContext


@dataclass(frozen=True)
class Channel:
    module: str
    #: Whether an absent or empty section starts the channel.
    on_by_default: bool = False


#: Every channel, by configuration section. The CLI builds the adapters from this;
#: ``router.config.Settings`` declares one section per entry (a test keeps the two equal).
CHANNELS: dict[str, Channel] = {
    "sandbox": Channel("adapters.sandbox", on_by_default=True),
    "telegram": Channel("adapters.telegram"),
    "discord": Channel("adapters.discord_bot"),
    "email": Channel("adapters.email"),
}


def build(ctx: ChannelContext, sections: Mapping[str, Mapping[str, Any]]) -> list[Adapter]:
    """The adapters the configuration enables (imports only the enabled channels' modules)."""
    adapters: list[Adapter] = []
    for name, channel in CHANNELS.items():
        section = sections.get(name) or {}
        if not (section or channel.on_by_default) or not section.get("enabled", True):
            continue
        adapters.extend(importlib.import_module(channel.module).from_config(ctx, section))
    return adapters
