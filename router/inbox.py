"""The append API every adapter uses: one inbox stream, idempotent on (channel, account, platform id)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from router.config import InboxSettings
from router.keys import ROUTER_GROUP, Keys
from router.model import Envelope, encode
from router.scripts import Scripts, argv, run_many


@dataclass(frozen=True, slots=True)
class Appended:
    entry_id: str
    duplicate: bool


class Inbox:
    """Appends envelopes to the inbox stream.

    An adapter confirms a message to its platform (update offset, IMAP cursor ...) only after
    ``append`` returned: the append is durable in Redis and a second append of the same platform
    message returns the first entry's id with ``duplicate=True`` instead of adding it again.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        keys: Keys,
        settings: InboxSettings,
        scripts: Scripts | None = None,
    ) -> None:
        self._client = client
        self._keys = keys
        self._settings = settings
        self._scripts = scripts or Scripts.register(client)

    def _args(self, env: Envelope) -> list[object]:
        return argv(
            self._keys.prefix,
            f"{env.channel}:{env.account}:{env.platform_id}",
            self._settings.dedup_ttl_s,
            self._settings.maxlen,
            encode(env),
            env.channel,
        )

    async def append(self, env: Envelope) -> Appended:
        fresh, entry = await self._scripts.append(args=self._args(env))
        return Appended(_str(entry), not fresh)

    async def append_many(self, envs: Sequence[Envelope]) -> list[Appended]:
        """Append a burst in one round trip; each envelope is still deduplicated on its own."""
        results = await run_many(self._client, self._scripts.append, [self._args(env) for env in envs])
        return [Appended(_str(entry), not fresh) for fresh, entry in results]

    async def ensure_group(self) -> None:
        """Create the routers' consumer group (and the stream) if missing."""
        await ensure_group(self._client, self._keys.inbox, ROUTER_GROUP)


async def ensure_group(client: aioredis.Redis, stream: str, group: str) -> None:
    try:
        await client.xgroup_create(stream, group, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def _str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
