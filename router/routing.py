"""From an envelope to the route script's call: what the rules see of a message, and the encodings
of ``lua/route.lua``'s arguments. Pure (no I/O): the worker calls it per message, the console's
replay uses ``message_in``.

route.lua takes ``ARGV[3]`` = ``shared_argument`` (what every message of a call shares), then per
message its inbox entry id and the three values of ``route_arguments``: the payload (positional
JSON, unpacked in this order by the script), the history record and the auto-reply's outbox item
(empty for none), the last two stored as they are.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import msgspec

from router.admission import admission_argument
from router.config import Settings, WaitSettings
from router.model import Envelope, new_id
from rules import Decision, MessageIn, redact_secrets
from rules.placeholders import has_placeholders, without_estimate

_encoder = msgspec.json.Encoder()


def _json(value: Any) -> str:
    # msgspec: ~5x faster than json.dumps on the hot path, and UTF-8 like Redis' cjson expects.
    return _encoder.encode(value).decode()


def conversation_ref(env: Envelope) -> str:
    """``channel:account:conversation key``: the conversation a message belongs to, as the scripts
    key it (``ck:{ref}`` holds its id)."""
    return f"{env.channel}:{env.account}:{env.conversation_key}"


def message_in(env: Envelope, *, new_conversation: bool = True) -> MessageIn:
    """What the rules see of an envelope (also used by the console's replay)."""
    return MessageIn(
        channel=env.channel,
        text=env.text,
        subject=env.subject,
        account=env.account,
        sender=env.sender.attributes,
        language=env.sender.language,
        new_conversation=new_conversation,
        received_at=datetime.fromtimestamp(env.received_at, UTC),
        triage=env.triage,
    )


# What a channel tells of a message beyond its text, shown to the agent with it in the history
# (secrets masked, as in the text) and kept out of the conversation's reply metadata: whose words
# a forward is ("forwarded_from"), the urls behind its text links ("links", one a line).
_SHOWN_META = ("forwarded_from", "links")
_HISTORY_ONLY = frozenset(("full_body", *_SHOWN_META))


def inbound_record(
    entry_id: bytes, env: Envelope, decision: Decision, full_body: str | None, *, auto_reply_sent: bool, hold: str = ""
) -> bytes:
    """The history entry of an inbound message (its kind is the entry's type). Empty, null and
    false parts are left out (readers take them as absent), and so is an auto-reply that was
    sent: its outbound entry follows. ``entry`` (the inbox entry id) is the message's arrival:
    readers order inbound messages by it (router/conversations.py)."""
    d: dict[str, Any] = {
        "group": decision.group,
        "priority": f"P{decision.priority}",
        "tags": decision.tags,
        "trace": [t.to_dict() for t in decision.trace],
        "rules_version": decision.rules_version,
    }
    if decision.language:
        d["language"] = decision.language
    if decision.routed_by:
        d["routed_by"] = decision.routed_by
    if decision.escalate:
        d["escalate"] = True
    if decision.redactions:
        d["redactions"] = [r.to_dict() for r in decision.redactions]
    if decision.auto_reply and not auto_reply_sent:
        d["auto_reply"] = decision.auto_reply
    record: dict[str, Any] = {
        "msg": env.id,
        "entry": entry_id.decode(),
        "platform_id": env.platform_id,
        "sender": env.sender,  # structs: msgspec encodes them as it would their dicts
        "text": decision.text,
        "received_at": env.received_at,
        "decision": d,
    }
    if decision.subject:
        record["subject"] = decision.subject
    if env.attachments:
        record["attachments"] = env.attachments
    if env.reply_to:
        record["reply_to"] = env.reply_to
    for key in _SHOWN_META:
        if value := env.meta.get(key):
            record[key] = redact_secrets(value)
    if full_body is not None:
        record["full_body"] = redact_secrets(full_body)
    if hold:
        record["admission"] = hold  # kept out of the queues: banned, muted, spam (router/admission.py)
    return _encoder.encode(record)


def shared_argument(
    settings: Settings, shard: int = 0, fence: int = 0, sla_policy: int | None = None, stream: str = "inbox"
) -> bytes:
    """What every message of a route script call to ``shard`` shares (its ARGV[3]); ``fence``, the
    worker's lease fence on the shard (0: leases off, router/shardlease.py); ``sla_policy``, the
    number of the SLA policy in force (None: none published, router/slastore.py); ``stream``, the
    name of the stream the entries are of (router/keys.py STREAMS)."""
    sla = {label[1:]: seconds * 1000 for label, seconds in settings.conversations.sla_s.items()}
    reopen_ms = settings.conversations.reopen_window_s * 1000
    return _encoder.encode(
        {
            "sla": sla,
            "reopen_ms": reopen_ms,
            "shards": settings.redis.shards,
            "shard": shard,
            "fence": fence,
            "slav": sla_policy or 0,
            **({"adm": admission_argument(settings.admission)} if settings.admission.enabled else {}),
            "wt": {"w": settings.waits.window_min, "b": settings.waits.band},
            "stream": stream,
        }
    )


def route_arguments(
    entry_id: bytes,
    env: Envelope,
    decision: Decision,
    *,
    retry: bool,
    hold: str = "",
    waits: WaitSettings | None = None,
) -> tuple[bytes, bytes, bytes]:
    """The route script's arguments for one message: its payload, its history entry and its
    auto-reply's outbox item (``b""`` for none), the last two stored as they are. ``hold``: why
    the message is kept out of the queues (``router/admission.py``: banned, muted, spam), or "".
    ``waits``: the fallback phrases of an auto-reply with placeholders (default: the shipped ones)."""
    full_body = env.meta.get("full_body")
    # Only the evaluated, redacted text may travel; an adapter's copy of the whole body (e-mail
    # quotes included), and what is shown beside the text, are kept in the history alone, with
    # their secrets masked too.
    meta = (
        {k: v for k, v in env.meta.items() if k not in _HISTORY_ONLY}
        if not _HISTORY_ONLY.isdisjoint(env.meta)
        else env.meta
    )
    reply = b""
    reply_id = None
    # The auto-reply's texts for the script to fill (docs/waits.md): with placeholders, and
    # without an estimate; None when it has none (sent as written).
    texts: tuple[str, str] | None = None
    # Never answer an auto-reply, bounce or list mail automatically: two robots would loop.
    # Nor a held message: its sender is banned, muted or a spammer.
    if decision.auto_reply and not env.meta.get("auto_submitted") and not hold:
        reply_id = new_id()
        if has_placeholders(decision.auto_reply):
            phrase = (waits or WaitSettings()).phrase(decision.language or "")
            texts = (decision.auto_reply, without_estimate(decision.auto_reply, phrase))
        # Without its conversation id: the script, which knows it, puts it first; and without
        # its text when the script fills it in (appended there: the item is never decoded).
        reply = _encoder.encode(
            {
                "id": reply_id,
                "channel": env.channel,
                "account": env.account,
                "conversation_key": env.conversation_key,
                **({} if texts else {"text": decision.auto_reply}),
                "author": "auto",
                "reply_to": env.platform_id,
                "meta": meta,
                "auto": True,
                "created_at": time.time(),
            }
        )
    history = inbound_record(entry_id, env, decision, full_body, auto_reply_sent=reply_id is not None, hold=hold)
    # The conversation fields every message sets, in route.lua's FIELDS order.
    values = [
        env.sender.id,
        env.sender.name or env.sender.handle or env.sender.id,
        decision.language or "",
        env.id,
        env.platform_id,
        decision.text[:200],
        _json(meta) if meta else "{}",
        decision.rules_version,
    ]
    if decision.subject:
        values.append(decision.subject)
    # Positional, as route.lua unpacks it.
    payload: tuple[Any, ...] = (
        conversation_ref(env),
        env.channel,
        env.kind,
        decision.group,
        decision.priority,
        decision.routed_by or "",
        decision.escalate,
        retry,
        reply_id or "",
        [*decision.tags, hold] if hold and hold not in decision.tags else decision.tags,
        values,
        env.account,
        env.conversation_key,
        hold,
    )
    if texts:
        payload = (*payload, texts)
    # Bytes, as Redis takes them: no decode here and re-encode in redis-py.
    return _encoder.encode(payload), history, reply
