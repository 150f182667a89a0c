"""The e-mail adapter against real servers on loopback: pymap (IMAP) in, aiosmtpd (SMTP) out."""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import logging
from email.message import EmailMessage
from typing import Any, cast

import pytest

from adapters.email import EmailSender, MailboxReader, from_config
from adapters.email.config import parse_config
from adapters.email.imap import _Connection
from router.errors import ConfigError
from router.keys import STREAMS
from router.lifecycle import running
from router.model import Envelope, OutboxItem, new_id
from router.outbox import PermanentFailure, TemporaryFailure
from router.runtime import Runtime
from router.worker import Worker
from tests.email.conftest import (
    IMAP_PASSWORD,
    MAILBOX_ADDRESS,
    MailFolder,
    SmtpServer,
    TcpProxy,
    TlsPymap,
    email_section,
    inbox_envelopes,
    wait_until,
)
from tests.router.helpers import drain, message


def mail(
    subject: str,
    body: str,
    *,
    frm: str = "Alice Customer <alice@customer.test>",
    msgid: str | None = None,
    in_reply_to: str | None = None,
    references: str | None = None,
    headers: dict[str, str] | None = None,
) -> bytes:
    msg = EmailMessage()
    msg["From"] = frm
    msg["To"] = MAILBOX_ADDRESS
    msg["Subject"] = subject
    msg["Message-ID"] = msgid or f"<{new_id()}@customer.test>"
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    if references:
        msg["References"] = references
    for name, value in (headers or {}).items():
        msg[name] = value
    msg.set_content(body)
    return msg.as_bytes()


def b64word(text: str, charset: str) -> str:
    return f"=?{charset}?B?{base64.b64encode(text.encode(charset)).decode()}?="


def raw_mail(subject_header: str, body: bytes, content_type: str, *, msgid: str, extra: str = "") -> bytes:
    head = (
        f"From: {b64word('王小明', 'gbk')} <wang@customer.test>\r\n"
        f"To: {MAILBOX_ADDRESS}\r\nSubject: {subject_header}\r\nMessage-ID: {msgid}\r\n"
        f"MIME-Version: 1.0\r\nContent-Type: {content_type}\r\n{extra}\r\n"
    )
    return head.encode() + body


async def envelopes(rt: Runtime, n: int, limit: float = 10.0) -> list[Envelope]:
    """The envelopes appended, once there are ``n``: in the inbox and the P1 lane (docs/surge.md)."""
    streams = [rt.keys.stream(name) for name in STREAMS]

    async def enough() -> bool:
        return sum([int(await rt.client.xlen(key)) for key in streams]) >= n

    await wait_until(enough, limit, f"{n} inbox entries")
    return [env for key in streams for env in await inbox_envelopes(rt.client, key)]


def adapters_of(rt: Runtime, section: dict[str, Any]) -> tuple[MailboxReader, EmailSender]:
    reader, sender = from_config(rt.channel_context(), section)
    return cast(MailboxReader, reader), cast(EmailSender, sender)


async def delivered(rt: Runtime, conv_id: str, reply_id: str, status: str = "delivered") -> None:
    async def done() -> bool:
        return (await rt.conversations.deliveries(conv_id)).get(reply_id) == status

    await wait_until(done, 10, f"reply {reply_id} {status}")


# -- inbound -------------------------------------------------------------------------------------


async def test_plain_message_becomes_an_envelope_and_a_conversation(rt: Runtime, mailbox: MailFolder) -> None:
    await mailbox.deliver(
        mail("Withdrawal stuck", "My withdrawal of 0.5 BTC is pending since yesterday.", msgid="<p1@c.test>")
    )
    reader, sender = adapters_of(rt, email_section(mailbox, None))
    async with running([reader, sender]):
        [env] = await envelopes(rt, 1)
    assert (env.channel, env.account, env.platform_id, env.conversation_key) == (
        "email",
        "support",
        "<p1@c.test>",
        "<p1@c.test>",
    )
    assert env.subject == "Withdrawal stuck"
    assert env.text == "My withdrawal of 0.5 BTC is pending since yesterday."
    assert (env.sender.id, env.sender.name, env.sender.attributes) == (
        "alice@customer.test",
        "Alice Customer",
        {"domain": "customer.test"},
    )
    assert env.meta["message_id"] == "<p1@c.test>" and env.meta["from"] == "alice@customer.test"
    assert env.meta["to"] == MAILBOX_ADDRESS and env.meta["subject"] == "Withdrawal stuck"
    assert "auto_submitted" not in env.meta and "full_body" not in env.meta
    await drain(Worker(rt))
    [conv] = await rt.queues.head("payments")
    assert (conv.channel, conv.account, conv.key, conv.subject) == (
        "email",
        "support",
        "<p1@c.test>",
        "Withdrawal stuck",
    )
    cursor = await rt.channel_context().cursor_get("email", "support", f"uid:{mailbox.folder}")
    assert cursor is not None and int(cursor.split(":")[1]) == reader.last_uid > 0


async def test_html_only_message_is_converted_to_text(rt: Runtime, mailbox: MailFolder) -> None:
    msg = EmailMessage()
    msg["From"] = "bob@customer.test"
    msg["To"] = MAILBOX_ADDRESS
    msg["Subject"] = "Deposit"
    msg["Message-ID"] = "<h1@c.test>"
    msg.set_content(
        "<html><head><style>p{color:red}</style><script>alert(1)</script></head><body>"
        "<p>My <b>deposit</b> of 100&nbsp;USDT is missing.</p><ul><li>1. sent at 10:00</li></ul>"
        '<p>tx: <a href="https://tronscan.org/#/transaction/abc123">abc123</a></p>'
        '<div class="gmail_quote">On Mon, 1 Jan 2024 Support wrote:<br>'
        "<blockquote>Were you hacked? Please check.</blockquote></div></body></html>",
        subtype="html",
    )
    await mailbox.deliver(msg.as_bytes())
    reader, sender = adapters_of(rt, email_section(mailbox, None))
    async with running([reader, sender]):
        [env] = await envelopes(rt, 1)
    assert "My deposit of 100 USDT is missing." in env.text
    assert "sent at 10:00" in env.text and "abc123" in env.text
    assert "<" not in env.text.replace("<https", "") and "alert" not in env.text and "color" not in env.text
    # The quoted question is not routed (it says "hacked"), but the whole body is kept.
    assert "hacked" not in env.text and "hacked" in env.meta["full_body"]
    assert env.meta["html_only"] == "1"


async def test_chinese_charsets_and_encoded_subjects(rt: Runtime, mailbox: MailFolder) -> None:
    # Labelled GB2312 but containing GBK-only characters (镕, 昇), as Chinese clients send it.
    gbk_text = "我的提现还没有到账，朱镕基昇。"
    await mailbox.deliver(
        raw_mail(
            b64word("提现未到账", "gbk"),
            gbk_text.encode("gbk"),
            "text/plain; charset=gb2312",
            msgid="<gbk@c.test>",
            extra="Content-Transfer-Encoding: 8bit\r\n",
        )
    )
    big5_text = "我的入金尚未到帳，請協助。"
    subject_q = "=?big5?Q?" + "".join(f"={b:02X}" for b in "入金問題".encode("big5")) + "?="
    await mailbox.deliver(
        raw_mail(
            subject_q,
            base64.b64encode(big5_text.encode("big5")),
            "text/plain; charset=big5",
            msgid="<big5@c.test>",
            extra="Content-Transfer-Encoding: base64\r\n",
        )
    )
    jp_text = "出金が届いていません。"
    await mailbox.deliver(
        raw_mail(
            b64word("出金について", "iso-2022-jp"),
            jp_text.encode("iso-2022-jp"),
            "text/plain; charset=ISO-2022-JP",
            msgid="<jp@c.test>",
            extra="Content-Transfer-Encoding: 7bit\r\n",
        )
    )
    reader, sender = adapters_of(rt, email_section(mailbox, None))
    async with running([reader, sender]):
        envs = {e.platform_id: e for e in await envelopes(rt, 3)}
    assert (envs["<gbk@c.test>"].subject, envs["<gbk@c.test>"].text) == ("提现未到账", gbk_text)
    assert (envs["<big5@c.test>"].subject, envs["<big5@c.test>"].text) == ("入金問題", big5_text)
    assert (envs["<jp@c.test>"].subject, envs["<jp@c.test>"].text) == ("出金について", jp_text)
    assert envs["<gbk@c.test>"].sender.name == "王小明"
    await drain(Worker(rt))
    payments = {c.key for c in await rt.queues.head("payments")}
    assert {"<gbk@c.test>", "<big5@c.test>"} <= payments


async def test_quoted_reply_routes_only_the_new_text(rt: Runtime, mailbox: MailFolder) -> None:
    body = (
        "Thanks, but the withdrawal is still not there.\n\n"
        "-- \nAlice\n+1 555 0100\n\n"
        "On Mon, 1 Jan 2024 at 10:00, Exchange Support <support@exchange.test> wrote:\n"
        "> Was your account hacked? Tell us your seed phrase.\n> Regards\n"
    )
    await mailbox.deliver(mail("Re: Withdrawal", body, in_reply_to="<x@exchange.test>", references="<x@exchange.test>"))
    await mailbox.deliver(
        mail(
            "回复：提现问题",
            "还是没有到账。\n\n在 2024年1月1日 周一 10:00，Exchange Support <support@exchange.test> 写道：\n"
            "> 您的账户被盗了吗？\n",
        )
    )
    await mailbox.deliver(
        mail(
            "RE: Withdrawal",
            "Any news?\n\n-----Original Message-----\nFrom: Support\nSent: Monday\nSubject: hacked?\n\nold text",
        )
    )
    reader, sender = adapters_of(rt, email_section(mailbox, None))
    async with running([reader, sender]):
        en, zh, outlook = await envelopes(rt, 3)
    assert en.text == "Thanks, but the withdrawal is still not there."
    assert zh.text == "还是没有到账。"
    assert outlook.text == "Any news?"
    assert "seed phrase" in en.meta["full_body"]
    await drain(Worker(rt))
    assert await rt.queues.head("security") == []


async def test_attachment_is_recorded_as_metadata_only(rt: Runtime, mailbox: MailFolder) -> None:
    msg = EmailMessage()
    msg["From"] = "carol@customer.test"
    msg["To"] = MAILBOX_ADDRESS
    msg["Subject"] = "KYC documents"
    msg["Message-ID"] = "<att@c.test>"
    msg.set_content("Here is my passport.")
    pdf = b"%PDF-1.4\n" + bytes(range(256)) * 200
    msg.add_attachment(pdf, maintype="application", subtype="pdf", filename="passport 护照.pdf")
    await mailbox.deliver(msg.as_bytes())
    reader, sender = adapters_of(rt, email_section(mailbox, None))
    async with running([reader, sender]):
        [env] = await envelopes(rt, 1)
    [att] = env.attachments
    assert (att.name, att.type, att.size) == ("passport 护照.pdf", "application/pdf", len(pdf))
    assert att.ref == f"imap:support:{env.meta['uid']}:2"
    assert env.text == "Here is my passport."
    [(_, fields)] = await rt.client.xrange(rt.keys.inbox)
    assert len(fields[b"env"]) < 4000  # the 51 kB of bytes stayed on the mail server


async def test_reply_joins_its_conversation_and_new_subject_starts_another(
    rt: Runtime, mailbox: MailFolder, smtp_server: SmtpServer
) -> None:
    reader, sender = adapters_of(rt, email_section(mailbox, smtp_server, idle_renew_s=5))
    async with running([reader, sender]):
        await reader.caught_up.wait()
        await mailbox.deliver(mail("Withdrawal stuck", "Where is my withdrawal?", msgid="<root@c.test>"))
        await envelopes(rt, 1)
        # The customer adds something, answering their own mail with In-Reply-To only.
        await mailbox.deliver(mail("Re: Withdrawal stuck", "It was 0.5 BTC.", in_reply_to="<root@c.test>"))
        await envelopes(rt, 2)
        await drain(Worker(rt))
        [conv] = await rt.queues.head("payments")
        assert conv.messages == 2

        cid = await rt.conversations.claim("payments", "agent-a")
        assert cid == conv.id
        reply_id = await rt.conversations.reply(cid, "We are checking it.", "agent-a")
        await delivered(rt, cid, reply_id)
        [sent] = smtp_server.recorder.messages
        ours = email.message_from_bytes(sent.content, policy=email.policy.default)["Message-ID"]

        # The answer to OUR reply names only our Message-ID: it must still join the conversation.
        await mailbox.deliver(mail("Re: Withdrawal stuck", "Thanks!", in_reply_to=ours))
        # A new subject from the same sender is a new conversation, as is a reply that changes the topic.
        await mailbox.deliver(mail("KYC question", "How long does verification take?"))
        await mailbox.deliver(
            mail("Re: 2FA reset", "Also my 2FA is broken", in_reply_to=ours, references=f"<root@c.test> {ours}")
        )
        envs = await envelopes(rt, 5)
    assert [e.conversation_key for e in envs[:3]] == ["<root@c.test>"] * 3
    assert envs[3].conversation_key == envs[3].platform_id
    assert envs[4].conversation_key == envs[4].platform_id
    await drain(Worker(rt))
    after = await rt.conversations.get(cid)
    assert after.messages == 3
    assert after.status == "assigned"  # the customer answered; the agent keeps it
    assert len({c.id for c in await rt.queues.head("general")}) == 2


async def test_auto_replies_and_bounces_are_flagged_and_never_answered(
    rt: Runtime, mailbox: MailFolder, smtp_server: SmtpServer
) -> None:
    ooo = mail(
        "Automatic reply: ticket status",
        "I am out of office. About your ticket status: back Monday.",
        frm="dave@customer.test",
        headers={"Auto-Submitted": "auto-replied"},
    )
    listmail = mail("Newsletter: ticket status", "ticket status digest", headers={"Precedence": "bulk"})
    bounce = (
        "From: Mail Delivery System <MAILER-DAEMON@mx.customer.test>\r\n"
        f"To: {MAILBOX_ADDRESS}\r\nSubject: Undelivered Mail Returned to Sender\r\n"
        "Message-ID: <bounce@mx.customer.test>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b1"\r\n\r\n'
        "--b1\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
        "This is the mail system. Your message about ticket status could not be delivered.\r\n"
        "--b1\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.customer.test\r\n\r\n"
        "Final-Recipient: rfc822; gone@customer.test\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "--b1\r\nContent-Type: message/rfc822\r\n\r\n"
        "From: support@exchange.test\r\nTo: gone@customer.test\r\nSubject: Re: ticket status\r\n\r\nhello\r\n"
        "--b1--\r\n"
    ).encode()
    # A normal customer mail that triggers the same auto-reply rule: the positive control.
    normal = mail("My ticket status?", "What is my ticket status?", msgid="<normal@c.test>")
    for raw in (ooo, listmail, bounce, normal):
        await mailbox.deliver(raw)

    reader, sender = adapters_of(rt, email_section(mailbox, smtp_server))
    async with running([reader, sender]):
        envs = await envelopes(rt, 4)
        await drain(Worker(rt))
        await wait_until(lambda: _truthy(len(smtp_server.recorder.messages) >= 1), 10, "the auto-reply")
        await asyncio.sleep(0.3)  # time for a wrong second reply to show up
    flagged = envs[:3]
    assert [e.meta.get("auto_submitted") for e in envs] == ["1", "1", "1", None]
    assert all(e.sender.attributes.get("auto_submitted") == "yes" for e in flagged)
    assert "delivery-status" in flagged[2].meta["auto_reason"]
    assert flagged[2].text.startswith("This is the mail system.")
    assert [(a.type, a.name) for a in flagged[2].attachments] == [
        ("message/delivery-status", "part-2"),
        ("message/rfc822", "Re: ticket status.eml"),
    ]
    # Exactly one reply went out: the rules' auto-reply to the normal message, marked as automatic.
    assert int(await rt.client.hget(rt.keys.stats, "out:email") or 0) == 1
    [sent] = smtp_server.recorder.messages
    out = email.message_from_bytes(sent.content, policy=email.policy.default)
    assert sent.rcpt_tos == ["alice@customer.test"]
    assert out["Auto-Submitted"] == "auto-replied" and out["In-Reply-To"] == "<normal@c.test>"


async def _truthy(value: bool) -> bool:
    return value


async def test_connection_cut_during_idle_loses_and_doubles_nothing(
    rt: Runtime, mailbox: MailFolder, proxy: TcpProxy
) -> None:
    section = email_section(mailbox, None, port=proxy.port, idle_renew_s=30)
    reader, sender = adapters_of(rt, section)
    async with running([reader, sender]):
        await reader.caught_up.wait()
        await wait_until(lambda: _truthy(reader.mode == "idle"), 5, "IDLE")
        await mailbox.deliver(mail("one", "first message", msgid="<m1@c.test>"))
        await envelopes(rt, 1, limit=3)  # pushed by IDLE, well before the 30 s renewal
        await wait_until(lambda: _truthy(reader.mode == "idle"), 5, "IDLE again")
        await proxy.cut()
        # Delivered while the adapter is disconnected.
        await mailbox.deliver(mail("two", "second message", msgid="<m2@c.test>"))
        await mailbox.deliver(mail("three", "third message", msgid="<m3@c.test>"))
        envs = await envelopes(rt, 3, limit=10)
        await wait_until(lambda: _truthy(reader.mode == "idle"), 5, "IDLE after reconnecting")
        assert reader.state.counters["reconnects"] >= 1 and proxy.accepted >= 2
        assert reader.health()["connected"] is True
    assert [e.platform_id for e in envs] == ["<m1@c.test>", "<m2@c.test>", "<m3@c.test>"]
    assert reader.state.counters["duplicates"] == 0

    # A restart with the same cursor takes in only what is new.
    await mailbox.deliver(mail("four", "fourth message", msgid="<m4@c.test>"))
    again, sender2 = adapters_of(rt, section)
    async with running([again, sender2]):
        await again.caught_up.wait()
        envs = await envelopes(rt, 4)
    assert [e.platform_id for e in envs][-1] == "<m4@c.test>" and len(envs) == 4
    assert again.state.counters["received"] == 1 and again.state.counters["duplicates"] == 0


async def test_a_full_inbox_leaves_the_cursor_and_the_mail_is_taken_later(
    rt: Runtime, mailbox: MailFolder, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "switchboard")
    rt.settings.inbox.maxlen = 1000
    await rt.inbox.append_many([message(f"deposit {i} missing", user=f"f{i}") for i in range(1000)])
    await mailbox.deliver(mail("one", "my withdrawal has not arrived", msgid="<full1@c.test>"))
    reader, sender = adapters_of(rt, email_section(mailbox, None))
    async with running([reader, sender]):
        await wait_until(lambda: _truthy("InboxFull: inbox full" in caplog.text), 5, "a refusal")
        assert "retrying in" in caplog.text
        assert reader.last_uid == 0  # the cursor stays before the refused mail
        await drain(Worker(rt))  # routed entries make room
        await reader.caught_up.wait()
    [env] = [e for e in await inbox_envelopes(rt.client, rt.keys.inbox) if e.channel == "email"]
    assert (
        env.platform_id == "<full1@c.test>"
        and reader.state.counters["received"] == 1
        and reader.state.counters["duplicates"] == 0
    )


async def test_uidvalidity_change_rereads_without_duplicates(rt: Runtime, mailbox: MailFolder) -> None:
    section = email_section(mailbox, None)
    await mailbox.deliver(mail("one", "first", msgid="<v1@c.test>"))
    reader, sender = adapters_of(rt, section)
    async with running([reader, sender]):
        await envelopes(rt, 1)
    # The folder is rebuilt (new UIDVALIDITY) with the old message in it and a new one.
    await mailbox.recreate()
    await mailbox.deliver(mail("one", "first", msgid="<v1@c.test>"))
    await mailbox.deliver(mail("two", "second", msgid="<v2@c.test>"))
    again, sender2 = adapters_of(rt, section)
    async with running([again, sender2]):
        envs = await envelopes(rt, 2)
        await again.caught_up.wait()
    assert [e.platform_id for e in envs] == ["<v1@c.test>", "<v2@c.test>"]
    assert (again.state.counters["received"], again.state.counters["duplicates"]) == (1, 1)


# -- outbound ------------------------------------------------------------------------------------


async def test_agent_reply_reaches_smtp_with_threading_headers(
    rt: Runtime, mailbox: MailFolder, smtp_server: SmtpServer
) -> None:
    await mailbox.deliver(
        mail(
            "Re: Withdrawal stuck",
            "Still waiting for my withdrawal.",
            frm="Alice Customer <alice@customer.test>",
            msgid="<c2@customer.test>",
            in_reply_to="<s1@exchange.test>",
            references="<c1@customer.test> <s1@exchange.test>",
            headers={"Reply-To": "alice.billing@customer.test"},
        )
    )
    reader, sender = adapters_of(rt, email_section(mailbox, smtp_server))
    async with running([reader, sender]):
        await envelopes(rt, 1)
        await drain(Worker(rt))
        cid = await rt.conversations.claim("payments", "agent-a")
        assert cid
        reply_id = await rt.conversations.reply(cid, "It was sent today.\n\nTXID: 0xabc <check>", "agent-a")
        await delivered(rt, cid, reply_id)
    [sent] = smtp_server.recorder.messages
    assert sent.login == "support"
    assert sent.mail_from == MAILBOX_ADDRESS and sent.rcpt_tos == ["alice.billing@customer.test"]
    out = email.message_from_bytes(sent.content, policy=email.policy.default)
    assert out["Subject"] == "Re: Withdrawal stuck"  # never "Re: Re:"
    assert out["From"] == f"Exchange Support <{MAILBOX_ADDRESS}>"
    assert out["In-Reply-To"] == "<c2@customer.test>"
    assert out["References"].split() == ["<c1@customer.test>", "<s1@exchange.test>", "<c2@customer.test>"]
    assert out["Message-ID"] == f"<sb.{reply_id.lower()}@exchange.test>"
    assert out["Auto-Submitted"] is None
    assert out.get_content_type() == "multipart/alternative"
    plain = out.get_body(preferencelist=("plain",))
    html = out.get_body(preferencelist=("html",))
    assert plain is not None and html is not None
    assert plain.get_content().replace("\r\n", "\n").strip() == "It was sent today.\n\nTXID: 0xabc <check>"
    assert "<p>TXID: 0xabc &lt;check&gt;</p>" in html.get_content()
    [entry] = [h for h in await rt.conversations.history(cid) if h.type == "delivery"]
    assert entry.data["status"] == "delivered" and out["Message-ID"] in entry.data["detail"]


def _item(**over: Any) -> OutboxItem:
    values: dict[str, Any] = {
        "id": new_id(),
        "conversation": "1",
        "channel": "email",
        "account": "support",
        "conversation_key": "<k@c.test>",
        "text": "hello",
        "author": "agent-a",
        "reply_to": "<k@c.test>",
        "meta": {"message_id": "<k@c.test>", "from": "alice@customer.test", "subject": "Hi"},
    }
    values.update(over)
    return OutboxItem(**values)


async def test_smtp_4xx_is_temporary_and_5xx_permanent(
    rt: Runtime, mailbox: MailFolder, smtp_server: SmtpServer
) -> None:
    _, sender = adapters_of(rt, email_section(mailbox, smtp_server))
    with pytest.raises(TemporaryFailure, match="451"):
        await sender.send(_item(meta={"from": "temp@customer.test", "subject": "x"}))
    with pytest.raises(PermanentFailure, match="550"):
        await sender.send(_item(meta={"from": "perm@customer.test", "subject": "x"}))
    with pytest.raises(PermanentFailure, match="authentication failed: 535"):
        _, bad = adapters_of(rt, email_section(mailbox, smtp_server, smtp_password="wrong"))
        await bad.send(_item())
    with pytest.raises(PermanentFailure, match="loop protection"):
        await sender.send(_item(auto=True, meta={"from": "a@c.test", "auto_submitted": "1"}))
    with pytest.raises(PermanentFailure, match="no mailbox named 'other'"):
        await sender.send(_item(account="other"))
    # A server that is not there: worth retrying.
    _, down = adapters_of(rt, email_section(mailbox, smtp_server, smtp_port=1))
    with pytest.raises(TemporaryFailure):
        await down.send(_item())
    detail = await sender.send(_item())
    assert "accepted by 127.0.0.1" in detail and len(smtp_server.recorder.messages) == 1


async def test_wrong_imap_password_is_a_config_error(rt: Runtime, mailbox: MailFolder) -> None:
    reader, _ = adapters_of(rt, email_section(mailbox, None, password="wrong"))
    with pytest.raises(ConfigError, match=r"IMAP login as 'support'.*app password"):
        await reader.start()
    await reader.close()


async def test_server_down_at_start_is_retried_in_background(rt: Runtime, mailbox: MailFolder, proxy: TcpProxy) -> None:
    # The proxy's upstream is right but nothing listens on the configured port yet: start() must not fail.
    await mailbox.deliver(mail("hello", "are you there?", msgid="<late@c.test>"))
    reader, _ = adapters_of(rt, email_section(mailbox, None, port=1))
    await reader.start()
    try:
        assert reader.health()["connected"] is False and reader.state.last_error
    finally:
        await reader.close()


async def test_starttls_with_a_private_ca(rt: Runtime, mailbox: MailFolder, pymap_starttls: TlsPymap) -> None:
    port = pymap_starttls.server.port
    section = email_section(mailbox, None, port=port, imap_tls="starttls", tls_ca_file=str(pymap_starttls.ca_file))
    section["mailboxes"][0]["folder"] = "INBOX"
    # Deliver through the adapter's own connection class: pymap refuses LOGIN before STARTTLS.
    conn = _Connection(parse_config(section).mailboxes[0])
    await conn.open(IMAP_PASSWORD)
    try:
        appended = await conn.imap.append(mail("over TLS", "hello", msgid="<tls@c.test>"), mailbox="INBOX")
        assert appended.result == "OK"
    finally:
        await conn.logout()
    reader, sender = adapters_of(rt, section)
    async with running([reader, sender]):
        [env] = await envelopes(rt, 1)
    assert env.platform_id == "<tls@c.test>"
    # Without the CA the self-signed certificate is refused, and start() says so without crashing.
    untrusted, _ = adapters_of(rt, email_section(mailbox, None, port=port, imap_tls="starttls", folder="INBOX"))
    await untrusted.start()
    try:
        assert "CERTIFICATE_VERIFY_FAILED" in untrusted.state.last_error
    finally:
        await untrusted.close()


async def test_polling_when_idle_is_off(rt: Runtime, mailbox: MailFolder) -> None:
    reader, sender = adapters_of(rt, email_section(mailbox, None, idle=False, poll_interval_s=0.2))
    async with running([reader, sender]):
        await reader.caught_up.wait()
        await mailbox.deliver(mail("polled", "found by polling", msgid="<poll@c.test>"))
        [env] = await envelopes(rt, 1, limit=5)
        assert reader.mode == "polling" or reader.mode == "catching up"
    assert env.platform_id == "<poll@c.test>"
