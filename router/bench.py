"""``switchboard bench``: the router end to end against the ceiling of a bare stream move, one run;
``switchboard bench append``: the append rate with each ``inbox.durability``.

On one private redis-server (started here, AOF on, in its own process):

(a) ceiling — a pipelined XREADGROUP → XADD → XACK loop with the worker's batch size and no rules;
(b) router  — ``Worker.step`` over the same number of messages with the default rules;
(c) latency — a worker process routing 2,000 msgs/s offered; the time from each inbox append to
    its conversation's ``created`` event being read by a console-like XREAD watcher;
(d) with ``--sla FILE`` (the policy published before (b), so routing keeps SLA clocks): the SLA
    timer (router/slatimer.py) evaluating the conversations (b) made, each due at once.

Machines here are shared and noisy, so the figure that matters is the ratio (b)/(a) of one run,
and (a) and (b) take turns (``ROUNDS`` each, a share of the messages per turn) so that a burst of
load from elsewhere falls on both rather than on whichever ran then.
Automatic AOF rewrites are paused while (a)/(b) and (c) run, after a rewrite just before each
(appends and the fsync every second go on). A rewrite is a fork that takes a whole core for a
second or two; left automatic, it falls inside whichever phase crosses Redis' size trigger (the
router's, as it writes the most), which says more about the bench's volume than about the code.
The AOF bytes each side appends per message are printed instead.
``SB_BENCH_SERIES=1`` also prints the latency per 250 messages over time (spikes vs a steady level).

``bench append`` starts two private servers, one per durability (``fast``: appendfsync everysec,
``durable``: always — or WAITAOF where the server has it), and appends the same number of messages
to each, taking turns as above: one at a time (an adapter confirming each message, as a webhook
does) and in bursts of 100 (a poll's batch). The figures that matter are the ratios durable/fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from router.config import Settings
from router.durability import appendfsync
from router.model import Envelope, Sender, new_id
from router.redis import EmbeddedRedis, connect
from router.rulestore import settle_heap
from router.runtime import Runtime
from router.worker import Worker
from rules import Engine

TEXTS = [
    "我的提现还没到账，已经三个小时了 txid 0x{hex}",
    "My withdrawal of 0.5 BTC has not arrived yet, txid {hex}",
    "Мой вывод USDT не пришёл уже 2 часа, помогите",
    "No me llegó el depósito de USDT por la red TRC20",
    "Hesabım hacklendi, biri tüm paramı çekti!",
    "Tài khoản của tôi bị khóa sau khi đổi mật khẩu",
    "Meu saque está pendente há um dia, o que faço?",
    "출금이 아직 안 됐어요. 확인 부탁드립니다",
    "How do I complete KYC level 2? My selfie was rejected",
    "我的合约仓位被强平了，价格根本没到强平价",
    "I want a refund, your platform froze during the crash",
    "What is the fee for withdrawing ETH on Arbitrum?",
]


def corpus(n: int, seed: int = 7, users: int | None = None, account: str = "bench") -> list[Envelope]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        text = rnd.choice(TEXTS).format(hex=f"{rnd.getrandbits(256):064x}")
        user = f"u{rnd.randrange(users)}" if users else f"u{i}"
        msg_id = new_id()
        out.append(
            Envelope(
                id=msg_id,
                channel=rnd.choice(["telegram", "discord", "email"]),
                account=account,
                platform_id=msg_id,
                conversation_key=user,
                sender=Sender(id=user, name=user),
                text=text,
                received_at=time.time(),
            )
        )
    return out


async def fill_inbox(rt: Runtime, envs: list[Envelope]) -> None:
    for i in range(0, len(envs), 1000):
        await rt.inbox.append_many(envs[i : i + 1000])


ROUNDS = 5


@dataclass
class Measured:
    """What one side took, summed over its turns: wall time, this process's CPU and Redis's,
    the bytes Redis appended to its AOF, and the messages it moved."""

    seconds: float = 0.0
    cpu_s: float = 0.0
    redis_cpu_s: float = 0.0
    aof_bytes: int = 0
    messages: int = 0

    def per_msg_us(self, value: float) -> float:
        return round(value / self.messages * 1e6, 1)


async def _redis_state(rt: Runtime) -> tuple[float, int]:
    """Redis's CPU seconds so far and its AOF size."""
    cpu, persistence = await rt.client.info("cpu"), await rt.client.info("persistence")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]), int(persistence["aof_current_size"])


@contextlib.asynccontextmanager
async def measure(rt: Runtime, into: Measured) -> AsyncIterator[None]:
    """Add the block's wall time, CPU (here and in Redis) and AOF growth to ``into``."""
    redis_cpu, aof = await _redis_state(rt)
    cpu, start = time.process_time(), time.perf_counter()
    yield
    into.seconds += time.perf_counter() - start
    into.cpu_s += time.process_time() - cpu
    redis_cpu_end, aof_end = await _redis_state(rt)
    into.redis_cpu_s += redis_cpu_end - redis_cpu
    into.aof_bytes += aof_end - aof


async def _aof_rewrite_done(rt: Runtime) -> None:
    while True:
        info = await rt.client.info("persistence")
        if not info["aof_rewrite_in_progress"] and not info["aof_rewrite_scheduled"]:
            return
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def no_aof_rewrite(rt: Runtime) -> AsyncIterator[None]:
    """The AOF rewritten now, and no automatic rewrite until the block ends."""
    await _aof_rewrite_done(rt)  # one may have started by itself
    await rt.client.bgrewriteaof()
    await _aof_rewrite_done(rt)
    setting = "auto-aof-rewrite-percentage"
    previous = (await rt.client.config_get(setting))[setting]
    await rt.client.config_set(setting, 0)
    try:
        yield
    finally:
        await rt.client.config_set(setting, previous)


class Ceiling:
    """The bare move loop over its own stream: the upper bound for any worker on this client."""

    def __init__(self, rt: Runtime, batch: int) -> None:
        self.rt, self.batch = rt, batch
        self.src, self.dst = rt.keys.prefix + "bench:src", rt.keys.prefix + "bench:dst"

    async def fill(self, n: int) -> None:
        payload = json.dumps({"env": "x" * 300})
        for i in range(0, n, 1000):
            pipe = self.rt.client.pipeline(transaction=False)
            for _ in range(min(1000, n - i)):
                pipe.xadd(self.src, {"env": payload})
            await pipe.execute()
        await self.rt.client.xgroup_create(self.src, "bench", id="0")

    async def move(self, n: int) -> int:
        client, moved = self.rt.client, 0
        while moved < n:
            streams = await client.xreadgroup("bench", "c", {self.src: ">"}, count=self.batch)
            entries = streams[0][1] if streams else []
            pipe = client.pipeline(transaction=False)
            for entry_id, fields in entries:
                pipe.xadd(self.dst, fields)
                pipe.xack(self.src, "bench", entry_id)
            await pipe.execute()
            moved += len(entries)
        return moved

    async def close(self) -> None:
        await self.rt.client.delete(self.src, self.dst)


async def ceiling_and_router(rt: Runtime, n: int, batch: int) -> tuple[Measured, Measured]:
    """(a) and (b) over ``n`` messages each (the router's from ``n / 4`` users, less those the
    ingest precheck sent to the P1 lane), taking turns."""
    ceiling = Ceiling(rt, batch)
    await ceiling.fill(n)
    await fill_inbox(rt, corpus(n, users=n // 4))
    worker = Worker(rt)
    await worker.follow_published()  # an SLA policy published for the run (``--sla``)
    await worker.step()  # leaves recovery: this new consumer has no pending entries
    if worker.lane is not None:
        # The ingest precheck's suspects (inbox.p1_lane, docs/surge.md) went to the P1 lane: routed
        # here, before the clock, by the same script; the turns time the inbox's share.
        await worker.lane.drain()
    n = int(await rt.client.xlen(rt.keys.inbox))  # the ceiling moves as many
    settle_heap()
    a, b = Measured(), Measured()
    share = -(-n // ROUNDS)
    async with no_aof_rewrite(rt):
        for _ in range(ROUNDS):
            # A turn ends on a whole batch, past its share: the next one takes what is left.
            async with measure(rt, a):
                a.messages += await ceiling.move(min(share, n - a.messages))
            async with measure(rt, b):
                todo, routed = min(share, n - b.messages), 0
                while routed < todo:
                    routed += await worker.step()
                await worker.flush()  # the turn ends with its last batch written
            b.messages += routed
    await ceiling.close()
    return a, b


async def latency(rt: Runtime, url: str, rate: int, seconds: float) -> dict[str, float]:
    env = {**os.environ, "SWITCHBOARD_REDIS__URL": url, "SWITCHBOARD_PREFIX": rt.keys.prefix}
    env["SWITCHBOARD_WORKER__BLOCK_MS"] = "1000"
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "router", "worker", env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    envs = corpus(int(rate * seconds), seed=11, account="latency")  # every message a new conversation
    appended: dict[str, float] = {}
    created: dict[str, float] = {}
    watcher_client = connect(url)
    try:
        await asyncio.sleep(1.5)  # worker start-up (imports, rules compile)
        groups = list(Engine.default().groups)
        # Not "$": that would skip what a stream got while XREAD was returning for another one.
        sec, usec = await rt.client.time()
        ids = {rt.keys.events(g): f"{sec * 1000 + usec // 1000}-0" for g in groups}

        async def watch() -> None:
            while len(created) < len(envs):
                streams = await watcher_client.xread(ids, block=500, count=500)
                seen = time.perf_counter()
                for stream, entries in streams:
                    for entry_id, fields in entries:
                        ids[stream.decode()] = entry_id
                        if fields[b"type"] == b"created":
                            created[fields[b"conv"].decode()] = seen

        settle_heap()  # the measuring process's own collector pauses must not count as latency
        watcher = asyncio.create_task(watch())
        await asyncio.sleep(0.1)
        tick = 0.002  # small ticks: an even offered rate, not 10 ms bursts
        per_tick = max(1, int(rate * tick))
        start = time.perf_counter()
        for i in range(0, len(envs), per_tick):
            chunk = envs[i : i + per_tick]
            # One pipelined append a tick, like an adapter's burst; stamped before it is sent.
            sent = time.perf_counter()
            appended.update((e.id, sent) for e in chunk)
            await rt.inbox.append_many(chunk)
            delay = start + (i // per_tick + 1) * tick - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        offered = len(envs) / (time.perf_counter() - start)
        await asyncio.wait_for(watcher, 30)
    finally:
        worker.terminate()
        await asyncio.wait_for(worker.wait(), 10)
        await watcher_client.aclose()
    pipe = rt.client.pipeline(transaction=False)
    conv_ids = list(created)
    for cid in conv_ids:
        pipe.hget(rt.keys.conv(cid), "last_msg_id")
    series = sorted(
        (appended[msg.decode()], (created[cid] - appended[msg.decode()]) * 1000)
        for cid, msg in zip(conv_ids, await pipe.execute(), strict=True)
        if msg and msg.decode() in appended
    )
    if os.environ.get("SB_BENCH_SERIES"):
        t0 = series[0][0]
        for i in range(0, len(series), 250):
            window = [v for _, v in series[i : i + 250]]
            print(f"t={series[i][0] - t0:5.2f}s  max {max(window):7.2f}  med {statistics.median(window):6.2f}")
    lat = sorted(v for _, v in series)
    return {
        "offered_msgs_per_s": offered,
        "latency_p50_ms": statistics.median(lat),
        "latency_p99_ms": lat[int(len(lat) * 0.99) - 1],
        "latency_max_ms": lat[-1],
        "latency_samples": len(lat),
    }


async def sla_timer(rt: Runtime) -> dict[str, float]:
    """(d) with ``--sla``: the SLA timer evaluating every conversation (b) left due (each new
    conversation is due at once), tick after tick until none is: its CPU and Redis's per
    conversation evaluated."""
    from router.slatimer import SlaTimer

    timer, m = SlaTimer(rt), Measured()
    keys = rt.shards.shard[0]
    async with no_aof_rewrite(rt), measure(rt, m):
        while due := await rt.client.zcount(keys.sla_due, "-inf", timer.clock.now_ms()):
            m.messages += min(due, timer.settings.batch)
            await timer.tick()
    await timer.close()
    return {
        "sla_timer_conversations": m.messages,
        "sla_timer_conversations_per_s": round(m.messages / m.seconds),
        "sla_timer_cpu_us_per_conversation": m.per_msg_us(m.cpu_s),
        "sla_timer_redis_cpu_us_per_conversation": m.per_msg_us(m.redis_cpu_s),
    }


async def _main(settings: Settings, messages: int, sla: str | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="sb-bench-") as tmp:
        server = EmbeddedRedis(Path(tmp) / "redis", private=True)
        with server:
            async with Runtime(settings, server.url) as rt:
                if sla is not None:
                    source = await asyncio.to_thread(Path(sla).read_text, encoding="utf-8")
                    await rt.sla.publish(source, "bench", filename=sla)
                batch = settings.worker.batch
                a, b = await ceiling_and_router(rt, messages, batch)
                timer = await sla_timer(rt) if sla is not None else {}
                async with no_aof_rewrite(rt):
                    lat = await latency(rt, server.url, rate=2000, seconds=5)
    ceiling_rate, router_rate = a.messages / a.seconds, b.messages / b.seconds
    return {
        "sla_policy": sla,
        **timer,
        "batch": batch,
        "messages": messages,
        "rounds": ROUNDS,
        "ceiling_msgs_per_s": round(ceiling_rate),
        "router_msgs_per_s": round(router_rate),
        "ratio": round(router_rate / ceiling_rate, 3),
        "worker_cpu_us_per_msg": b.per_msg_us(b.cpu_s),
        "redis_cpu_us_per_msg": b.per_msg_us(b.redis_cpu_s),
        "ceiling_client_cpu_us_per_msg": a.per_msg_us(a.cpu_s),
        "ceiling_redis_cpu_us_per_msg": a.per_msg_us(a.redis_cpu_s),
        "ceiling_aof_bytes_per_msg": round(a.aof_bytes / a.messages),
        "router_aof_bytes_per_msg": round(b.aof_bytes / b.messages),
        **{k: round(v, 2) if isinstance(v, float) else v for k, v in lat.items()},
    }


def _run(
    bench: Callable[..., Coroutine[Any, Any, dict[str, Any]]], settings: Settings, messages: int, *args: Any
) -> dict[str, Any]:
    return asyncio.run(bench(settings.model_copy(update={"prefix": "bench:"}), messages, *args))


def main(settings: Settings, as_json: bool, messages: int, out: TextIO = sys.stdout, sla: str | None = None) -> int:
    """``sla``: an SLA policy file published before (b), so that routing keeps SLA clocks; then
    (d), the SLA timer over the conversations (b) made."""
    result = _run(_main, settings, messages, sla)
    if as_json:
        print(json.dumps(result), file=out)
        return 0
    print(f"messages: {result['messages']}, batch {result['batch']}, (a) and (b) in {ROUNDS} turns each", file=out)
    print(f"(a) ceiling, bare XREADGROUP→XADD→XACK: {result['ceiling_msgs_per_s']:>8} msgs/s", file=out)
    print(f"(b) router worker, default rules:        {result['router_msgs_per_s']:>8} msgs/s", file=out)
    print(f"    ratio (b)/(a): {result['ratio']:.2f}  (target ≥ 0.5)", file=out)
    print(
        f"    per message: worker CPU {result['worker_cpu_us_per_msg']} µs, "
        f"Redis CPU {result['redis_cpu_us_per_msg']} µs "
        f"(ceiling: client {result['ceiling_client_cpu_us_per_msg']} µs, "
        f"Redis {result['ceiling_redis_cpu_us_per_msg']} µs), "
        f"AOF {result['router_aof_bytes_per_msg']} B (ceiling: {result['ceiling_aof_bytes_per_msg']} B)",
        file=out,
    )
    print(
        f"(c) at {result['offered_msgs_per_s']:.0f} msgs/s offered: append→queued p50 {result['latency_p50_ms']} ms, "
        f"p99 {result['latency_p99_ms']} ms (target ≤ 10), max {result['latency_max_ms']} ms",
        file=out,
    )
    if sla is not None:
        print(
            f"(d) SLA timer over {result['sla_timer_conversations']} due conversations: "
            f"{result['sla_timer_conversations_per_s']}/s, per conversation its CPU "
            f"{result['sla_timer_cpu_us_per_conversation']} µs, Redis CPU "
            f"{result['sla_timer_redis_cpu_us_per_conversation']} µs",
            file=out,
        )
    return 0


APPEND_BURST = 100


async def _append_turn(rt: Runtime, envs: list[Envelope], burst: int, into: Measured) -> None:
    async with measure(rt, into):
        for i in range(0, len(envs), burst):
            await rt.inbox.append_many(envs[i : i + burst])
    into.messages += len(envs)


async def _append_main(settings: Settings, messages: int) -> dict[str, Any]:
    modes = ("fast", "durable")
    result: dict[str, Any] = {"messages": messages, "rounds": ROUNDS, "burst": APPEND_BURST}
    single = {mode: Measured() for mode in modes}
    bursts = {mode: Measured() for mode in modes}
    with tempfile.TemporaryDirectory(prefix="sb-bench-") as tmp, contextlib.ExitStack() as servers:
        async with contextlib.AsyncExitStack() as stack:
            runtimes: dict[str, Runtime] = {}
            for mode in modes:
                mode_settings = settings.model_copy(deep=True)
                mode_settings.inbox.durability = mode  # type: ignore[assignment]
                server = EmbeddedRedis(Path(tmp) / mode, appendfsync=appendfsync(mode_settings.inbox), private=True)
                servers.enter_context(server)
                runtimes[mode] = await stack.enter_async_context(Runtime(mode_settings, server.url))
            share = -(-messages // ROUNDS)
            for turn in range(ROUNDS):
                todo = min(share, messages - turn * share)
                for mode in modes:
                    rt = runtimes[mode]
                    await _append_turn(rt, corpus(todo, seed=turn, account=f"one{turn}"), 1, single[mode])
                    await _append_turn(rt, corpus(todo, seed=turn, account=f"burst{turn}"), APPEND_BURST, bursts[mode])
            result["redis_version"] = (await runtimes["fast"].client.info("server"))["redis_version"]
    for kind, measured in (("single", single), ("burst", bursts)):
        rates = {mode: measured[mode].messages / measured[mode].seconds for mode in modes}
        result[f"{kind}_fast_msgs_per_s"] = round(rates["fast"])
        result[f"{kind}_durable_msgs_per_s"] = round(rates["durable"])
        result[f"{kind}_ratio"] = round(rates["durable"] / rates["fast"], 3)
    return result


def append_main(settings: Settings, as_json: bool, messages: int, out: TextIO = sys.stdout) -> int:
    """``switchboard bench append``: appends per second with each durability, in one run."""
    result = _run(_append_main, settings, messages)
    if as_json:
        print(json.dumps(result), file=out)
        return 0
    print(f"appends: {messages} per mode and kind, in {ROUNDS} turns each (Redis {result['redis_version']})", file=out)
    for kind, label in (("single", "one at a time"), ("burst", f"bursts of {APPEND_BURST}")):
        print(
            f"{label:>16}: fast {result[f'{kind}_fast_msgs_per_s']:>7} msgs/s, durable "
            f"{result[f'{kind}_durable_msgs_per_s']:>7} msgs/s, durable/fast {result[f'{kind}_ratio']:.2f}",
            file=out,
        )
    return 0
