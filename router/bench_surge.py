"""``switchboard bench surge``: the surge drill of issue 18 — is a P1 situation routed ahead of a
backlog of 100,000 messages, and is every message routed once?

On one private redis-server (started here, AOF as configured):

- ``WORKERS`` ``switchboard worker`` processes route with the rule set configured (the default
  rules and triage model unless ``rules.file`` / ``rules.model`` say otherwise);
- ``APPENDERS`` concurrent appenders in this process send ``--messages`` messages through the
  append API (``Inbox.append_many``, bursts of ``BURST``) as fast as it takes them: 1% P1
  situations (account takeover, scam in progress, a pasted recovery phrase; six languages, each
  from a sender of its own), 60% one question ("is the TRON withdrawal delayed?", in variants
  and languages), the rest everyday questions; ``users`` senders for the other 99%, so most
  conversations get several messages;
- once every message is routed: ``lost`` and ``duplicated`` counted by message id over every
  conversation's history; the latency of each message from its append to its queue entry, both
  read from Redis' own clock (the inbox or lane entry id, the history entry id written by the
  route script that queued it); ``peak_memory_mb``, Redis' ``used_memory_peak``;
- an incident ("TRON withdrawals delayed", matching the surge's question) is open before the first
  message, and the incident linker (router/incident_link.py) runs in this process throughout, as
  in ``switchboard run``: ``incident_linked`` of ``incident_conversations`` (conversations whose
  first message is the surge's question), ``incident_collapsed`` out of the queues,
  ``incident_link_lag_s`` (from the last message routed until the linker has read every event),
  and ``queued_after``, the rows left in the groups' queues for agents.

``p1_latency_*`` are over the P1 messages the drill wrote (all of them, caught by the precheck
or not), ``p1_lane_latency_*`` over those it sent to the lane, ``backlog_latency_*`` over the
others. ``--lane off|rules|model`` sets ``inbox.p1_lane``
for the run (workers and appenders alike) to compare (docs/surge.md).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, TextIO

from router.bench_failover import inbound_records, spawn_worker, stop_workers
from router.config import Settings
from router.errors import AppendRefused
from router.incident_link import Linker
from router.lifecycle import running
from router.model import Envelope, Sender, new_id
from router.redis import TRANSIENT_ERRORS, EmbeddedRedis
from router.runtime import Runtime

WORKERS = 2
APPENDERS = 4
BURST = 100
PREFIX = "surge:"

#: P1 situations as victims write them: an account taken over, a scam under way, a recovery
#: phrase given away. Not all of them use the words the rules look for.
P1_TEXTS = [
    "My account was hacked, someone withdrew all my USDT {n} minutes ago! Please freeze it",
    "Someone changed my email and 2FA and withdrew {n} ETH, I did not do this!!",
    "I got a DM from an admin who asked for my seed phrase and I gave it, now my wallet is empty",
    "账号被盗了！有人刚刚把我的{n}个USDT提走了，请马上冻结我的账户",
    "我没有操作，账户里的币全部被转走了，请立即冻结",
    "Мой аккаунт взломали, вывели {n} USDT без моего ведома, заблокируйте аккаунт срочно",
    "Me hackearon la cuenta y retiraron {n} USDT sin mi autorización, congelen mi cuenta",
    "Hesabım hacklendi, biri {n} USDT çekti, lütfen hesabımı dondurun",
    "Tài khoản của tôi bị hack, ai đó đã rút {n} USDT, xin khóa tài khoản ngay",
    "A support agent on Telegram told me to send {n} USDT to verify my wallet, I sent it, was this a scam?",
]
#: The one question of the surge ("TRON withdrawals delayed"): what an incident will match.
SURGE_TEXTS = [
    "TRON withdrawal delayed? It has been {n} minutes",
    "Is TRX withdrawal down? my USDT TRC20 withdrawal is still pending",
    "TRON提现是不是延迟了？已经{n}分钟了还没到",
    "波场提币一直在处理中，怎么回事",
    "Вывод TRON задерживается? Уже {n} минут",
    "¿Los retiros de TRON están retrasados? Llevo {n} minutos esperando",
    "TRON çekimleri gecikiyor mu? {n} dakikadır bekliyorum",
    "Rút TRON bị chậm à? Đã {n} phút rồi",
]
#: The drill's incident: what an admin would open for the surge's question (SURGE_TEXTS).
INCIDENT_MATCHER = {"contains_any": ["tron", "trx", "波场"]}
INCIDENT_TEXTS = {"en": "TRON withdrawals are delayed; we are on it.", "zh": "TRON 提现延迟，我们正在处理。"}
OTHER_TEXTS = [
    "How do I complete KYC level 2? My selfie was rejected",
    "What is the fee for withdrawing ETH on Arbitrum?",
    "我的合约仓位被强平了，价格根本没到强平价",
    "No me llegó el depósito de USDT por la red TRC20",
    "Meu saque está pendente há um dia, o que faço?",
    "Как изменить номер телефона в аккаунте?",
    "API key returns error -2015, what permissions do I need?",
    "Staking ödülleri ne zaman dağıtılıyor?",
    "Làm sao để nạp tiền bằng thẻ ngân hàng?",
    "I want a refund, your platform froze during the crash",
]


def surge_corpus(n: int, seed: int = 18, p1_share: float = 0.01, surge_share: float = 0.6) -> list[Envelope]:
    """``n`` messages in arrival order: ``p1_share`` P1 situations, each the first message of its
    sender, spread evenly; ``surge_share`` the surge's question; the rest everyday questions, from
    ``n // 3`` senders."""
    rnd = random.Random(seed)
    p1_every = round(1 / p1_share) if p1_share else 0
    users = max(1, n // 3)
    out = []
    for i in range(n):
        if p1_every and i % p1_every == p1_every // 2:
            text, user, kind = rnd.choice(P1_TEXTS), f"victim{i}", "p1"
        else:
            kind = "surge" if rnd.random() < surge_share / (1 - p1_share) else "other"
            text, user = rnd.choice(SURGE_TEXTS if kind == "surge" else OTHER_TEXTS), f"u{rnd.randrange(users)}"
        msg_id = new_id()
        out.append(
            Envelope(
                id=msg_id,
                channel=rnd.choice(["telegram", "discord", "email"]),
                account="surge",
                platform_id=msg_id,
                conversation_key=user,
                sender=Sender(id=user, name=user),
                text=text.format(n=rnd.randint(5, 500)),
                received_at=time.time(),
                meta={"drill": kind},
            )
        )
    return out


def _ms(entry_id: str) -> int:
    return int(entry_id.split("-", 1)[0])


async def _append_all(rt: Runtime, envs: list[Envelope]) -> int:
    """Append ``envs`` through ``APPENDERS`` concurrent appenders, bursts in order; returns the
    appends that were refused and sent again."""
    bursts = iter(range(0, len(envs), BURST))
    retries = 0

    async def appender() -> None:
        nonlocal retries
        for i in bursts:
            while True:
                try:
                    await rt.inbox.append_many(envs[i : i + BURST])
                    break
                except (*TRANSIENT_ERRORS, AppendRefused):
                    retries += 1
                    await asyncio.sleep(0.05)

    await asyncio.gather(*(appender() for _ in range(APPENDERS)))
    return retries


async def _routed_count(rt: Runtime) -> int:
    counters = await rt.client.hgetall(rt.keys.stats)
    routed = sum(int(v) for k, v in counters.items() if k.startswith(b"routed:"))
    return routed + int(counters.get(b"dead", 0))


async def _histories(rt: Runtime) -> tuple[Counter[str], dict[str, list[int]]]:
    """Per message id: how many times it is in a history, and each time's append->queued ms (the
    history entry's id against the inbox or lane entry's: both Redis' clock)."""
    seen: Counter[str] = Counter()
    latency: dict[str, list[int]] = {}
    async for hist_id, data in inbound_records(rt):
        seen[data["msg"]] += 1
        latency.setdefault(data["msg"], []).append(_ms(hist_id) - _ms(data["entry"]))
    return seen, latency


async def _in_lane(rt: Runtime) -> set[str]:
    """The message ids of the lane's entries (routed ones are kept up to ``inbox.lane_maxlen``)."""
    return {json.loads(fields[b"env"])["id"] for _, fields in await rt.client.xrange(rt.keys.lane)}


def _pct(values: list[int], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))])


async def _wait_workers(rt: Runtime, procs: list[subprocess.Popen[bytes]], seconds: float = 120.0) -> None:
    """Until every worker process beats (its inbox loop and its lane loop)."""
    deadline = time.monotonic() + seconds
    beats = [rt.keys.health(kind, "*") for kind in ("worker", "lane")]
    while sum([len([k async for k in rt.client.scan_iter(match=b)]) for b in beats]) < 2 * len(procs):
        if any(p.poll() is not None for p in procs):
            raise RuntimeError("a worker process exited at start-up (its output is above)")
        if time.monotonic() > deadline:
            raise TimeoutError(f"the workers' heartbeats not within {seconds:.0f} s")
        await asyncio.sleep(0.1)


async def drill(settings: Settings, url: str, messages: int, *, settle_s: float = 600.0) -> dict[str, Any]:
    """One surge on the server at ``url`` (empty, under ``settings.prefix``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_INBOX__P1_LANE")}
    env.update(
        SWITCHBOARD_REDIS__URL=url,
        SWITCHBOARD_PREFIX=settings.prefix,
        SWITCHBOARD_INBOX__P1_LANE=settings.inbox.p1_lane,
    )
    envs = surge_corpus(messages)
    p1_ids = {e.id for e in envs if e.meta["drill"] == "p1"}
    async with Runtime(settings, url) as rt:
        await rt.engines.current()  # the precheck's rules, compiled before the clock starts
        await rt.incidents.open("TRON withdrawals delayed", INCIDENT_MATCHER, INCIDENT_TEXTS, "bench")
        linker = Linker(rt, rt.incidents)
        procs = [spawn_worker(env) for _ in range(WORKERS)]
        try:
            await _wait_workers(rt, procs)
            async with running([linker]):
                start = time.perf_counter()
                retries = await _append_all(rt, envs)
                append_s = time.perf_counter() - start
                deadline = start + settle_s
                while await _routed_count(rt) < messages:
                    if time.perf_counter() > deadline:
                        raise TimeoutError(f"not every message routed within {settle_s:.0f} s")
                    await asyncio.sleep(0.02)
                drain_s = time.perf_counter() - start
                link_lag_s = await _settled(linker, deadline) - start - drain_s
            queued = await _queued(rt)
            seen, latency = await _histories(rt)
            laned = await _in_lane(rt)
            memory = await rt.client.info("memory")
            stats = await rt.client.hgetall(rt.keys.stats)
            dead = await rt.client.xlen(rt.keys.dead)
        finally:
            stop_workers(procs)
    sent = {e.id for e in envs}
    p1 = [ms for m in p1_ids for ms in latency.get(m, [])]
    p1_laned = [ms for m in p1_ids & laned for ms in latency.get(m, [])]
    rest = [ms for m in sent - p1_ids for ms in latency.get(m, [])]
    in_lane = sum(int(v) for k, v in stats.items() if k.startswith(b"lane:"))
    return {
        "messages": messages,
        "p1_lane": settings.inbox.p1_lane,
        "workers": WORKERS,
        "appenders": APPENDERS,
        "p1_messages": len(p1_ids),
        "lane_entries": in_lane,
        "append_s": round(append_s, 3),
        "append_msgs_per_s": round(messages / append_s),
        "append_retries": retries,
        "drain_s": round(drain_s, 3),
        "p1_latency_p50_ms": statistics.median(p1) if p1 else 0.0,
        "p1_latency_p99_ms": _pct(p1, 0.99),
        "p1_latency_max_ms": float(max(p1, default=0)),
        # The P1 messages the precheck sent to the lane, and those it missed (routed in turn).
        "p1_in_lane": len(p1_ids & laned),
        "p1_lane_latency_p50_ms": statistics.median(p1_laned) if p1_laned else 0.0,
        "p1_lane_latency_p99_ms": _pct(p1_laned, 0.99),
        "lane_false_positives": len(laned - p1_ids),
        "backlog_latency_p50_ms": statistics.median(rest) if rest else 0.0,
        "backlog_latency_p99_ms": _pct(rest, 0.99),
        "lost": len(sent - set(seen)),
        "duplicated": sum(1 for m in sent if seen[m] > 1),
        "dead_letters": int(dead),
        "peak_memory_mb": round(int(memory["used_memory_peak"]) / 2**20, 1),
        "incident_conversations": _first_surge(envs),
        "incident_linked": linker.counts["linked"],
        "incident_collapsed": linker.counts["collapsed"],
        "incident_link_lag_s": round(link_lag_s, 3),
        "queued_after": queued,
    }


def _first_surge(envs: list[Envelope]) -> int:
    """Conversations whose first message is the surge's question: the ones the incident links."""
    first: dict[tuple[str, str], str] = {}
    for e in envs:
        first.setdefault((e.channel, e.conversation_key), e.meta["drill"])
    return sum(kind == "surge" for kind in first.values())


async def _settled(linker: Linker, deadline: float, quiet_s: float = 2.0) -> float:
    """When the linker has read every event (its counts still for ``quiet_s``; the moment the last
    one moved is returned, perf_counter)."""
    last, moved = dict(linker.counts), time.perf_counter()
    while time.perf_counter() - moved < quiet_s:
        if time.perf_counter() > deadline:
            raise TimeoutError("the incident linker did not catch up in time")
        await asyncio.sleep(0.05)
        if linker.counts != last:
            last, moved = dict(linker.counts), time.perf_counter()
    return moved


async def _queued(rt: Runtime) -> int:
    """Rows in the groups' queues: what agents see (an incident's collapsed ones are not there)."""
    groups = (await rt.engine()).groups
    return sum([int(await rt.client.zcard(rt.keys.queue(g))) for g in groups])


async def _main(settings: Settings, messages: int) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="sb-surge-") as tmp,
        EmbeddedRedis(Path(tmp) / "redis", private=True) as server,
    ):
        return await drill(settings, server.url, messages)


def main(settings: Settings, as_json: bool, messages: int, lane: str | None = None, out: TextIO = sys.stdout) -> int:
    """``switchboard bench surge``: one JSON object with ``--json``; exit 1 when a message was
    lost or routed twice."""
    run = settings.model_copy(update={"prefix": PREFIX}, deep=True)
    if lane is not None:
        run.inbox.p1_lane = lane  # type: ignore[assignment]  # one of the CLI's choices
    result = asyncio.run(_main(run, messages))
    if as_json:
        print(json.dumps(result), file=out)
    else:
        print(
            f"surge of {result['messages']} messages (p1_lane {result['p1_lane']}, {WORKERS} workers, "
            f"{APPENDERS} appenders): appended in {result['append_s']} s ({result['append_msgs_per_s']} msgs/s), "
            f"drained in {result['drain_s']} s; P1 ({result['p1_messages']}, {result['p1_in_lane']} via the lane) "
            f"append->queued p50 {result['p1_latency_p50_ms']} ms, p99 {result['p1_latency_p99_ms']} ms "
            f"(via the lane p99 {result['p1_lane_latency_p99_ms']} ms); "
            f"the others p50 {result['backlog_latency_p50_ms']} ms, p99 {result['backlog_latency_p99_ms']} ms; "
            f"lost {result['lost']}, duplicated {result['duplicated']}; Redis peak {result['peak_memory_mb']} MB; "
            f"incident linked {result['incident_linked']} of {result['incident_conversations']} "
            f"({result['incident_collapsed']} collapsed, {result['incident_link_lag_s']} s after the drain), "
            f"{result['queued_after']} left in the queues",
            file=out,
        )
    return 0 if result["lost"] == 0 and result["duplicated"] == 0 else 1
