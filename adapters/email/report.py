"""The weekly summary by e-mail (router/weekly.py): one message to the ``[reports] email_to``
addresses, sent through the SMTP settings of a configured ``[email]`` mailbox — the same
connection, TLS and login rules as the mailbox's replies (adapters/email/smtp.py)."""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Mapping
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any

import aiosmtplib

from adapters.email.config import MailboxConfig, parse_config
from adapters.email.smtp import SmtpSettingError, classify_error, login_needed, smtp_client
from router.channel import ConfigError, PermanentFailure


class ReportMail:
    """A ``router.weekly.Recipient``: the summary as text with an HTML alternative."""

    name = "email"

    def __init__(self, cfg: MailboxConfig, password: str, to: list[str]) -> None:
        self.cfg = cfg
        self.password = password
        self.to = to

    def describe(self) -> str:
        return f"{', '.join(self.to)} (mailbox {self.cfg.name})"

    def message(self, subject: str, text: str, html: str) -> EmailMessage:
        msg = EmailMessage()
        msg["From"] = Address(display_name=self.cfg.display_name, addr_spec=self.cfg.address)
        msg["To"] = ", ".join(self.to)
        msg["Subject"] = subject
        msg["Date"] = formatdate(usegmt=True)
        msg["Message-ID"] = self.message_id(subject)
        # A report, not a person: out-of-office replies should not answer it.
        msg["Auto-Submitted"] = "auto-generated"
        msg.set_content(text)
        msg.add_alternative(html, subtype="html")
        return msg

    def message_id(self, subject: str) -> str:
        """The same for every sending of one summary: made of what identifies it (the subject,
        which names the week, the sender and the recipients). router/weekly.py sends at least
        once: a replica that dies between the send and its mark leaves the week to another, which
        sends it again. Mail clients and servers that drop a message whose Message-ID they already
        hold (Gmail does) then show one summary, not two."""
        identity = "\0".join([subject, self.cfg.address, *sorted(self.to)])
        return f"<weekly-{hashlib.sha256(identity.encode('utf-8')).hexdigest()[:32]}@{self.cfg.domain}>"

    async def send(self, subject: str, text: str, html: str) -> str:
        """Send it; raises the outbox's TemporaryFailure (4xx, network) or PermanentFailure."""
        msg = self.message(subject, text, html)
        cfg = self.cfg
        try:
            async with smtp_client(cfg) as smtp:
                if login_needed(cfg, self.password, smtp.supports_extension("auth")):
                    await smtp.login(cfg.smtp_login, self.password)
                _errors, response = await smtp.send_message(msg)
        except SmtpSettingError as exc:
            raise PermanentFailure(str(exc)) from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError, ssl.SSLError) as exc:
            raise classify_error(exc, cfg.smtp_host) from exc
        return f"{msg['Message-ID']} accepted by {cfg.smtp_host}: {response}"


def report_mail(section: Mapping[str, Any], mailbox: str, to: list[str]) -> ReportMail:
    """The recipient for ``[reports] email_to``, through mailbox ``mailbox`` of the ``[email]``
    section; ConfigError when there is no such mailbox or it has no SMTP server."""
    boxes = {box.name: box for box in parse_config(section).mailboxes}
    box = boxes.get(mailbox)
    if box is None:
        known = ", ".join(boxes) or "none configured"
        raise ConfigError(f"[reports] email_mailbox {mailbox!r}: no such [email] mailbox ({known})")
    if not box.smtp_host:
        raise ConfigError(f"[reports] email_mailbox {mailbox!r}: the mailbox has no smtp_host to send with")
    password = box.read_smtp_password() if box.smtp_auth is not False else ""
    return ReportMail(box, password, to)
