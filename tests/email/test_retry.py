"""Issue 21: replies that failed on a configuration mistake are sent again once it is fixed."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import subprocess

from router.lifecycle import running
from router.runtime import Runtime
from router.worker import Worker
from tests.conftest import SWITCHBOARD
from tests.email.conftest import MailFolder, SmtpServer, email_section
from tests.email.test_adapter import adapters_of, delivered, envelopes, mail
from tests.router.helpers import drain


async def _switchboard(env: dict[str, str], *args: str) -> str:
    done = await asyncio.to_thread(
        subprocess.run, [*SWITCHBOARD, *args], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_failed_auto_reply_and_reply_are_sent_again_after_the_fix(
    rt: Runtime, mailbox: MailFolder, smtp_server: SmtpServer, env: dict[str, str]
) -> None:
    await mailbox.deliver(mail("My ticket status?", "What is my ticket status?", msgid="<f1@customer.test>"))
    # The mistake: a wrong SMTP password (535, a permanent failure).
    reader, sender = adapters_of(rt, email_section(mailbox, smtp_server, smtp_password="wrong"))
    async with running([reader, sender]):
        await envelopes(rt, 1)
        await drain(Worker(rt))
        [conv] = await rt.queues.head("general")
        [auto_id] = list(await rt.conversations.deliveries(conv.id))
        await delivered(rt, conv.id, auto_id, "failed")
        assert await rt.conversations.claim("general", "agent-a", conv.id) == conv.id
        reply_id = await rt.conversations.reply(conv.id, "An agent here.", "agent-a")
        await delivered(rt, conv.id, reply_id, "failed")
    assert smtp_server.recorder.messages == []

    listed = json.loads(await _switchboard(env, "outbox", "list", "--channel", "email", "--json"))
    assert {(f["conversation"], f["reply"]) for f in listed["failed"]} == {(conv.id, auto_id), (conv.id, reply_id)}
    assert all("authentication failed: 535" in f["reason"] for f in listed["failed"])
    assert listed["queued"] == 0
    # Other channels' and conversations' filters leave them out.
    assert json.loads(await _switchboard(env, "outbox", "list", "--channel", "telegram", "--json"))["failed"] == []

    # The fix (the right password), then the admin's retry.
    reader, sender = adapters_of(rt, email_section(mailbox, smtp_server))
    async with running([reader, sender]):
        out = await _switchboard(env, "outbox", "retry", "--conversation", conv.id, "--by", "admin")
        assert "2 failed reply(ies) queued to be sent again" in out
        await delivered(rt, conv.id, auto_id)
        await delivered(rt, conv.id, reply_id)
    sent = {
        email.message_from_bytes(m.content, policy=email.policy.default)["Message-ID"]
        for m in smtp_server.recorder.messages
    }
    assert sent == {f"<sb.{auto_id.lower()}@exchange.test>", f"<sb.{reply_id.lower()}@exchange.test>"}
    # Sent once each: nothing is failed any more, a second retry queues nothing.
    assert "0 failed reply(ies) queued" in await _switchboard(env, "outbox", "retry", "--channel", "email")
    history = await rt.conversations.history(conv.id)
    statuses = [h.data["status"] for h in history if h.type == "delivery" and h.data["reply"] == auto_id]
    assert statuses == ["failed", "queued", "delivered"]
