"""The e-mail channel: IMAP in (IDLE, polling fallback), SMTP out, threading by Message-ID.

``from_config(ctx, section)`` builds one reader per enabled mailbox (adapter ``email:{name}``)
and one sender for the channel's outbox (adapter ``email-out``). See docs/email.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters.base import Adapter
from adapters.email.config import EmailConfig, MailboxConfig, parse_config
from adapters.email.imap import CHANNEL, MailboxReader
from adapters.email.smtp import EmailSender, Outgoing
from adapters.email.threads import ThreadIndex
from router.channel import ChannelContext

__all__ = ["CHANNEL", "EmailConfig", "EmailSender", "MailboxConfig", "MailboxReader", "from_config"]


def from_config(ctx: ChannelContext, section: Mapping[str, Any]) -> list[Adapter]:
    """The adapters of the ``[email]`` section; ConfigError for a bad setting or a missing password."""
    config = parse_config(section)
    if not config.enabled:
        return []
    readers: list[Adapter] = []
    outgoing: dict[str, Outgoing] = {}
    for box in config.mailboxes:
        if not box.enabled:
            continue
        password = box.read_password()
        readers.append(MailboxReader(ctx, box, password))
        # "auto" reads the password too: whether to log in is decided by what the server offers.
        smtp_password = box.read_smtp_password() if box.smtp_host and box.smtp_auth is not False else ""
        threads = ThreadIndex(ctx, box.name, box.thread_ttl_days * 86400)
        outgoing[box.name] = Outgoing(box, smtp_password, threads)
    if not readers:
        return []
    return [*readers, EmailSender(ctx, outgoing)]
