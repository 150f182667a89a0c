"""``switchboard bench soak``: does Redis memory level off under a steady load? (not a CI test)

On one private redis-server (started here, AOF on), for ``--minutes`` at ``--rate`` messages/s:

- a ``switchboard worker`` process routes with the default rules, and sweeps (its housekeeping);
- this process appends messages from ``--users`` senders (each writes about every users/rate
  seconds, so some conversations are reopened and most are new), in 10 ms ticks;
- a simulated agent closes every queued conversation twice a second;
- a sender per channel (the real ``OutboxConsumer``) hands every reply to a platform that takes it
  at once, so the outbox is drained and trimmed as in production;
- retention is turned down so that the steady state comes within minutes: closed conversations
  kept 60 s, reopen window 30 s, dedup 60 s, inbox ~20,000 entries, a sweep every 5 s.

Every ``--sample-s`` seconds it records Redis ``used_memory``, the messages routed, the keys, the
closed conversations awaiting deletion and the bytes held by the outbox streams. Levelling off:
the slope (bytes/s) of ``used_memory`` over the last third of the run against the first third.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

from router.bench import corpus
from router.config import Settings
from router.lifecycle import wait_or_stop
from router.model import OutboxItem
from router.outbox import OutboxConsumer
from router.redis import EmbeddedRedis
from router.runtime import Runtime
from router.scripts import argv, run_many
from rules import Engine

CHANNELS = ("telegram", "discord", "email")

#: Settings turned down for the soak (section -> setting -> value), here and in the worker.
SOAK: dict[str, dict[str, float]] = {
    "retention": {"closed_conversation_days": 60 / 86400, "dead_letter_days": 60 / 86400, "sweep_every_s": 5},
    "conversations": {"reopen_window_s": 30},
    "inbox": {"maxlen": 20_000, "dedup_ttl_s": 60},
}


def soak_settings(settings: Settings) -> Settings:
    sections = {name: getattr(settings, name).model_copy(update=values) for name, values in SOAK.items()}
    return settings.model_copy(update={"prefix": "soak:", **sections})


def soak_env() -> dict[str, str]:
    return {f"SWITCHBOARD_{s.upper()}__{k.upper()}": str(v) for s, values in SOAK.items() for k, v in values.items()}


def _slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (t, value) points; 0 for fewer than two."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    den = sum((t - mt) ** 2 for t, _ in points)
    return sum((t - mt) * (v - mv) for t, v in points) / den if den else 0.0


async def _produce(rt: Runtime, rate: int, users: int, seconds: float, stop: asyncio.Event) -> int:
    tick = 0.01
    per_tick = max(1, round(rate * tick))
    start, sent, n = time.perf_counter(), 0, 0
    while not stop.is_set() and time.perf_counter() - start < seconds:
        await rt.inbox.append_many(corpus(per_tick, seed=n, users=users, account="soak"))
        sent += per_tick
        n += 1
        delay = start + n * tick - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
    return sent


async def _agent(rt: Runtime, groups: list[str], stop: asyncio.Event) -> None:
    """Close every queued conversation twice a second (a close takes a conversation off its queue)."""
    while not stop.is_set():
        pipe = rt.client.pipeline(transaction=False)
        for group in groups:
            pipe.zrange(rt.keys.queue(group), 0, -1)
        heads = await pipe.execute()
        calls = [
            argv(rt.keys.prefix, "close", cid.decode(), '{"by": "soak-agent"}') for members in heads for cid in members
        ]
        for i in range(0, len(calls), 500):
            await run_many(rt.client, rt.scripts.conv, calls[i : i + 500], raise_on_error=False)
        await wait_or_stop(stop, 0.5)


async def _accept(item: OutboxItem) -> str | None:
    """The platform: it takes every reply at once."""
    return None


async def _sample(rt: Runtime, t: float) -> dict[str, Any]:
    memory = await rt.client.info("memory")
    pipe = rt.client.pipeline(transaction=False)
    pipe.hgetall(rt.keys.stats)
    pipe.dbsize()
    pipe.zcard(rt.keys.closed)
    for channel in CHANNELS:
        pipe.memory_usage(rt.keys.outbox(channel), samples=0)
    counters, keys, closed, *outbox = await pipe.execute()
    routed = sum(int(v) for k, v in counters.items() if k.startswith(b"routed:"))
    return {
        "t": round(t, 1),
        "used_memory": int(memory["used_memory"]),
        "routed": routed,
        "keys": keys,
        "closed_awaiting_deletion": closed,
        "outbox_bytes": sum(int(b or 0) for b in outbox),
    }


async def _main(settings: Settings, minutes: float, rate: int, users: int, sample_s: float) -> dict[str, Any]:
    seconds = minutes * 60
    with tempfile.TemporaryDirectory(prefix="sb-soak-") as tmp:
        server = EmbeddedRedis(Path(tmp) / "redis", private=True)
        with server:
            async with Runtime(settings, server.url) as rt:
                env = {**os.environ, **soak_env(), "SWITCHBOARD_REDIS__URL": server.url}
                env["SWITCHBOARD_PREFIX"] = rt.keys.prefix
                # Its log (the retention warning, each sweep) goes to stderr with the samples.
                worker = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "router", "worker", env=env, stdout=subprocess.DEVNULL
                )
                stop = asyncio.Event()
                senders = [OutboxConsumer(rt.client, rt.shards, channel, "soak-sender") for channel in CHANNELS]
                for sender in senders:
                    sender.start(_accept)
                try:
                    await asyncio.sleep(1.5)  # worker start-up
                    curve = [await _sample(rt, 0.0)]
                    start = time.perf_counter()
                    producer = asyncio.create_task(_produce(rt, rate, users, seconds, stop))
                    agent = asyncio.create_task(_agent(rt, list(Engine.default().groups), stop))
                    while not producer.done():
                        await asyncio.wait([producer], timeout=sample_s)
                        curve.append(await _sample(rt, time.perf_counter() - start))
                        print(json.dumps(curve[-1]), file=sys.stderr, flush=True)
                    sent = producer.result()
                    stop.set()
                    await agent
                finally:
                    stop.set()
                    await asyncio.gather(*(sender.close(5) for sender in senders))
                    worker.terminate()
                    await asyncio.wait_for(worker.wait(), 30)
    return _summary(curve, sent, seconds, rate, users)


def _summary(curve: list[dict[str, Any]], sent: int, seconds: float, rate: int, users: int) -> dict[str, Any]:
    net = [(s["t"], float(s["used_memory"])) for s in curve]
    third = max(2, len(net) // 3)
    first, last = _slope(net[:third]), _slope(net[-third:])
    elapsed = curve[-1]["t"] or 1.0
    return {
        "minutes": round(seconds / 60, 2),
        "rate_offered": rate,
        "rate_appended": round(sent / elapsed),
        "rate_routed": round(curve[-1]["routed"] / elapsed),
        "users": users,
        "settings": SOAK,
        "slope_first_third_bytes_per_s": round(first),
        "slope_last_third_bytes_per_s": round(last),
        # Level: the last third grows at under a tenth of the first third's pace.
        "levels_off": last < 0.1 * first,
        "curve": curve,
    }


def main(
    settings: Settings,
    as_json: bool,
    minutes: float,
    rate: int,
    users: int,
    sample_s: float = 10.0,
    out: TextIO = sys.stdout,
) -> int:
    result = asyncio.run(_main(soak_settings(settings), minutes, rate, users, sample_s))
    if as_json:
        print(json.dumps(result), file=out)
        return 0
    print(f"{result['minutes']} min, offered {rate} msg/s, routed {result['rate_routed']} msg/s", file=out)
    for s in result["curve"]:
        print(f"t={s['t']:6.1f}s  used_memory {s['used_memory'] / 1e6:8.1f} MB  routed {s['routed']:>8}", file=out)
    print(
        f"slope first third {result['slope_first_third_bytes_per_s']} B/s, last third "
        f"{result['slope_last_third_bytes_per_s']} B/s: {'levels off' if result['levels_off'] else 'still growing'}",
        file=out,
    )
    return 0
