"""The console's admission actions (admins only): ban and mute senders, ban from a conversation
(held at once), restore a held conversation; each audited."""

from __future__ import annotations

from tests.console.conftest import Served


async def test_admins_ban_mute_unban_and_restore_agents_cannot(served: Served) -> None:
    cid = await served.route("my withdrawal has not arrived", user="spammer")
    await served.user("admin2", "admin")
    client, csrf = await served.browser_session("admin2")
    try:
        r = await client.post(
            "/admin/senders",
            data={"csrf": csrf, "sender": "discord:99", "action": "mute", "for": "2h", "reason": "flood"},
        )
        assert r.status_code == 303
        page = await client.get("/admin/senders")
        assert page.status_code == 200 and "discord:99" in page.text and "muted" in page.text
        bad = await client.post(
            "/admin/senders", data={"csrf": csrf, "sender": "discord:99", "action": "mute", "for": "x"}
        )
        assert bad.status_code == 400

        # From the conversation's page: its sender banned, the conversation out of the queue at once.
        r = await client.post(f"/conversations/{cid}/ban", data={"csrf": csrf, "reason": "scam"})
        assert r.status_code == 303
        conv = await served.rt.conversations.get(cid)
        assert (conv.status, conv.held) == ("held", "banned")
        assert await served.rt.queues.head("payments") == []
        page = await client.get(f"/conversations/{cid}")
        assert "Restore to queue" in page.text and "held out of the queues" in page.text
        r = await client.post(f"/conversations/{cid}/restore", data={"csrf": csrf})
        assert r.status_code == 303
        assert [c.id for c in await served.rt.queues.head("payments")] == [cid]

        r = await client.post("/admin/senders/telegram%3Aspammer/unban", data={"csrf": csrf})
        assert r.status_code == 303
        assert [b.sender for b in await served.rt.senders.list()] == ["99"]
        again = await client.post("/admin/senders/telegram%3Aspammer/unban", data={"csrf": csrf})
        assert again.status_code == 400
    finally:
        await client.aclose()
    actions = [(e.action, e.actor, e.target) for e in await served.console.audit.recent(20)]
    assert ("sender.mute", "admin2", "discord:99") in actions
    assert ("sender.ban", "admin2", "telegram:spammer") in actions
    assert ("sender.restore", "admin2", f"conversation {cid}") in actions
    assert ("sender.unban", "admin2", "telegram:spammer") in actions

    await served.user("ann", "agent", ("payments",))
    agent, agent_csrf = await served.browser_session("ann")
    try:
        assert (await agent.get("/admin/senders")).status_code == 403
        r = await agent.post(f"/conversations/{cid}/ban", data={"csrf": agent_csrf})
        assert r.status_code == 403
        r = await agent.post("/admin/senders", data={"csrf": agent_csrf, "sender": "telegram:1", "action": "ban"})
        assert r.status_code == 403
    finally:
        await agent.aclose()
    assert (await served.rt.conversations.get(cid)).status == "new"
