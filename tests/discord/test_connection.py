"""The connection: bad token, missing intent, resumed and non-resumable reconnects with backfill."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from adapters.discord_bot import DiscordAdapter, from_config, intents
from router.errors import ConfigError
from router.runtime import Runtime
from router.worker import Worker
from tests.discord.conftest import SUPPORT, AdapterFactory, conversation_id, eventually, inbox, wait_inbox
from tests.discord.emulator import Emulator
from tests.router.helpers import drain


async def test_bad_token_fails_clearly_at_start(make_bot: AdapterFactory) -> None:
    began = time.monotonic()
    with pytest.raises(ConfigError, match="refused the bot token"):
        await make_bot(token="not-the-token")
    assert time.monotonic() - began < 5


async def test_message_content_intent_not_enabled_is_a_clear_error(emu: Emulator, make_bot: AdapterFactory) -> None:
    emu.message_content_enabled = False
    with pytest.raises(ConfigError, match="Message Content"):
        await make_bot()


def test_intents_include_message_content() -> None:
    value = intents()
    assert value.message_content and value.dm_messages and value.guild_messages and value.guilds
    assert not value.members and not value.presences  # privileged, and not needed


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        ({"name": "b", "guilds": {"123": [1]}}, "bot token: not configured"),
        ({"name": "b", "token": "x", "guilds": {"12a": [1]}}, "not a Discord id"),
        ({"name": "b", "token": "x", "guilds": {"1": "2,x"}}, "not a Discord id"),
        ({"name": "b", "token": "x", "guild": {}}, "discord.guild: Extra inputs"),
        ({"name": "b", "token_file": "/nonexistent/token"}, "cannot read secret file"),
    ],
)
def test_bad_sections_are_config_errors(rt: Runtime, section: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        from_config(rt.channel_context(), section)


def test_env_style_section(rt: Runtime, tmp_path: Any) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("Bot abc.def\n")
    [adapter] = from_config(rt.channel_context(), {"token_file": str(token_file), "guilds": {"1": "2, 3"}})
    assert isinstance(adapter, DiscordAdapter)
    assert adapter.config.support_channels == {2: 1, 3: 1} and adapter.config.read_token() == "abc.def"
    assert from_config(rt.channel_context(), {"enabled": False, "token": "x"}) == []


async def test_resumed_session_replays_without_backfill(rt: Runtime, emu: Emulator, bot: DiscordAdapter) -> None:
    alice = emu.user("alice")
    dm = emu.dm(alice)
    await emu.post(dm, alice, "first")
    await wait_inbox(rt, 1)
    await emu.drop(resumable=True)
    await emu.post(dm, alice, "while resuming")  # kept in the session's backlog, replayed on RESUME
    envs = await wait_inbox(rt, 2)
    assert [e.text for e in envs] == ["first", "while resuming"]
    health = bot.health()
    assert (health["resumes"], health["sessions"], emu.identifies) == (1, 1, 1)


async def test_reconnect_without_resume_backfills_every_missed_message_once(
    rt: Runtime, emu: Emulator, bot: DiscordAdapter
) -> None:
    alice, bob, carol = emu.user("alice"), emu.user("bob"), emu.user("carol")
    dm = emu.dm(alice)
    thread = await emu.create_thread(SUPPORT, "carol", owner=carol)
    places = [(dm, alice), (SUPPORT, bob), (thread, carol)]
    expected: list[str] = []
    for channel, user in places:
        expected.append((await emu.post(channel, user, f"deposit missing ({user['username']})"))["id"])
    await wait_inbox(rt, 3)

    async def keep_posting(n: int) -> None:
        # Messages keep arriving while the client reconnects: some fall in the gap, some after READY.
        for i in range(n):
            channel, user = places[i % 3]
            expected.append((await emu.post(channel, user, f"message {i}"))["id"])
            await asyncio.sleep(0.01)

    await emu.drop(resumable=False)
    # No await yields to the client between the drop and these: they are surely in the gap.
    for channel, user in places * 2:
        expected.append((await emu.post(channel, user, "in the gap"))["id"])
    await keep_posting(30)
    # Some messages arrive again after the new session, and one in a thread opened during the gap.
    await eventually(lambda: _ready_again(bot), 10, "a new session")
    late_thread = await emu.create_thread(SUPPORT, "late", owner=bob)
    expected.append((await emu.post(late_thread, bob, "thread opened after the gap"))["id"])
    await keep_posting(6)

    try:
        # A history request that fails on a loaded machine leaves its channel to the next pass,
        # 15 s later (the backoff of _backfill_soon): wait for that pass too.
        envs = await wait_inbox(rt, len(expected), within=45)
    except AssertionError as exc:
        got = {e.platform_id for e in await inbox(rt)}
        missing = [i for i in expected if i not in got]
        raise AssertionError(f"{exc}; missing {missing}; adapter health {bot.health()}") from exc
    await asyncio.sleep(0.3)  # a duplicate would show up now
    ids = [e.platform_id for e in await inbox(rt)]
    assert sorted(ids) == sorted(expected) and len(ids) == len(set(ids))
    assert emu.identifies == 2  # the RESUME was refused: a new session
    health = bot.health()
    assert health["sessions"] == 2 and health["disconnects"] >= 1 and health["connected"] is True
    assert health["backfills"] == 2 and health["backfilled"] >= 6

    await drain(Worker(rt))
    counts = {}
    for key in (str(dm), f"{SUPPORT}:{bob['id']}", str(thread)):
        counts[key] = (await rt.conversations.get(await conversation_id(rt, key))).messages
    assert sum(counts.values()) == len(expected) - 1
    assert len(envs) == len(expected)


async def _ready_again(bot: DiscordAdapter) -> bool:
    return bot.health()["sessions"] >= 2 and bot.state.connected


def test_backfill_targets() -> None:
    from adapters.discord_bot.backfill import targets
    from adapters.discord_bot.convert import Place

    support = {10: 1}
    dm_recent, dm_old, other_thread = Place("dm", 20), Place("dm", 21), Place("thread", 99, 1, 31)
    found = targets(
        support,
        threads=[(30, 10, 1), (32, 99, 1)],  # one under a support channel, one elsewhere
        since=5,
        last={10: 100, 20: 200, 21: 3, 31: 300},
        places={20: dm_recent, 21: dm_old, 31: other_thread},
        horizon=50,
    )
    # Support channels first, then by recency (the newest of cursor and channel id).
    assert found == [(Place("channel", 10, 1), 100), (dm_recent, 200), (Place("thread", 10, 1, 30), 5)]


async def test_restart_reads_back_what_was_posted_while_stopped(
    rt: Runtime, emu: Emulator, make_bot: AdapterFactory
) -> None:
    alice, bob = emu.user("alice"), emu.user("bob")
    dm = emu.dm(alice)
    first = await make_bot()
    await emu.post(dm, alice, "before the restart")
    await emu.post(SUPPORT, bob, "before the restart too")
    await wait_inbox(rt, 2)
    await first.close()
    missed = [(await emu.post(ch, user, "while stopped"))["id"] for ch, user in ((dm, alice), (SUPPORT, bob))]
    second = await make_bot()
    envs = await wait_inbox(rt, 4)
    assert [e.platform_id for e in envs[2:]] in (missed, missed[::-1])
    assert second.health()["backfilled"] == 2


async def test_a_forum_support_channel_is_served_through_its_posts(
    rt: Runtime, emu: Emulator, make_bot: AdapterFactory
) -> None:
    from tests.discord.conftest import GUILD

    forum = emu.forum(GUILD)
    bot = await make_bot(private_threads=True, guilds={str(GUILD): [str(SUPPORT), str(forum)]})
    bob = emu.user("bob")
    post = await emu.create_thread(forum, "withdrawal stuck", owner=bob)
    await emu.post(post, bob, "my withdrawal is stuck")
    [env] = await wait_inbox(rt, 1)
    assert env.conversation_key == str(post)  # a forum post is the user's thread: its conversation
    await emu.drop(resumable=False)
    await eventually(lambda: _ready_again(bot), 10, "a new session")

    async def backfilled() -> bool:
        return bot.health()["backfills"] >= 2 and not bot._backfill_lock.locked()

    await eventually(backfilled, 10, "the backfill")
    # The forum itself holds no messages: its posts are read, it is not (Discord refuses that with 50024).
    assert forum not in emu.history_requests() and post in emu.history_requests()
    assert bot.health()["last_error"] == ""
