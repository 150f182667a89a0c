"""The resolution broadcast across a real crash: a `switchboard run` process is killed (SIGKILL)
midway through a rate-limited broadcast, a second one takes the shard's lease over after it
expires and finishes; every user's sandbox inbox holds the resolution exactly once."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

from adapters.sandbox import SandboxUsers
from router.runtime import Runtime
from tests.conftest import SWITCHBOARD
from tests.router.test_incidents import RESOLVED, FakeClock, link_all, linker, open_tron, send

USERS = 24


def start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as err:  # the child keeps its own descriptor
        return subprocess.Popen([*SWITCHBOARD, "run", "--workers", "1"], env=env, stdout=subprocess.DEVNULL, stderr=err)


async def sent(rt: Runtime, incident_id: str) -> int:
    return int(await rt.client.scard(rt.keys.incident_sent(incident_id)))


async def test_a_killed_broadcaster_is_taken_over_and_each_user_gets_the_resolution_once(
    rt: Runtime, env: dict[str, str], tmp_path: Path
) -> None:
    link = await linker(rt, FakeClock())
    inc = await open_tron(rt)
    users = [f"k{i}" for i in range(USERS)]
    for user in users:
        await send(rt, user, "my tron withdrawal is late")
    await link_all(link)
    await rt.incidents.resolve(inc.id, "admin", RESOLVED, "close")
    # Slow enough to be killed midway (3 a second), and a short lease for a quick takeover.
    env = {**env, "SWITCHBOARD_INCIDENTS__RATES": '{"sandbox": 3}', "SWITCHBOARD_LEASES__TTL_S": "2",
           "SWITCHBOARD_WEB__ENABLED": "false"}  # fmt: skip
    log = tmp_path / "run.log"
    first = start(env, log)
    try:
        deadline = time.monotonic() + 60
        while await sent(rt, inc.id) < 4:
            assert time.monotonic() < deadline and first.poll() is None, log.read_text()[-2000:]
            await asyncio.sleep(0.05)
        first.kill()  # SIGKILL: no close, its lease stays until it expires
        first.wait(10)
        at_kill = await sent(rt, inc.id)
        assert 4 <= at_kill < USERS
        second = start(env, log)
        try:
            while (await rt.incidents.get(inc.id)).state != "resolved":
                assert time.monotonic() < deadline + 60 and second.poll() is None, log.read_text()[-2000:]
                await asyncio.sleep(0.1)
            sandbox = SandboxUsers(rt.channel_context())

            async def delivered() -> dict[str, int]:
                return {u: sum(i["text"] == RESOLVED["en"] for i in await sandbox.inbox(u)) for u in users}

            while set((await delivered()).values()) != {1}:
                assert time.monotonic() < deadline + 90, await delivered()
                await asyncio.sleep(0.1)
        finally:
            second.terminate()
            second.wait(20)
    finally:
        if first.poll() is None:
            first.kill()
    assert await delivered() == dict.fromkeys(users, 1)
    for cid in await rt.incidents.linked(inc.id):
        history = await rt.conversations.history(cid)
        assert sum(h.type == "outbound" and h.data.get("text") == RESOLVED["en"] for h in history) == 1
