"""Worker processes of `switchboard run --workers N` under supervision: real processes, real Redis.

Each test reads the worker processes from their own heartbeats (``health:worker:*``, with their
pid), so it would run against an unsupervised `run` as well — and fail there.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from router.processes import ProcessSupervisor, RestartPolicy
from router.runtime import Runtime
from tests.cluster import sync_client
from tests.conftest import SWITCHBOARD
from tests.router.test_cli import sb, wait_for

pytestmark = pytest.mark.cluster


@pytest.fixture
def client(env: dict[str, str]) -> Iterator[redis.Redis]:
    c = sync_client(env["SWITCHBOARD_REDIS__URL"])
    yield c
    c.close()


def _records(client: redis.Redis, prefix: str, kind: str) -> list[dict[str, object]]:
    found = []
    for key in client.scan_iter(match=f"{prefix}health:{kind}:*"):
        raw = client.get(key)
        if raw:
            found.append(json.loads(raw))
    return found


def _worker_pids(client: redis.Redis, prefix: str, parent: int) -> set[int]:
    """The pids of the live worker processes other than ``parent`` (its own in-process worker)."""
    return {int(str(r["pid"])) for r in _records(client, prefix, "worker")} - {parent}


def _children(client: redis.Redis, prefix: str, run: subprocess.Popen[str], n: int) -> set[int]:
    """The pids of ``run``'s ``n`` worker processes, once each has beaten."""
    wait_for(lambda: len(_worker_pids(client, prefix, run.pid)) == n, 60)
    return _worker_pids(client, prefix, run.pid)


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie nobody reaped yet counts as gone: it runs nothing)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _run(env: dict[str, str], workers: int, **settings: str) -> subprocess.Popen[str]:
    env = {**env, "SWITCHBOARD_WORKER__HEARTBEAT_S": "0.3", "SWITCHBOARD_WEB__ENABLED": "false", **settings}
    return subprocess.Popen(
        [*SWITCHBOARD, "run", "--workers", str(workers)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _stop(run: subprocess.Popen[str], children: set[int]) -> str:
    """Stop ``run`` (SIGTERM) and return its stderr; kill what it left behind so no test leaks."""
    if run.poll() is None:
        run.send_signal(signal.SIGTERM)
        run.wait(60)
    for pid in children:  # before reading: a child left running would hold the stderr pipe open
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    return run.communicate(timeout=60)[1]


def test_sigkilled_worker_process_is_restarted(env: dict[str, str], client: redis.Redis) -> None:
    prefix = env["SWITCHBOARD_PREFIX"]
    run = _run(env, 2, SWITCHBOARD_WORKER__RESTART_BACKOFF_S="0.05")
    seen: set[int] = set()
    try:
        [first] = seen = _children(client, prefix, run, 1)
        os.kill(first, signal.SIGKILL)

        # A new worker process beats: restarted with a new pid.
        wait_for(lambda: bool(_worker_pids(client, prefix, run.pid) - {first}), 60)
        [second] = _worker_pids(client, prefix, run.pid) - {first}
        seen.add(second)
        assert not Path(f"/proc/{first}").exists()  # reaped by the supervisor, not left a zombie
        [record] = _records(client, prefix, "supervisor")
        assert record["expected"] == 1 and record["restarts"] == 1
        assert record["children"] == {
            "worker-1": {
                "pid": second,
                "alive": True,
                "restarts": 1,
                "last_exit": "killed by SIGKILL",
                "since": record["children"]["worker-1"]["since"],  # type: ignore[index]
            }
        }
        wait_for(lambda: sb(env, "check", check=False).returncode == 0, 30)
    finally:
        err = _stop(run, seen)
    assert run.returncode == 0, err
    assert "worker process worker-1" in err and "died (killed by SIGKILL)" in err and "restart #1" in err
    assert not _records(client, prefix, "supervisor")  # a clean stop removes the record


def test_check_fails_naming_a_missing_worker_process(env: dict[str, str], client: redis.Redis) -> None:
    prefix = env["SWITCHBOARD_PREFIX"]
    # A long restart delay: the killed worker process stays missing while `check` looks.
    run = _run(env, 3, SWITCHBOARD_WORKER__RESTART_BACKOFF_S="120")
    children: set[int] = set()
    try:
        children = _children(client, prefix, run, 2)
        wait_for(lambda: sb(env, "check", check=False).returncode == 0, 30)
        victim = min(children)
        os.kill(victim, signal.SIGKILL)

        def failing() -> bool:
            return sb(env, "check", check=False).returncode == 1

        wait_for(failing, 30)
        out = sb(env, "check", check=False).stderr
        [missing] = [line.removeprefix("FAIL ") for line in out.splitlines() if line.startswith("FAIL missing: ")]
        assert "killed by SIGKILL" in missing and "0 restart(s)" in missing
        [record] = _records(client, prefix, "supervisor")
        assert record["expected"] == 2 and record["alive"] == 1
        [name] = [n for n, c in record["children"].items() if c["pid"] == victim]  # type: ignore[attr-defined]
        assert missing.startswith(f"missing: {name} of ")
    finally:
        _stop(run, children)


def test_sigkilled_parent_leaves_no_worker_process(env: dict[str, str], client: redis.Redis) -> None:
    prefix = env["SWITCHBOARD_PREFIX"]
    run = _run(env, 3)
    children: set[int] = set()
    try:
        children = _children(client, prefix, run, 2)
        run.kill()
        run.wait(10)
        wait_for(lambda: not any(_alive(pid) for pid in children), 15)
        # Its record outlives it (TTL), but the children it names have no heartbeat: `check` fails.
        result = sb(env, "check", check=False)
        assert result.returncode == 1, result.stdout
    finally:
        _stop(run, children)


def test_worker_process_whose_parent_is_already_gone_exits(env: dict[str, str]) -> None:
    # Its parent died between the fork and the prctl: no signal would ever come (pid 1 is not ours).
    result = sb(env, "worker", "--supervised-by", "1:0", check=False)
    assert result.returncode == 1 and "parent process 1 is gone before this one started" in result.stderr


class SteppingClock:
    """A clock that moves ``step`` seconds at each reading: every child seems to run ``step``."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


async def _restart_delays(rt: Runtime, caplog: pytest.LogCaptureFixture, ran_s: float) -> list[float]:
    """The delays before the first six restarts of a child that always fails at once."""
    policy = RestartPolicy(backoff_s=0.01, backoff_cap_s=100.0, reset_after_s=60.0, stop_timeout_s=5.0)
    supervisor = ProcessSupervisor(
        [sys.executable, "-c", "raise SystemExit(3)"],
        os.environ,
        1,
        policy,
        kind="test",
        client=rt.client,
        health_key=rt.keys.health("supervisor", "test"),
        health_every_s=0.2,
        clock=SteppingClock(ran_s),
    )
    stopping = asyncio.Event()
    with caplog.at_level(logging.ERROR, logger="switchboard.supervisor"):
        running = asyncio.create_task(supervisor.run(stopping))
        deadline = time.monotonic() + 60
        while supervisor.slots[0].restarts < 6:  # it never gives up
            assert time.monotonic() < deadline and not running.done()
            await asyncio.sleep(0.02)
        stopping.set()
        await running
    assert await rt.client.get(rt.keys.health("supervisor", "test")) is None
    found = [re.search(r"\(exit code 3\).*restart #(\d+) in ([\d.]+)s$", r.getMessage()) for r in caplog.records]
    delays = {int(m[1]): float(m[2]) for m in found if m}
    return [delays[n] for n in range(1, 7)]


async def test_restart_delay_doubles_while_a_child_keeps_dying(rt: Runtime, caplog: pytest.LogCaptureFixture) -> None:
    delays = await _restart_delays(rt, caplog, ran_s=0.0)
    # Jittered (x0.5-1) exponential: the sixth waits at least 0.01 * 2**5 * 0.5 s.
    assert delays[5] >= 0.16 and all(d <= 0.01 * 2**n + 0.005 for n, d in enumerate(delays)), delays


async def test_restart_delay_resets_after_a_child_ran_long_enough(
    rt: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    delays = await _restart_delays(rt, caplog, ran_s=61.0)
    assert all(d <= 0.01 for d in delays), delays
