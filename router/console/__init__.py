"""The web console and HTTP API: ``create_app(runtime, settings)`` and ``ConsoleServer``.

See docs/console.md. Imports flow one way: the console uses the runtime (conversations, queues,
rule store, inbox) and the rules engine; nothing in the core imports the console except the CLI.
"""

from __future__ import annotations

from .app import create_app
from .server import ConsoleServer

__all__ = ["ConsoleServer", "create_app"]
