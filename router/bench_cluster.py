"""``switchboard bench cluster``: does the router's work divide over a Redis Cluster's primaries?

One run routes the same messages twice, taking turns (``ROUNDS`` each, as ``switchboard bench``
does, so that a burst of load from elsewhere falls on both):

(a) single  — one private redis-server, one shard (the default deployment);
(b) cluster — a private cluster of ``--primaries`` primaries on loopback (router/localcluster.py),
    the deployment split into ``--shards`` virtual shards, a ``Worker`` per shard in this process.

Both servers run without AOF (the cluster's nodes are started so), so that the Redis CPU compared
is the scripts' and not the disk's. Each primary's CPU (``INFO cpu``) is read before and after each
turn; the figure that matters is the sum over the primaries of their CPU per message, against the
single server's (issue 16: within 1.3×), and how evenly the primaries share it. A cluster node also
spends CPU on its cluster bus (gossip), which is counted in: it is part of the cost of a cluster.

After the run every key of the deployment is checked to be in the slot of its shard's prefix (no
route or conversation script wrote outside the slot it was called for).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import redis.asyncio as aioredis
from redis.crc import key_slot

from router.bench import ROUNDS, corpus, fill_inbox
from router.config import Settings
from router.localcluster import LocalCluster
from router.model import Envelope
from router.redis import EmbeddedRedis
from router.rulestore import settle_heap
from router.runtime import Runtime
from router.worker import Worker


@dataclass
class Side:
    """One side's totals over its turns: wall time, this process's CPU, each server's CPU."""

    seconds: float = 0.0
    cpu_s: float = 0.0
    messages: int = 0
    server_cpu_s: dict[int, float] = field(default_factory=dict)  # by node port (0: the single server)
    shard_messages: dict[int, int] = field(default_factory=dict)  # by node port: messages of its shards

    def us(self, value: float) -> float:
        return round(value / self.messages * 1e6, 1)


async def _cpu(client: aioredis.Redis) -> float:
    info = await client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


@contextlib.asynccontextmanager
async def _measure(side: Side, nodes: dict[int, aioredis.Redis]) -> AsyncIterator[None]:
    before = {port: await _cpu(c) for port, c in nodes.items()}
    cpu, start = time.process_time(), time.perf_counter()
    yield
    side.seconds += time.perf_counter() - start
    side.cpu_s += time.process_time() - cpu
    for port, client in nodes.items():
        side.server_cpu_s[port] = side.server_cpu_s.get(port, 0.0) + await _cpu(client) - before[port]


class Router:
    """A ``Worker`` per shard of ``rt``, stepped in turn, each only while its shard has messages
    left (an empty shard's read would block for ``worker.block_ms``)."""

    def __init__(self, rt: Runtime, per_shard: dict[int, int]) -> None:
        self.workers = [Worker(rt, f"bench-s{i}", shard=i) for i in range(rt.shards.count)]
        self.left = dict(per_shard)

    async def start(self) -> None:
        for worker in self.workers:
            await worker.step()  # leaves recovery: a new consumer has no pending entries

    async def route(self, n: int) -> int:
        routed = 0
        while routed < n and any(self.left.values()):
            for worker in self.workers:
                if self.left.get(worker.shard, 0) > 0 and routed < n:
                    got = await worker.step()
                    self.left[worker.shard] -= got
                    routed += got
        for worker in self.workers:
            await worker.flush()  # the turn ends with its last batches written
        return routed


def _per_shard(rt: Runtime, envs: list[Envelope]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for env in envs:
        shard = rt.shards.of_key(env.channel, env.account, env.conversation_key)
        counts[shard] = counts.get(shard, 0) + 1
    return counts


def _nodes_of(cluster: LocalCluster) -> dict[int, aioredis.Redis]:
    return {port: aioredis.Redis(port=port) for port in cluster.ports}


def _owner(cluster: LocalCluster, rt: Runtime) -> dict[int, int]:
    """The port of the primary serving each shard."""
    return {i: cluster.primary_of(keys.inbox) for i, keys in enumerate(rt.shards.shard)}


async def _outside_slots(rt: Runtime, nodes: dict[int, aioredis.Redis]) -> int:
    """Keys of the deployment's shards that are not in their shard prefix's slot."""
    outside = 0
    slots = [key_slot(keys.prefix.encode()) for keys in rt.shards.shard]
    for client in nodes.values():
        async for raw in client.scan_iter(match=rt.shards.glob("*"), count=1000):
            key = raw.decode()
            found = rt.shards.split(key)
            if found is not None and key_slot(key.encode()) != slots[found[0]]:
                outside += 1
    return outside


async def _main(settings: Settings, messages: int, shards: int, primaries: int) -> dict[str, Any]:
    single_settings = settings.model_copy(update={"prefix": "bench:"}, deep=True)
    single_settings.redis.shards = 1
    cluster_settings = settings.model_copy(update={"prefix": "{bench}:"}, deep=True)
    cluster_settings.redis.shards = shards
    a, b = Side(), Side()
    with (
        tempfile.TemporaryDirectory(prefix="sb-bench-cluster-") as tmp,
        EmbeddedRedis(Path(tmp) / "single", private=True) as single,
        LocalCluster(Path(tmp) / "cluster", primaries=primaries) as cluster,
    ):
        async with Runtime(single_settings, single.url) as one, Runtime(cluster_settings, cluster.url) as many:
            await one.client.config_set("appendonly", "no")
            nodes = _nodes_of(cluster)
            try:
                await fill_inbox(one, corpus(messages, users=messages // 4))
                envs = corpus(messages, users=messages // 4)
                await fill_inbox(many, envs)
                owner = _owner(cluster, many)
                per_shard = _per_shard(many, envs)
                for shard, count in per_shard.items():
                    b.shard_messages[owner[shard]] = b.shard_messages.get(owner[shard], 0) + count
                single_router = Router(one, {0: messages})
                cluster_router = Router(many, per_shard)
                await single_router.start()
                await cluster_router.start()
                settle_heap()
                share = -(-messages // ROUNDS)
                for turn in range(ROUNDS):
                    todo = min(share, messages - turn * share)
                    async with _measure(a, {0: one.client}):
                        a.messages += await single_router.route(todo)
                    async with _measure(b, nodes):
                        b.messages += await cluster_router.route(todo)
                outside = await _outside_slots(many, nodes)
            finally:
                for client in nodes.values():
                    await client.aclose()
    single_cpu = a.server_cpu_s[0] / a.messages
    per_primary = {str(port): b.us(cpu) for port, cpu in sorted(b.server_cpu_s.items())}
    total = sum(b.server_cpu_s.values()) / b.messages
    return {
        "messages": messages,
        "rounds": ROUNDS,
        "shards": shards,
        "primaries": primaries,
        "single_msgs_per_s": round(a.messages / a.seconds),
        "cluster_msgs_per_s": round(b.messages / b.seconds),
        "single_worker_cpu_us_per_msg": a.us(a.cpu_s),
        "cluster_worker_cpu_us_per_msg": b.us(b.cpu_s),
        "single_redis_cpu_us_per_msg": round(single_cpu * 1e6, 1),
        "cluster_redis_cpu_us_per_msg_per_primary": per_primary,
        "cluster_redis_cpu_us_per_msg_sum": round(total * 1e6, 1),
        "cpu_sum_ratio": round(total / single_cpu, 3),
        "messages_share_per_primary": {
            str(port): round(b.shard_messages.get(port, 0) / messages, 3) for port in sorted(b.server_cpu_s)
        },
        "single_primary_capacity_msgs_per_s": round(1 / single_cpu),
        "keys_outside_their_shard_slot": outside,
    }


def main(
    settings: Settings, as_json: bool, messages: int, shards: int, primaries: int, out: TextIO = sys.stdout
) -> int:
    result = asyncio.run(_main(settings, messages, shards, primaries))
    if as_json:
        print(json.dumps(result), file=out)
        return 0
    print(
        f"messages: {messages}, {ROUNDS} turns each; cluster: {primaries} primaries, {shards} shards, "
        f"a worker per shard (no AOF on either side)",
        file=out,
    )
    print(
        f"(a) single server: {result['single_msgs_per_s']:>7} msgs/s, Redis CPU "
        f"{result['single_redis_cpu_us_per_msg']} µs/msg (one primary's capacity ≈ "
        f"{result['single_primary_capacity_msgs_per_s']:,} msgs/s)",
        file=out,
    )
    print(f"(b) cluster:       {result['cluster_msgs_per_s']:>7} msgs/s, Redis CPU per primary (µs/msg):", file=out)
    for port, us in result["cluster_redis_cpu_us_per_msg_per_primary"].items():
        print(f"      {port}: {us:>6}  ({result['messages_share_per_primary'][port]:.0%} of the messages)", file=out)
    print(
        f"    sum {result['cluster_redis_cpu_us_per_msg_sum']} µs/msg = {result['cpu_sum_ratio']:.2f}× the single "
        f"server's (target ≤ 1.3); keys outside their shard's slot: {result['keys_outside_their_shard_slot']}",
        file=out,
    )
    return 0
