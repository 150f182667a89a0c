"""The audit log: who did what to access and rules, kept in a capped Redis stream.

Recorded: logins (and failures, with the reason), logouts, password changes and resets, users
added, changed or deleted, API tokens issued or revoked, rule sets published or rolled back,
triage models published, made live or shadow, or rolled back (router/modelstore.py). A
stream because entries are append-only, time-ordered by their ids and trimmed by MAXLEN ~ (about
``web.audit_max`` entries; ~200 bytes each). Admins read it in the console (/admin/audit) and the
API (GET /api/audit). It never holds a password, token or message text.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from router.keys import Keys


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: str
    at: float
    actor: str
    action: str
    target: str
    ip: str
    ok: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Audit:
    def __init__(self, client: aioredis.Redis, keys: Keys, max_entries: int) -> None:
        self._client = client
        self._key = keys.audit
        self._max = max_entries

    async def record(
        self, action: str, *, actor: str, target: str = "", ip: str = "", ok: bool = True, detail: str = ""
    ) -> None:
        fields = self._fields(action, actor, target, ip, ok, detail)
        await self._client.xadd(self._key, fields, maxlen=self._max, approximate=True)

    def stage(self, pipe: Pipeline, action: str, *, actor: str, target: str = "", detail: str = "") -> None:
        """The same record, queued in ``pipe``'s transaction: written only with the change it records."""
        fields = self._fields(action, actor, target, "", True, detail)
        pipe.xadd(self._key, fields, maxlen=self._max, approximate=True)

    @staticmethod
    def _fields(action: str, actor: str, target: str, ip: str, ok: bool, detail: str) -> dict[str, str]:
        return {
            "at": f"{time.time():.3f}",
            "actor": actor[:64],
            "action": action,
            "target": target[:128],
            "ip": ip[:64],
            "ok": "1" if ok else "0",
            "detail": detail[:200],
        }

    async def recent(self, count: int = 200, before: str | None = None) -> list[AuditEntry]:
        """Newest first; ``before`` (an entry id) pages back."""
        top = f"({before}" if before else "+"
        rows = await self._client.xrevrange(self._key, max=top, min="-", count=count)
        out = []
        for eid, raw in rows:
            d = {k.decode(): v.decode() for k, v in raw.items()}
            out.append(
                AuditEntry(
                    eid.decode(),
                    float(d.get("at", 0)),
                    d.get("actor", ""),
                    d.get("action", ""),
                    d.get("target", ""),
                    d.get("ip", ""),
                    d.get("ok") == "1",
                    d.get("detail", ""),
                )
            )
        return out
