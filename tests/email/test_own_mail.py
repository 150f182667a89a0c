"""Issue 21: our own mail coming back into the inbox, SMTP relays without AUTH, names in ``To:``,
the reader's health in `stats`."""

from __future__ import annotations

import asyncio
import email
import email.policy
from email.message import EmailMessage

import pytest

from adapters.email.config import parse_config
from adapters.email.smtp import build_reply
from router.errors import ConfigError
from router.lifecycle import running
from router.outbox import PermanentFailure
from router.runtime import Runtime
from router.supervisor import _publish_health
from router.worker import Worker
from tests.email.conftest import MAILBOX_ADDRESS, MailFolder, SmtpServer, email_section, wait_until
from tests.email.test_adapter import _item, adapters_of, delivered, envelopes, mail
from tests.router.helpers import drain


def _relay_section(mailbox: MailFolder, relay: SmtpServer, **over: object) -> dict[str, object]:
    """The quick start's self-hosted relay: smtp_host/port/tls only, every other SMTP setting default."""
    return email_section(mailbox, None, smtp_host="127.0.0.1", smtp_port=relay.port, smtp_tls="none", **over)


async def test_own_auto_reply_redelivered_changes_neither_sender_nor_reply_address(
    rt: Runtime, mailbox: MailFolder, smtp_server: SmtpServer
) -> None:
    await mailbox.deliver(mail("My ticket status?", "What is my ticket status?", msgid="<t1@customer.test>"))
    reader, sender = adapters_of(rt, email_section(mailbox, smtp_server))
    async with running([reader, sender]):
        await envelopes(rt, 1)
        await drain(Worker(rt))
        await wait_until(lambda: _now(len(smtp_server.recorder.messages) == 1), 10, "the auto-reply")
        [auto] = smtp_server.recorder.messages
        # The copy comes back: once as it was sent (copy to self), once through a list that
        # rewrote From but kept the Message-ID.
        await mailbox.deliver(auto.content)
        relayed = email.message_from_bytes(auto.content, policy=email.policy.default)
        assert isinstance(relayed, EmailMessage)
        relayed.replace_header("From", "Support via the list <support-list@lists.test>")
        await mailbox.deliver(relayed.as_bytes())
        await wait_until(lambda: _now(reader.last_uid >= 3), 10, "the copies to be read")
        await drain(Worker(rt))

        [conv] = await rt.queues.head("general")
        assert conv.sender_name == "Alice Customer"
        history = await rt.conversations.history(conv.id)
        assert [h.data["sender"]["id"] for h in history if h.type == "inbound"] == ["alice@customer.test"]
        assert reader.health()["own_copies"] == 2

        cid = await rt.conversations.claim("general", "agent-a")
        assert cid == conv.id
        reply_id = await rt.conversations.reply(cid, "An agent here: it is on its way.", "agent-a")
        await delivered(rt, cid, reply_id)
    answer = smtp_server.recorder.messages[-1]
    assert answer.rcpt_tos == ["alice@customer.test"]
    out = email.message_from_bytes(answer.content, policy=email.policy.default)
    assert out["To"] == "Alice Customer <alice@customer.test>"


async def _now(value: bool) -> bool:
    return value


async def test_smtp_server_without_auth_works_with_the_defaults(
    rt: Runtime, mailbox: MailFolder, smtp_relay: SmtpServer
) -> None:
    await mailbox.deliver(mail("Withdrawal stuck", "My withdrawal is stuck.", msgid="<r1@customer.test>"))
    reader, sender = adapters_of(rt, _relay_section(mailbox, smtp_relay))
    async with running([reader, sender]):
        await envelopes(rt, 1)
        await drain(Worker(rt))
        cid = await rt.conversations.claim("payments", "agent-a")
        assert cid
        reply_id = await rt.conversations.reply(cid, "It was sent today.", "agent-a")
        await delivered(rt, cid, reply_id)
    [sent] = smtp_relay.recorder.messages
    assert sent.rcpt_tos == ["alice@customer.test"] and sent.mail_from == MAILBOX_ADDRESS


@pytest.mark.parametrize(
    ("over", "names"),
    [
        ({"smtp_auth": True}, "smtp_auth = true"),
        ({"smtp_user": "support", "smtp_password": "relay-secret"}, "smtp_user / smtp_password"),
    ],
)
async def test_auth_required_by_settings_but_not_offered_stops_the_start(
    rt: Runtime, mailbox: MailFolder, smtp_relay: SmtpServer, over: dict[str, object], names: str
) -> None:
    _, sender = adapters_of(rt, _relay_section(mailbox, smtp_relay, **over))
    with pytest.raises(ConfigError, match=f"does not offer AUTH.*{names} is set.*smtp_auth = false"):
        await sender.start()
    await sender.close()


def test_reply_to_carries_the_display_name_rfc2047_encoded() -> None:
    [cfg] = parse_config(
        {"mailboxes": [{"name": "support", "address": MAILBOX_ADDRESS, "imap_host": "imap.test", "password": "x"}]}
    ).mailboxes
    msg = build_reply(_item(meta={"from": "wang@customer.test", "from_name": "王小明", "subject": "提现"}), cfg)
    raw = msg.as_bytes()
    assert b"To: =?utf-8?b?" in raw and "王小明".encode() not in raw.split(b"\n\n", 1)[0]
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert parsed["To"].addresses[0].display_name == "王小明"
    assert parsed["To"].addresses[0].addr_spec == "wang@customer.test"
    # Our own address is never a reply address, whatever an earlier message left in the conversation.
    with pytest.raises(PermanentFailure, match="own address"):
        build_reply(_item(meta={"from": "Support@Exchange.test", "subject": "x"}), cfg)


async def test_stats_shows_the_readers_count_within_a_heartbeat(rt: Runtime, mailbox: MailFolder) -> None:
    """`stats` 5 s after 5 messages were routed said "received: 0": the record was written every 5 s."""
    for i in range(5):
        await mailbox.deliver(mail(f"Deposit {i}", "My deposit is missing."))
    reader, sender = adapters_of(rt, email_section(mailbox, None))
    stopping = asyncio.Event()
    # Publishing before the reader starts: the first record says 0, the reader then takes the 5
    # (backfill_all) in its first catch-up, and the next records must say so.
    publisher = asyncio.create_task(_publish_health(rt, [reader], stopping))
    name = f"adapter:{reader.name}@{rt.instance}"

    async def reported(received: int) -> bool:
        record = (await rt.stats.read())["health"].get(name)
        return record is not None and record["received"] == received

    try:
        await wait_until(lambda: reported(0), 5, "the first health record")
        async with running([reader, sender]):
            await wait_until(
                lambda: _now(reader.state.counters["received"] == 5), 10, "the reader to take the 5 messages"
            )
            # Within two heartbeats (0.5 s in the tests' settings), not 5 s later.
            await wait_until(lambda: reported(5), 2 * rt.settings.worker.heartbeat_s + 0.5, "stats to show them")
    finally:
        stopping.set()
        await publisher


async def test_mail_arriving_during_a_catch_up_does_not_wait_for_the_idle_renewal(
    rt: Runtime, mailbox: MailFolder
) -> None:
    """Found while testing issue 21: mail delivered while a batch was fetched waited for the next
    IDLE renewal (5 min by default), its EXISTS having gone to the FETCH's response."""
    reader, sender = adapters_of(rt, email_section(mailbox, None, idle_renew_s=300))
    async with running([reader, sender]):
        await wait_until(lambda: _now(reader.mode == "idle"), 5, "IDLE")
        for i in range(30):
            await mailbox.deliver(mail(f"Deposit {i}", "My deposit is missing."))
        await wait_until(lambda: _now(reader.state.counters["received"] == 30), 10, "all 30 messages")
