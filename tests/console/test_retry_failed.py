"""Issue 21: an admin sends a conversation's failed replies again from its page."""

from __future__ import annotations

from router.model import OutboxItem
from router.outbox import OutboxConsumer, PermanentFailure
from tests.console.conftest import Served, eventually


async def _refuse(item: OutboxItem) -> str:
    raise PermanentFailure("550 refused (a wrong setting, since fixed)")


async def _take(item: OutboxItem) -> str:
    return "accepted"


async def test_admin_sends_failed_replies_again_from_the_page(served: Served) -> None:
    rt = served.rt
    cid = await served.route("my withdrawal has not arrived")
    assert await rt.conversations.claim("payments", "ann", cid) == cid
    reply_id = await rt.conversations.reply(cid, "It is on its way.", "ann")
    sender = OutboxConsumer(rt.client, rt.shards, "telegram", "sender-1", block_ms=50)
    sender.start(_refuse)
    await eventually(lambda: _status(served, cid, reply_id, "failed"))
    await sender.close()

    await served.user("ann", "agent", ("payments",))
    agent, agent_csrf = await served.browser_session("ann")
    assert "Send failed replies again" not in (await agent.get(f"/conversations/{cid}")).text
    assert (await agent.post(f"/conversations/{cid}/retry-failed", data={"csrf": agent_csrf})).status_code == 403
    await agent.aclose()

    admin, csrf = await served.browser_session("admin")
    assert "Send failed replies again" in (await admin.get(f"/conversations/{cid}")).text
    answer = await admin.post(f"/conversations/{cid}/retry-failed", data={"csrf": csrf})
    assert answer.status_code == 303
    assert (await rt.conversations.deliveries(cid))[reply_id] == "queued"
    await admin.aclose()

    sender = OutboxConsumer(rt.client, rt.shards, "telegram", "sender-1", block_ms=50)
    sender.start(_take)
    await eventually(lambda: _status(served, cid, reply_id, "delivered"))
    await sender.close()


async def _status(served: Served, cid: str, reply_id: str, status: str) -> bool:
    return (await served.rt.conversations.deliveries(cid)).get(reply_id) == status
