"""The console's impostor review (admins only): open cases listed, dismissed and confirmed, audited."""

from __future__ import annotations

from router.config import ImpostorSettings
from router.impostors import ImpostorGuard
from tests.console.conftest import Served

SETTINGS = ImpostorSettings.model_validate({"staff": {"telegram": [{"id": 1, "names": ["Anna Kovacs"]}]}})


async def test_admins_list_dismiss_and_confirm_cases_agents_cannot(served: Served) -> None:
    guard = ImpostorGuard(SETTINGS, served.rt.impostor_cases)
    await guard.check("telegram", "bot", "7", ["Аnna Kovacs"], "chat -100")
    await guard.check("telegram", "bot", "8", ["Anna Kovacs"], "chat -100")
    await served.user("admin2", "admin")
    client, csrf = await served.browser_session("admin2")
    try:
        page = await client.get("/admin/impostors")
        assert page.status_code == 200
        assert "Аnna Kovacs" in page.text and "telegram 7" in page.text and "telegram 8" in page.text
        r = await client.post("/admin/impostors/telegram:bot:8/dismiss", data={"csrf": csrf})
        assert r.status_code == 303
        r = await client.post("/admin/impostors/telegram:bot:7/confirm", data={"csrf": csrf})
        assert r.status_code == 303
        assert "No case waiting" in (await client.get("/admin/impostors")).text
        missing = await client.post("/admin/impostors/telegram:bot:9/confirm", data={"csrf": csrf})
        assert missing.status_code == 404
    finally:
        await client.aclose()
    assert (await served.rt.impostor_cases.get("telegram:bot:7")).status == "confirmed"
    case = await served.rt.impostor_cases.get("telegram:bot:8")
    assert (case.status, case.decided_by) == ("dismissed", "admin2")
    actions = [(e.action, e.target) for e in await served.console.audit.recent(10)]
    assert ("impostor.confirm", "telegram:bot:7") in actions and ("impostor.dismiss", "telegram:bot:8") in actions

    await served.user("ann", "agent", ("payments",))
    agent, agent_csrf = await served.browser_session("ann")
    try:
        assert (await agent.get("/admin/impostors")).status_code == 403
        r = await agent.post("/admin/impostors/telegram:bot:7/dismiss", data={"csrf": agent_csrf})
        assert r.status_code == 403
    finally:
        await agent.aclose()
