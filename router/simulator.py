"""What the console needs of the sandbox channel to simulate a customer (the /sandbox page and
``/api/sandbox/...``): the composition root (router/cli.py) passes an implementation in, so that
the core never imports the adapter; None turns the simulator off."""

from __future__ import annotations

from typing import Any, Protocol


class SandboxPort(Protocol):
    async def send(self, user: str, text: str, attributes: dict[str, str] | None = None) -> str:
        """Write as sandbox user ``user``; the inbox entry id."""

    async def inbox(self, user: str) -> list[dict[str, Any]]:
        """The replies delivered to ``user``, oldest first."""

    async def press(self, user: str, number: int, reply: str | None = None) -> str:
        """Press button ``number`` (from 1) of ``reply`` (default: the latest with buttons) as
        ``user``; the button's label."""
