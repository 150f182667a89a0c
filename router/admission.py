"""Admission control at ingest (issue 18, docs/admission.md): who may reach the agents' queues.

Two mechanisms, both applied before a message reaches a queue and neither ever dropping one:

* **Token buckets** per sender and channel (their messages in a conversation, the conversations
  they start) live in Redis beside the sender's conversation and are checked and taken inside
  ``lua/route.lua`` (its "Admission" section), so they hold across every worker. This module only
  hands the script their configuration (``admission_argument``).
* **Bans and mutes** of a sender (``channel:platform id``) are set by admins (``Senders``: the CLI's
  ``switchboard sender`` and the console), kept in one home hash, and read by every worker
  (``BlockList``, refreshed every ``worker.rules_poll_s``): a message of a blocked sender, or one
  the rules tagged ``spam``, goes to the route script with its ``hold`` reason and its
  conversation is held out of the queues until restored (``Senders.restore``) or a message that is
  not held comes.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import redis.asyncio as aioredis
from redis.exceptions import WatchError

from router.audit import Audit
from router.config import AdmissionSettings
from router.conversations import Conversations
from router.errors import BadRequest
from router.keys import Keys

BlockMode = Literal["banned", "muted"]
MODES: dict[str, BlockMode] = {"ban": "banned", "mute": "muted"}
#: A message the rules tagged so is held like a banned sender's (rules decide what spam is).
SPAM_TAG = "spam"

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def admission_argument(cfg: AdmissionSettings) -> dict[str, Any]:
    """The route script's ``shared.adm`` (lua/route.lua, "Admission"): the default limit and
    each channel's as ``[rate per s, burst]``, the notice window in ms and the notice texts."""
    return {
        "def": [cfg.rate_per_s, cfg.burst],
        "ch": {name: [lim.rate_per_s, lim.burst] for name, lim in cfg.channels.items()},
        "window_ms": cfg.notice_window_s * 1000,
        "notice": cfg.notice,
    }


def parse_sender(text: str) -> tuple[str, str]:
    """``CHANNEL:ID`` (the sender's platform id on that channel) -> (channel, id)."""
    channel, sep, sender = text.partition(":")
    if not sep or not channel.strip() or not sender.strip():
        raise BadRequest(f"a sender is CHANNEL:ID (e.g. telegram:123456789), not {text!r}")
    return channel.strip(), sender.strip()


def parse_duration(text: str) -> int:
    """``90s``, ``30m``, ``1h``, ``2d``, ``1w`` -> seconds."""
    m = _DURATION.match(text)
    if not m or int(m.group(1)) == 0:
        raise BadRequest(f"a duration is a positive number and a unit s, m, h, d or w (e.g. 1h), not {text!r}")
    return int(m.group(1)) * _UNIT_S[m.group(2)]


@dataclass(frozen=True, slots=True)
class Block:
    """A sender an admin banned or muted: ``until_ms`` 0 means until unbanned."""

    channel: str
    sender: str
    mode: BlockMode
    until_ms: int
    reason: str
    by: str
    at_ms: int

    def active(self, now_ms: int) -> bool:
        return self.until_ms == 0 or now_ms < self.until_ms

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def decode(cls, field: bytes | str, raw: bytes | str) -> Block:
        channel, sender = parse_sender(field.decode() if isinstance(field, bytes) else field)
        d = json.loads(raw)
        return cls(
            channel, sender, d["mode"], int(d["until_ms"]), d.get("reason", ""), d.get("by", ""), int(d["at_ms"])
        )


def hold_of(blocks: dict[str, Block], channel: str, sender: str, tags: Sequence[str], now_ms: int) -> str:
    """Why a message is kept out of the queues ("banned", "muted", "spam"), or "" when it is not."""
    block = blocks.get(f"{channel}:{sender}") if blocks else None
    if block is not None and block.active(now_ms):
        return block.mode
    return SPAM_TAG if SPAM_TAG in tags else ""


class Senders:
    """Bans and mutes (the home hash ``senders:blocked``), each audited with its change, and the
    restore of a held conversation."""

    def __init__(
        self,
        client: aioredis.Redis,
        keys: Keys,
        audit: Audit,
        conversations: Conversations,
        clock: Callable[[], int] | None = None,
    ) -> None:
        self._client = client
        self._key = keys.senders_blocked
        self._audit = audit
        self._conversations = conversations
        self._clock = clock or (lambda: int(time.time() * 1000))

    async def block(
        self, action: str, sender: str, *, by: str, for_s: int | None = None, reason: str = "", ip: str = ""
    ) -> Block:
        """``action`` "ban" or "mute" ``sender`` (``CHANNEL:ID``), for ``for_s`` seconds or until
        unbanned; a second block replaces the first."""
        mode = MODES.get(action)
        if mode is None:
            raise BadRequest(f"action must be ban or mute, not {action!r}")
        channel, sid = parse_sender(sender)
        now = self._clock()
        block = Block(channel, sid, mode, now + for_s * 1000 if for_s else 0, reason[:200], by, now)
        detail = f"{mode} {'for ' + str(for_s) + ' s' if for_s else 'until unbanned'}" + (
            f": {reason}" if reason else ""
        )
        async with self._client.pipeline(transaction=True) as pipe:
            stored = {k: v for k, v in block.to_dict().items() if k not in ("channel", "sender")}
            pipe.hset(self._key, f"{channel}:{sid}", json.dumps(stored, ensure_ascii=False))
            self._audit.stage(pipe, f"sender.{action}", actor=by, target=f"{channel}:{sid}", detail=detail)
            await pipe.execute()
        return block

    async def unban(self, sender: str, *, by: str) -> bool:
        """Lift a ban or mute; False when ``sender`` had none."""
        channel, sid = parse_sender(sender)
        field = f"{channel}:{sid}"
        async with self._client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    # Audited only when there was something to lift, in the transaction that lifts it.
                    await pipe.watch(self._key)
                    if not await pipe.hexists(self._key, field):
                        return False
                    pipe.multi()
                    pipe.hdel(self._key, field)
                    self._audit.stage(pipe, "sender.unban", actor=by, target=field)
                    await pipe.execute()
                    return True
                except WatchError:
                    continue  # changed meanwhile (another ban): look again

    async def blocks(self) -> dict[str, Block]:
        """Every ban and mute, expired ones included (``Block.active`` tells), by ``channel:id``."""
        raw = await self._client.hgetall(self._key)
        out = {}
        for field, value in raw.items():
            block = Block.decode(field, value)
            out[f"{block.channel}:{block.sender}"] = block
        return out

    async def list(self) -> list[Block]:
        """The bans and mutes in force, newest first; expired ones are removed."""
        now = self._clock()
        found = await self.blocks()
        expired = [name for name, b in found.items() if not b.active(now)]
        if expired:
            await self._client.hdel(self._key, *expired)
        return sorted((b for b in found.values() if b.active(now)), key=lambda b: -b.at_ms)

    async def restore(self, conv_id: str, *, by: str) -> None:
        """Put a held conversation back in its queue (``Conflict`` when it is not held)."""
        await self._conversations.restore(conv_id, by)
        await self._audit.record("sender.restore", actor=by, target=f"conversation {conv_id}")


class BlockList:
    """A worker's copy of the bans and mutes, read again at most every ``every_s``: one small
    HGETALL per interval, nothing per message."""

    def __init__(self, senders: Senders, every_s: float) -> None:
        self._senders = senders
        self._every_s = every_s
        self._last = -float("inf")
        self.blocks: dict[str, Block] = {}

    async def refresh(self) -> None:
        now = time.monotonic()
        if now - self._last >= self._every_s:
            self._last = now
            self.blocks = await self._senders.blocks()
