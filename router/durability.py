"""What an inbox append's acknowledgement means, and how it is obtained from the server in use.

``inbox.durability = "fast"``: the append is in Redis and written to its AOF, fsynced within a
second (``appendfsync everysec``): a power loss can lose the last ~1 s of confirmed appends.
``"durable"``: the append returns once it is on disk — ``WAITAOF 1 N timeout`` sent after it on the
same connection where the server has it (Redis >= 7.2, Valkey), else the server must fsync every
write before answering (``appendfsync always``; the embedded server, Redis 6.2, is started so).
``inbox.replicas = N``: the append also waits for N replicas (``WAIT``, or WAITAOF's replica count).

The server is asked once, when the inbox starts: a setting it cannot honour is a ConfigError then,
not a weaker guarantee in silence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from router.cluster import at_slot
from router.config import InboxSettings
from router.errors import ConfigError, NotDurable

#: The first Redis version with WAITAOF (Valkey reports 7.2.4 here too).
WAITAOF_VERSION = (7, 2)


def appendfsync(settings: InboxSettings) -> str:
    """The embedded server's ``appendfsync`` for the configured durability."""
    return "always" if settings.durability == "durable" else "everysec"


@dataclass(frozen=True, slots=True)
class Wait:
    """The command sent after a burst of appends on their connection (WAIT and WAITAOF wait for
    that connection's writes), and what its reply must say."""

    command: tuple[str | int, ...]
    replicas: int

    def check(self, reply: Any) -> None:
        if isinstance(reply, Exception):
            raise NotDurable(f"{self.command[0]} failed: {reply}") from reply
        if self.command[0] == "WAITAOF":
            local, replicas = int(reply[0]), int(reply[1])
            if local < 1:
                raise NotDurable(f"the append was not fsynced to the AOF within {self.command[-1]} ms")
        else:
            replicas = int(reply)
        if replicas < self.replicas:
            raise NotDurable(
                f"the append reached {replicas} of inbox.replicas {self.replicas} replicas within {self.command[-1]} ms"
            )


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(".")[:2] if x.isdigit())


async def plan(client: aioredis.Redis, settings: InboxSettings, key: str) -> Wait | None:
    """The command to send after each burst of appends (None: the reply itself is the guarantee),
    asked of the server holding ``key`` (on a cluster, the node of the inbox's slot).

    Raises ConfigError when the server cannot give the configured durability.
    """
    n, timeout = settings.replicas, settings.wait_timeout_ms
    replicated = Wait(("WAIT", n, timeout), n) if n else None
    if settings.durability == "fast":
        return replicated
    node = at_slot(client, key)
    info = await client.info("server", **node)
    persistence = await client.info("persistence", **node)
    version = str(info.get("redis_version", "0"))
    if not int(persistence.get("aof_enabled", 0)):
        raise ConfigError(f"inbox.durability = 'durable' needs the AOF: the Redis server ({version}) has appendonly no")
    if _version(version) >= WAITAOF_VERSION:
        return Wait(("WAITAOF", 1, n, timeout), n)
    try:
        raw = (await client.config_get("appendfsync", **node)).get("appendfsync", "?")
        fsync = raw.decode() if isinstance(raw, bytes) else str(raw)
    except ResponseError as exc:  # managed services may refuse CONFIG
        fsync = f"unknown ({exc})"
    if fsync != "always":
        raise ConfigError(
            f"inbox.durability = 'durable' needs Redis >= 7.2 (WAITAOF) or appendfsync always; this "
            f"server is Redis {version} with appendfsync {fsync}"
        )
    return replicated
