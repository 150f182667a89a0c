"""Fixtures: the Discord emulator on loopback, and the adapter built from a ``[discord]`` section."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from adapters.discord_bot import DiscordAdapter, from_config
from router.keys import STREAMS, entry_order
from router.model import Envelope, decode_envelope
from router.runtime import Runtime
from tests.discord.emulator import Emulator, Json

TOKEN = "MTIz.emulated.bot-token"
ACCOUNT = "test-bot"
GUILD = 800_000_000_000_000_001
SUPPORT = 800_000_000_000_000_002
ELSEWHERE = 800_000_000_000_000_003  # in the same guild, not a support channel


@pytest.fixture
async def emu(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Emulator]:
    emulator = Emulator(TOKEN, {GUILD: [SUPPORT, ELSEWHERE]})
    await emulator.start()
    emulator.patch(monkeypatch)
    yield emulator
    await emulator.close()


@pytest.fixture
def section() -> dict[str, Any]:
    """The ``[discord]`` table as the configuration loader hands it over (ids as TOML keys/strings)."""
    return {
        "name": ACCOUNT,
        "token": TOKEN,
        "guilds": {str(GUILD): [str(SUPPORT)]},
        # discord.py waits this long after the last GUILD_CREATE before READY; 2 s by default.
        "guild_ready_timeout_s": 0.05,
        "ready_timeout_s": 10,
        # discord.py pauses 5 s before a new IDENTIFY (Discord's identify rate limit).
        "identify_delay_s": 0,
    }


AdapterFactory = Callable[..., Awaitable[DiscordAdapter]]


class FakeClock:
    """Wall time that moves only when the test says so (``adapter.clock``)."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
async def make_bot(rt: Runtime, emu: Emulator, section: dict[str, Any]) -> AsyncIterator[AdapterFactory]:
    """Build and start adapters (overriding section keys); all are closed at the end of the test."""
    started: list[DiscordAdapter] = []

    async def make(clock: Callable[[], float] = time.time, **overrides: Any) -> DiscordAdapter:
        [adapter] = from_config(rt.channel_context(), {**section, **overrides}, clock)
        assert isinstance(adapter, DiscordAdapter)
        await adapter.start()
        started.append(adapter)
        return adapter

    yield make
    for adapter in reversed(started):
        await adapter.close()


@pytest.fixture
async def bot(make_bot: AdapterFactory) -> DiscordAdapter:
    return await make_bot()


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 10.0, what: str = "") -> None:
    """Poll ``check`` until it holds; fail with ``what`` after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        await asyncio.sleep(0.02)


async def inbox(rt: Runtime) -> list[Envelope]:
    """The Discord envelopes in the inbox and the P1 lane (docs/surge.md), in arrival order."""
    entries = [e for name in STREAMS for e in await rt.client.xrange(rt.keys.stream(name))]
    entries.sort(key=lambda e: entry_order(e[0]))
    envs = [decode_envelope(fields[b"env"]) for _, fields in entries]
    return [e for e in envs if e.channel == "discord"]


async def wait_inbox(rt: Runtime, count: int, within: float = 10.0) -> list[Envelope]:
    async def enough() -> bool:
        return len(await inbox(rt)) >= count

    await eventually(enough, within, f"{count} discord envelopes in the inbox")
    return await inbox(rt)


async def conversation_id(rt: Runtime, key: str) -> str:
    raw = await rt.client.get(rt.keys.conv_key("discord", ACCOUNT, key))
    assert raw is not None, f"no conversation for key {key}"
    return str(raw.decode())


async def pressed(emu: Emulator, message: Json, user: Json, suffix: str) -> None:
    """``user`` presses the button of ``message`` whose data ends with ``suffix``; waits until the
    adapter answered the interaction."""
    [row] = message["components"]
    [data] = [b["custom_id"] for b in row["components"] if b["custom_id"].endswith(suffix)]
    before = len(emu.responses)
    await emu.press(message, data, user)

    async def answered() -> bool:
        return len(emu.responses) > before

    await eventually(answered, 5, "the interaction's response")
