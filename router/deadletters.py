"""The dead-letter stream: what could not be routed, with the reason; retry or drop.

A dead letter keeps every field of its inbox entry (router/lua/common.lua ``dead_letter``): the
envelope as ``payload``, any other field as ``field:<name>``. A payload written before secrets were
masked on append (or by a writer that bypassed ``Inbox.append``) may hold one in clear: listing and
retrying mask it (``masked``), so neither prints it nor writes it back to the inbox.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from router.errors import BadRequest
from router.inbox import scrubbed
from router.keys import Keys, Shards, entry_order
from router.model import decode_envelope, encode
from rules import redact_secrets

Entry = tuple[bytes, dict[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class RetryResult:
    """What ``retry`` appended to the inbox again, and what it left here, each with the reason."""

    retried: int
    skipped: list[tuple[str, str]]


def masked(payload: bytes) -> bytes:
    """``payload`` with every seed phrase and key masked: as an envelope when it is one (each
    field a person wrote, as on append), else as text."""
    try:
        env = decode_envelope(payload)
    except ValueError:  # msgspec's DecodeError and ValidationError: not an envelope
        text = payload.decode("utf-8", "surrogateescape")
        clean = redact_secrets(text)
        return payload if clean == text else clean.encode("utf-8", "surrogateescape")
    clean_env = scrubbed(env)
    return payload if clean_env is env else encode(clean_env)


def _unretriable(fields: dict[bytes, bytes]) -> str | None:
    """Why a dead letter cannot go back to the inbox, or None when it can."""
    if fields.get(b"payload"):
        return None
    foreign = sorted(k.decode(errors="replace").removeprefix("field:") for k in fields if k.startswith(b"field:"))
    if foreign:
        return f"not an envelope (fields: {', '.join(foreign)}); kept as it was: fix its writer, then drop it"
    return "nothing kept: the entry had left the inbox (trimmed) when it was dead-lettered"


class DeadLetters:
    """The dead-letter streams of every shard (the route script of each writes its own). A dead
    letter's id is its entry id, followed by ``@shard`` when there are several shards."""

    def __init__(self, client: aioredis.Redis, shards: Shards) -> None:
        self.client = client
        self.shards = shards

    def _name(self, shard: int, eid: bytes) -> str:
        return eid.decode() if self.shards.count == 1 else f"{eid.decode()}@{shard}"

    def _where(self, name: str) -> tuple[Keys, str]:
        if self.shards.count == 1:
            return self.shards.shard[0], name
        eid, _, shard = name.rpartition("@")
        if not eid or not shard.isdigit() or int(shard) >= self.shards.count:
            raise BadRequest(f"dead letter {name!r}: want <entry id>@<shard> (as `switchboard dead list` shows)")
        return self.shards.shard[int(shard)], eid

    async def entries(self, count: int = 100) -> list[dict[str, Any]]:
        """The oldest ``count`` dead letters over all shards."""
        pipe = self.client.pipeline(transaction=False)
        for keys in self.shards.shard:
            pipe.xrange(keys.dead, count=count)
        found = [(eid, shard, fields) for shard, part in enumerate(await pipe.execute()) for eid, fields in part]
        found.sort(key=lambda e: (entry_order(e[0]), e[1]))
        out = []
        for eid, shard, fields in found[:count]:
            if fields.get(b"payload"):
                fields[b"payload"] = masked(fields[b"payload"])
            f = {k.decode(): v.decode(errors="replace") for k, v in fields.items()}
            out.append({"id": self._name(shard, eid), **f})
        return out

    async def _select(self, ids: list[str] | None) -> list[tuple[Keys, Entry]]:
        if ids is None:
            return [(keys, e) for keys in self.shards.shard for e in await self.client.xrange(keys.dead)]
        out: list[tuple[Keys, Entry]] = []
        for name in ids:
            keys, eid = self._where(name)
            out.extend((keys, e) for e in await self.client.xrange(keys.dead, eid, eid))
        return out

    async def retry(self, ids: list[str] | None) -> RetryResult:
        """Append each dead letter's envelope to the inbox again (a fresh entry, which names the
        first inbox entry of the message in ``retry_of``) and remove it here. A dead letter without
        an envelope stays, and the result says why. The inbox is the dead letter's shard's, which
        is its conversation's."""
        retried = 0
        skipped: list[tuple[str, str]] = []
        for keys, (eid, fields) in await self._select(ids):
            why = _unretriable(fields)
            if why is not None:
                skipped.append((self._name(self.shards.shard.index(keys), eid), why))
                continue
            first = fields.get(b"retry_of") or fields.get(b"entry", b"")
            pipe = self.client.pipeline(transaction=True)
            pipe.xadd(keys.inbox, {"env": masked(fields[b"payload"]), "retry_of": first})
            pipe.xdel(keys.dead, eid)
            await pipe.execute()
            retried += 1
        return RetryResult(retried, skipped)

    async def drop(self, ids: list[str] | None) -> int:
        dropped = 0
        for keys, (eid, _) in await self._select(ids):
            dropped += int(await self.client.xdel(keys.dead, eid))
        return dropped
