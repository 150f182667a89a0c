"""A benchmark's or a test's redis-server dies with the process that started it (router/children.py),
however that process dies; the run command's outlives it (to flush its AOF and be adopted)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the parent-death signal is Linux's")

STARTER = """
import sys, time
from pathlib import Path
from router.redis import EmbeddedRedis
server = EmbeddedRedis(Path(sys.argv[1]), private=sys.argv[2] == "private")
server.start()
print(server.process.pid, flush=True)
time.sleep(600)
"""


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return not stat.split(") ", 1)[1].startswith("Z")  # a zombie has exited


def server_of_a_killed_starter(tmp_path: Path, mode: str) -> int:
    """Start a redis-server from a child Python, kill -9 that child; the server's pid."""
    with subprocess.Popen(
        [sys.executable, "-c", STARTER, str(tmp_path / mode), mode], stdout=subprocess.PIPE, text=True
    ) as starter:
        assert starter.stdout is not None
        pid = int(starter.stdout.readline())
        starter.kill()
        starter.wait(timeout=10)
    return pid


def gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_private_server_dies_with_its_starter_killed_by_sigkill(tmp_path: Path) -> None:
    pid = server_of_a_killed_starter(tmp_path, "private")
    assert gone_within(pid, 15), f"redis-server {pid} outlived the process that started it"


def test_the_run_commands_server_outlives_its_starter(tmp_path: Path) -> None:
    pid = server_of_a_killed_starter(tmp_path, "shared")
    try:
        assert not gone_within(pid, 1.0)  # left for the next start to adopt
    finally:
        os.kill(pid, signal.SIGTERM)
        assert gone_within(pid, 15)
