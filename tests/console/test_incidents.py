"""The console's incident pages: admins open (a bad matcher refused with its reason), see linked
conversations, resolve; agents see one incident row in their queue instead of its conversations
and take one from it; audited."""

from __future__ import annotations

from tests.console.conftest import Served
from tests.router.test_incidents import FakeClock, link_all, linker, send

MATCHER = "all: [{contains_any: [withdrawal]}, {contains_any: [tron, trc20]}]"


async def test_open_link_collapse_take_and_resolve_from_the_console(served: Served) -> None:
    rt = served.rt
    link = await linker(rt, FakeClock())
    await served.user("boss", "admin")
    admin, csrf = await served.browser_session("boss")
    await served.user("ann", "agent", ("payments",))
    agent, agent_csrf = await served.browser_session("ann")
    try:
        form = {"csrf": csrf, "title": "TRON withdrawals delayed", "text_en": "Delayed, we are on it."}
        bad = await admin.post("/admin/incidents", data={**form, "matcher": "{regex: '(a)\\1'}"})
        assert bad.status_code == 400 and "backreferences" in bad.text
        r = await admin.post("/admin/incidents", data={**form, "matcher": MATCHER, "text_zh": "延迟，处理中。"})
        assert r.status_code == 303
        [inc] = await rt.incidents.recent()
        assert inc.texts == {"en": "Delayed, we are on it.", "zh": "延迟，处理中。"}

        linked = [await send(rt, f"t{i}", "my tron withdrawal is stuck") for i in range(3)]
        other = await send(rt, "plain", "my btc withdrawal is stuck")
        await link_all(link)
        page = (await agent.get("/queues?group=payments")).text
        assert "Incident: TRON withdrawals delayed (3)" in page
        assert f'data-conv="{other}"' in page and not any(f'data-conv="{c}"' in page for c in linked)
        r = await agent.post(f"/incidents/{inc.id}/claim", data={"csrf": agent_csrf, "group": "payments"})
        assert r.status_code == 303 and r.headers["location"].startswith("/conversations/")
        assert "Incident: TRON withdrawals delayed (2)" in (await agent.get("/queues?group=payments")).text
        forbidden = await agent.post(f"/incidents/{inc.id}/claim", data={"csrf": agent_csrf, "group": "security"})
        assert forbidden.status_code == 403
        assert (await agent.get(f"/admin/incidents/{inc.id}")).status_code == 403

        detail = (await admin.get(f"/admin/incidents/{inc.id}")).text
        assert "3 linked" in detail and all(f"#{c}" in detail for c in linked)
        r = await admin.post(
            f"/admin/incidents/{inc.id}/resolve", data={"csrf": csrf, "resolution_en": "Fixed.", "mode": "requeue"}
        )
        assert r.status_code == 303
        assert (await rt.incidents.get(inc.id)).state == "resolving"
    finally:
        await admin.aclose()
        await agent.aclose()
    actions = [(e.action, e.actor) for e in await served.console.audit.recent(20)]
    assert ("incident.open", "boss") in actions and ("incident.resolve", "boss") in actions
