"""A reply's buttons in an e-mail: signed links in the text and the HTML part, sent over real SMTP."""

from __future__ import annotations

import email
import email.policy
import logging
import re
from typing import Any, cast

import pytest

from adapters.email import EmailSender, from_config
from router.accounts import load_secret
from router.config import WebSettings
from router.lifecycle import running
from router.links import PressLinks
from router.model import Button, OutboxItem, new_id
from router.runtime import Runtime
from tests.email.conftest import MailFolder, SmtpServer, email_section

PUBLIC = "https://support.example.test"
BUTTONS = (
    Button(label="✅ This solved it", data="kb:42:solved"),
    Button(label="🙋 Talk to a <person>", data="kb:42:human"),
)


def _sender(rt: Runtime, section: dict[str, Any], public_url: str) -> EmailSender:
    web = WebSettings.model_validate({"public_url": public_url})
    ctx = rt.channel_context("mailer", web=web)
    return cast(EmailSender, from_config(ctx, section)[-1])


def _item() -> OutboxItem:
    return OutboxItem(
        id=new_id(),
        conversation="1",
        channel="email",
        account="support",
        conversation_key="<root@customer.test>",
        text="Withdrawals take 10-30 minutes.",
        author="kb",
        meta={"message_id": "<root@customer.test>", "from": "alice@customer.test", "subject": "Withdrawal"},
        buttons=BUTTONS,
    )


async def test_buttons_are_signed_links_in_the_text_and_the_html(
    rt: Runtime, mailbox: MailFolder, smtp_server: SmtpServer
) -> None:
    sender = _sender(rt, email_section(mailbox, smtp_server), PUBLIC)
    item = _item()
    async with running([sender]):
        await sender.send(item)
    [sent] = smtp_server.recorder.messages
    out = email.message_from_bytes(sent.content, policy=email.policy.default)
    plain = out.get_body(preferencelist=("plain",))
    html = out.get_body(preferencelist=("html",))
    assert plain is not None and html is not None
    text = plain.get_content().replace("\r\n", "\n")
    urls = re.findall(rf"^(?:✅ This solved it|🙋 Talk to a <person>): ({PUBLIC}/a/\S+)$", text, re.M)
    assert text.startswith("Withdrawals take 10-30 minutes.\n\n") and len(urls) == 2
    # The same links in the HTML part, labels escaped.
    hrefs = re.findall(r'<a href="([^"]+)">([^<]+)</a>', html.get_content())
    assert hrefs == [(urls[0], "✅ This solved it"), (urls[1], "🙋 Talk to a &lt;person&gt;")]
    # Signed with the deployment's key: the console (same secret) opens them.
    console_side = PressLinks(await load_secret(rt.client, rt.keys, WebSettings()), PUBLIC, 3600)
    opened = [console_side.open(url.rsplit("/", 1)[1]) for url in urls]
    assert [(o.data, o.label, o.nonce) for o in opened] == [
        ("kb:42:solved", "✅ This solved it", f"{item.id}.0"),
        ("kb:42:human", "🙋 Talk to a <person>", f"{item.id}.1"),
    ]
    assert {(o.channel, o.account, o.conversation_key) for o in opened} == {
        ("email", "support", "<root@customer.test>")
    }


async def test_without_a_public_url_the_reply_goes_without_links_and_says_why(
    rt: Runtime, mailbox: MailFolder, smtp_server: SmtpServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "switchboard.email")
    sender = _sender(rt, email_section(mailbox, smtp_server), "")
    async with running([sender]):
        await sender.send(_item())
    [sent] = smtp_server.recorder.messages
    assert b"/a/" not in sent.content
    assert "has buttons, sent without them: set [web] public_url" in caplog.text
