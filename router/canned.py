"""Canned replies: the texts agents pick in the reply box, edited by admins (one Redis hash)."""

from __future__ import annotations

import redis.asyncio as aioredis

from router.errors import NotFound
from router.keys import Keys

DEFAULT_CANNED = {
    "Greeting": "Hello, thank you for contacting support. I am looking into this for you now.",
    "Withdrawal check": "Withdrawals are usually confirmed within 30 minutes. Could you send us the "
    "transaction ID (txid) so we can check its status on the network?",
    "Secure your account": "Please change your password and reset your 2FA right away, and never share "
    "your recovery phrase or private key with anyone, including support staff.",
    "KYC documents": "To finish verification, please upload a clear photo of your ID and a selfie in "
    "the app under Profile > Verification.",
    "Closing": "I am glad we could help. If anything else comes up, just reply to this message.",
}

# Tells a list an admin emptied from one never edited (which shows the built-in examples).
_EDITED_MARKER = b"\x00edited"


class CannedReplies:
    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self._client = client
        self._key = keys.canned

    async def all(self) -> dict[str, str]:
        """Title -> text; the built-in examples until an admin saves one."""
        raw = await self._client.hgetall(self._key)
        if not raw:
            return dict(DEFAULT_CANNED)
        return {k.decode(): v.decode() for k, v in raw.items() if k != _EDITED_MARKER}

    async def put(self, title: str, text: str) -> None:
        current = await self.all()
        current[title] = text
        await self._save(current)

    async def delete(self, title: str) -> None:
        current = await self.all()
        if current.pop(title, None) is None:
            raise NotFound(f"canned response {title}")
        await self._save(current)

    async def _save(self, items: dict[str, str]) -> None:
        pipe = self._client.pipeline(transaction=True)
        pipe.delete(self._key)
        pipe.hset(self._key, mapping={_EDITED_MARKER.decode(): "1", **items})
        await pipe.execute()
