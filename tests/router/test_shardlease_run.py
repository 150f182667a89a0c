"""Shard leases with real `switchboard worker` processes on the 3-primary cluster, 4 shards.

Three processes split the shards (each read by exactly one: their health records, which name the
shard and the fence); one is SIGKILLed and its shards are taken over within the lease TTL plus a
retry (plus the time to start a loop); one stops cleanly and hands its shards over without waiting
for a TTL; every message appended before, during and after is routed exactly once (by id, counted
over every conversation's history). Lease TTL 3 s, retries every 0.2 s, to keep the test short.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from router.membership import Membership, assign
from router.runtime import Runtime
from router.shardlease import GROUP
from tests.conftest import SWITCHBOARD
from tests.router.helpers import inbound_ids, message
from tests.router.test_cli import sb

TTL_S, RETRY_S = 3.0, 0.2
LEASES = {
    "SWITCHBOARD_LEASES__TTL_S": str(TTL_S),
    "SWITCHBOARD_LEASES__RETRY_S": str(RETRY_S),
    "SWITCHBOARD_LEASES__MAX_SKEW_S": "0.1",
    "SWITCHBOARD_WORKER__HEARTBEAT_S": "0.3",
    "SWITCHBOARD_WEB__ENABLED": "false",
}


@pytest.fixture
def redis_backend() -> str:
    return "cluster-4-shards"


@pytest.fixture
def workers(env: dict[str, str], tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    for i in range(3):
        with (tmp_path / f"worker{i}.log").open("wb") as log:
            started.append(
                subprocess.Popen([*SWITCHBOARD, "worker"], env={**env, **LEASES}, stdout=log, stderr=subprocess.STDOUT)
            )
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
            p.wait(30)


async def _holders(rt: Runtime) -> dict[int, list[int]]:
    """The pids running each shard's loop, from the live worker health records."""
    held: dict[int, list[int]] = {}
    for name, record in (await rt.stats.health()).items():
        if name.startswith("worker:") and "fence" in record:
            held.setdefault(int(record["shard"]), []).append(int(record["pid"]))
    return held


async def _settled(rt: Runtime, members: int, gone: set[int]) -> dict[int, int] | None:
    """Each shard's one holder when ``members`` processes are live (none of ``gone``) and the
    shards are held as their assignment says; None until then."""
    live = await Membership(rt.client, rt.keys, GROUP, "probe", ttl_ms=1).live()
    pid_of = {m: int(m.split("-")[-2]) for m in live}
    if len(live) != members or any(pid in gone for pid in pid_of.values()):
        return None
    want = {shard: pid_of[m] for m, shards in assign(rt.shards.count, live).items() for shard in shards}
    held = await _holders(rt)
    if any(len(pids) != 1 for pids in held.values()) or {s: p[0] for s, p in held.items()} != want:
        return None
    return want


async def _wait_settled(rt: Runtime, members: int, gone: set[int], seconds: float) -> tuple[dict[int, int], float]:
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if (held := await _settled(rt, members, gone)) is not None:
            return held, time.monotonic() - start
        await asyncio.sleep(0.05)
    raise AssertionError(f"shards not settled in {seconds} s: {await _holders(rt)}")


async def _append(rt: Runtime, n: int, tag: str) -> set[str]:
    envs = [message(f"my withdrawal {tag}{i} has not arrived", user=f"user{i % 24}") for i in range(n)]
    await rt.inbox.append_many(envs)
    return {e.id for e in envs}


async def _all_routed_once(rt: Runtime, ids: set[str], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        seen = await inbound_ids(rt)
        if set(seen) >= ids or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert set(seen) == ids, f"{len(ids - set(seen))} not routed, {len(set(seen) - ids)} unknown"
    assert set(seen.values()) == {1}, [i for i, n in seen.items() if n > 1][:5]


async def test_workers_split_the_shards_take_over_a_killed_ones_and_a_stopped_ones_at_once(
    rt: Runtime, env: dict[str, str], workers: list[subprocess.Popen[bytes]]
) -> None:
    ids = await _append(rt, 200, "a")
    held, _ = await _wait_settled(rt, 3, set(), 30)
    assert sorted(held) == list(range(rt.shards.count))  # every shard read by exactly one process
    stats = json.loads(sb(env, "stats", "--json").stdout)["shard_holders"]
    assert {int(shard): h["pid"] for shard, h in stats.items()} == held
    assert "shards held: 0: " in sb(env, "stats").stdout

    # SIGKILL the process holding the most shards, while messages arrive.
    victim = Counter(held.values()).most_common(1)[0][0]
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    ids |= await _append(rt, 200, "b")
    after_kill, _ = await _wait_settled(rt, 2, {victim}, 15)
    took = time.monotonic() - killed
    print(f"takeover after SIGKILL: {took:.2f} s (lease TTL {TTL_S} s, retry {RETRY_S} s)")
    assert took < TTL_S + RETRY_S + 2.0
    assert victim not in after_kill.values() and sorted(after_kill) == list(range(rt.shards.count))
    await _all_routed_once(rt, ids, 20)

    # A clean stop releases its leases and leaves the group: the other takes over with no TTL wait.
    leaving = next(p for p in workers if p.pid in after_kill.values())
    leaving.send_signal(signal.SIGTERM)
    stopped = time.monotonic()
    assert leaving.wait(30) == 0
    alone, _ = await _wait_settled(rt, 1, {victim, leaving.pid}, 15)
    took = time.monotonic() - stopped
    print(f"handover after SIGTERM: {took:.2f} s")
    assert took < TTL_S
    assert len(set(alone.values())) == 1 and sorted(alone) == list(range(rt.shards.count))
    ids |= await _append(rt, 100, "c")
    await _all_routed_once(rt, ids, 20)
