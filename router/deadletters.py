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

from router.inbox import scrubbed
from router.keys import Keys
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
    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys

    async def entries(self, count: int = 100) -> list[dict[str, Any]]:
        entries = await self.client.xrange(self.keys.dead, count=count)
        out = []
        for eid, fields in entries:
            if fields.get(b"payload"):
                fields[b"payload"] = masked(fields[b"payload"])
            f = {k.decode(): v.decode(errors="replace") for k, v in fields.items()}
            out.append({"id": eid.decode(), **f})
        return out

    async def _select(self, ids: list[str] | None) -> list[Entry]:
        if ids is None:
            return list(await self.client.xrange(self.keys.dead))
        out = []
        for i in ids:
            out.extend(await self.client.xrange(self.keys.dead, i, i))
        return out

    async def retry(self, ids: list[str] | None) -> RetryResult:
        """Append each dead letter's envelope to the inbox again (a fresh entry, which names the
        first inbox entry of the message in ``retry_of``) and remove it here. A dead letter without
        an envelope stays, and the result says why."""
        retried = 0
        skipped: list[tuple[str, str]] = []
        for eid, fields in await self._select(ids):
            why = _unretriable(fields)
            if why is not None:
                skipped.append((eid.decode(), why))
                continue
            first = fields.get(b"retry_of") or fields.get(b"entry", b"")
            pipe = self.client.pipeline(transaction=True)
            pipe.xadd(self.keys.inbox, {"env": masked(fields[b"payload"]), "retry_of": first})
            pipe.xdel(self.keys.dead, eid)
            await pipe.execute()
            retried += 1
        return RetryResult(retried, skipped)

    async def drop(self, ids: list[str] | None) -> int:
        selected = await self._select(ids)
        if not selected:
            return 0
        return int(await self.client.xdel(self.keys.dead, *[eid for eid, _ in selected]))
