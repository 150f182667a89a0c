"""A loopback TCP proxy in front of a real redis-server that can lose replies on purpose.

``cut_next_reply()`` arms it: the next bytes Redis sends back are dropped and that client's
connection is closed, so the command has run in Redis but its caller never hears so — the case
in which a client that resends on connection errors runs a write twice. With ``command`` (e.g.
``b"EVALSHA"``, ``b"EXEC"``) the reply lost is the one to the next request holding those bytes,
so the reads a call makes before its write get through.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlparse


class CutProxy:
    def __init__(self, target_url: str) -> None:
        parsed = urlparse(target_url)
        self._target = (parsed.hostname or "127.0.0.1", parsed.port or 6379)
        self._cut = 0
        self._cut_on: list[bytes] = []
        self.cuts = 0
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}/0"

    def cut_next_reply(self, times: int = 1, *, command: bytes | None = None) -> None:
        if command is None:
            self._cut += times
        else:
            self._cut_on += [command] * times

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self._target)
        done = asyncio.Event()

        async def upstream() -> None:
            while data := await reader.read(65536):
                if self._cut_on and self._cut_on[0] in data:
                    self._cut_on.pop(0)
                    self._cut += 1
                up_writer.write(data)
                await up_writer.drain()

        async def downstream() -> None:
            while data := await up_reader.read(65536):
                if self._cut:
                    self._cut -= 1
                    self.cuts += 1
                    return  # the reply is lost with the connection
                writer.write(data)
                await writer.drain()

        async def pipe(coro: object) -> None:
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await coro  # type: ignore[misc]
            done.set()

        tasks = [asyncio.create_task(pipe(upstream())), asyncio.create_task(pipe(downstream()))]
        self._pipes.update(tasks)
        try:
            await done.wait()
        finally:
            for task in tasks:
                task.cancel()
                self._pipes.discard(task)
            for w in (writer, up_writer):
                w.close()
                with contextlib.suppress(ConnectionError, OSError):
                    await w.wait_closed()


@contextlib.asynccontextmanager
async def cut_proxy(target_url: str) -> AsyncIterator[CutProxy]:
    proxy = CutProxy(target_url)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()
