"""A fatal gateway close long after start-up: the adapter stops loudly, `check` fails, the process stops."""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any

import pytest

from adapters.discord_bot import DiscordAdapter, from_config
from router import cli
from router.errors import ConfigError
from router.runtime import Runtime
from router.supervisor import publish_health, serve
from router.worker import Worker
from tests.discord.conftest import AdapterFactory, FakeClock, eventually
from tests.discord.emulator import Emulator

HOUR = 3600.0


async def _disconnected(bot: DiscordAdapter) -> bool:
    return not bot.health()["connected"]


async def test_intent_revoked_an_hour_after_start_stops_the_adapter_and_fails_check(
    rt: Runtime,
    emu: Emulator,
    make_bot: AdapterFactory,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    clock = FakeClock()
    started_at = clock.now
    bot = await make_bot(clock=clock, stop_on_fatal=False)
    assert bot.state.connected
    await Worker(rt)._heartbeat()  # a live worker: only the adapter can fail `check`
    await publish_health(rt, [bot])
    assert await cli._check(rt, argparse.Namespace()) == 0

    clock.advance(HOUR)  # long past start-up, where start() could still raise it
    await emu.close_gateway(4014, "Disallowed intent(s).")
    await eventually(lambda: _disconnected(bot), 10, "the adapter to drop")
    await publish_health(rt, [bot])
    capsys.readouterr()
    assert await cli._check(rt, argparse.Namespace()) == 1
    [fail] = [line for line in capsys.readouterr().err.splitlines() if line.startswith("FAIL")]
    assert fail.startswith(f"FAIL adapter discord:test-bot@{rt.instance} stopped since 2027-01-15 09:00:00 UTC: ")
    assert "Message Content" in fail
    # The console's dashboard and `switchboard stats` show the same line among the alerts.
    assert fail.removeprefix("FAIL ") in (await rt.stats.read())["alerts"]

    health = bot.health()
    assert health["connected"] is False and health["fatal_at"] == started_at + HOUR
    assert "Message Content" in health["fatal"] and "Privileged Gateway Intents" in health["fatal"]
    assert health["detail"].startswith("STOPPED: ")
    [error] = [r for r in caplog.records if r.levelno == logging.ERROR and r.name == "switchboard.discord"]
    assert "(4014)" in error.getMessage() and "stop_on_fatal = false" in error.getMessage()
    assert rt.stop_request.reasons == []  # stop_on_fatal = false: the rest of Switchboard runs on


async def test_token_reset_after_start_stops_the_whole_process(
    rt: Runtime, emu: Emulator, section: dict[str, Any]
) -> None:
    [adapter] = from_config(rt.channel_context(), section)  # stop_on_fatal: the default, true
    assert isinstance(adapter, DiscordAdapter)
    serving = asyncio.create_task(serve(rt, [adapter]))

    async def connected() -> bool:
        return adapter.state.connected

    await eventually(connected, 10, "the adapter to connect")
    await emu.close_gateway(4004, "Authentication failed.")
    with pytest.raises(ConfigError, match=r"gateway closed the session \(4004\).*Reset Token"):
        await asyncio.wait_for(serving, 10)
