"""The backfill cursors' hold across gaps (adapters/discord_bot/cursors.py), against a real Redis.

Seen in CI: a backfill still reading when the connection dropped again ended the hold; the new
session's live messages then moved the cursors past the messages of the second gap, and its own
backfill read nothing (7 messages never reached the inbox). Also seen in CI: a DM whose first
message came while the first session's backfill was still reading had no stored cursor when the
connection dropped, so the new session's backfill did not read it (3 messages lost)."""

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


async def test_a_dm_known_only_from_held_messages_is_read_back_after_a_second_gap(rt: Runtime) -> None:
    cursors = Cursors(rt.channel_context(), "bot")
    dm = Place("dm", 77, None)
    first = cursors.gap  # the first session's backfill begins
    await cursors.advance(dm.target, dm, 500)  # a DM's first message, live, while held
    await cursors.advance(dm.target, dm, 503)
    cursors.hold()  # the connection drops before that backfill released anything
    await cursors.release(set(), after_gap=first)
    snap = await cursors.snapshot()  # the new session's backfill
    # Read from just before the first held message: the gap's messages after it are read back.
    assert snap.last[dm.target] == 499 and snap.places[dm.target] == dm
    await cursors.release(set(), after_gap=cursors.gap)
    assert (await cursors.snapshot()).last[dm.target] == 503  # written: the stored cursor now


async def test_a_dm_whose_first_message_was_not_appended_is_read_back_from_before_it(rt: Runtime) -> None:
    # The DM's first message could not be appended (Redis away past the retries, or an unreadable
    # message not kept), the next one was: the backfill must not start after the one appended.
    cursors = Cursors(rt.channel_context(), "bot")
    await cursors.release(set(), after_gap=cursors.gap)  # the first session's backfill is done
    dm = Place("dm", 78, None)
    cursors.block(dm.target, missed=(dm, 600))
    await cursors.advance(dm.target, dm, 601)
    snap = await cursors.snapshot()
    assert snap.last[dm.target] == 599 and snap.places[dm.target] == dm
    await cursors.advance(dm.target, dm, 601, backfill=True)  # the backfill read 600 and 601
    await cursors.release({dm.target})
    assert (await cursors.snapshot()).last[dm.target] == 601
    assert not cursors.blocked
