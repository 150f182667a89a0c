"""Console fixtures: the ASGI app served by uvicorn on a free loopback port, users, clients.

The server runs as a task in the test's own event loop (like inside ``switchboard run``), on the
per-test key prefix of the ``rt`` fixture, so tests never see each other's users or queues.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from adapters.sandbox import SandboxUsers
from router.config import Settings
from router.console import ConsoleServer, create_app
from router.console.service import Console
from router.runtime import Runtime
from router.weekly import Opener
from router.worker import Worker
from tests.router.helpers import message

PASSWORD = "correct horse battery"


@pytest.fixture
def web_settings(settings: Settings) -> Settings:
    web = settings.web.model_copy(
        update={
            "port": 0,
            "sample_s": 0.5,
            "login_max_failures": 3,
            "login_max_failures_per_ip": 1000,
            # The first admin ("admin") is created at start with this password instead of a printed one.
            "admin_password": SecretStr(PASSWORD),
        }
    )
    return settings.model_copy(update={"web": web})


@dataclass
class Served:
    server: ConsoleServer
    console: Console
    rt: Runtime

    @property
    def url(self) -> str:
        return self.server.url

    async def user(self, name: str, role: str = "agent", groups: tuple[str, ...] = ()) -> str:
        """Create a user with PASSWORD and return an API token for them."""
        await self.console.users.add(name, role, groups, PASSWORD, must_change=False)  # type: ignore[arg-type]
        return await self.console.users.issue_token(name)

    def api(self, token: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=30)

    async def browser_session(self, name: str, password: str = PASSWORD) -> tuple[httpx.AsyncClient, str]:
        """A client logged in through the login form, and its CSRF token."""
        client = httpx.AsyncClient(base_url=self.url, timeout=30, follow_redirects=False)
        page = await client.get("/login")
        token = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert token, page.text
        response = await client.post("/login", data={"name": name, "password": password, "csrf": token.group(1)})
        assert response.status_code == 303, response.text
        me = await client.get("/api/me")
        return client, me.json()["csrf"]

    async def route(self, text: str, *, user: str = "u1", channel: str = "telegram", **kw: Any) -> str:
        """Append a message and route it; returns the conversation id."""
        env = message(text, user=user, channel=channel, **kw)
        await self.rt.inbox.append(env)
        worker = Worker(self.rt)
        from tests.router.helpers import drain

        await worker.follow_published()  # the SLA policy in force, as a running worker has it
        await drain(worker)
        cid = await self.rt.client.get(self.rt.keys.conv_key(env.channel, env.account, env.conversation_key))
        assert cid is not None
        return str(cid.decode())


@contextlib.asynccontextmanager
async def serving(rt: Runtime, settings: Settings, store: Opener | None = None) -> AsyncIterator[Served]:
    """The console of ``settings`` over ``rt``, with the sandbox, on a free port; ``store``: how its
    reports and archive read the analytics store (``create_app``'s)."""
    app = create_app(rt, settings, SandboxUsers(rt.channel_context()), store)
    server = ConsoleServer(app, "127.0.0.1", 0)
    await server.start()
    try:
        yield Served(server, app.state.console, rt)
    finally:
        await server.close()


@pytest.fixture
async def served(rt: Runtime, web_settings: Settings) -> AsyncIterator[Served]:
    async with serving(rt, web_settings) as console:
        yield console


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float = 15) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)
