"""Request ids: writes that are safe to send twice.

The Redis client never resends a command itself (router/redis.py), so a reply lost with its
connection reaches the caller as a ConnectionError or TimeoutError although the write may have
run. Each write carries a client-made request id; the write records ``req:{id}`` -> its result
atomically with its effect, and a repeat with the same id returns that result without a second
effect. ``retry_once`` sends such a write once more on a lost connection, with the same id.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

T = TypeVar("T")

# Long enough for any client's retry; short enough that the records stay a small key set.
REQUEST_TTL_MS = 24 * 3600 * 1000

log = logging.getLogger("switchboard.requests")


async def retry_once(call: Callable[[], Awaitable[T]], request_id: str) -> T:
    """Run ``call`` (a write keyed by ``request_id``); on a lost connection run it once more."""
    try:
        return await call()
    except (RedisConnectionError, RedisTimeoutError) as exc:
        log.warning("request %s: connection lost (%s); sending it again", request_id, exc)
        return await call()
