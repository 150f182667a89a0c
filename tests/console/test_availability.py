"""Issue 13, finding 8: slow clients must not take the console down (router/console/guard.py).

Real uvicorn on a loopback port, raw sockets for the slow clients.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from router.config import Settings
from tests.console.conftest import Served

DEADLINE_S = 0.5
CAP = 20


@pytest.fixture
def web_settings(web_settings: Settings) -> Settings:
    web = web_settings.web.model_copy(update={"request_timeout_s": DEADLINE_S, "max_connections": CAP})
    return web_settings.model_copy(update={"web": web})


@contextlib.asynccontextmanager
async def slow_clients(
    served: Served, n: int, first: bytes, pace_s: float = 0.0
) -> AsyncIterator[list[asyncio.StreamReader]]:
    """``n`` connections that send ``first`` and then nothing more, one every ``pace_s``."""
    port = served.server.port
    pairs = []
    for _ in range(n):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(first)
        await writer.drain()
        pairs.append((reader, writer))
        await asyncio.sleep(pace_s)
    try:
        yield [reader for reader, _ in pairs]
    finally:
        for _, writer in pairs:
            writer.close()


async def closed_by_server(reader: asyncio.StreamReader, within: float) -> bytes | None:
    """What the server sent before closing, or None if it still holds the connection."""
    try:
        return await asyncio.wait_for(reader.read(), within)
    except TimeoutError:
        return None


async def test_headers_that_never_finish_are_closed_at_the_deadline(served: Served) -> None:
    async with slow_clients(served, 5, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ") as readers:
        got = await asyncio.gather(*(closed_by_server(r, DEADLINE_S * 6) for r in readers))
    assert got == [b""] * 5, got


async def test_a_body_that_never_finishes_gets_408(served: Served) -> None:
    token = await served.user("alice", "admin")
    head = (
        b"POST /api/rules/validate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + token.encode() + b"\r\nContent-Length: 100\r\n\r\n{"
    )
    async with slow_clients(served, 1, head) as (reader,):
        got = await closed_by_server(reader, DEADLINE_S * 6)
    assert got is not None and got.startswith(b"HTTP/1.1 408"), got


async def test_a_kept_alive_connection_cannot_stall_its_next_request(served: Served) -> None:
    first = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n"
    async with slow_clients(served, 1, first) as (reader,):
        got = await closed_by_server(reader, DEADLINE_S * 6)
    assert got is not None and got.startswith(b"HTTP/1.1 200") and got.count(b"HTTP/1.1") == 1, got


async def test_slow_clients_beyond_the_cap_make_room_and_healthz_stays_green(served: Served) -> None:
    async with slow_clients(served, CAP * 3, b"GET / HTTP/1.1\r\n", pace_s=0.01) as readers:
        async with served.api() as client:
            assert (await client.get("/healthz")).status_code == 200
        # The oldest slow clients were closed to make room: at most CAP connections stay open.
        await asyncio.sleep(0.05)
        for r in readers:  # at_eof needs the EOF read
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(r.read(), 0.01)
        still_open = [r for r in readers if not r.at_eof()]
        assert len(still_open) <= CAP, len(still_open)
        assert not readers[-1].at_eof()  # the newest were kept


async def test_a_long_request_already_arrived_is_not_cut(served: Served) -> None:
    token = await served.user("alice", "admin")
    async with served.api(token) as client, client.stream("GET", "/api/events") as response:
        assert response.status_code == 200
        lines = response.aiter_lines()
        assert await anext(lines) == "retry: 2000"
        await asyncio.sleep(DEADLINE_S * 3)  # well past the deadline: the stream still runs
        assert not response.is_closed
