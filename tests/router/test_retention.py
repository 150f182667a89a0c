"""Retention against a real Redis: what is past its keeping time goes, what is in flight stays.

The sweep takes the time as an argument: "31 days later" is a number, not a sleep.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

from router.config import Settings
from router.keys import ROUTER_GROUP
from router.retention import DAY_MS, Retention
from router.runtime import Runtime
from router.scripts import argv, now_ms, run_many
from router.worker import Worker
from tests.router.helpers import drain, message

pytestmark = pytest.mark.cluster

LATER = 31 * DAY_MS  # past the default 30 days


def retention(rt: Runtime, name: str = "sweeper", **overrides: Any) -> Retention:
    settings = rt.settings.model_copy(
        update={"retention": rt.settings.retention.model_copy(update=overrides)} if overrides else {}
    )
    return Retention(rt.client, settings, name)


async def _route(rt: Runtime, *users: str) -> dict[str, str]:
    """Route one message per user; returns each user's conversation id."""
    await rt.inbox.append_many([message("my deposit is missing", user=u) for u in users])
    await drain(Worker(rt))
    ids = {}
    for u in users:
        raw = await rt.client.get(rt.keys.conv_key("telegram", "bot1", u))
        assert raw is not None
        ids[u] = raw.decode()
    return ids


async def _exists(rt: Runtime, cid: str, user: str) -> dict[str, bool]:
    keys = {
        "conv": rt.keys.conv(cid),
        "hist": rt.keys.history(cid),
        "delivery": rt.keys.delivery(cid),
    }
    found = {name: bool(await rt.client.exists(key)) for name, key in keys.items()}
    found["ck"] = await rt.client.get(rt.keys.conv_key("telegram", "bot1", user)) == cid.encode()
    return found


async def test_closed_conversations_are_deleted_after_retention_and_open_ones_kept(rt: Runtime) -> None:
    ids = await _route(rt, "alice", "bob", "carol")
    await rt.conversations.reply(ids["alice"], "we are looking into it", "agent-a")  # a delivery record
    await rt.conversations.close(ids["alice"], "agent-a")
    await rt.conversations.close(ids["bob"], "agent-a")
    sweeper = retention(rt)

    assert await sweeper.sweep(now_ms()) == await sweeper.sweep(now_ms() + 30 * DAY_MS - 60_000)
    assert await _exists(rt, ids["alice"], "alice") == {"conv": True, "hist": True, "delivery": True, "ck": True}

    result = await sweeper.sweep(now_ms() + LATER)
    assert result.conversations == 2
    for user in ("alice", "bob"):
        assert await _exists(rt, ids[user], user) == {"conv": False, "hist": False, "delivery": False, "ck": False}
    assert await _exists(rt, ids["carol"], "carol") == {"conv": True, "hist": True, "delivery": False, "ck": True}
    assert (await rt.conversations.get(ids["carol"])).status == "new"
    assert await rt.client.zcard(rt.keys.closed) == 0

    # Alice writes again: a new conversation, with only the new message in its history.
    again = await _route(rt, "alice")
    assert again["alice"] != ids["alice"]
    assert len(await rt.conversations.history(again["alice"])) == 1


async def test_reopened_conversation_is_not_deleted(rt: Runtime) -> None:
    ids = await _route(rt, "dave")
    await rt.conversations.close(ids["dave"], "agent-a")
    assert await _route(rt, "dave") == ids  # within the reopen window: the same conversation
    assert await rt.client.zcard(rt.keys.closed) == 0

    assert (await retention(rt).sweep(now_ms() + LATER)).conversations == 0
    assert await _exists(rt, ids["dave"], "dave") == {"conv": True, "hist": True, "delivery": False, "ck": True}
    assert (await rt.conversations.get(ids["dave"])).status == "new"


async def test_closed_then_closed_again_is_kept_from_the_last_close(rt: Runtime) -> None:
    ids = await _route(rt, "erin")
    await rt.conversations.close(ids["erin"], "agent-a")
    await _route(rt, "erin")  # reopened
    await rt.conversations.close(ids["erin"], "agent-a")
    closed_ms = (await rt.client.zscore(rt.keys.closed, ids["erin"])) or 0
    sweeper = retention(rt)
    assert (await sweeper.sweep(int(closed_ms) + 30 * DAY_MS - 1)).conversations == 0
    assert (await sweeper.sweep(int(closed_ms) + 30 * DAY_MS)).conversations == 1


async def test_deleting_an_old_conversation_keeps_the_key_of_its_successor(redis_url: str, settings: Settings) -> None:
    # No reopen window: a message after closing starts a new conversation under the same key.
    settings = settings.model_copy(
        update={"conversations": settings.conversations.model_copy(update={"reopen_window_s": 0})}
    )
    async with Runtime(settings, redis_url) as rt:
        old = await _route(rt, "frank")
        await rt.conversations.close(old["frank"], "agent-a")
        await asyncio.sleep(0.005)
        new = await _route(rt, "frank")
        assert new != old
        assert (await retention(rt).sweep(now_ms() + LATER)).conversations == 1
        assert not await rt.client.exists(rt.keys.conv(old["frank"]))
        assert await _exists(rt, new["frank"], "frank") == {"conv": True, "hist": True, "delivery": False, "ck": True}


async def test_sweep_deletes_in_batches_until_done(rt: Runtime) -> None:
    users = [f"user{i}" for i in range(7)]
    ids = await _route(rt, *users)
    for cid in ids.values():
        await rt.conversations.close(cid, "agent-a")
    assert (await retention(rt, batch=3).sweep(now_ms() + LATER)).conversations == 7
    assert await rt.client.zcard(rt.keys.closed) == 0


async def test_zero_days_keeps_closed_conversations(rt: Runtime) -> None:
    ids = await _route(rt, "gina")
    await rt.conversations.close(ids["gina"], "agent-a")
    assert (await retention(rt, closed_conversation_days=0).sweep(now_ms() + 3650 * DAY_MS)).conversations == 0
    assert await rt.client.exists(rt.keys.conv(ids["gina"]))


async def _dead_letters(rt: Runtime, n: int) -> None:
    for i in range(n):
        await rt.client.xadd(rt.keys.inbox, {"env": f"not an envelope {i}"})
    await drain(Worker(rt))
    assert await rt.client.xlen(rt.keys.dead) == n


async def test_dead_letters_are_dropped_by_age(rt: Runtime) -> None:
    await _dead_letters(rt, 3)
    sweeper = retention(rt, dead_letter_days=30)
    assert (await sweeper.sweep(now_ms() + 29 * DAY_MS)).dead_letters == 0
    assert (await sweeper.sweep(now_ms() + LATER)).dead_letters == 3
    assert await rt.client.xlen(rt.keys.dead) == 0


async def test_dead_letters_beyond_the_count_drop_the_oldest(rt: Runtime) -> None:
    await _dead_letters(rt, 3)
    newest = (await rt.client.xrevrange(rt.keys.dead, count=2))[::-1]
    assert (await retention(rt, dead_letter_max=2).sweep(now_ms())).dead_letters == 1
    assert await rt.client.xrange(rt.keys.dead) == newest


async def test_failure_records_of_entries_no_longer_pending_are_dropped(rt: Runtime) -> None:
    # A record left by a routing that failed once, then succeeded without clearing it.
    await _route(rt, "hank")
    routed = (await rt.client.xrange(rt.keys.inbox))[-1][0]
    # An entry read but not routed yet (pending), whose last attempt failed.
    pending = await rt.client.xadd(rt.keys.inbox, {"env": "{}"})
    await rt.client.xreadgroup(ROUTER_GROUP, "stuck-worker", {rt.keys.inbox: ">"}, count=10)
    await rt.client.hset(rt.keys.failures, mapping={routed: "boom", pending: "boom"})

    assert (await retention(rt).sweep(now_ms())).failures == 1
    assert await rt.client.hkeys(rt.keys.failures) == [pending]

    await rt.client.xack(rt.keys.inbox, ROUTER_GROUP, pending)  # nothing pending any more
    assert (await retention(rt).sweep(now_ms())).failures == 1
    assert await rt.client.hlen(rt.keys.failures) == 0


async def test_history_keeps_its_newest_entries(rt: Runtime) -> None:
    ids = await _route(rt, "ivy")
    note = json.dumps({"by": "agent-a", "text": "still looking"})
    calls = [argv(rt.keys.prefix, "note", ids["ivy"], note) for _ in range(10_300)]
    await run_many(rt.client, rt.scripts.conv, calls)
    length = await rt.client.xlen(rt.keys.history(ids["ivy"]))
    assert 10_000 <= length < 10_301  # trimmed at the head, by whole stream nodes
    first = (await rt.conversations.history(ids["ivy"], count=1))[0]
    assert first.type == "note"  # the inbound message, the oldest entry, went first


async def test_worker_housekeeping_sweeps_once_per_interval_across_workers(
    rt: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    ids = await _route(rt, "jack", "kate")
    await rt.conversations.close(ids["jack"], "agent-a")
    await asyncio.sleep(0.01)
    # 1 ms: the conversation closed above is past it.
    fast = rt.settings.retention.model_copy(update={"closed_conversation_days": 1 / DAY_MS, "sweep_every_s": 60})
    settings = rt.settings.model_copy(update={"retention": fast})
    first, second = Worker(rt, settings=settings), Worker(rt, settings=settings)
    with caplog.at_level(logging.WARNING, logger="switchboard.retention"):
        await first._housekeeping()
    await first.retention.finish()
    assert "DELETED" in caplog.text and "no archive is configured" in caplog.text
    assert "starts a new conversation instead of reopening" in caplog.text  # 1 ms < the 7-day window
    assert not await rt.client.exists(rt.keys.conv(ids["jack"]))

    await rt.conversations.close(ids["kate"], "agent-a")
    await asyncio.sleep(0.01)
    await second._housekeeping()  # the first worker holds this interval
    assert not second.retention.sweeping
    assert await rt.client.exists(rt.keys.conv(ids["kate"]))
    await rt.client.delete(rt.keys.retention_lock)  # as when the interval is over ...
    await second._housekeeping()
    assert not second.retention.sweeping  # ... but this worker's own interval is not
    second.retention._last = float("-inf")
    await second._housekeeping()
    await second.retention.finish()
    assert not await rt.client.exists(rt.keys.conv(ids["kate"]))


async def test_conversations_closed_before_the_index_existed_are_deleted_too(rt: Runtime) -> None:
    ids = await _route(rt, "liam", "mia")
    await rt.conversations.close(ids["liam"], "agent-a")
    await rt.client.delete(rt.keys.closed)  # as the close op of an earlier version left it
    sweeper = retention(rt, batch=50)
    deleted = 0
    for _ in range(1000):  # the test Redis holds every test's keys: the walk may take sweeps
        deleted += (await sweeper.sweep(now_ms() + LATER)).conversations
        if await rt.client.get(rt.keys.retention_backfill) == b"done":
            break
    assert deleted == 1
    assert not await rt.client.exists(rt.keys.conv(ids["liam"]))
    assert (await rt.conversations.get(ids["mia"])).status == "new"


async def test_a_tick_starts_the_sweep_beside_routing_and_returns(rt: Runtime) -> None:
    ids = await _route(rt, *[f"user{i}" for i in range(5)])
    for cid in ids.values():
        await rt.conversations.close(cid, "agent-a")
    await rt.client.set(rt.keys.retention_backfill, "done")
    sweeper = retention(rt, closed_conversation_days=1 / DAY_MS, batch=2)
    await asyncio.sleep(0.01)

    async def left() -> int:
        return sum([bool(await rt.client.exists(rt.keys.conv(cid))) for cid in ids.values()])

    await sweeper.tick()
    # The worker's loop goes on at once: the sweep (three script calls of 2) runs in its own task.
    assert sweeper.sweeping and await rt.client.exists(rt.keys.conv(ids["user4"]))
    await sweeper.tick()  # a sweep under way is left to go on, not started twice
    await sweeper.finish()
    assert not sweeper.sweeping and await left() == 0
    await sweeper.close()
