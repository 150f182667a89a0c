"""The backfill cursors' hold across gaps (adapters/discord_bot/cursors.py), against a real Redis.

Seen in CI: a backfill still reading when the connection dropped again ended the hold; the new
session's live messages then moved the cursors past the messages of the second gap, and its own
backfill read nothing (7 messages never reached the inbox)."""

from __future__ import annotations

from adapters.discord_bot.convert import CHANNEL, Place
from adapters.discord_bot.cursors import Cursors
from router.runtime import Runtime

SUPPORT = Place("channel", 42, 7)


async def _last(rt: Runtime) -> str | None:
    return await rt.channel_context().cursor_get(CHANNEL, "bot", f"last:{SUPPORT.target}")


async def test_a_backfill_begun_before_a_gap_does_not_end_its_hold(rt: Runtime) -> None:
    cursors = Cursors(rt.channel_context(), "bot")
    first = cursors.gap  # the first session's backfill begins
    cursors.hold()  # ... and the connection drops while it reads
    await cursors.release({SUPPORT.target}, after_gap=first)
    assert cursors.held
    await cursors.advance(SUPPORT.target, SUPPORT, 200)  # a live message of the new session
    assert await _last(rt) is None
    second = cursors.gap  # the new session's backfill
    await cursors.release({SUPPORT.target}, after_gap=second)
    assert not cursors.held and await _last(rt) == "200"


async def test_a_resume_replayed_the_gap_so_a_running_backfill_ends_the_hold(rt: Runtime) -> None:
    cursors = Cursors(rt.channel_context(), "bot")
    first = cursors.gap
    cursors.hold()
    cursors.resumed()
    await cursors.advance(SUPPORT.target, SUPPORT, 300)
    await cursors.release({SUPPORT.target}, after_gap=first)
    assert not cursors.held and await _last(rt) == "300"
