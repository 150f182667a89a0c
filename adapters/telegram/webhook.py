"""The adapter's own HTTP server for webhook mode, apart from the web console: it listens on the
``[webhook]`` table's host and port, where Telegram must reach it, and serves nothing else there.

Telegram sends every webhook request with the secret given to setWebhook in the
``X-Telegram-Bot-Api-Secret-Token`` header; a request without it (or with another) is refused
with 403 before its body is read, so anyone who finds the URL cannot inject messages.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from router.channel import ConfigError

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
Accept = Callable[[dict[str, Any]], Awaitable[int]]

log = logging.getLogger("switchboard.telegram")


class WebhookServer:
    """One listening address; one route per bot that uses it."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        # 1 MB is far above any update and bounds what an unauthenticated client can make us read.
        self._app = web.Application(client_max_size=1024 * 1024)
        self._runner: web.AppRunner | None = None

    def route(self, path: str, secret: str, accept: Accept) -> None:
        expected = secret.encode()

        async def handle(request: web.Request) -> web.Response:
            given = request.headers.get(SECRET_HEADER, "").encode()
            if not hmac.compare_digest(given, expected):
                log.warning("telegram webhook %s: request without the secret token refused", path)
                return web.Response(status=403, text="forbidden")
            try:
                data = await request.json()
            except ValueError:
                return web.Response(status=400, text="not JSON")
            if not isinstance(data, dict):
                return web.Response(status=400, text="not an update")
            return web.Response(status=await accept(data))

        self._app.router.add_post(path, handle)

    async def start(self) -> None:
        # A short shutdown timeout: Telegram redelivers anything it did not get a 200 for.
        runner = web.AppRunner(self._app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError(f"[telegram] webhook: cannot listen on {self.host}:{self.port}: {exc}") from None
        self._runner = runner

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
