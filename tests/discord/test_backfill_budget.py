"""Reconnect storms with thousands of DM users: the backfill's history requests stay within budget."""

from __future__ import annotations

from adapters.discord_bot import DiscordAdapter
from adapters.discord_bot.backfill import WINDOW_S
from adapters.discord_bot.config import DiscordConfig
from adapters.discord_bot.convert import Place
from router.runtime import Runtime
from tests.discord.conftest import ACCOUNT, SUPPORT, AdapterFactory, FakeClock, eventually
from tests.discord.emulator import Emulator

DM_USERS = 5000
RECONNECTS = 20
# The documented defaults (docs/discord.md), not overridden here.
PER_PASS = DiscordConfig.model_fields["backfill_requests_per_pass"].default
PER_WINDOW = DiscordConfig.model_fields["backfill_requests_per_10min"].default


async def _seed_dm_users(rt: Runtime, emu: Emulator, n: int) -> list[int]:
    """``n`` users who wrote to the bot in the last days, as a previous run recorded them: a DM
    channel with a message each, and its cursor (``place:`` and ``last:``) in the cursor hash."""
    cursor = rt.keys.cursor("discord", ACCOUNT)
    dms = []
    pipe = rt.client.pipeline(transaction=False)
    for i in range(n):
        user = emu.user(f"user{i}")
        dm = emu.dm(user)
        message = emu.store(dm, user, f"where is my deposit? ({i})")
        pipe.hset(cursor, mapping={f"place:{dm}": Place("dm", dm).encode(), f"last:{dm}": message["id"]})
        dms.append(dm)
    await pipe.execute()
    return dms


async def _pass_done(bot: DiscordAdapter, passes: int) -> None:
    async def done() -> bool:
        return bot.state.counters["backfills"] >= passes and not bot._backfill_lock.locked() and bot.state.connected

    await eventually(done, 30, f"backfill pass {passes}")


async def test_twenty_reconnects_with_5000_dm_users_stay_within_the_backfill_budget(
    rt: Runtime, emu: Emulator, make_bot: AdapterFactory
) -> None:
    dms = await _seed_dm_users(rt, emu, DM_USERS)
    clock = FakeClock()
    # Each pass leaves DMs behind (no budget left), and a later pass would continue them after
    # backfill_retry_s of real time: on a loaded machine that fell between two reconnects and
    # made _pass_done count it as the new session's (CI: 20 IDENTIFYs for 21). Not here.
    bot = await make_bot(clock=clock, backfill_retry_s=300)
    await _pass_done(bot, 1)
    first = emu.history_requests()
    # The support channel first, then the most recently active DMs.
    assert len(first) == PER_PASS and first[0] == SUPPORT
    assert set(first[1:]) == set(dms[-(PER_PASS - 1) :])

    counts = [len(first)]
    for n in range(RECONNECTS):  # all within one (simulated) 10-minute window
        await emu.drop(resumable=False)
        await _pass_done(bot, n + 2)
        counts.append(len(emu.history_requests()))
        assert counts[-1] - counts[-2] <= PER_PASS, f"pass {n + 2} made {counts[-1] - counts[-2]} requests"
        assert counts[-1] <= PER_WINDOW, f"{counts[-1]} history requests after {n + 1} reconnects"
    assert emu.identifies == RECONNECTS + 1
    assert counts[-1] == PER_WINDOW  # the window was spent, then nothing more
    assert bot.health()["backfill_requests"] == PER_WINDOW

    # Ten minutes later the window has room again: the next pass reads, within its own budget.
    clock.advance(WINDOW_S)
    await emu.drop(resumable=False)
    await _pass_done(bot, RECONNECTS + 2)
    assert len(emu.history_requests()) == PER_WINDOW + PER_PASS


async def test_closed_conversations_are_not_read_back(rt: Runtime, emu: Emulator, make_bot: AdapterFactory) -> None:
    dms = await _seed_dm_users(rt, emu, 3)
    # The router closed the first user's conversation; the second's is open; the third has none yet.
    for dm, status in ((dms[0], "closed"), (dms[1], "waiting")):
        await rt.client.set(rt.keys.conv_key("discord", ACCOUNT, str(dm)), f"c{dm}")
        await rt.client.hset(rt.keys.conv(f"c{dm}"), "status", status)
    bot = await make_bot()
    await _pass_done(bot, 1)
    assert sorted(emu.history_requests()) == sorted([SUPPORT, dms[1], dms[2]])
