"""Crash and restart tests: worker processes killed with SIGKILL, the Redis server restarted."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from router.keys import ROUTER_GROUP
from router.redis import TRANSIENT_ERRORS
from router.runtime import Runtime
from router.worker import Worker
from tests.conftest import SWITCHBOARD, RedisProcess
from tests.router.helpers import drain, inbound_ids, message

T = TypeVar("T")

TOTAL = 10_000
USERS = 2_000


async def _routed(rt: Runtime) -> int:
    counters = await rt.client.hgetall(rt.keys.stats)
    return sum(int(v) for k, v in counters.items() if k.startswith(b"routed:"))


async def _wait_routed(rt: Runtime, n: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    done = 0
    while done < n:
        assert time.monotonic() < deadline, f"only {done} of {n} routed after {seconds}s"
        await asyncio.sleep(0.05)
        try:
            done = await _routed(rt)
        except TRANSIENT_ERRORS:  # the pool's connections to a restarted server fail once each
            continue


def _spawn_worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([*SWITCHBOARD, "worker"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def test_sigkilled_worker_loses_and_duplicates_nothing(rt: Runtime, env: dict[str, str]) -> None:
    msgs = [message("my deposit is missing", user=f"user{i % USERS}") for i in range(TOTAL)]
    for i in range(0, TOTAL, 500):
        await rt.inbox.append_many(msgs[i : i + 500])
    a, b = _spawn_worker(env), _spawn_worker(env)
    try:
        await _wait_routed(rt, TOTAL // 5, seconds=90)
        os.kill(a.pid, signal.SIGKILL)
        a.wait()
        killed_at = await _routed(rt)
        a = _spawn_worker(env)
        # The restarted worker must be up (its heartbeat written) before the run may end: a
        # SIGTERM while it is still importing would kill it before it handles signals. Its own
        # heartbeat, found by the pid in the worker's name: any new key could be b's first one.
        deadline = time.monotonic() + 60
        while not await rt.client.keys(rt.keys.health("worker", f"*-{a.pid}-*")):
            assert time.monotonic() < deadline, "the restarted worker never started"
            await asyncio.sleep(0.05)
        await _wait_routed(rt, TOTAL, seconds=120)
    finally:
        for p in (a, b):
            p.send_signal(signal.SIGTERM)
        for p in (a, b):
            p.wait(timeout=20)
    assert killed_at < TOTAL, "the kill must land mid-run"
    assert a.returncode == 0 and b.returncode == 0  # SIGTERM: finish the batch and exit cleanly
    seen = await inbound_ids(rt)
    assert set(seen) == {m.id for m in msgs}
    assert max(seen.values()) == 1, "no message is in any history twice"
    assert await _routed(rt) == TOTAL
    depth = await rt.client.zcard(rt.keys.queue("payments"))
    assert depth == USERS, "one queue entry per conversation"
    convs = await rt.conversations.get_many([str(i) for i in range(1, USERS + 1)])
    assert sum(c.messages for c in convs) == TOTAL
    pending = await rt.client.xpending(rt.keys.inbox, "routers")
    assert pending["pending"] == 0


# redis-py warns about the connections the server closed under it; that is the point of the test.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_worker_survives_redis_restart(rt: Runtime, redis_proc: RedisProcess) -> None:
    worker = Worker(rt)
    task = asyncio.create_task(worker.run())
    first = [message("withdrawal stuck", user=f"r{i}") for i in range(300)]
    await rt.inbox.append_many(first)
    await _wait_routed(rt, 300, seconds=30)
    await asyncio.to_thread(redis_proc.restart)
    # The worker is in its blocking read when the server goes; it must back off and come back.
    second = [message("withdrawal stuck", user=f"s{i}") for i in range(300)]
    for attempt in range(50):
        try:
            await rt.inbox.append_many(second)
            break
        except TRANSIENT_ERRORS:
            await asyncio.sleep(0.1 * attempt)
    await _wait_routed(rt, 600, seconds=60)
    worker.stop()
    await asyncio.wait_for(task, 10)
    seen = await inbound_ids(rt)
    assert set(seen) == {m.id for m in first + second} and max(seen.values()) == 1
    # Collect the connections the restart broke now, under this test's warning filter.
    gc.collect()


async def _retrying(call: Callable[[], Awaitable[T]]) -> T:
    """``call()``, again while the pool's connections to a restarted server fail once each."""
    for _ in range(100):
        try:
            return await call()
        except TRANSIENT_ERRORS:
            await asyncio.sleep(0.02)
    return await call()


# redis-py warns about the connections the server closed under it; that is the point of the test.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_recovery_after_redis_restart_delivers_no_healthy_entry_twice(
    rt: Runtime, redis_proc: RedisProcess
) -> None:
    """Issue 12, finding 4: recovering, each step re-read the worker's own pending entries (its
    batch in flight too) with XREADGROUP "0", one more delivery each, and read 100 new entries
    ahead that it never used: delivery counts of healthy entries reached 2 and 3, the pending list
    thousands, and an entry delivered max_attempts times is dead-lettered."""
    total = 6000
    msgs = [message("my deposit is missing", user=f"b{i % 600}") for i in range(total)]
    for i in range(0, total, 500):
        await rt.inbox.append_many(msgs[i : i + 500])
    most = 0
    done = asyncio.Event()

    async def watch() -> None:
        nonlocal most
        while not done.is_set():
            with contextlib.suppress(*TRANSIENT_ERRORS):
                pending = await rt.client.xpending_range(rt.keys.inbox, ROUTER_GROUP, "-", "+", total)
                most = max([most, *(p["times_delivered"] for p in pending)])
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch())
    worker = Worker(rt)
    task = asyncio.create_task(worker.run())
    await _wait_routed(rt, 500, seconds=60)
    await asyncio.to_thread(redis_proc.restart)  # mid-run; AOF keeps the pending entries
    routed_then = await _retrying(lambda: _routed(rt))
    await _wait_routed(rt, total, seconds=120)
    worker.stop()
    await asyncio.wait_for(task, 10)
    done.set()
    await watcher
    assert routed_then < total, "the restart must land mid-run"
    assert most == 1, f"an entry that never failed was delivered {most} times"
    assert await rt.client.xlen(rt.keys.dead) == 0
    seen = await inbound_ids(rt)
    assert set(seen) == {m.id for m in msgs} and max(seen.values()) == 1
    gc.collect()


async def test_dead_workers_entries_are_taken_over_once_without_waiting_claim_idle(rt: Runtime) -> None:
    """Issue 12, finding 10: a killed worker's entries waited claim_idle_ms (30 s) and a reclaim
    pass (every 15 s) before anyone took them; now as soon as its heartbeat key is gone."""
    rt.settings.worker.claim_idle_ms = 60_000  # the idle pass alone would leave them a minute
    rt.settings.worker.claim_dead_idle_ms = 50
    await rt.inbox.append_many([message("withdrawal stuck", user=f"t{i}") for i in range(30)])
    # "dead" was killed holding 10 entries (its heartbeat key expired); "slow" is alive with 10.
    await rt.client.xreadgroup(ROUTER_GROUP, "dead", {rt.keys.inbox: ">"}, count=10)
    await rt.client.xreadgroup(ROUTER_GROUP, "slow", {rt.keys.inbox: ">"}, count=10)
    await rt.client.set(rt.keys.health("worker", "slow"), "{}", ex=60)
    await asyncio.sleep(0.1)  # past claim_dead_idle_ms

    async def held(consumer: str) -> list[int]:
        pending = await rt.client.xpending_range(rt.keys.inbox, ROUTER_GROUP, "-", "+", 100, consumername=consumer)
        return [p["times_delivered"] for p in pending]

    first = Worker(rt, name="first")
    await first._housekeeping()  # its first heartbeat, and the look for dead workers' entries
    assert await held("dead") == [], "the dead worker's entries were taken over"
    assert await held("slow") == [1] * 10, "a live worker's entries are left to it"
    assert int(await rt.client.hget(rt.keys.stats, "routed:telegram") or 0) == 10

    # Two workers taking over the same dead worker's entries at once: each entry is claimed once.
    await rt.client.delete(rt.keys.health("worker", "slow"))
    await asyncio.sleep(0.1)
    second = Worker(rt, name="second")
    taken = await asyncio.gather(first.take_over(), second.take_over())
    assert sum(taken) == 10 and await held("slow") == []
    assert int(await rt.client.hget(rt.keys.stats, "routed:telegram") or 0) == 20
    assert await rt.client.xlen(rt.keys.dead) == 0


async def test_history_keeps_arrival_order_when_a_dead_workers_message_is_routed_late(rt: Runtime) -> None:
    """Issue 12, finding 4: a message held by a worker that died was routed after a later message
    of its conversation, and the history showed them in that order."""
    first = message("my deposit is missing", user="olga")
    await rt.inbox.append(first)
    await rt.client.xreadgroup(ROUTER_GROUP, "dead", {rt.keys.inbox: ">"}, count=1)  # dies holding it
    later = message("hello? anyone there?", user="olga")
    await rt.inbox.append(later)
    worker = Worker(rt)
    await drain(worker)  # routes the later message first
    [conv] = await rt.queues.head("general")
    await rt.conversations.reply(conv.id, "checking", "agent")  # in answer to the later one
    await asyncio.sleep(rt.settings.worker.claim_idle_ms / 1000 + 0.05)
    assert await worker.reclaim() == 1
    history = await rt.conversations.history(conv.id)
    assert [h.data.get("msg") or h.type for h in history] == [first.id, later.id, "outbound"]
