"""Presence and agent profiles in the JSON API: each agent its own status and heartbeat, admins
every profile (audited); bad input is a 400/422 with the reason."""

from __future__ import annotations

from tests.console.conftest import Served


async def test_agent_sets_its_own_status_and_beats_admin_edits_profiles(served: Served) -> None:
    admin = await served.user("boss", "admin")
    ann = await served.user("ann", "agent", ("payments",))
    async with served.api(ann) as api:
        assert (await api.post("/api/me/heartbeat")).status_code == 404  # no status yet: set one first
        got = (await api.post("/api/me/presence", json={"status": "online"})).json()
        assert got["status"] == "online" and got["groups"] == ["payments"]  # the console user's groups
        beat = (await api.post("/api/me/heartbeat")).json()
        assert beat["status"] == "online" and beat["every_s"] == served.rt.settings.assign.heartbeat_s
        assert (await api.post("/api/me/presence", json={"status": "busy"})).status_code == 422
        assert (await api.get("/api/agents")).status_code == 403  # profiles are the admins'
        assert (await api.patch("/api/agents/ann", json={"capacity": {"telegram": 9}})).status_code == 403
    async with served.api(admin) as api:
        edited = await api.patch(
            "/api/agents/ann", json={"languages": ["en", "zh"], "tags": ["vip"], "capacity": {"telegram": 3}}
        )
        assert edited.status_code == 200, edited.text
        assert edited.json()["capacity"] == {"telegram": 3} and edited.json()["tags"] == ["vip"]
        bad = await api.patch("/api/agents/ann", json={"capacity": {"telegram": -1}})
        assert bad.status_code == 400 and "capacity" in bad.json()["error"]
        [listed] = (await api.get("/api/agents")).json()["agents"]
        assert listed["name"] == "ann" and listed["languages"] == ["en", "zh"]
        audit = (await api.get("/api/audit")).json()
        assert any(e["action"] == "agent.update" and e["target"] == "ann" for e in audit)
    async with served.api(ann) as api:
        assert (await api.post("/api/me/presence", json={"status": "offline"})).json()["status"] == "offline"
        assert (await api.post("/api/me/heartbeat")).json()["status"] == "offline"  # a beat does not revive
