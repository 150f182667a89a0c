"""The inbox, outboxes and Redis memory on /metrics, the dashboard and its samples."""

from __future__ import annotations

from router.config import AlertSettings
from tests.console.conftest import Served, eventually


async def _queued_reply(served: Served) -> None:
    cid = await served.route("my deposit is missing", user="r1")
    await served.rt.conversations.claim("payments", "agent-a", cid)
    await served.rt.conversations.reply(cid, "on its way", "agent-a")


async def test_metrics_show_what_is_in_flight(served: Served) -> None:
    await _queued_reply(served)
    async with served.api() as anon:
        text = (await anon.get("/metrics")).text
    assert 'switchboard_outbox_depth{channel="telegram"} 1.0' in text
    assert 'switchboard_outbox_pending{channel="telegram"} 0.0' in text
    assert "switchboard_inbox_lag 0.0" in text and "switchboard_inbox_pending 0.0" in text
    assert "switchboard_inbox_oldest_pending_seconds 0.0" in text
    assert "switchboard_redis_used_memory_bytes" in text and "switchboard_redis_maxmemory_bytes" in text


async def test_dashboard_shows_outboxes_and_alerts(served: Served) -> None:
    await _queued_reply(served)
    served.rt.settings.alerts = AlertSettings(outbox_depth=0)
    await served.user("root", "admin")
    client, _ = await served.browser_session("root")
    page = (await client.get("/admin/dashboard")).text
    await client.aclose()
    assert "<td>outbox telegram</td><td>1</td><td>1</td><td>0</td>" in page
    assert "outbox telegram depth 1 &gt; 0 (replies not sent yet)" in page

    async def sampled() -> bool:  # the console's own sampler, every web.sample_s
        return any(s.get("outbox") == 1 and s.get("lag") == 0 for s in await served.console.samples())

    await eventually(sampled)
