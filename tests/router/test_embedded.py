"""The embedded redis-server across crashes: `switchboard` finds out which server serves its data
directory by asking it, so a restart after `kill -9`, a pid file naming another live process, and
an orphaned server all end in a clean start."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import redis

from router.redis import EmbeddedRedis
from tests.conftest import SWITCHBOARD
from tests.router.test_cli import sb, wait_for


@pytest.fixture
def local_env(env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """`switchboard` with no Redis URL: it uses the embedded server with data in tmp_path/var."""
    e = {k: v for k, v in env.items() if k != "SWITCHBOARD_REDIS__URL"}
    e["SWITCHBOARD_REDIS__DATA_DIR"] = str(tmp_path / "var")
    return e


def start_run(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*SWITCHBOARD, "run"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


def up(env: dict[str, str], server: EmbeddedRedis, *, not_pid: int | None = None) -> int:
    """Wait until a (new) server answers and a worker's heartbeat is in it; its pid."""
    pids: list[int] = []

    def serving() -> bool:
        pid = server.serving_pid()
        pids[:] = [pid] if pid is not None and pid != not_pid else []
        return bool(pids)

    wait_for(serving)
    client = redis.Redis.from_url(server.url)
    try:
        wait_for(lambda: bool(client.keys(env["SWITCHBOARD_PREFIX"] + "health:worker:*")))
    finally:
        client.close()
    return pids[0]


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie (killed, not yet reaped by init) is gone too.
    return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")


def stop(run: subprocess.Popen[str]) -> str:
    run.send_signal(signal.SIGTERM)
    _, err = run.communicate(timeout=30)
    assert run.returncode == 0, err
    assert "Traceback" not in err, err
    return err


def test_a_restart_right_after_kill_9_of_switchboard_and_its_redis_starts_cleanly(
    local_env: dict[str, str], tmp_path: Path
) -> None:
    server = EmbeddedRedis(tmp_path / "var")
    first = start_run(local_env)
    try:
        redis_pid = up(local_env, server)
    finally:
        first.kill()
    os.kill(redis_pid, signal.SIGKILL)
    first.communicate(timeout=10)
    second = start_run(local_env)  # at once: the killed server may still be a zombie
    try:
        assert up(local_env, server, not_pid=redis_pid) != redis_pid
        sb(local_env, "send", "--from", "alice", "my withdrawal has not arrived")
        wait_for(lambda: len(json.loads(sb(local_env, "queue", "payments", "--json").stdout)["conversations"]) == 1)
    finally:
        err = stop(second)
    assert "removed stale" in err
    assert server.serving_pid() is None  # the server it started is stopped with it


def test_a_pid_file_naming_another_live_process_does_not_stop_the_start(
    local_env: dict[str, str], tmp_path: Path
) -> None:
    var = tmp_path / "var"
    var.mkdir()
    (var / "redis.pid").write_text(f"{os.getpid()}\n")  # alive, and not a redis-server (PID reuse)
    (var / "redis.sock").touch()  # left behind
    result = sb(local_env, "stats", "--json", check=False)
    assert result.returncode == 0, result.stderr
    assert "inbox" in json.loads(result.stdout)
    assert "removed stale" in result.stderr and str(os.getpid()) in result.stderr
    assert EmbeddedRedis(var).serving_pid() is None


def test_an_orphaned_server_is_adopted_and_stopped_deliberately(local_env: dict[str, str], tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "var")
    first = start_run(local_env)
    try:
        redis_pid = up(local_env, server)
    finally:
        first.kill()  # only Switchboard: its redis-server lives on, an orphan
        first.communicate(timeout=10)
    assert server.serving_pid() == redis_pid
    result = sb(local_env, "stats", "--json", check=False)
    assert result.returncode == 0, result.stderr
    assert f"adopted the embedded redis-server (pid {redis_pid})" in result.stderr
    deadline = time.monotonic() + 10
    while not gone(redis_pid):
        assert time.monotonic() < deadline, "the adopted server was not stopped"
        time.sleep(0.05)


def test_a_command_beside_a_running_switchboard_uses_its_server_and_leaves_it_running(
    local_env: dict[str, str], tmp_path: Path
) -> None:
    server = EmbeddedRedis(tmp_path / "var")
    run = start_run(local_env)
    try:
        redis_pid = up(local_env, server)
        result = sb(local_env, "stats", "--json")
        assert "adopted" not in result.stderr and "removed stale" not in result.stderr
        assert server.serving_pid() == redis_pid
    finally:
        stop(run)
    assert server.serving_pid() is None
