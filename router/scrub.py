"""``switchboard scrub``: after an incident, make Redis rewrite its AOF so that old bytes leave the disk.

Messages are masked before they are written (router/inbox.py), but an AOF written before this
version, or data deleted since (a forgotten user, a dropped dead letter), stays in the append-only
file until Redis rewrites it: a rewrite writes the data set as it is now, and nothing else.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from router.errors import SwitchboardError


@dataclass(frozen=True, slots=True)
class Scrubbed:
    seconds: float
    aof_enabled: bool
    rdb_saves: bool  # the server also writes RDB snapshots (they hold the data as of their time)


async def rewrite_aof(client: aioredis.Redis, timeout_s: float = 600.0, poll_s: float = 0.2) -> Scrubbed:
    """BGREWRITEAOF and wait until it has finished; raises when it failed or took too long."""
    started = time.monotonic()
    info = await client.info("persistence")
    rdb_saves = bool((await client.config_get("save")).get("save"))
    if not int(info.get("aof_enabled", 0)):
        return Scrubbed(0.0, False, rdb_saves)
    try:
        await client.bgrewriteaof()
    except ResponseError as exc:  # one is running already: wait for it, then ours is scheduled
        if "already in progress" not in str(exc):
            raise
    while True:
        info = await client.info("persistence")
        busy = int(info.get("aof_rewrite_in_progress", 0)) or int(info.get("aof_rewrite_scheduled", 0))
        if not busy:
            break
        if time.monotonic() - started > timeout_s:
            raise SwitchboardError(f"the AOF rewrite did not finish within {timeout_s:.0f}s")
        await asyncio.sleep(poll_s)
    if info.get("aof_last_bgrewrite_status") != "ok":
        raise SwitchboardError(f"the AOF rewrite failed: {info.get('aof_last_bgrewrite_status')}")
    return Scrubbed(time.monotonic() - started, True, rdb_saves)
