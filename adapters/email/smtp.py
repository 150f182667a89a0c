"""Outbound e-mail: the replies of the ``email`` outbox, sent over SMTP with proper threading.

One consumer for the whole channel (the outbox is per channel, not per mailbox); each reply goes
out through the SMTP settings of its account's mailbox. A reply

- answers the last inbound message: ``In-Reply-To`` its Message-ID, ``References`` its
  References plus its Message-ID, ``Subject: Re: …`` (never ``Re: Re:``);
- has a fresh Message-ID derived from the reply id (a retry after a lost SMTP answer re-sends the
  same Message-ID, so the recipient's client can fold the copies), recorded in the thread index
  *before* sending so the customer's answer joins the conversation;
- is text/plain with a text/html alternative;
- carries ``Auto-Submitted: auto-replied`` (RFC 3834) when the rules sent it, so that well-behaved
  auto-responders do not answer it.

SMTP 4xx and network errors raise TemporaryFailure (the outbox retries with backoff), 5xx
PermanentFailure (recorded on the conversation).
"""

from __future__ import annotations

import html
import logging
import ssl
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any

import aiosmtplib

from adapters.base import AdapterContext
from adapters.email.config import MailboxConfig
from adapters.email.imap import CHANNEL, tls_context
from adapters.email.mime import REPLY_PREFIX, normalize_subject, parse_msg_id, parse_msg_ids
from adapters.email.threads import ThreadIndex
from router.model import OutboxItem
from router.outbox import PermanentFailure, TemporaryFailure

log = logging.getLogger("switchboard.email")

#: A long thread's References keep the root and the most recent ids (RFC 5322 3.6.4 allows trimming).
MAX_REFERENCES = 20


def reply_subject(subject: str) -> str:
    subject = " ".join((subject or "").split())
    if not subject:
        return "Re: your message"
    return subject if REPLY_PREFIX.match(subject) else f"Re: {subject}"


def reply_references(meta: dict[str, str], reply_to: str | None) -> list[str]:
    refs = parse_msg_ids(meta.get("references"))
    parent = parse_msg_id(meta.get("message_id")) or parse_msg_id(reply_to or "")
    if parent:
        refs.append(parent)
    refs = list(dict.fromkeys(refs))
    if len(refs) > MAX_REFERENCES:
        refs = [refs[0], *refs[-(MAX_REFERENCES - 1) :]]
    return refs


def html_alternative(text: str) -> str:
    """The HTML rendering of a plain-text reply: escaped, paragraphs and line breaks kept."""
    paragraphs = [p for p in text.replace("\r\n", "\n").split("\n\n") if p.strip()]
    body = "\n".join(f"<p>{html.escape(p).replace(chr(10), '<br>')}</p>" for p in paragraphs)
    return f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"></head><body>\n{body}\n</body></html>\n'


def message_id_for(item: OutboxItem, domain: str) -> str:
    return f"<sb.{item.id.lower()}@{domain}>"


def build_reply(item: OutboxItem, cfg: MailboxConfig) -> EmailMessage:
    """The e-mail for one outbox item; PermanentFailure when it has no one to go to."""
    meta = item.meta
    recipient = meta.get("reply_to") or meta.get("from") or ""
    if "@" not in recipient:
        raise PermanentFailure("no recipient address on the conversation (the inbound message had no From)")
    msg = EmailMessage()
    msg["From"] = Address(display_name=cfg.display_name, addr_spec=cfg.address) if cfg.display_name else cfg.address
    msg["To"] = recipient
    msg["Subject"] = reply_subject(meta.get("subject", ""))
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = message_id_for(item, cfg.domain)
    parent = parse_msg_id(meta.get("message_id")) or parse_msg_id(item.reply_to or "")
    if parent:
        msg["In-Reply-To"] = parent
    refs = reply_references(meta, item.reply_to)
    if refs:
        msg["References"] = " ".join(refs)
    if item.auto:
        msg["Auto-Submitted"] = "auto-replied"
        # Exchange/Outlook: do not send out-of-office or delivery receipts back to an auto-reply.
        msg["X-Auto-Response-Suppress"] = "All"
    msg.set_content(item.text)
    msg.add_alternative(html_alternative(item.text), subtype="html")
    return msg


@dataclass(frozen=True, slots=True)
class Outgoing:
    cfg: MailboxConfig
    password: str
    threads: ThreadIndex


def _classify(exc: BaseException, host: str) -> Exception:
    """Map an aiosmtplib error to the outbox's PermanentFailure / TemporaryFailure."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [r.code for r in exc.recipients]
        reason = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
        if codes and all(400 <= c < 500 for c in codes):
            return TemporaryFailure(f"recipient deferred by {host}: {reason}")
        return PermanentFailure(f"recipient refused by {host}: {reason}")
    if isinstance(exc, aiosmtplib.SMTPResponseException) and exc.code >= 400:
        what = "authentication failed" if isinstance(exc, aiosmtplib.SMTPAuthenticationError) else "refused"
        text = f"{host} {what}: {exc.code} {exc.message}"
        return TemporaryFailure(text) if exc.code < 500 else PermanentFailure(text)
    if isinstance(
        exc,
        aiosmtplib.SMTPConnectError | aiosmtplib.SMTPTimeoutError | aiosmtplib.SMTPServerDisconnected | OSError,
    ):
        return TemporaryFailure(f"{host}: {type(exc).__name__}: {exc}")
    if isinstance(exc, TimeoutError):
        return TemporaryFailure(f"{host}: timed out")
    # SMTPNotSupported (no STARTTLS, no AUTH) and the like: configuration, not luck.
    return PermanentFailure(f"{host}: {type(exc).__name__}: {exc}")


class EmailSender:
    """The outbound half of the channel: one Adapter (``email-out``) for all mailboxes."""

    channel = CHANNEL
    name = "email-out"

    def __init__(self, ctx: AdapterContext, mailboxes: dict[str, Outgoing], **outbox_options: Any) -> None:
        self._ctx = ctx
        self._mailboxes = mailboxes
        self._outbox = ctx.outbox(CHANNEL, **outbox_options)
        self.last_error = ""

    async def send(self, item: OutboxItem) -> str:
        """Send one reply; returns the detail recorded as delivered (server answer, Message-ID)."""
        out = self._mailboxes.get(item.account)
        if out is None:
            raise PermanentFailure(f"no mailbox named {item.account!r} is configured in [email]")
        cfg = out.cfg
        if not cfg.smtp_host:
            raise PermanentFailure(f"mailbox {cfg.name!r} has no smtp_host: it cannot send replies")
        if item.auto and item.meta.get("auto_submitted"):
            # The worker already suppresses these; a second lock against mail loops costs nothing.
            raise PermanentFailure("not sent: an automatic reply to an automatic message (loop protection)")
        msg = build_reply(item, cfg)
        message_id = str(msg["Message-ID"])
        # Before sending: the customer's answer may arrive before this call returns.
        await out.threads.remember(message_id, item.conversation_key, normalize_subject(item.meta.get("subject", "")))
        try:
            _errors, response = await aiosmtplib.send(
                msg,
                hostname=cfg.smtp_host,
                port=cfg.smtp_port_,
                username=cfg.smtp_login if out.password else None,
                password=out.password or None,
                use_tls=cfg.smtp_tls == "implicit",
                start_tls=cfg.smtp_tls == "starttls",
                tls_context=tls_context(cfg) if cfg.smtp_tls != "none" else None,
                validate_certs=cfg.tls_verify,
                timeout=cfg.timeout_s,
            )
        except (aiosmtplib.SMTPException, OSError, TimeoutError, ssl.SSLError) as exc:
            failure = _classify(exc, cfg.smtp_host)
            self.last_error = str(failure)
            raise failure from exc
        self.last_error = ""
        log.info("%s: reply %s sent as %s", cfg.name, item.id, message_id)
        return f"{message_id} accepted by {cfg.smtp_host}: {response}"[:500]

    async def start(self) -> None:
        self._outbox.start(self.send)

    async def close(self) -> None:
        await self._outbox.close()

    def health(self) -> dict[str, Any]:
        return {
            "connected": self._outbox.running,
            "detail": f"{len(self._mailboxes)} mailbox(es)"
            + (f"; last error: {self.last_error}" if self.last_error else ""),
            "sent": self._outbox.sent,
            "failed": self._outbox.failed,
        }
