"""Outbound e-mail: the replies of the ``email`` outbox, sent over SMTP with proper threading.

One consumer for the whole channel (the outbox is per channel, not per mailbox); each reply goes
out through the SMTP settings of its account's mailbox. A reply

- answers the last inbound message: ``In-Reply-To`` its Message-ID, ``References`` its
  References plus its Message-ID, ``Subject: Re: …`` (never ``Re: Re:``);
- has a fresh Message-ID derived from the reply id (a retry after a lost SMTP answer re-sends the
  same Message-ID, so the recipient's client can fold the copies), recorded in the thread index
  *before* sending so the customer's answer joins the conversation;
- is text/plain with a text/html alternative;
- shows its buttons as signed links to the console (``[web] public_url``/a/{token},
  router/links.py), one line each under the text, and as links in the HTML part;
- carries ``Auto-Submitted: auto-replied`` (RFC 3834) when the rules sent it, so that well-behaved
  auto-responders do not answer it.

SMTP 4xx and network errors raise TemporaryFailure (the outbox retries with backoff), 5xx
PermanentFailure (recorded on the conversation).
"""

from __future__ import annotations

import html
import logging
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any

import aiosmtplib

from adapters.base import Health
from adapters.email.config import MailboxConfig
from adapters.email.imap import CHANNEL, tls_context
from adapters.email.mime import REPLY_PREFIX, normalize_subject, parse_msg_id, parse_msg_ids
from adapters.email.own import is_own_address, message_id_for
from adapters.email.threads import ThreadIndex
from router.channel import (
    ChannelContext,
    ConfigError,
    OutboxItem,
    PermanentFailure,
    PressLinks,
    TemporaryFailure,
)

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


def html_alternative(text: str, links: Sequence[tuple[str, str]] = ()) -> str:
    """The HTML rendering of a plain-text reply: escaped, paragraphs and line breaks kept; its
    button ``links`` (label, url) as links under it."""
    paragraphs = [p for p in text.replace("\r\n", "\n").split("\n\n") if p.strip()]
    body = "\n".join(f"<p>{html.escape(p).replace(chr(10), '<br>')}</p>" for p in paragraphs)
    if links:
        items = " ".join(f'<a href="{html.escape(url)}">{html.escape(label)}</a>' for label, url in links)
        body += f"\n<p>{items}</p>"
    return f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"></head><body>\n{body}\n</body></html>\n'


def button_links(item: OutboxItem, links: PressLinks | None) -> list[tuple[str, str]]:
    """(label, signed url) of each of the reply's buttons; none without ``[web] public_url``.

    The nonce (the press id) is the reply's id and the button's place: a reply sent twice (an SMTP
    retry) still counts one press per button."""
    if links is None:
        return []
    return [
        (b.label, links.url(CHANNEL, item.account, item.conversation_key, b.data, b.label, f"{item.id}.{n}"))
        for n, b in enumerate(item.buttons)
    ]


def text_with_links(text: str, links: list[tuple[str, str]]) -> str:
    if not links:
        return text
    return text.rstrip() + "\n\n" + "\n".join(f"{label}: {url}" for label, url in links) + "\n"


def build_reply(item: OutboxItem, cfg: MailboxConfig, links: PressLinks | None = None) -> EmailMessage:
    """The e-mail for one outbox item (its buttons as links signed by ``links``); PermanentFailure
    when it has no one to go to."""
    meta = item.meta
    if meta.get("reply_to"):
        recipient, name = meta["reply_to"], meta.get("reply_to_name", "")
    else:
        recipient, name = meta.get("from", ""), meta.get("from_name", "")
    if "@" not in recipient:
        raise PermanentFailure("no recipient address on the conversation (the inbound message had no From)")
    if is_own_address(recipient, cfg):
        # A copy of our own mail taken in before own copies were recognised (adapters/email/own.py).
        raise PermanentFailure(f"not sent: {recipient} is this mailbox's own address, not the customer's")
    msg = EmailMessage()
    # Address objects: the policy encodes non-ASCII display names as RFC 2047 encoded words.
    msg["From"] = Address(display_name=cfg.display_name, addr_spec=cfg.address)
    msg["To"] = _address(name, recipient)
    msg["Subject"] = reply_subject(meta.get("subject", ""))
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = message_id_for(item.id, cfg.domain)
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
    pressable = button_links(item, links)
    msg.set_content(text_with_links(item.text, pressable))
    msg.add_alternative(html_alternative(item.text, pressable), subtype="html")
    return msg


def _address(name: str, addr: str) -> Address | str:
    try:
        return Address(display_name=name, addr_spec=addr)
    except (ValueError, IndexError):  # an address the header model cannot take: as it came
        return addr


@dataclass(frozen=True, slots=True)
class Outgoing:
    cfg: MailboxConfig
    password: str
    threads: ThreadIndex


def classify_error(exc: BaseException, host: str) -> Exception:
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


class SmtpSettingError(Exception):
    """The SMTP server does not offer what the mailbox's settings require (a configuration error)."""


def login_needed(cfg: MailboxConfig, password: str, offers_auth: bool) -> bool:
    """Whether to log in to a server that offers AUTH (``offers_auth``) or not, per ``smtp_auth``.

    SmtpSettingError when the settings and the server disagree: AUTH required (``smtp_auth =
    true``, or "auto" with SMTP credentials of its own) and not offered.
    """
    where = f"[email] {cfg.name}: {cfg.smtp_host}:{cfg.smtp_port_}"
    if cfg.smtp_auth is False:
        return False
    if offers_auth:
        if not password:
            raise SmtpSettingError(f"{where} requires AUTH: set smtp_password (or password) for {cfg.smtp_login!r}")
        return True
    if cfg.smtp_auth is True or cfg.smtp_credentials_explicit:
        setting = "smtp_auth = true" if cfg.smtp_auth is True else "smtp_user / smtp_password"
        tls = " (some offer it only after STARTTLS: try smtp_tls = 'starttls')" if cfg.smtp_tls == "none" else ""
        raise SmtpSettingError(
            f"{where} does not offer AUTH{tls}, but {setting} is set; for a relay that accepts this "
            "host's mail without a login, remove it (smtp_auth = 'auto', the default) or set smtp_auth = false"
        )
    return False


def smtp_client(cfg: MailboxConfig) -> aiosmtplib.SMTP:
    """A connection (used as ``async with``) that has said EHLO, through STARTTLS when configured."""
    return _Smtp(
        hostname=cfg.smtp_host,
        port=cfg.smtp_port_,
        use_tls=cfg.smtp_tls == "implicit",
        start_tls=cfg.smtp_tls == "starttls",
        tls_context=tls_context(cfg) if cfg.smtp_tls != "none" else None,
        validate_certs=cfg.tls_verify,
        timeout=cfg.timeout_s,
    )


class _Smtp(aiosmtplib.SMTP):
    async def __aenter__(self) -> _Smtp:
        await super().__aenter__()
        # Without STARTTLS aiosmtplib says EHLO only when it first needs to: the AUTH test needs it now.
        try:
            if self.is_ehlo_or_helo_needed:
                await self.ehlo()
        except BaseException:
            self.close()
            raise
        return self


class EmailSender:
    """The outbound half of the channel: one Adapter (``email-out``) for all mailboxes."""

    channel = CHANNEL
    name = "email-out"

    def __init__(self, ctx: ChannelContext, mailboxes: dict[str, Outgoing], **outbox_options: Any) -> None:
        self._ctx = ctx
        self._mailboxes = mailboxes
        self._outbox = ctx.outbox(CHANNEL, **outbox_options)
        self.state = Health()
        self._links: PressLinks | None = None
        self._warned_no_links = False

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
        if item.buttons and self._links is None and not self._warned_no_links:
            self._warned_no_links = True
            log.warning(
                "%s: reply %s has buttons, sent without them: set [web] public_url (the console's address) "
                "for e-mail buttons to become links",
                cfg.name,
                item.id,
            )
        msg = build_reply(item, cfg, self._links)
        message_id = str(msg["Message-ID"])
        # Before sending: the customer's answer may arrive before this call returns.
        await out.threads.remember(message_id, item.conversation_key, normalize_subject(item.meta.get("subject", "")))
        try:
            async with smtp_client(cfg) as smtp:
                if login_needed(cfg, out.password, smtp.supports_extension("auth")):
                    await smtp.login(cfg.smtp_login, out.password)
                _errors, response = await smtp.send_message(msg)
        except SmtpSettingError as exc:
            self.state.error(str(exc), disconnected=False)
            raise PermanentFailure(str(exc)) from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError, ssl.SSLError) as exc:
            failure = classify_error(exc, cfg.smtp_host)
            self.state.error(str(failure), disconnected=False)
            raise failure from exc
        self.state.last_error = ""
        log.info("%s: reply %s sent as %s", cfg.name, item.id, message_id)
        return f"{message_id} accepted by {cfg.smtp_host}: {response}"[:500]

    async def start(self) -> None:
        """Check each mailbox's SMTP server against its settings, then consume the outbox.

        A server that does not offer what the settings ask (AUTH) is a ConfigError here, at the
        start, naming the setting to change; a server that is down only delays the replies.
        """
        for out in self._mailboxes.values():
            if out.cfg.smtp_host:
                await self._probe(out)
        self._links = await self._ctx.press_links()
        self._outbox.start(self.send)

    async def _probe(self, out: Outgoing) -> None:
        cfg = out.cfg
        try:
            async with smtp_client(cfg) as smtp:
                login_needed(cfg, out.password, smtp.supports_extension("auth"))
        except SmtpSettingError as exc:
            raise ConfigError(str(exc)) from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError, ssl.SSLError) as exc:
            self.state.error(str(classify_error(exc, cfg.smtp_host)), disconnected=False)
            log.warning(
                "%s: SMTP server not checked at start (%s); replies wait for it", cfg.name, self.state.last_error
            )

    async def close(self) -> None:
        await self._outbox.close()

    def health(self) -> dict[str, Any]:
        error = self.state.last_error
        self.state.connected = self._outbox.running
        self.state.detail = f"{len(self._mailboxes)} mailbox(es)" + (f"; last error: {error}" if error else "")
        return self.state.count_outbox(self._outbox).as_dict()
