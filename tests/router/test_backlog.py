"""What is in flight, as `stats`, `check` and the alerts see it, against the real Redis 6.2."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from router import cli
from router.backlog import read_backlog
from router.cluster import at_slot
from router.config import AlertSettings
from router.keys import ROUTER_GROUP, SENDER_GROUP
from router.runtime import Runtime
from router.worker import Worker
from tests.conftest import SWITCHBOARD
from tests.router.helpers import drain, message

pytestmark = pytest.mark.cluster

HOUR_MS = 3_600_000


async def _unread(rt: Runtime, n: int) -> None:
    await rt.inbox.append_many([message(f"deposit {i} is missing", user=f"u{i}") for i in range(n)])


async def _replies(rt: Runtime, n: int) -> None:
    await _unread(rt, n)
    await drain(Worker(rt))
    for i in range(n):
        cid = await rt.conversations.claim("payments", "agent-a")
        assert cid is not None
        await rt.conversations.reply(cid, f"answer {i}", "agent-a")


async def _old_pending_inbox_entry(rt: Runtime) -> int:
    """An inbox entry appended an hour ago (its id says so) that a worker read and never acknowledged."""
    appended_ms = int(time.time() * 1000) - HOUR_MS
    await rt.client.xadd(rt.keys.inbox, {"env": b"{}"}, id=f"{appended_ms}-0")
    await rt.client.xreadgroup(ROUTER_GROUP, "worker-dead", {rt.keys.inbox: ">"}, count=1)
    return appended_ms


def _alerts_with(rt: Runtime, **limits: float) -> None:
    rt.settings.alerts = AlertSettings(**limits)  # type: ignore[arg-type]


async def test_inbox_lag_and_pending_are_counted_on_redis_6_2(rt: Runtime) -> None:
    await _unread(rt, 5)
    await rt.client.xreadgroup(ROUTER_GROUP, "worker-1", {rt.keys.inbox: ">"}, count=2)
    inbox = (await rt.stats.read())["inbox"]
    assert (inbox["length"], inbox["lag"], inbox["pending"], inbox["depth"]) == (5, 3, 2, 5)
    await drain(Worker(rt))
    await rt.client.xack(rt.keys.inbox, ROUTER_GROUP, *[e for e, _ in await rt.client.xrange(rt.keys.inbox)])
    inbox = (await rt.stats.read())["inbox"]
    assert (inbox["lag"], inbox["pending"], inbox["oldest_pending_s"]) == (0, 0, None)


async def test_lag_is_counted_past_deleted_entries(rt: Runtime) -> None:
    await _unread(rt, 1200)  # more than one counting step (500)
    await rt.client.xreadgroup(ROUTER_GROUP, "worker-1", {rt.keys.inbox: ">"}, count=100)
    ids = [e for e, _ in await rt.client.xrange(rt.keys.inbox, count=300)]
    await rt.client.xdel(rt.keys.inbox, *ids[150:250])
    flight = await read_backlog(rt.client, rt.shards, rt.scripts)
    assert (flight.inbox.length, flight.inbox.lag, flight.inbox.pending) == (1100, 1000, 100)


async def test_oldest_pending_age_from_the_entry_id(rt: Runtime) -> None:
    appended_ms = await _old_pending_inbox_entry(rt)
    await _replies(rt, 2)
    outbox = rt.keys.outbox("telegram")
    await rt.client.xreadgroup(SENDER_GROUP, "telegram-dead", {outbox: ">"}, count=1)
    [(first_reply, _)] = await rt.client.xrange(outbox, count=1)
    reply_ms = int(first_reply.split(b"-")[0])
    flight = await read_backlog(rt.client, rt.shards, rt.scripts, clock=lambda: (reply_ms + 90_000) / 1000)
    assert flight.inbox.oldest_pending_s == (reply_ms + 90_000 - appended_ms) / 1000
    box = flight.outboxes["telegram"]
    assert (box.length, box.lag, box.pending, box.depth, box.oldest_pending_s) == (2, 1, 1, 2, 90.0)


async def test_outbox_depth_shows_before_any_adapter_started(rt: Runtime) -> None:
    await _replies(rt, 3)
    stats = await rt.stats.read()
    assert stats["outbox"]["telegram"] == {
        "length": 3,
        "lag": 3,
        "pending": 0,
        "oldest_pending_s": None,
        "depth": 3,
    }
    assert stats["redis"]["used_memory"] > 0 and stats["alerts"] == []


async def test_alert_on_inbox_lag(rt: Runtime) -> None:
    await _unread(rt, 5)
    _alerts_with(rt, inbox_lag=5)
    assert (await rt.stats.read())["alerts"] == []
    _alerts_with(rt, inbox_lag=4)
    assert (await rt.stats.read())["alerts"] == ["inbox lag 5 > 4 (entries no worker has read)"]


async def test_alert_on_oldest_pending_age(rt: Runtime) -> None:
    await _old_pending_inbox_entry(rt)
    _alerts_with(rt, pending_age_s=2 * 3600)
    assert (await rt.stats.read())["alerts"] == []
    _alerts_with(rt, pending_age_s=600)
    [alert] = (await rt.stats.read())["alerts"]
    assert alert.startswith("inbox: oldest pending entry 360") and alert.endswith("> 600s (read, never acknowledged)")


async def test_alert_on_outbox_depth(rt: Runtime) -> None:
    await _replies(rt, 3)
    _alerts_with(rt, outbox_depth=3)
    assert (await rt.stats.read())["alerts"] == []
    _alerts_with(rt, outbox_depth=2)
    assert (await rt.stats.read())["alerts"] == ["outbox telegram depth 3 > 2 (replies not sent yet)"]


@pytest.fixture
async def maxmemory(rt: Runtime) -> AsyncIterator[int]:
    """maxmemory set to twice the memory in use for the test (the server is shared: restored), on
    the node of the test's slot on a cluster."""
    node = at_slot(rt.client, rt.keys.inbox)
    before = (await rt.client.config_get("maxmemory", **node))["maxmemory"]
    limit = 2 * int((await rt.client.info("memory", **node))["used_memory"])
    await rt.client.config_set("maxmemory", limit, **node)
    try:
        yield limit
    finally:
        await rt.client.config_set("maxmemory", before, **node)


async def test_alert_on_redis_memory(rt: Runtime, maxmemory: int) -> None:
    _alerts_with(rt, memory_ratio=0.9)
    stats = await rt.stats.read()
    assert stats["redis"]["maxmemory"] == maxmemory and 0.3 < stats["redis"]["memory_ratio"] < 0.7
    assert stats["alerts"] == []
    _alerts_with(rt, memory_ratio=0.25)
    [alert] = (await rt.stats.read())["alerts"]
    assert alert.startswith("redis memory ") and alert.endswith("> 25% of maxmemory")


async def test_check_fails_naming_the_reason(rt: Runtime, capsys: pytest.CaptureFixture[str]) -> None:
    await Worker(rt)._heartbeat()  # a live worker, as its loop announces it
    await _replies(rt, 2)
    assert await cli._check(rt, argparse.Namespace()) == 0
    _alerts_with(rt, outbox_depth=1)
    assert await cli._check(rt, argparse.Namespace()) == 1
    assert "FAIL outbox telegram depth 2 > 1" in capsys.readouterr().err


async def test_check_command_reads_alert_limits_from_the_environment(rt: Runtime, env: dict[str, str]) -> None:
    await _unread(rt, 3)
    proc = await asyncio.create_subprocess_exec(
        *SWITCHBOARD,
        "check",
        env={**env, "SWITCHBOARD_ALERTS__INBOX_LAG": "2"},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, raw = await asyncio.wait_for(proc.communicate(), 60)
    stderr = raw.decode()
    assert proc.returncode == 1
    assert "FAIL no live router worker" in stderr and "FAIL inbox lag 3 > 2" in stderr
