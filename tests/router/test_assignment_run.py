"""The acceptance run of automatic assignment: 2,000 conversations, 40 agents of capacity 3, two
`switchboard worker` processes routing and assigning (every shard each, so they contend) while the
agents close what they get, one worker SIGKILLed mid-run. Checked from the histories by id: no
agent above capacity at any instant, no conversation assigned twice, every one assigned once."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from router.bench_assign import audit
from router.presence import Presence
from router.runtime import Runtime
from tests.conftest import SWITCHBOARD
from tests.router.helpers import message

pytestmark = pytest.mark.cluster(shards=4)

CONVERSATIONS = 2000
AGENTS = [f"agent{i:02d}" for i in range(40)]
CAPACITY = 3


def _spawn(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([*SWITCHBOARD, "worker"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def test_two_assigning_workers_one_killed_never_overfill_nor_double_assign(
    rt: Runtime, env: dict[str, str], tmp_path: Path
) -> None:
    policy = tmp_path / "assignment.yaml"
    policy.write_text("version: 1\ngroups:\n  payments: {policy: least_loaded}\n")
    env = {
        **env,
        "SWITCHBOARD_ASSIGN__POLICY_FILE": str(policy),
        "SWITCHBOARD_ASSIGN__LEASES": "false",  # both processes assign every shard: they contend
        "SWITCHBOARD_ASSIGN__POLL_S": "0.05",
        "SWITCHBOARD_ASSIGN__SWEEP_S": "0.2",
        "SWITCHBOARD_ASSIGN__RESERVATION_S": "2",
    }
    presence = Presence(rt.client, rt.keys, rt.settings.assign)
    for name in AGENTS:
        await presence.set_profile(name, groups=["payments"], capacity={"telegram": CAPACITY})
        await presence.set_status(name, "online")
    await rt.inbox.append_many([message("my deposit is missing", user=f"user{i}") for i in range(CONVERSATIONS)])
    workers = [_spawn(env), _spawn(env)]
    rng = random.Random(17)
    closed: set[str] = set()
    killed = False
    try:
        deadline = time.monotonic() + 150
        while len(closed) < CONVERSATIONS and time.monotonic() < deadline:
            for name in AGENTS:
                await presence.beat(name)
            held = [await rt.conversations.of_agent(name) for name in AGENTS]
            # Each agent closes some of what it holds, at random: capacity frees up all along.
            # At most 16 at a time: up to 120 at once took more connections than the pool has.
            to_close = [(c.id, c.agent) for convs in held for c in convs if rng.random() < 0.5]
            for at in range(0, len(to_close), 16):
                await asyncio.gather(*(rt.conversations.close(cid, agent) for cid, agent in to_close[at : at + 16]))
            closed.update(cid for cid, _ in to_close)
            if not killed and len(closed) >= CONVERSATIONS // 4:
                os.kill(workers[0].pid, signal.SIGKILL)  # mid-run: possibly between two steps
                killed = True
            await asyncio.sleep(0.05)
        assert killed
        assert len(closed) == CONVERSATIONS, f"only {len(closed)} conversations were assigned and closed in time"
    finally:
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
        for w in workers:
            w.wait(timeout=30)
    checked = await audit(rt, dict.fromkeys(AGENTS, CAPACITY))
    assert checked.conversations == CONVERSATIONS
    assert checked.assignments == CONVERSATIONS  # each conversation assigned once, by id
    assert checked.double_assigned == 0
    assert checked.over_capacity == 0
    assert checked.max_load == CAPACITY  # the capacity was reached (the test is not vacuous)
