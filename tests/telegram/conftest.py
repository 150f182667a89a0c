"""Fixtures: a Bot API emulator per test and a factory for adapters (real aiogram) pointed at it."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import pytest

from adapters.telegram import TelegramAdapter, from_config
from router.channel import ChannelContext
from router.config import RulesSettings
from router.runtime import Runtime
from router.worker import Worker
from tests.router.helpers import drain
from tests.telegram.emulator import Emulator

GROUP = -100111
FORUM = -100222
OTHER_GROUP = -100333
ACCOUNT = "supportbot"
RULES = Path(__file__).with_name("rules.yaml")


class MakeAdapter(Protocol):
    async def __call__(self, ctx: ChannelContext | None = None, **bot: Any) -> TelegramAdapter: ...


def section(emu: Emulator, **bot: Any) -> dict[str, Any]:
    """A [telegram] section for the emulator: fast polls, no send spacing unless a test asks."""
    options: dict[str, Any] = {
        "token": emu.token,
        "allowed_chats": [GROUP, FORUM],
        "poll_timeout_s": 1,
        "request_timeout_s": 5,
        "chat_interval_s": 0,
        "group_interval_s": 0,
        "global_per_s": 1000,
        **bot,
    }
    return {"api_base": emu.url, "bots": {ACCOUNT: options}}


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    emulator = Emulator()
    await emulator.start()
    yield emulator
    await emulator.close()


@pytest.fixture
async def make_adapter(rt: Runtime, emu: Emulator) -> AsyncIterator[MakeAdapter]:
    started: list[TelegramAdapter] = []

    async def make(ctx: ChannelContext | None = None, **bot: Any) -> TelegramAdapter:
        [adapter] = from_config(ctx or rt.channel_context(), section(emu, **bot))
        assert isinstance(adapter, TelegramAdapter)
        # Short grace: a test that leaves a 429 wait in flight must not hang its teardown.
        adapter._grace = 1.0
        await adapter.start()
        started.append(adapter)
        return adapter

    yield make
    for adapter in reversed(started):
        await adapter.close()


async def until(predicate: Callable[[], Awaitable[bool] | bool], within: float = 5.0, what: str = "") -> None:
    """Wait until ``predicate`` holds (polling every 20 ms), or fail the test."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out after {within}s waiting for {what or predicate}")
        await asyncio.sleep(0.02)


async def cursor(rt: Runtime) -> str | None:
    return await rt.channel_context().cursor_get("telegram", ACCOUNT, "offset")


async def consumed(rt: Runtime, update: dict[str, Any]) -> None:
    """Wait until the adapter has appended ``update`` (and everything before it) and saved the offset."""
    want = str(update["update_id"] + 1)
    await until(lambda: _at_least(rt, want), what=f"offset {want}")


async def _at_least(rt: Runtime, want: str) -> bool:
    got = await cursor(rt)
    return got is not None and int(got) >= int(want)


async def route(rt: Runtime, rules: Path | None = None) -> int:
    """Run a router worker over everything in the inbox."""
    settings = rt.settings
    if rules is not None:
        settings = settings.model_copy(update={"rules": RulesSettings(file=rules)})
    return await drain(Worker(rt, settings=settings))


async def conversation_id(rt: Runtime, key: str) -> str | None:
    raw = await rt.client.get(rt.keys.conv_key("telegram", ACCOUNT, key))
    return raw.decode() if raw is not None else None


async def delivery(rt: Runtime, conv: str, reply: str, within: float = 8.0) -> str:
    """The final delivery status of a reply (delivered / failed), waiting for it."""
    status: dict[str, str] = {}

    async def final() -> bool:
        status.update(await rt.conversations.deliveries(conv))
        return status.get(reply) in ("delivered", "failed")

    await until(final, within, what=f"delivery of {reply}")
    return status[reply]
