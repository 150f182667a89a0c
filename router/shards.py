"""The deployment's shard count (``redis.shards``): recorded at the first start, checked at every one.

Which shard holds which key, and why the count is fixed, is router/keys.py ``Shards`` and
docs/architecture.md ("Scale-out and Redis Cluster"): a count changed under existing keys would
send a conversation's messages to another shard than its state, and number conversations twice.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from router.errors import ConfigError
from router.keys import Shards


async def check_shard_count(client: aioredis.Redis, shards: Shards) -> None:
    """Record ``shards.count`` under the home prefix when none is recorded, else refuse
    (``ConfigError``) a count other than the recorded one. A deployment that has keys but no
    record was made before shards existed: its layout is the one-shard layout, and only
    ``redis.shards = 1`` may take it up."""
    key = shards.home.shard_count
    recorded = await client.get(key)
    if recorded is None:
        if shards.count > 1 and await client.exists(shards.home.inbox):
            raise ConfigError(
                f"redis.shards is {shards.count}, but the deployment under prefix {shards.prefix!r} "
                f"already has an inbox ({shards.home.inbox}) in the one-shard layout; its shard count "
                "is 1 (changing it needs a migration, which Switchboard does not do yet)"
            )
        # NX: of two processes starting at once with different counts, one records its own and
        # the other then reads it and refuses.
        if await client.set(key, shards.count, nx=True):
            return
        recorded = await client.get(key)
    if int(recorded) != shards.count:
        raise ConfigError(
            f"redis.shards is {shards.count}, but the deployment under prefix {shards.prefix!r} was "
            f"created with {int(recorded)} shards (recorded in {key}); the count is fixed per "
            "deployment: changing it needs a migration of its keys, which Switchboard does not do "
            'yet (docs/operations.md, "Shards")'
        )
