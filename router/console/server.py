"""Serving the console with uvicorn inside our own event loop, next to workers and adapters.

``ConsoleServer`` is a ``router.lifecycle.Service`` (``start``/``close``/``health``): ``serve``
starts it after the adapters and closes it first. The listening socket is bound in ``start`` so that a
port in use is a clear error at start-up instead of uvicorn's ``sys.exit`` inside a task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn
from starlette.applications import Starlette

from router.config import WebSettings
from router.errors import SwitchboardError

from .guard import guarded_protocol

log = logging.getLogger("switchboard.console")


class _Server(uvicorn.Server):
    # The process's signal handlers belong to whoever runs the event loop (serve() or the CLI),
    # not to an embedded HTTP server: uvicorn's would take SIGTERM away from the workers.
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class ConsoleServer:
    """The ASGI app on ``host:port`` (port 0: a free one), as an asyncio task."""

    name = "console"

    def __init__(self, app: Starlette, host: str = "127.0.0.1", port: int = 8080) -> None:
        self.app = app
        self.host = host
        self.port = port
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise SwitchboardError(f"the console cannot listen on {self.host}:{self.port}: {exc}") from None
        sock.set_inheritable(True)
        self.port = sock.getsockname()[1]
        self._sock = sock
        web: WebSettings = self.app.state.console.web
        _raise_fd_limit(web.max_connections)
        config = uvicorn.Config(
            self.app,
            # The connection cap and the request deadline (router/console/guard.py); uvicorn's
            # limit_concurrency would answer 503 to a new client while slow ones hold every slot.
            http=guarded_protocol(web.max_connections, web.request_timeout_s),
            timeout_keep_alive=web.keep_alive_s,
            lifespan="on",
            log_config=None,  # logging is configured by the CLI only
            access_log=False,
            # SSE streams end within a second of shutdown (app.state.stopping); this bounds the rest.
            timeout_graceful_shutdown=3,
            proxy_headers=False,
        )
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                await self._task  # surfaces the start-up error
                raise SwitchboardError("the console stopped during start-up")
            await asyncio.sleep(0.02)
        log.info("console listening on %s", self.url)

    async def close(self) -> None:
        if self._server is None or self._task is None:
            return
        self.app.state.stopping.set()
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        if self._sock is not None:
            self._sock.close()

    async def wait(self) -> None:
        """Until the server stops (for ``switchboard web``)."""
        if self._task is not None:
            await self._task

    def health(self) -> dict[str, Any]:
        running = self._task is not None and not self._task.done()
        return {"connected": running, "detail": self.url}


# Descriptors beyond the connections: Redis pools, the draft validator's pipes, logs, the embedded
# server's files.
FD_MARGIN = 512


def _raise_fd_limit(max_connections: int) -> None:
    """Raise this process's soft descriptor limit to what the connection cap needs (up to the hard
    limit), and say so when even that is too low: running out is what takes the process down."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max_connections + FD_MARGIN
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        if new < want:
            log.warning(
                "open files limited to %d: lower web.max_connections to %d or raise the limit (ulimit -n)",
                new,
                max(8, new - FD_MARGIN),
            )
