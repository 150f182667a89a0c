"""Two replicas with the same bot: one polls, the other takes over when it dies or loses the lease.

The acceptance test runs real `switchboard run` processes on one Redis (and on the 3-primary
cluster) against the Bot API emulator, which names the process behind every getUpdates (its client
socket, looked up in /proc), with the default lease settings (TTL 6 s, renewal 2 s, standby retry
1 s): the takeover must come within 10 s. The lease-loss test runs one adapter in this process.
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
from typing import Any

import pytest

from router.config import LeaseSettings
from router.leases import Lease
from router.runtime import Runtime
from tests.conftest import SWITCHBOARD
from tests.telegram.conftest import ACCOUNT, MakeAdapter, consumed, section, until
from tests.telegram.emulator import Emulator

pytestmark = pytest.mark.cluster

TAKEOVER_S = 10.0


def _socket_inodes(port: int) -> set[str]:
    """The inodes of the TCP sockets whose local port is ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port:
                    found.add(fields[9])
    return found


def process_of(port: int, processes: dict[int, str]) -> str:
    """The name of the process (of ``processes``: pid -> name) owning the client socket ``port``."""
    inodes = _socket_inodes(port)
    for pid, name in processes.items():
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                return name
    return f"unknown (port {port})"


class Replicas:
    """`switchboard run` processes by name, their stderr in files, all killed at the end."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def names(self) -> dict[int, str]:
        return {p.pid: name for name, p in self.procs.items()}

    def start(self, name: str) -> subprocess.Popen[bytes]:
        with open(self.logs / f"{name}.log", "wb") as err:
            proc = subprocess.Popen([*SWITCHBOARD, "run"], env=self.env, stdout=subprocess.DEVNULL, stderr=err)
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)


@pytest.fixture
def replicas(env: dict[str, str], emu: Emulator, tmp_path: Path) -> Iterator[Replicas]:
    env = {
        **env,
        "SWITCHBOARD_TELEGRAM": json.dumps(section(emu)),
        "SWITCHBOARD_WEB__ENABLED": "false",
        "SWITCHBOARD_LOG_LEVEL": "INFO",
    }
    running = Replicas(env, tmp_path)
    emu.identify = lambda peer: process_of(peer[1], running.names)
    try:
        yield running
    finally:
        running.close()


async def bot_record(rt: Runtime, pid: int) -> dict[str, Any] | None:
    """The bot's part of the health record of the process ``pid`` (what `switchboard stats` shows)."""
    for key, record in (await rt.stats.health()).items():
        if key.startswith("adapter:telegram@") and f"-{pid}-" in key:
            bot: dict[str, Any] = record["bots"][ACCOUNT]
            return bot
    return None


async def routed(rt: Runtime) -> Counter[str]:
    """How many times each platform message id was routed, over every conversation's history."""
    seen: Counter[str] = Counter()
    async for key in rt.client.scan_iter(match=rt.keys.history("*"), count=1000):
        for _, fields in await rt.client.xrange(key):
            if fields[b"type"] == b"inbound":
                seen[json.loads(fields[b"data"])["platform_id"]] += 1
    return seen


def platform_id(update: dict[str, Any]) -> str:
    message = update["message"]
    return f"{message['chat']['id']}:{message['message_id']}"


async def test_one_replica_polls_and_a_standby_takes_over_a_killed_one_within_10s(
    rt: Runtime, emu: Emulator, replicas: Replicas
) -> None:
    pushed: list[dict[str, Any]] = []

    def push(n: int) -> None:
        for _ in range(n):
            user = 700 + len(pushed) % 5
            pushed.append(emu.push_message(emu.chat(user), f"withdrawal {len(pushed)} has not arrived"))

    async def all_routed() -> bool:
        return set(await routed(rt)) >= {platform_id(u) for u in pushed}

    a = replicas.start("A")

    async def holds(pid: int) -> bool:
        record = await bot_record(rt, pid)
        return record is not None and record["lease"] == "held"

    await until(lambda: holds(a.pid), 60, "replica A to hold the bot's lease")
    b = replicas.start("B")

    async def stands_by(pid: int, holder_pid: int) -> bool:
        record = await bot_record(rt, pid)
        return record is not None and record["lease"] == "standby" and f"-{holder_pid}-" in str(record["holder"])

    await until(lambda: stands_by(b.pid, a.pid), 60, "replica B to stand by behind A")

    push(10)  # before the kill
    await until(all_routed, 30, "the first updates routed")

    async def feed() -> None:  # during the kill and the takeover
        for _ in range(60):
            push(1)
            await asyncio.sleep(0.1)

    feeder = asyncio.create_task(feed())
    await asyncio.sleep(1.0)
    a.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    a.wait(10)

    def b_polled_after_kill() -> bool:
        return any(p["who"] == "B" and p["at"] > killed_at for p in emu.polls)

    await until(b_polled_after_kill, TAKEOVER_S + 5, "replica B to poll")
    takeover_s = min(p["at"] for p in emu.polls if p["who"] == "B") - killed_at
    await feeder
    push(10)  # after the takeover
    await until(all_routed, 60, "every update routed")

    # Exactly one replica polled at any time: A alone until it was killed, B only after.
    callers = Counter(p["who"] for p in emu.polls)
    assert set(callers) == {"A", "B"}, callers
    assert all(p["at"] <= killed_at + 0.05 for p in emu.polls if p["who"] == "A")
    assert 0 < takeover_s < TAKEOVER_S, f"takeover took {takeover_s:.1f}s"
    # No update lost or doubled (a batch A appended but did not confirm is fetched again by B,
    # and the idempotent append absorbs it).
    counts = await routed(rt)
    assert {pid: counts[pid] for pid in map(platform_id, pushed)} == {pid: 1 for pid in map(platform_id, pushed)}
    assert len(pushed) == 80 and sum(counts.values()) == 80
    # B's health record (published every heartbeat) says it holds the lease now, under a new fence.
    await until(lambda: holds(b.pid), 5, "B's health record to show the lease held")
    record = await bot_record(rt, b.pid)
    assert record is not None and record["fence"] == 2 and f"-{b.pid}-" in record["holder"], record

    b.send_signal(signal.SIGTERM)
    assert b.wait(30) == 0, replicas.log("B")
    print(f"takeover after SIGKILL: {takeover_s:.2f}s; polls: {dict(callers)}")
    assert "standing by" in replicas.log("B") and "acquired (fence 2)" in replicas.log("B")


async def test_a_bot_that_loses_its_lease_stops_polling_at_once(
    rt: Runtime, emu: Emulator, make_adapter: MakeAdapter
) -> None:
    leases = LeaseSettings(ttl_s=0.6, retry_s=0.05, max_skew_s=0)
    ctx = rt.channel_context("replica-a", leases=leases)
    adapter = await make_adapter(ctx)
    first = emu.push_message(emu.chat(777), "my withdrawal has not arrived")
    await consumed(rt, first)

    # Another replica takes the lease (A's expired while it was paused, say).
    other = Lease(rt.client, rt.scripts, rt.keys.prefix, f"adapter:telegram:{ACCOUNT}", "replica-b", ttl_ms=60_000)
    await rt.client.delete(rt.keys.lease(other.name))
    assert (await other.acquire()).owner == "replica-b"
    bot = adapter.bots[ACCOUNT]
    await until(lambda: bot.health()["lease"] == "standby" and bot.health()["holder"] == "replica-b", what="loss")
    # Its long poll in flight was abandoned and no other is sent: an update stays at Telegram.
    polls = len(emu.polls)
    second = emu.push_message(emu.chat(777), "any news?")
    await asyncio.sleep(1.5)  # more than a long poll (poll_timeout_s 1)
    assert len(emu.polls) == polls and bot.state.counters["received"] == 1
    assert [u["update_id"] for u in emu.updates] == [second["update_id"]]

    # The other replica releases: A takes over from the saved offset, and takes the update once.
    await other.release()
    await consumed(rt, second)
    assert bot.health()["lease"] == "held" and bot.health()["fence"] == 3
    assert bot.state.counters["received"] == 2 and bot.state.counters["duplicates"] == 0
