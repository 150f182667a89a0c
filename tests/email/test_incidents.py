"""Incidents end to end by e-mail, through the real IMAP and SMTP test servers: the status text
and then the resolution, once each, as replies in the customer's thread."""

from __future__ import annotations

import asyncio
import email
import email.policy

from router.lifecycle import running
from router.runtime import Runtime
from router.worker import Worker
from tests.email.conftest import MailFolder, SmtpServer, email_section, wait_until
from tests.email.test_adapter import adapters_of, envelopes, mail
from tests.router.helpers import drain
from tests.router.test_incidents import RESOLVED, TEXTS, FakeClock, broadcast_all, link_all, linker, open_tron


def sent_to(smtp: SmtpServer) -> list[tuple[str, str, str]]:
    """(recipient, In-Reply-To, plain text) of each mail sent."""
    out = []
    for m in smtp.recorder.messages:
        msg = email.message_from_bytes(m.content, policy=email.policy.default)
        body = msg.get_body(preferencelist=("plain",))
        text = body.get_content().strip() if body is not None else ""
        out.append((m.rcpt_tos[0], str(msg["In-Reply-To"]), text))
    return out


async def test_status_text_then_one_resolution_per_thread(
    rt: Runtime, mailbox: MailFolder, smtp_server: SmtpServer
) -> None:
    clock = FakeClock()
    link = await linker(rt, clock)
    inc = await open_tron(rt)
    reader, sender = adapters_of(rt, email_section(mailbox, smtp_server))
    async with running([reader, sender]):
        customers = {"ann@customer.test": "<t1@customer.test>", "ben@customer.test": "<t2@customer.test>"}
        for n, (addr, msgid) in enumerate(customers.items(), 1):
            await reader.caught_up.wait()  # in IDLE again: the next delivery is announced to it
            await mailbox.deliver(mail("TRON withdrawal", "My TRON withdrawal is stuck.", frm=addr, msgid=msgid))
            await envelopes(rt, n)
        await drain(Worker(rt))
        await link_all(link)

        async def status_sent() -> bool:
            return len(smtp_server.recorder.messages) >= 2

        await wait_until(status_sent, 10, "the status texts by e-mail")
        await rt.incidents.resolve(inc.id, "admin", RESOLVED, "close")
        await broadcast_all(rt, inc.id, clock)

        async def resolved() -> bool:
            return len(smtp_server.recorder.messages) >= 4

        await wait_until(resolved, 10, "the resolutions by e-mail")
        await asyncio.sleep(0.3)
    got = sorted(sent_to(smtp_server))
    want = sorted((addr, msgid, text) for addr, msgid in customers.items() for text in (TEXTS["en"], RESOLVED["en"]))
    assert [(a, r) for a, r, _ in got] == [(a, r) for a, r, _ in want]
    assert all(t.startswith(w) for (_, _, t), (_, _, w) in zip(got, want, strict=True))
