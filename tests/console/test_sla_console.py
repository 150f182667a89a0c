"""SLA countdowns, who is online and the supervisors' view in the console (docs/console.md):
the deadlines come from the timer's own clock over the conversation's real history."""

from __future__ import annotations

import re
import time
from contextlib import aclosing

from router.worker import Worker
from tests.console.conftest import Served
from tests.router.helpers import drain, message

POLICY = """\
version: 1
targets:
  P1: {first_response: 1h, next_response: 2h, resolution: 8h}
  P2: {first_response: 1h, next_response: 2h, resolution: 8h}
  P3: {first_response: 1h, next_response: 2h, resolution: 8h}
  P4: {first_response: 1h, next_response: 2h, resolution: 8h}
"""
H = 3600_000


async def opened_at(served: Served, text: str, user: str, at_ms: int) -> str:
    """Route one message by a worker whose clock reads ``at_ms``; its conversation's id."""
    env = message(text, user=user)
    await served.rt.inbox.append(env)
    worker = Worker(served.rt, clock=lambda: at_ms)
    await worker.follow_published()
    await drain(worker)
    cid = await served.rt.client.get(served.rt.keys.conv_key(env.channel, env.account, env.conversation_key))
    assert cid is not None
    return str(cid.decode())


def by_target(body: dict[str, object]) -> dict[str, dict[str, object]]:
    targets = body["targets"]
    assert isinstance(targets, list)
    return {t["target"]: t for t in targets}


async def test_countdowns_of_every_target_for_the_agents_of_the_group_only(served: Served) -> None:
    ann = await served.user("ann", "agent", ("payments",))
    sec = await served.user("sec", "agent", ("security",))
    before = await served.route("my deposit is missing since yesterday", user="early")  # no policy yet
    await served.rt.sla.publish(POLICY, "admin")
    cid = await served.route("my deposit is missing since Monday", user="payer")
    conv = await served.rt.conversations.get(cid)
    assert conv.group == "payments" and conv.sla_policy == 1
    async with served.api(ann) as api:
        untimed = (await api.get(f"/api/conversations/{before}/sla")).json()
        assert untimed["policy"] is None and untimed["targets"] == []
        got = await api.get(f"/api/conversations/{cid}/sla")
        assert got.status_code == 200, got.text
        body = got.json()
        targets = by_target(body)
        assert set(targets) == {"first_response", "resolution"}  # no next response before a reply
        # 24/7 (no calendar): the deadlines are the opening plus the targets, to the millisecond.
        assert targets["first_response"]["deadline_ms"] == conv.created_ms + H
        assert targets["resolution"]["deadline_ms"] == conv.created_ms + 8 * H
        assert targets["first_response"]["state"] == "running" and targets["first_response"]["open"]
        assert conv.created_ms <= body["now_ms"] < conv.created_ms + H
        # The agent answers and waits on the user: first response met, resolution paused.
        claimed = await api.post("/api/groups/payments/claim", json={"conversation": cid})
        assert claimed.status_code < 300, claimed.text
        assert (await api.post(f"/api/conversations/{cid}/reply", json={"text": "checking"})).status_code == 202
        waiting = await api.post(f"/api/conversations/{cid}/waiting", json={"on": True})
        assert waiting.status_code < 300, waiting.text
        targets = by_target((await api.get(f"/api/conversations/{cid}/sla")).json())
        assert targets["first_response"]["state"] == "met" and not targets["first_response"]["open"]
        assert targets["resolution"]["paused"] and targets["resolution"]["deadline_ms"] is None
    async with served.api(sec) as api:
        assert (await api.get(f"/api/conversations/{cid}/sla")).status_code == 404  # not its group


async def test_the_conversation_page_carries_the_countdowns(served: Served) -> None:
    await served.user("ann", "agent", ("payments",))
    await served.rt.sla.publish(POLICY, "admin")
    cid = await served.route("my deposit is missing since Monday", user="payer")
    client, _ = await served.browser_session("ann")
    async with aclosing(client):
        page = (await client.get(f"/conversations/{cid}")).text
    assert 'data-sla-url="/api/conversations/' + cid + '/sla"' in page
    assert "&#34;first_response&#34;" in page  # the clock's JSON, escaped into its attribute


async def test_supervisors_see_conversations_near_a_deadline_most_urgent_first(served: Served) -> None:
    await served.user("ann", "agent", ("payments",))
    await served.rt.sla.publish(POLICY, "admin")
    first = await served.route("my deposit is missing since Monday", user="payer")
    second = await served.route("my withdrawal has not arrived", user="other")
    client, _ = await served.browser_session("admin")
    async with aclosing(client):
        near = (await client.get("/admin/sla?within=90")).text
        assert near.index(f"#{first}<") < near.index(f"#{second}<")  # the older one is due first
        far = (await client.get("/admin/sla?within=30")).text  # first response is an hour away
        assert f"#{first}<" not in far and "No conversation is within 30 minutes" in far
        # One opened two hours ago (a worker whose clock says so): breached, listed, and first.
        late = await opened_at(served, "my deposit vanished", "late", int(time.time() * 1000) - 2 * H)
        rows = re.findall(r'<tr data-conv="(\d+)">', (await client.get("/admin/sla?within=90")).text)
        assert rows == [late, first, second]
        assert re.findall(r'<tr data-conv="(\d+)">', (await client.get("/admin/sla?within=30")).text) == [late]
        await served.rt.conversations.close(late, by="admin")
        assert f"#{late}<" not in (await client.get("/admin/sla?within=90")).text  # closed: no longer watched
        assert (await client.get("/admin/sla?within=0")).status_code == 400
        assert (await client.get("/admin/sla?within=soon")).status_code == 400
    agent, _ = await served.browser_session("ann")
    async with aclosing(agent):
        assert (await agent.get("/admin/sla")).status_code == 403


async def test_the_queue_shows_who_of_the_group_is_online_and_their_load(served: Served) -> None:
    await served.user("ann", "agent", ("payments",))
    await served.user("bob", "agent", ("payments",))
    await served.user("sec", "agent", ("security",))
    await served.console.presence.set_profile("ann", capacity={"telegram": 3})
    await served.console.presence.set_status("ann", "online")
    await served.console.presence.set_status("bob", "away")
    await served.console.presence.set_status("sec", "online")
    client, _ = await served.browser_session("ann")
    async with aclosing(client):
        page = (await client.get("/queues?group=payments")).text
    rows = re.findall(r'<tr data-agent="(\w+)" class="presence-(\w+)">', page)
    assert rows == [("ann", "online"), ("bob", "away")]  # online first; not the other group's
    assert "telegram 0/3" in page
