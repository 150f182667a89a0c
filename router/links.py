"""Signed press links: a button under an e-mail reply is a link to the console, ``{public_url}/a/{token}``.

The token carries what a press needs (channel, account, conversation key, button data and label),
an expiry and a nonce, and is signed with HMAC-SHA256. Only the signature makes it trusted: the
payload is readable (base64url JSON), so it holds nothing the mail itself does not show.

The key is derived from the console's secret (``[web] session_secret``, or the one generated and
kept in Redis, router/accounts.py), so the e-mail adapter that signs and every console process that
checks agree without one more secret to configure; deriving a key of its own keeps a link token
from ever being usable as anything else signed with that secret. The nonce is the press id: a link
opened twice (a mail scanner, then the user) is kept once by the press stream's dedup, and so is
a button of a reply sent twice (an SMTP retry): the sender makes the nonce of the reply's id.

One module for both sides: the e-mail adapter signs (through ``router.channel``), the console's
``/a/{token}`` opens.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Callable

import msgspec
import redis.asyncio as aioredis

from router.accounts import load_secret
from router.actions import Press
from router.config import WebSettings
from router.errors import BadRequest, SwitchboardError
from router.keys import Keys
from router.model import ButtonData

#: The token's version, signed with it: a future format cannot be confused with this one.
VERSION = "1"
_PURPOSE = b"switchboard/press-link/v1"


class LinkExpired(SwitchboardError):
    """The link was signed by us but is past its expiry (the console answers 410)."""


class LinkInvalid(BadRequest):
    """Not a link we signed: malformed, or its signature does not match (the console answers 400)."""


class Link(msgspec.Struct, array_like=True, frozen=True):
    """What a token carries (array-like: field names would double the link's length)."""

    channel: str
    account: str
    conversation_key: str
    data: ButtonData
    label: str
    expires: int
    nonce: str


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(Link)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class PressLinks:
    """Signs and opens press links with one key."""

    def __init__(self, key: bytes, public_url: str, ttl_s: int, *, clock: Callable[[], float] = time.time) -> None:
        self._key = hmac.new(key, _PURPOSE, hashlib.sha256).digest()
        self.public_url = public_url.rstrip("/")
        self.ttl_s = ttl_s
        #: Expiry is judged by this clock (tests move it instead of waiting).
        self.clock = clock

    def _sign(self, body: str) -> str:
        return _b64(hmac.new(self._key, f"{VERSION}.{body}".encode(), hashlib.sha256).digest())

    def token(self, channel: str, account: str, conversation_key: str, data: str, label: str, nonce: str) -> str:
        """A signed token; ``nonce`` becomes the press id (the sender makes it from the reply id
        and the button's place, so a mail sent twice still yields one press per button)."""
        link = Link(channel, account, conversation_key, data, label, int(self.clock()) + self.ttl_s, nonce)
        body = _b64(_ENCODER.encode(link))
        return f"{VERSION}.{body}.{self._sign(body)}"

    def url(self, channel: str, account: str, conversation_key: str, data: str, label: str, nonce: str) -> str:
        return f"{self.public_url}/a/{self.token(channel, account, conversation_key, data, label, nonce)}"

    def open(self, token: str) -> Link:
        """The link ``token`` carries; LinkInvalid when it is not ours, LinkExpired when too old.

        The signature is checked before anything in the payload is read or trusted."""
        version, _, rest = token.partition(".")
        body, _, signature = rest.partition(".")
        if version != VERSION or not body or not signature:
            raise LinkInvalid("this is not a Switchboard link (malformed)")
        if not hmac.compare_digest(signature.encode(), self._sign(body).encode()):
            raise LinkInvalid("this link was altered or was not made by this Switchboard (bad signature)")
        try:
            link = _DECODER.decode(_unb64(body))
        except (binascii.Error, ValueError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            # Signed by us yet unreadable: another version's format.
            raise LinkInvalid(f"this link's content cannot be read ({exc})") from None
        if link.expires < self.clock():
            raise LinkExpired("this link has expired")
        return link

    def press(self, link: Link) -> Press:
        """The press a link's confirmation records; the nonce is its id (kept once however often)."""
        return Press(
            id=link.nonce,
            channel=link.channel,
            account=link.account,
            conversation_key=link.conversation_key,
            # Whoever holds the mail: an e-mail link does not say who opened it.
            user="link",
            data=link.data,
            at=self.clock(),
        )


async def load_links(client: aioredis.Redis, keys: Keys, web: WebSettings) -> PressLinks | None:
    """The links of this deployment, or None when ``[web] public_url`` is not set (then there is
    nowhere for a link to point)."""
    if not web.public_url:
        return None
    return PressLinks(await load_secret(client, keys, web), web.public_url, web.link_ttl_s)
