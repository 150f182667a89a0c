"""Our own mail: the Message-IDs we give replies, and how a copy of one is told from a customer's.

A reply Switchboard sent can come back into the support mailbox: a Bcc or copy to self, a
forwarding rule, a mailing list the mailbox is on, a customer's server bouncing it in full. Taken
in as inbound mail it would become the customer's latest message (its sender, its tags, its From
as the next reply's address). The reader drops such copies before the inbox (the reply is in the
conversation's history already, as outbound, with its delivery) and counts them in its health.
"""

from __future__ import annotations

import re

from adapters.email.config import MailboxConfig
from adapters.email.mime import ParsedMail

#: The local part of every Message-ID we generate: ``sb.`` and the reply's (lower-case) ULID.
_OUR_ID = re.compile(r"^<sb\.[0-9a-z]{26}@(?P<domain>[^<>@\s]+)>$")


def message_id_for(reply_id: str, domain: str) -> str:
    """The Message-ID of a reply: derived from its id, so a re-sent reply keeps it."""
    return f"<sb.{reply_id.lower()}@{domain}>"


def is_own_address(address: str, cfg: MailboxConfig) -> bool:
    return address.strip().lower() in cfg.own_addresses


def own_copy_reason(mail: ParsedMail, cfg: MailboxConfig) -> str | None:
    """Why ``mail`` is our own copy rather than a customer's message, or None when it is not."""
    if mail.from_addr and is_own_address(mail.from_addr, cfg):
        return f"from this mailbox's own address {mail.from_addr}"
    found = _OUR_ID.match(mail.message_id)
    if found and found.group("domain").lower() == cfg.domain.lower():
        return f"a Message-ID Switchboard generated ({mail.message_id})"
    return None
