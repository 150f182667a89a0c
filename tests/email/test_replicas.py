"""Two replicas with the same mailbox: one reads it (IMAP IDLE), the other takes over on loss.

Two readers in one process stand for two replicas (their contexts carry different instance
names, the lease owner tokens). Nothing here waits for a lease to expire (the test deletes it),
so the TTL only bounds how late a renewal may be: 2 s, as in the Discord test, not 0.6 s (a loaded
machine stalls the process longer than that, and the holder loses the lease again).
"""

from __future__ import annotations

from adapters.email import MailboxReader, from_config
from router.config import LeaseSettings
from router.runtime import Runtime
from tests.email.conftest import MailFolder, email_section, inbox_envelopes, wait_until
from tests.email.test_adapter import mail

LEASES = LeaseSettings(ttl_s=2, retry_s=0.05, max_skew_s=0)


def reader(rt: Runtime, instance: str, mailbox: MailFolder) -> MailboxReader:
    ctx = rt.channel_context(instance, leases=LEASES)
    found = [a for a in from_config(ctx, email_section(mailbox, None)) if isinstance(a, MailboxReader)]
    assert len(found) == 1
    return found[0]


async def test_one_reader_per_mailbox_and_a_standby_takes_over_on_loss(rt: Runtime, mailbox: MailFolder) -> None:
    a, b = reader(rt, "replica-a", mailbox), reader(rt, "replica-b", mailbox)
    await a.start()
    await wait_until(lambda: _is(a, "held"), what="A to hold the mailbox's lease")
    await b.start()
    try:
        await wait_until(lambda: _is(b, "standby", "replica-a"), what="B to stand by behind A")
        assert b.health()["mode"] == "standby (replica-a reads)"
        await mailbox.deliver(mail("withdrawal missing", "my withdrawal has not arrived"))
        await wait_until(lambda: _count(rt, 1), what="the first mail in the inbox")
        assert a.state.counters["received"] == 1 and b.state.counters["received"] == 0

        # A loses its lease (expired while it was paused, say): it stops reading at once (its
        # connection dropped mid-IDLE), B reads from the saved UID cursor on.
        await rt.client.delete(rt.keys.lease("adapter:email:support"))
        await wait_until(lambda: _is(b, "held"), what="B to take the mailbox over")
        await wait_until(lambda: _is(a, "standby", "replica-b"), what="A to stand by behind B")
        await mailbox.deliver(mail("still missing", "any news?"))
        await wait_until(lambda: _count(rt, 2), what="the second mail in the inbox")
        assert b.state.counters["received"] == 1 and a.state.counters["received"] == 1
        subjects = [e.subject for e in await inbox_envelopes(rt.client, rt.keys.inbox)]
        assert subjects == ["withdrawal missing", "still missing"]  # nothing read twice
    finally:
        await b.close()
        await a.close()


async def _is(adapter: MailboxReader, lease: str, holder: str | None = None) -> bool:
    health = adapter.health()
    return bool(health["lease"] == lease and (holder is None or health["holder"] == holder))


async def _count(rt: Runtime, n: int) -> bool:
    return len(await inbox_envelopes(rt.client, rt.keys.inbox)) >= n
