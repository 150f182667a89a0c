"""Button presses: what users tap under a reply, from every channel into one stream per shard.

A reply may carry buttons (``OutboxItem.buttons``: a label and ``data``, at most 64 bytes, opaque
to the channel). Each adapter draws them its own way — a Telegram inline keyboard (callback
queries), Discord buttons (component interactions), an e-mail's signed links (answered by the
console's HTTP server), sandbox commands — and appends every press with ``ChannelContext.press``.

A press is keyed by its platform id (``pressed:{channel}:{account}:{id}``, SET in the same script
as the XADD, lua/press.lua), so a press delivered twice (a retried webhook, an interaction sent
again) is kept once. It goes to the shard of its conversation key, beside that conversation.

Consumers (the knowledge base's answerer, satisfaction surveys) read the stream through a consumer
group of their own (``ActionReader``) and acknowledge what they handled: a press is handled at
least once across crashes — the consumer's own pending presses first after a restart, a dead
consumer's after ``claim_idle_ms`` — so its handling must be idempotent. Acknowledging does not
delete: the stream keeps the last ``maxlen`` presses for audit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NamedTuple

import msgspec
import redis.asyncio as aioredis

from router.errors import BadRequest
from router.inbox import ensure_group
from router.keys import Shards
from router.model import ButtonData, Ident, Timestamp
from router.scripts import Scripts, argv

log = logging.getLogger("switchboard.actions")


class Press(msgspec.Struct, frozen=True, kw_only=True):
    """One press of a button, as the channel saw it."""

    v: int = 1
    #: The platform's id of this press (callback query id, interaction id, a link's nonce).
    id: Ident
    channel: Ident
    account: str
    #: The conversation key of the reply that carried the button (chat, thread, e-mail thread).
    conversation_key: Ident
    #: The platform id of who pressed (in a group chat, not necessarily the conversation's user).
    user: str
    data: ButtonData
    at: Timestamp


class InvalidPress(BadRequest):
    """A press that does not validate (data longer than 64 bytes or not printable ASCII, an empty
    id or key): never appended; the adapter tells the user the button no longer works."""


def validated(press: Press) -> Press:
    """``press`` once its fields meet the model's limits (a Struct built in code is not checked:
    the data came from a platform, and a forged or stale callback may carry anything)."""
    try:
        return msgspec.convert(msgspec.structs.asdict(press), Press)
    except msgspec.ValidationError as exc:
        raise InvalidPress(f"press {press.id!r} on {press.channel}/{press.account} refused: {exc}") from None


class Pressed(NamedTuple):
    shard: int
    entry: str
    press: Press


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(Press)


class Actions:
    """The press stream of every shard: append (adapters), and readers for consumers."""

    def __init__(
        self,
        client: aioredis.Redis,
        shards: Shards,
        scripts: Scripts,
        *,
        dedup_ttl_s: int = 86_400,
        maxlen: int = 100_000,
    ) -> None:
        self._client = client
        self._shards = shards
        self._scripts = scripts
        self._dedup_ttl_s = dedup_ttl_s
        self._maxlen = maxlen

    async def append(self, press: Press) -> bool:
        """Append ``press``; False when the same platform press was appended before; InvalidPress
        (nothing appended) when it does not validate."""
        press = validated(press)
        shard = self._shards.shard[self._shards.of_key(press.channel, press.account, press.conversation_key)]
        dedup = f"{press.channel}:{press.account}:{press.id}"
        entry = await self._scripts.press(
            args=argv(shard.prefix, dedup, self._dedup_ttl_s, self._maxlen, _ENCODER.encode(press))
        )
        return bool(entry)

    def reader(self, group: str, consumer: str, *, claim_idle_ms: int = 30_000) -> ActionReader:
        return ActionReader(self._client, self._shards, group, consumer, claim_idle_ms=claim_idle_ms)


class ActionReader:
    """One consumer of one consumer group over every shard's press stream."""

    def __init__(
        self, client: aioredis.Redis, shards: Shards, group: str, consumer: str, *, claim_idle_ms: int
    ) -> None:
        self._client = client
        self._streams = [keys.actions for keys in shards.shard]
        self.group = group
        self.consumer = consumer
        self._claim_idle_ms = claim_idle_ms
        self._recovered = False

    async def start(self) -> None:
        for stream in self._streams:
            await ensure_group(self._client, stream, self.group)

    async def read(self, *, count: int = 100, block_ms: int = 250) -> list[Pressed]:
        """The next presses: after a start, this consumer's own pending ones first; then those a
        dead consumer left idle ``claim_idle_ms``, and new ones (waiting up to ``block_ms``)."""
        if not self._recovered:
            self._recovered = True
            pending = await asyncio.gather(*(self._read(i, "0", count, None) for i in range(len(self._streams))))
            found = [p for shard in pending for p in shard]
            if found:
                return found
        claimed = await asyncio.gather(*(self._claim(i, count) for i in range(len(self._streams))))
        found = [p for shard in claimed for p in shard]
        if found:
            return found
        fresh = await asyncio.gather(*(self._read(i, ">", count, block_ms) for i in range(len(self._streams))))
        return [p for shard in fresh for p in shard]

    async def step(self, handle: Callable[[Pressed], Awaitable[object]], *, block_ms: int) -> int:
        """Reads the next presses (``read``), hands each to ``handle`` (which ignores another
        consumer's buttons), then acknowledges them all; how many were read. A press whose
        handling raised stays pending and is read again."""
        presses = await self.read(block_ms=block_ms)
        for pressed in presses:
            await handle(pressed)
        if presses:
            await self.ack(presses)
        return len(presses)

    async def ack(self, done: Sequence[Pressed]) -> None:
        by_shard: dict[int, list[str]] = {}
        for pressed in done:
            by_shard.setdefault(pressed.shard, []).append(pressed.entry)
        for shard, entries in by_shard.items():
            await self._client.xack(self._streams[shard], self.group, *entries)

    async def _read(self, shard: int, start: str, count: int, block_ms: int | None) -> list[Pressed]:
        reply = await self._client.xreadgroup(
            self.group, self.consumer, {self._streams[shard]: start}, count=count, block=block_ms
        )
        return [p for _, entries in reply or [] for p in await self._decode(shard, entries)]

    async def _claim(self, shard: int, count: int) -> list[Pressed]:
        reply = await self._client.xautoclaim(
            self._streams[shard], self.group, self.consumer, self._claim_idle_ms, "0-0", count=count
        )
        return await self._decode(shard, reply[1])

    async def _decode(self, shard: int, entries: Sequence[Any]) -> list[Pressed]:
        out, bad = [], []
        for entry_id, fields in entries:
            entry = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
            if not fields:  # deleted by the stream's cap while pending
                continue
            raw = fields.get(b"press", fields.get("press"))
            try:
                out.append(Pressed(shard, entry, _DECODER.decode(raw)))
            except (msgspec.ValidationError, msgspec.DecodeError, TypeError) as exc:
                # Only append() writes here, after the same validation: a press that no longer
                # decodes is from another version. It stays in the stream (an XACK deletes
                # nothing) and is logged, but not handed on nor read again.
                log.error("press %s of shard %d does not decode (%s): left in the stream", entry, shard, exc)
                bad.append(entry)
        if bad:
            await self._client.xack(self._streams[shard], self.group, *bad)
        return out
