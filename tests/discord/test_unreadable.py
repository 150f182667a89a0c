"""A message discord.py cannot read (a payload it refuses) neither ends the session nor blocks its
channel: it is kept as a dead letter, with the reason and its JSON, and what follows is taken."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.discord_bot import DiscordAdapter
from router.deadletters import DeadLetters
from router.runtime import Runtime
from tests.discord.conftest import AdapterFactory, eventually, wait_inbox
from tests.discord.emulator import Emulator

# A reference of a type discord.py has no member for: its parser raises on the whole message.
UNREADABLE = {"message_reference": {"type": "no-such-type"}}
SEED = "abandon " * 11 + "about"


async def test_an_unreadable_live_message_is_a_dead_letter_and_the_session_goes_on(
    rt: Runtime, emu: Emulator, bot: DiscordAdapter
) -> None:
    alice = emu.user("alice")
    dm = emu.dm(alice)
    await emu.post(dm, alice, "deposit missing")
    bad = await emu.post(dm, alice, f"they asked for my words: {SEED}", **UNREADABLE)
    await emu.post(dm, alice, "still missing")
    envs = await wait_inbox(rt, 2)
    assert [e.text for e in envs] == ["deposit missing", "still missing"]
    [dead] = await DeadLetters(rt.client, rt.shards).entries()
    assert dead["reason"].startswith(f"discord test-bot: unreadable: message {bad['id']}: MESSAGE_CREATE:")
    assert "abandon abandon" not in dead["field:original"] and "[redacted:seed_phrase]" in dead["field:original"]
    health = bot.health()
    assert health["unreadable"] == 1 and health["sessions"] == 1 and health["disconnects"] == 0


async def test_an_unreadable_message_in_a_backfill_is_a_dead_letter_and_the_channel_is_read_on(
    rt: Runtime, emu: Emulator, bot: DiscordAdapter
) -> None:
    alice = emu.user("alice")
    dm = emu.dm(alice)
    await emu.post(dm, alice, "deposit missing")
    await wait_inbox(rt, 1)
    await emu.drop(resumable=False)
    # Posted while the bot was away: only the backfill of the new session reads them.
    bad = emu.store(dm, alice, "unreadable", **UNREADABLE)
    emu.store(dm, alice, "written after it")

    async def ready_again() -> bool:
        return bot.health()["sessions"] >= 2 and bot.state.connected

    await eventually(ready_again, 10, "a new session")
    envs = await wait_inbox(rt, 2, within=20)
    assert [e.text for e in envs] == ["deposit missing", "written after it"]
    [dead] = await DeadLetters(rt.client, rt.shards).entries()
    assert dead["reason"].startswith(f"discord test-bot: unreadable: message {bad['id']}: history:")
    assert bot.health()["unreadable"] == 1


async def test_an_unreadable_live_message_that_cannot_be_kept_is_read_again_by_a_backfill(
    rt: Runtime, emu: Emulator, make_bot: AdapterFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The dead-letter write fails once (Redis away for a moment): the message is not passed over;
    # its channel's cursor stays before it and the backfill that follows keeps it.
    bot = await make_bot(backfill_retry_s=0.2)
    keep = bot._ctx.unreadable
    failures = [ConnectionError("redis away")]

    async def flaky(*args: Any) -> None:
        if failures:
            raise failures.pop()
        await keep(*args)

    monkeypatch.setattr(bot._ctx, "unreadable", flaky)
    alice = emu.user("alice")
    dm = emu.dm(alice)
    bad = await emu.post(dm, alice, "unreadable", **UNREADABLE)
    await emu.post(dm, alice, "written after it")
    dead = DeadLetters(rt.client, rt.shards)

    async def kept() -> bool:
        return len(await dead.entries()) == 1

    await eventually(kept, 10, "the unreadable message kept by a backfill")
    [entry] = await dead.entries()
    assert entry["reason"].startswith(f"discord test-bot: unreadable: message {bad['id']}: history:")
    assert [e.text for e in await wait_inbox(rt, 1)] == ["written after it"]
    assert bot.health()["last_error"] == f"unreadable message {bad['id']} not kept: ConnectionError: redis away"
