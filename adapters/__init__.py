"""Channel adapters. Each channel module exposes ``from_config(ctx, section) -> list[Adapter]``.

``section`` is the channel's table of the configuration (``[telegram]``, ``[discord]``,
``[email]``), validated by the module's own pydantic model; an empty or ``enabled = false``
section starts nothing.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from adapters.base import Adapter, AdapterContext

#: configuration section -> module
CHANNELS: dict[str, str] = {
    "telegram": "adapters.telegram",
    "discord": "adapters.discord_bot",
    "email": "adapters.email",
}


def build(ctx: AdapterContext, sections: Mapping[str, Mapping[str, Any]]) -> list[Adapter]:
    """The adapters the configuration enables (imports only the enabled channels' modules)."""
    adapters: list[Adapter] = []
    for name, module in CHANNELS.items():
        section = sections.get(name) or {}
        if not section or not section.get("enabled", True):
            continue
        adapters.extend(importlib.import_module(module).from_config(ctx, section))
    return adapters
