"""Request ids: writes that are safe to send twice.

The Redis client never resends a command itself (router/redis.py), so a reply lost with its
connection reaches the caller as a ConnectionError or TimeoutError although the write may have
run. Each write carries a client-made request id; the write records ``req:{id}`` -> its result
atomically with its effect, and a repeat with the same id returns that result without a second
effect. ``retry_once`` sends such a write once more on a lost connection, with the same id.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.exceptions import WatchError

from router.keys import Keys
from router.model import new_id

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


async def run_once(
    client: aioredis.Redis,
    keys: Keys,
    request_id: str | None,
    watched: Sequence[str],
    stage: Callable[[Pipeline], Awaitable[int]],
) -> int:
    """Run ``stage`` (reads, then ``multi()`` and the writes; returns a version number) in one
    transaction with the record of ``request_id``, made when None; a repeat returns the first
    run's number and writes nothing. Sent once more, with the same id, on a lost connection.
    ``watched``: the keys ``stage`` reads (e.g. the active version, the sequence): a write between
    the reads and EXEC makes this one read again, not write stale data."""
    rid = request_id or new_id()
    key = keys.request(rid)

    async def attempt() -> int:
        async with client.pipeline(transaction=True) as pipe:
            while True:
                await pipe.watch(key, *watched)
                done = await pipe.get(key)
                if done is not None:
                    return int(done)
                number = await stage(pipe)
                pipe.set(key, number, px=REQUEST_TTL_MS)
                try:
                    await pipe.execute()
                except WatchError:
                    continue
                return number

    return await retry_once(attempt, rid)
