"""``switchboard bench failover``: the crash and failover drill on a Redis Cluster with replicas;
``switchboard bench wait``: what ``WAIT 1`` after each append costs there.

The drill, once per kind of failover (``manual``: ``CLUSTER FAILOVER`` on the replica;
``kill``: the primary SIGKILLed, its replica promoted after the node timeout; ``kill-lagging``:
the same, the replica's link cut ``LAG_S`` before the kill, as a replica that lags or is cut off
when its primary dies):

- a private cluster of 3 primaries with one replica each (router/localcluster.py), the
  deployment's prefix ``{drill}:`` (one slot, so one primary serves it);
- ``--workers`` ``switchboard worker`` processes route with the default rules;
- this process appends ``--messages`` messages at a steady rate, in bursts as an adapter's poll
  does, sending a burst again until it is acknowledged (the dedup keys make that safe);
- a quarter of the way in one worker is SIGKILLed (never restarted: the others take its entries
  over); half way the slot's primary fails over; a killed primary is started again afterwards
  (it rejoins as a replica, as an orchestrator would restart it);
- at the end every message id is counted: in the inbox, in the conversations' histories (routed),
  once or more.

``lost_acknowledged`` are appends that were acknowledged to this process (the adapter would have
confirmed them to the platform) but are not in the inbox after the failover: Redis replicates
asynchronously, so a primary killed before its replica received a write loses that write although
it was acknowledged (the loss window). ``loss_window_ms``: how long before the kill the oldest such
append was acknowledged. With ``inbox.replicas = 1`` (``WAIT 1`` after each burst) an append is
acknowledged only once the replica has it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import msgspec
from redis.exceptions import RedisError

from router.bench import corpus
from router.cluster import scan_step
from router.config import Settings
from router.errors import AppendRefused, BadRequest
from router.keys import ROUTER_GROUP, STREAMS
from router.lifecycle import wait_or_stop
from router.localcluster import Failover, LocalCluster
from router.model import Envelope, decode_envelope
from router.redis import TRANSIENT_ERRORS
from router.runtime import Runtime

log = logging.getLogger("switchboard.bench")

FAILOVERS = ("manual", "kill", "kill-lagging")
#: In the ``kill-lagging`` drill, the replica misses the primary's writes of this long before the kill.
LAG_S = 0.2
PREFIX = "{drill}:"
BURST = 50
#: An append that fails is sent again after this long (the dedup keys make a second send safe).
RETRY_S = 0.05
#: Worker settings for the drill: a dead worker's entries taken over within ~2 s.
WORKER_ENV = {
    "SWITCHBOARD_WORKER__HEARTBEAT_S": "0.5",
    "SWITCHBOARD_WORKER__BLOCK_MS": "100",
    "SWITCHBOARD_WORKER__CLAIM_IDLE_MS": "2000",
}


@dataclass
class Appender:
    """Appends bursts at a steady rate, each again until acknowledged; records when."""

    rt: Runtime
    envs: list[Envelope]
    rate: float
    acked: dict[str, float] = field(default_factory=dict)  # message id -> acknowledged at (monotonic)
    retries: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    longest_gap_s: float = 0.0  # the longest time between two acknowledged bursts
    longest_stall_s: float = 0.0  # the longest time nothing was routed with messages waiting
    _marks: dict[int, asyncio.Event] = field(default_factory=dict)

    def reached(self, n: int) -> asyncio.Event:
        """Set once ``n`` messages are acknowledged."""
        mark = self._marks.setdefault(n, asyncio.Event())
        if len(self.acked) >= n:
            mark.set()
        return mark

    async def run(self) -> None:
        start = last = time.monotonic()
        for i in range(0, len(self.envs), BURST):
            burst = self.envs[i : i + BURST]
            while True:
                try:
                    await self.rt.inbox.append_many(burst)
                    break
                except Exception as exc:
                    # Whatever the error, the burst is sent again until acknowledged, as an
                    # adapter does (the dedup keys make it safe); counted by kind in the result.
                    # One an append is not expected to raise is logged, with its traceback, once.
                    name = type(exc).__name__
                    if not isinstance(exc, (*TRANSIENT_ERRORS, RedisError, AppendRefused)) and not self.errors[name]:
                        log.exception("drill append failed with an unexpected error; retried")
                    self.retries += 1
                    self.errors[name] += 1
                    await asyncio.sleep(RETRY_S)
            now = time.monotonic()
            self.acked.update((e.id, now) for e in burst)
            for n, event in self._marks.items():
                if len(self.acked) >= n:
                    event.set()
            self.longest_gap_s = max(self.longest_gap_s, now - last)
            last = now
            delay = start + (i + BURST) / self.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)


async def _longest_stall(rt: Runtime, appender: Appender, stopping: asyncio.Event) -> None:
    """Sample the routed counters every 50 ms until ``stopping`` is set; note in ``appender`` the
    longest time they stood still while acknowledged messages were waiting."""
    # Stopped by an event, not by a cancel: a fresh-clone CI run hung for 300 s awaiting this
    # loop after cancelling it; the cancel had reached it inside a cluster client call during the
    # failover and did not come out of it, so the loop went on sampling.
    done, since = 0, time.monotonic()
    while not await wait_or_stop(stopping, 0.05):
        with contextlib.suppress(*TRANSIENT_ERRORS, RedisError):
            counters = await rt.client.hgetall(rt.keys.stats)
            now = sum(int(v) for k, v in counters.items() if k.startswith(b"routed:"))
            if now > done or now >= len(appender.acked):
                done, since = now, time.monotonic()
        appender.longest_stall_s = max(appender.longest_stall_s, time.monotonic() - since)


async def _scan(rt: Runtime, match: str) -> list[bytes]:
    cursor, found = await scan_step(rt.client, 0, match=match, count=1000)
    while cursor:
        cursor, more = await scan_step(rt.client, cursor, match=match, count=1000)
        found += more
    return found


async def in_inbox(rt: Runtime) -> set[str]:
    """The message ids of every inbox and P1 lane entry."""
    ids: set[str] = set()
    for stream in STREAMS:
        start = "-"
        while entries := await rt.client.xrange(rt.keys.stream(stream), min=start, max="+", count=5000):
            for _, fields in entries:
                with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
                    ids.add(decode_envelope(fields[b"env"]).id)
            start = "(" + entries[-1][0].decode()
    return ids


async def inbound_records(rt: Runtime) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """Every inbound record of every conversation's history, over every shard: its history entry
    id and its data (router/routing.py inbound_record)."""
    keys = [key async for key in rt.client.scan_iter(match=rt.shards.glob("hist:*"), count=1000)]
    for i in range(0, len(keys), 500):
        pipe = rt.client.pipeline(transaction=False)
        for key in keys[i : i + 500]:
            pipe.xrange(key)
        for entries in await pipe.execute():
            for hist_id, fields in entries:
                if fields[b"type"] == b"inbound":
                    yield hist_id.decode(), json.loads(fields[b"data"])


async def routed(rt: Runtime) -> Counter[str]:
    """How many times each message id is in a conversation's history, over every shard (what the
    workers routed)."""
    return Counter([data["msg"] async for _, data in inbound_records(rt)])


async def _settled(rt: Runtime) -> bool:
    """Every inbox and P1 lane entry delivered to the routers' group and none pending."""
    for key in map(rt.keys.stream, STREAMS):
        stream = await rt.client.xinfo_stream(key)
        [group] = [g for g in await rt.client.xinfo_groups(key) if g["name"] in (ROUTER_GROUP, ROUTER_GROUP.encode())]
        if group["pending"] or group["last-delivered-id"] != stream["last-generated-id"]:
            return False
    return True


async def _reached(mark: asyncio.Event, appending: asyncio.Task[None], what: str, seconds: float) -> None:
    """Until ``mark`` is set; an error if the appender ended first (its own error, if any) or
    ``seconds`` passed: a drill that cannot go on says why instead of waiting for ever."""
    waiter = asyncio.ensure_future(mark.wait())
    try:
        await asyncio.wait({waiter, appending}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if mark.is_set():
        return
    if appending.done():
        appending.result()  # its error
        raise RuntimeError(f"the appender ended before {what}")
    raise TimeoutError(f"{what} not within {seconds:.0f} s")


async def _until(what: str, check: Any, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        with contextlib.suppress(*TRANSIENT_ERRORS, RedisError):
            if await check():
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not within {seconds:.0f} s")
        await asyncio.sleep(0.1)


def spawn_worker(env: dict[str, str], log: Path | None = None) -> subprocess.Popen[bytes]:
    """A ``switchboard worker`` process with ``env``, its output to ``log`` (default: ours)."""
    if log is None:
        return subprocess.Popen([sys.executable, "-m", "router", "worker"], env=env, stdin=subprocess.DEVNULL)
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "router", "worker"], env=env, stdout=out, stderr=subprocess.STDOUT
        )


def stop_workers(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM to those still running (they finish their batch), SIGKILL after 30 s."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def drill(
    cluster: LocalCluster,
    settings: Settings,
    kind: str,
    messages: int,
    workers: int,
    *,
    rate: float = 2000.0,
    env: dict[str, str] | None = None,
    logs: Path | None = None,
    settle_s: float = 120.0,
) -> dict[str, Any]:
    """One drill on ``cluster`` (3 primaries, a replica each) under ``settings.prefix``; ``env``:
    the worker processes' environment (default: this one's, on the cluster and the prefix);
    ``logs``: a directory for their output (default: this process's standard error)."""
    if kind not in FAILOVERS:
        raise BadRequest(f"failover kind {kind!r}: one of {', '.join(FAILOVERS)}")
    if messages < 4 * BURST or workers < 2:
        # A quarter of the messages marks the worker's kill, and one worker must survive it.
        raise BadRequest(f"the drill needs at least {4 * BURST} messages and 2 workers")
    worker_env = {**(env if env is not None else os.environ), **WORKER_ENV}
    worker_env.update(SWITCHBOARD_REDIS__URL=cluster.url, SWITCHBOARD_PREFIX=settings.prefix)
    envs = corpus(messages, seed=len(kind), users=max(1, messages // 4), account=f"drill-{kind}")
    async with Runtime(settings, cluster.url) as rt:
        await rt.inbox.start()
        procs = [spawn_worker(worker_env, logs / f"worker-{kind}-{n}.log" if logs else None) for n in range(workers)]
        tasks: list[asyncio.Task[None]] = []
        stopping = asyncio.Event()
        try:

            async def all_beating() -> bool:
                return len(await _scan(rt, rt.keys.health("worker", "*"))) >= workers

            await _until("the workers' first heartbeats", all_beating, 60)
            appender = Appender(rt, envs, rate)

            quarter, half = appender.reached(messages // 4), appender.reached(messages // 2)
            appending = asyncio.create_task(appender.run())
            stalls = asyncio.create_task(_longest_stall(rt, appender, stopping))
            tasks += [appending, stalls]
            # At the drill's rate with a failover's pause: a stuck appender is an error, not a hang.
            budget = messages / rate + settle_s
            await _reached(quarter, appending, "a quarter of the appends acknowledged", budget)
            os.kill(procs[0].pid, signal.SIGKILL)
            procs[0].wait()
            await _reached(half, appending, "half of the appends acknowledged", budget)
            key = rt.keys.inbox
            if kind == "manual":
                done: Failover = await asyncio.to_thread(cluster.failover, key)
            else:
                lag_s = LAG_S if kind == "kill-lagging" else 0.0
                done = await asyncio.to_thread(functools.partial(cluster.kill_primary, key, lag_s=lag_s))
                await asyncio.to_thread(cluster.restart, done.old)
            done_mark = appender.reached(messages)
            await _reached(done_mark, appending, "every append acknowledged", budget)
            await appending
            await _until("routing every inbox entry", lambda: _settled(rt), settle_s)
            inbox_ids = await in_inbox(rt)
            counts = await routed(rt)
            dead = await rt.client.xlen(rt.keys.dead)
        finally:
            # The sampler stops at its next sample; after an error the appender stops with it. A
            # task that a cancel does not end (see _longest_stall) is left behind after a while
            # rather than hang the drill; the errors of those that ended were raised already.
            stopping.set()
            for task in tasks:
                task.cancel()
            if tasks:
                ended, _ = await asyncio.wait(tasks, timeout=10)
                for task in ended:
                    if not task.cancelled():
                        task.exception()  # retrieved, so asyncio does not log it a second time
            stop_workers(procs)
    exits = [proc.returncode for proc in procs[1:]]
    sent = {e.id for e in envs}
    lost_acknowledged = sorted(set(appender.acked) - inbox_ids)
    oldest = min((appender.acked[m] for m in lost_acknowledged), default=done.at)
    window_ms = round((done.at - oldest) * 1000)
    return {
        "failover": kind,
        "messages": messages,
        "workers": workers,
        "killed_workers": 1,
        "inbox_replicas": settings.inbox.replicas,
        "acknowledged": len(appender.acked),
        "routed_once": sum(1 for m in sent if counts[m] == 1),
        "lost": len(sent - set(counts)),
        "duplicated": sum(1 for m in sent if counts[m] > 1),
        "lost_acknowledged": len(lost_acknowledged),
        "loss_window_ms": window_ms,
        "failover_s": round(done.seconds, 3),
        "append_unavailable_s": round(appender.longest_gap_s, 3),
        "routing_stalled_s": round(appender.longest_stall_s, 3),
        "append_retries": appender.retries,
        "append_errors": dict(appender.errors),
        "dead_letters": int(dead),
        "surviving_workers_exit": exits,
    }


def _cluster(tmp: str, name: str) -> LocalCluster:
    return LocalCluster(Path(tmp) / name, primaries=3, replicas=1)


async def _failover_main(settings: Settings, kinds: list[str], messages: int, workers: int) -> list[dict[str, Any]]:
    results = []
    with tempfile.TemporaryDirectory(prefix="sb-drill-") as tmp:
        for kind in kinds:
            with _cluster(tmp, kind) as cluster:
                results.append(
                    await drill(cluster, settings.model_copy(update={"prefix": PREFIX}), kind, messages, workers)
                )
    return results


def failover_main(
    settings: Settings, as_json: bool, kinds: list[str], messages: int, workers: int, out: TextIO = sys.stdout
) -> int:
    """``switchboard bench failover``: one JSON object (a line) per kind of failover."""
    results = asyncio.run(_failover_main(settings, kinds, messages, workers))
    for r in results:
        if as_json:
            print(json.dumps(r), file=out)
            continue
        print(
            f"{r['failover']:>6} failover: {r['messages']} messages, {r['workers']} workers (one SIGKILLed), "
            f"inbox.replicas {r['inbox_replicas']}: routed once {r['routed_once']}, lost {r['lost']}, "
            f"duplicated {r['duplicated']}; acknowledged but lost in the failover {r['lost_acknowledged']} "
            f"(window {r['loss_window_ms']} ms); "
            f"failover {r['failover_s']} s, appends waited up to {r['append_unavailable_s']} s",
            file=out,
        )
    return 0 if all(r["duplicated"] == 0 and r["lost"] == r["lost_acknowledged"] for r in results) else 1


# -- what WAIT costs ------------------------------------------------------------------------------
WAIT_ROUNDS = 5
WAIT_BURST = 100


async def _wait_main(settings: Settings, messages: int) -> dict[str, Any]:
    """Appends with ``inbox.replicas`` 0 and 1 on one cluster, one at a time and in bursts,
    taking turns; the two prefixes share a hash tag, so one primary and its replica serve both."""
    modes = {0: "{drill}:", 1: "{drill}:w:"}
    latencies: dict[tuple[int, int], list[float]] = {(r, b): [] for r in modes for b in (1, WAIT_BURST)}
    seconds: dict[tuple[int, int], float] = dict.fromkeys(latencies, 0.0)
    with tempfile.TemporaryDirectory(prefix="sb-wait-") as tmp, _cluster(tmp, "wait") as cluster:
        async with contextlib.AsyncExitStack() as stack:
            runtimes = {}
            for replicas, prefix in modes.items():
                mode = settings.model_copy(update={"prefix": prefix}, deep=True)
                mode.inbox.replicas = replicas
                runtimes[replicas] = await stack.enter_async_context(Runtime(mode, cluster.url))
            share = -(-messages // WAIT_ROUNDS)
            for turn in range(WAIT_ROUNDS):
                for replicas, rt in runtimes.items():
                    for burst in (1, WAIT_BURST):
                        envs = corpus(min(share, messages - turn * share), seed=turn, account=f"w{turn}-{burst}")
                        start = time.perf_counter()
                        for i in range(0, len(envs), burst):
                            t = time.perf_counter()
                            await rt.inbox.append_many(envs[i : i + burst])
                            latencies[replicas, burst].append((time.perf_counter() - t) * 1000)
                        seconds[replicas, burst] += time.perf_counter() - start
    result: dict[str, Any] = {"messages": messages, "rounds": WAIT_ROUNDS, "burst": WAIT_BURST}
    for burst, kind in ((1, "single"), (WAIT_BURST, "burst")):
        for replicas, name in ((0, "async"), (1, "wait")):
            lat = sorted(latencies[replicas, burst])
            result[f"{kind}_{name}_msgs_per_s"] = round(messages / seconds[replicas, burst])
            result[f"{kind}_{name}_p50_ms"] = round(statistics.median(lat), 3)
            result[f"{kind}_{name}_p99_ms"] = round(lat[max(0, int(len(lat) * 0.99) - 1)], 3)
        result[f"{kind}_ratio"] = round(result[f"{kind}_wait_msgs_per_s"] / result[f"{kind}_async_msgs_per_s"], 3)
    return result


def wait_main(settings: Settings, as_json: bool, messages: int, out: TextIO = sys.stdout) -> int:
    """``switchboard bench wait``: appends per second and latency without and with ``WAIT 1``."""
    result = asyncio.run(_wait_main(settings, messages))
    if as_json:
        print(json.dumps(result), file=out)
        return 0
    print(f"appends on a cluster with one replica per primary: {messages} per mode and kind", file=out)
    for kind, label in (("single", "one at a time"), ("burst", f"bursts of {WAIT_BURST}")):
        sides = [
            f"{name} {result[f'{kind}_{mode}_msgs_per_s']:>7} msgs/s (p50 {result[f'{kind}_{mode}_p50_ms']} ms, "
            f"p99 {result[f'{kind}_{mode}_p99_ms']} ms)"
            for mode, name in (("async", "async"), ("wait", "WAIT 1"))
        ]
        print(f"{label:>16}: {', '.join(sides)}, ratio {result[f'{kind}_ratio']:.2f}", file=out)
    return 0
