"""``switchboard bench assign``: automatic assignment under load, checked from the histories.

On a private redis-server: ``--agents`` agents (capacity 3 on the sandbox channel, every group,
online), ``--messages`` waiting conversations routed by a real worker, every group of the rule
set ``least_loaded``. Then one assigner assigns while agents close what they were given (a closer
task closes each assignment after a short random delay, so capacity frees up all along) until
every conversation was assigned once. ``decision_*``: from the reservation to the commit of each
assignment. ``over_capacity`` and ``double_assigned`` are counted from the conversations'
histories afterwards (``audit``), not assumed: agents that ever held more than their capacity at
one instant, and conversations assigned while already assigned.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from router.assignment import Assigner
from router.config import Settings
from router.model import Envelope, Sender, new_id, now
from router.presence import Presence
from router.redis import EmbeddedRedis
from router.runtime import Runtime
from router.worker import Workers
from sla.assignment import AssignmentPolicies, GroupPolicy

CAPACITY = 3
CHANNEL = "sandbox"


@dataclass(frozen=True)
class Audit:
    conversations: int
    assignments: int
    over_capacity: int  # agents above their capacity at some instant
    max_load: int
    double_assigned: int  # conversations assigned while already assigned


def _history_events(history: list[tuple[int, dict[str, Any]]]) -> tuple[list[tuple[int, int, str]], int, int]:
    """One conversation's status entries -> (at, +1/-1, agent) changes, assignments, doubles."""
    changes: list[tuple[int, int, str]] = []
    holder = ""
    assignments = doubles = 0
    for at, data in history:
        if data.get("status") == "assigned":
            assignments += 1
            if holder:
                doubles += 1
                changes.append((at, -1, holder))
            holder = str(data["agent"])
            changes.append((at, 1, holder))
        elif holder and (data.get("status") in ("new", "closed") or "from" in data):
            changes.append((at, -1, holder))  # released, re-offered, requeued, closed, transferred
            holder = ""
    return changes, assignments, doubles


async def audit(rt: Any, capacity: dict[str, int]) -> Audit:
    """Every conversation's history read back (every shard): at no instant may an agent hold more
    than ``capacity[agent]`` (a change at the same millisecond: the release first — an assignment
    can only follow the close it waited for), and no conversation be assigned while assigned."""
    keys = [key async for key in rt.client.scan_iter(match=rt.shards.glob("hist:*"), count=1000)]
    per_agent: dict[str, list[tuple[int, int]]] = defaultdict(list)
    assignments = doubles = 0
    for i in range(0, len(keys), 500):
        pipe = rt.client.pipeline(transaction=False)
        for key in keys[i : i + 500]:
            pipe.xrange(key)
        for entries in await pipe.execute():
            status = [(int(f[b"at"]), json.loads(f[b"data"])) for _, f in entries if f[b"type"] == b"status"]
            changes, n, d = _history_events(status)
            assignments += n
            doubles += d
            for at, delta, agent in changes:
                per_agent[agent].append((at, delta))
    over = max_load = 0
    for agent, deltas in per_agent.items():
        load = peak = 0
        for _, delta in sorted(deltas):  # (at, -1) sorts before (at, +1)
            load += delta
            peak = max(peak, load)
        max_load = max(max_load, peak)
        over += peak > capacity.get(agent, 0)
    return Audit(len(keys), assignments, over, max_load, doubles)


async def route_waiting(rt: Runtime, waiting: int) -> None:
    """``waiting`` new conversations, routed by a real worker."""
    for start in range(0, waiting, 1000):
        await rt.inbox.append_many(
            [
                Envelope(
                    id=(mid := new_id()),
                    channel=CHANNEL,
                    account="bench",
                    platform_id=mid,
                    conversation_key=f"user{i}",
                    sender=Sender(id=f"user{i}", name=f"User {i}"),
                    text=f"my deposit {i} has not arrived",
                    received_at=now(),
                )
                for i in range(start, min(waiting, start + 1000))
            ]
        )
    workers = Workers(rt)
    run = asyncio.create_task(workers.run())
    try:
        for _ in range(6000):  # 10 minutes at most
            if int(await rt.client.hget(rt.keys.stats, f"routed:{CHANNEL}") or 0) >= waiting:
                break
            await asyncio.sleep(0.1)
    finally:
        workers.stop()
        await run


async def _pings(rt: Runtime, n: int = 500) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        await rt.client.ping()
        out.append((time.perf_counter() - t) * 1000)
    return sorted(out)


async def bench(settings: Settings, agents: int, waiting: int) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="sb-bench-") as tmp,
        EmbeddedRedis(Path(tmp) / "redis", private=True) as server,
    ):
        async with Runtime(settings, server.url) as rt:
            engine = await rt.engine()
            groups = sorted(engine.groups)
            policies = AssignmentPolicies({g: GroupPolicy(g, "least_loaded") for g in groups}, "bench")
            presence = Presence(rt.client, rt.keys, settings.assign)
            names = [f"agent{i:04d}" for i in range(agents)]
            for name in names:
                await presence.set_profile(name, groups=groups, capacity={CHANNEL: CAPACITY})
                await presence.set_status(name, "online")
            await route_waiting(rt, waiting)
            assigner = Assigner(
                rt.client,
                rt.shards,
                rt.scripts,
                rt.conversations,
                presence,
                policies,
                settings.assign,
                keep_latencies=True,
            )
            await assigner.refresh()
            handed: asyncio.Queue[tuple[float, str, str]] = asyncio.Queue()
            stop = asyncio.Event()
            closed = 0

            async def closer() -> None:
                nonlocal closed
                while not (stop.is_set() and handed.empty()):
                    try:
                        due, cid, agent = await asyncio.wait_for(handed.get(), 0.1)
                    except TimeoutError:
                        continue
                    await asyncio.sleep(max(0.0, due - time.monotonic()))
                    await rt.conversations.close(cid, agent)
                    closed += 1

            async def sweeper() -> None:
                beat = time.monotonic()
                while not stop.is_set():
                    if time.monotonic() - beat > settings.assign.heartbeat_s:  # the agents' consoles
                        beat = time.monotonic()
                        for name in names:
                            await presence.beat(name)
                    await assigner.sweep()
                    await asyncio.sleep(settings.assign.sweep_s)

            pings = await _pings(rt)
            started = time.perf_counter()
            rng = random.Random(1)
            tasks = [asyncio.create_task(closer()) for _ in range(8)] + [asyncio.create_task(sweeper())]
            deadline = started + 300
            assigner.on_assign = lambda cid, agent: handed.put_nowait(
                (time.monotonic() + rng.uniform(0.005, 0.05), cid, agent)
            )
            while assigner.counts.assigned < waiting and time.perf_counter() < deadline:
                if not await assigner.assign_shard(0):
                    await asyncio.sleep(0.005)
            elapsed = time.perf_counter() - started
            stop.set()
            await asyncio.gather(*tasks)
            checked = await audit(rt, dict.fromkeys(names, CAPACITY))
    lat = sorted(assigner.counts.decision_ms)
    return {
        "agents": agents,
        "capacity": CAPACITY,
        "waiting": waiting,
        "assigned": assigner.counts.assigned,
        "closed_meanwhile": closed,
        "seconds": round(elapsed, 2),
        "decisions_per_s": round(assigner.counts.assigned / elapsed, 1),
        "decision_p50_ms": round(lat[len(lat) // 2], 3) if lat else None,
        "decision_p99_ms": round(lat[int(len(lat) * 0.99) - 1], 3) if lat else None,
        "decision_max_ms": round(lat[-1], 3) if lat else None,
        # One round trip to this Redis (PING) just before, for scale: a decision is two, plus
        # its Python; on a busy machine both grow.
        "ping_p50_ms": round(pings[len(pings) // 2], 3),
        "ping_p99_ms": round(pings[int(len(pings) * 0.99) - 1], 3),
        "no_agent_tries": assigner.counts.no_agent,
        "lost_races": assigner.counts.lost_race,
        "history_assignments": checked.assignments,
        "max_load_seen": checked.max_load,
        "over_capacity": checked.over_capacity,
        "double_assigned": checked.double_assigned,
    }


def main(settings: Settings, as_json: bool, agents: int, waiting: int, out: TextIO = sys.stdout) -> int:
    if settings.redis.shards != 1:
        settings = settings.model_copy(update={"redis": settings.redis.model_copy(update={"shards": 1})})
    result = asyncio.run(bench(settings.model_copy(update={"prefix": "bench:"}), agents, waiting))
    if as_json:
        print(json.dumps(result), file=out)
    else:
        for k, v in result.items():
            print(f"{k:22} {v}", file=out)
    ok = result["over_capacity"] == 0 and result["double_assigned"] == 0 and result["assigned"] == waiting
    return 0 if ok else 1
