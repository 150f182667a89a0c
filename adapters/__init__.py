"""Channel adapters, and the channel registry: the one list of channels.

Each channel module exposes ``from_config(ctx, section) -> list[Adapter]``, where ``ctx`` is the
``router.channel.ChannelContext`` (the only way into the core) and ``section`` the channel's table
of the configuration (``[telegram]``, ``[discord]``, ``[email]``, ``[sandbox]``), validated by the
module's own pydantic model. An empty or ``enabled = false`` section starts nothing.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from adapters.base import Adapter
from router.channel import ChannelContext

#: Every channel: its configuration section -> its module. The CLI builds the adapters from this;
#: ``router.config.Settings`` declares one section per entry (a test keeps the two equal).
CHANNELS: dict[str, str] = {
    "sandbox": "adapters.sandbox",
    "telegram": "adapters.telegram",
    "discord": "adapters.discord_bot",
    "email": "adapters.email",
}


def build(ctx: ChannelContext, sections: Mapping[str, Mapping[str, Any]]) -> list[Adapter]:
    """The adapters the configuration enables (imports only the enabled channels' modules)."""
    adapters: list[Adapter] = []
    for name, module in CHANNELS.items():
        section = sections.get(name) or {}
        if not section or not section.get("enabled", True):
            continue
        adapters.extend(importlib.import_module(module).from_config(ctx, section))
    return adapters
