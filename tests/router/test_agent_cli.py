"""`switchboard agent`: profiles, statuses, and `agent online` beating until Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import time

from router.errors import NotFound
from router.presence import Presence
from router.runtime import Runtime
from tests.conftest import SWITCHBOARD


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SWITCHBOARD, "agent", *args], env=env, capture_output=True, text=True, timeout=60)


def _spawn(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([*SWITCHBOARD, "agent", *args], env=env, stderr=subprocess.PIPE)


async def test_set_list_and_status_commands(rt: Runtime, env: dict[str, str]) -> None:
    done = _run(
        env,
        "set",
        "ann",
        "--groups",
        "payments",
        "--languages",
        "en,zh",
        "--skills",
        "vip",
        "--capacity",
        "telegram=3",
        "--capacity",
        "email=10",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["capacity"] == {"email": 10, "telegram": 3}
    bad = _run(env, "set", "ann", "--capacity", "telegram")
    assert bad.returncode == 2 and "capacity must be CHANNEL=N" in bad.stderr
    assert _run(env, "away", "--name", "ann").returncode == 0
    [listed] = json.loads(_run(env, "list", "--json").stdout)
    assert (listed["name"], listed["status"], listed["tags"]) == ("ann", "away", ["vip"])


async def test_online_beats_until_interrupted_then_goes_offline(rt: Runtime, env: dict[str, str]) -> None:
    env = {**env, "SWITCHBOARD_ASSIGN__HEARTBEAT_S": "0.2"}
    presence = Presence(rt.client, rt.keys, rt.settings.assign)
    proc = _spawn(env, "online", "--name", "bob")
    try:
        beats = set()
        deadline = time.monotonic() + 30
        while len(beats) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            with contextlib.suppress(NotFound):  # not started yet
                state = await presence.get("bob")
                if state.status == "online":
                    beats.add(state.beat_ms)
        assert len(beats) >= 3  # it kept beating
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert (await presence.get("bob")).status == "offline"
