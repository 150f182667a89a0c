"""Crash and restart tests: worker processes killed with SIGKILL, the Redis server restarted."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import subprocess
import time

import pytest

from router.redis import TRANSIENT_ERRORS
from router.runtime import Runtime
from router.worker import Worker
from tests.conftest import SWITCHBOARD, RedisProcess
from tests.router.helpers import inbound_ids, message

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
        before = set(await rt.client.keys(rt.keys.health("worker", "*")))
        a = _spawn_worker(env)
        # The restarted worker must be up (its heartbeat written) before the run may end: a
        # SIGTERM while it is still importing would kill it before it handles signals.
        deadline = time.monotonic() + 60
        while not set(await rt.client.keys(rt.keys.health("worker", "*"))) - before:
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
    worker = Worker(rt.client, rt.settings)
    task = asyncio.create_task(worker.run(handle_signals=False))
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
