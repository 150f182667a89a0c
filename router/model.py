"""The message envelope and the other plain records every part of Switchboard shares.

msgspec structs: they are decoded at the untrusted boundary (the inbox stream) ~4x faster than
pydantic, and they are plain frozen values everywhere else.
"""

from __future__ import annotations

import os
import time
from typing import Annotated, Literal

import msgspec

from rules.model import Triage

ENVELOPE_VERSION = 1

# Bounds checked when an envelope is decoded from the inbox (not when one is built in Python): an
# entry outside them is refused at parse, to the dead-letter stream, instead of raising later (a
# received_at of 1e20 overflows datetime in the rules step) and being retried max_attempts times.
# The lengths are generous (a long e-mail From name must not cost its message): they bound what a
# writer's bug can put in a history, the entry's size being bounded by inbox.max_message_bytes.
#: An identifier: never empty (an e-mail Message-ID thread root fits).
Ident = Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
#: A label (display name, handle, language, attribute, attachment name or type).
Label = Annotated[str, msgspec.Meta(max_length=4096)]
#: Unix seconds from 1970 to 2100-01-01 (an e-mail's Date header may be old, never negative).
Timestamp = Annotated[float, msgspec.Meta(ge=0, le=4_102_444_800)]

MessageKind = Literal["message", "edit", "delete"]


class Sender(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Who wrote the message, as the platform names them."""

    id: Ident
    name: Label = ""
    handle: Label = ""
    language: Label | None = None
    # Caller-supplied attributes for rules, e.g. {"tier": "vip"}.
    attributes: Annotated[dict[Label, Label], msgspec.Meta(max_length=64)] = {}


class Attachment(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Attachment metadata only: the bytes stay on the platform or in a store, never in a stream."""

    name: Label = ""
    type: Label = ""
    size: Annotated[int, msgspec.Meta(ge=0)] | None = None
    ref: Annotated[str, msgspec.Meta(max_length=4096)] = ""


class Envelope(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A normalised inbound message, version 1.

    `conversation_key` groups messages into a conversation within (channel, account): a chat or
    forum topic id, a Discord DM channel or thread, an e-mail thread root. `meta` carries what the
    channel's adapter needs to answer on the same chat/thread (chat id, topic id, Message-ID ...).
    """

    v: int = ENVELOPE_VERSION
    id: Ident
    channel: Ident
    account: Ident = "default"
    platform_id: Ident
    conversation_key: Ident
    sender: Sender
    text: str = ""  # bounded by inbox.max_message_bytes, checked before decoding
    subject: str | None = None
    attachments: Annotated[tuple[Attachment, ...], msgspec.Meta(max_length=256)] = ()
    received_at: Timestamp  # unix seconds
    reply_to: Label | None = None
    kind: MessageKind = "message"
    meta: dict[str, str] = {}
    # The triage model's prediction, made by the inbox's P1 precheck (router/inbox.py: only it sets
    # this; one an adapter gave is dropped), so that the router does not predict again.
    triage: Triage | None = None


ButtonData = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[\x21-\x7e]+$")]


class Button(msgspec.Struct, frozen=True, kw_only=True):
    """A button under a reply: the text the user sees and what a press hands back, unchanged."""

    label: Annotated[str, msgspec.Meta(min_length=1, max_length=80)]
    # At most 64 bytes of ASCII: Telegram's limit for callback data, the smallest of the channels'.
    data: ButtonData


class OutboxItem(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A reply waiting for its channel's adapter to send it."""

    id: str
    conversation: str
    channel: str
    account: str
    conversation_key: str
    text: str
    author: str
    # The platform id of the user's last message, to answer as a reply to it where it makes sense.
    reply_to: str | None = None
    meta: dict[str, str] = {}
    auto: bool = False
    created_at: float = 0.0
    # Buttons under the reply (router/actions.py): the adapter draws them the channel's way and
    # appends each press with ``ChannelContext.press``.
    buttons: tuple[Button, ...] = ()


# ULID digits, two at a time: a ULID is 130 bits (two leading zeros), thirteen 10-bit slices.
_DIGIT_PAIRS = [a + b for a in "0123456789ABCDEFGHJKMNPQRSTVWXYZ" for b in "0123456789ABCDEFGHJKMNPQRSTVWXYZ"]
_SLICES = range(120, -1, -10)


def new_id() -> str:
    """A sortable unique id (ULID: 48 bits of milliseconds, 80 random bits) for envelopes and
    replies; twice as fast as python-ulid's, and the router makes one per auto-reply."""
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    return "".join([_DIGIT_PAIRS[value >> shift & 1023] for shift in _SLICES])


def now() -> float:
    return time.time()


_encoder = msgspec.json.Encoder()
_envelope_decoder = msgspec.json.Decoder(Envelope)
_outbox_decoder = msgspec.json.Decoder(OutboxItem)


def encode(value: msgspec.Struct) -> bytes:
    return _encoder.encode(value)


def decode_envelope(raw: bytes | str) -> Envelope:
    """Decode and validate an inbox payload; raises msgspec.ValidationError/DecodeError."""
    return _envelope_decoder.decode(raw)


def decode_outbox(raw: bytes | str) -> OutboxItem:
    return _outbox_decoder.decode(raw)
