"""Incidents (router/incidents.py, router/incident_link.py, router/incident_broadcast.py,
lua/incident.lua): the matcher's validation, linking with the status text, the collapse out of
the queue, the resolution broadcast, and its exactly-once across a broadcaster that dies midway.

Real Redis (one server, and a 3-primary cluster with 4 shards), real workers and the real sandbox
channel; time is an injected clock.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import pytest

from adapters.sandbox import SandboxUsers
from router.config import IncidentSettings
from router.errors import BadRequest, Conflict, LeaseLost
from router.events import GroupEvent
from router.incident_broadcast import Broadcaster
from router.incident_link import Linker
from router.incidents import Incident
from router.model import decode_outbox
from router.runtime import Runtime
from router.surge import suggestions
from router.worker import Workers
from rules.locale import localized
from tests.router.helpers import THREE_GROUPS, drain

pytestmark = pytest.mark.cluster(shards=4)

RULES = (
    THREE_GROUPS
    + """\
  - id: hacked
    when: {contains_any: [hacked]}
    then: {tags: [security], priority: P1, route: security}
  - id: payments
    when: {contains_any: [withdrawal, 提现]}
    then: {tags: [payments], priority: P3, route: payments}
"""
)

TRON = {"all": [{"contains_any": ["withdrawal", "提现"]}, {"contains_any": ["tron", "trc20"]}]}
TEXTS = {"en": "TRON withdrawals are delayed; we are on it.", "zh": "TRON 提现延迟，我们正在处理。"}
RESOLVED = {"en": "TRON withdrawals are back to normal.", "zh": "TRON 提现已恢复正常。"}


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES, encoding="utf-8")
    return path


@dataclass
class FakeClock:
    now: int = 1_800_000_000_000

    def now_ms(self) -> int:
        return self.now


async def send(rt: Runtime, user: str, text: str) -> str:
    """A sandbox message from ``user``, routed; its conversation id."""
    return (await send_all(rt, [(user, text)]))[0]


async def send_all(rt: Runtime, messages: list[tuple[str, str]]) -> list[str]:
    """Sandbox messages (user, text), routed in one run of the workers (a run takes every shard's
    lease first: one per message made the cluster tests slow); their conversation ids."""
    users = SandboxUsers(rt.channel_context())
    for user, text in messages:
        await users.send(user, text)
    await drain(Workers(rt))
    cids = []
    for user, _ in messages:
        keys = rt.shards.shard[rt.shards.of_key("sandbox", "default", user)]
        cid = await rt.client.get(keys.conv_key("sandbox", "default", user))
        assert cid is not None
        cids.append(str(cid.decode()))
    return cids


async def replies(rt: Runtime, cid: str) -> list[str]:
    """The texts queued for conversation ``cid`` (the sandbox outbox; nothing delivers them here)."""
    entries = await rt.client.xrange(rt.shards.conv_keys(cid).outbox("sandbox"))
    items = [decode_outbox(f[b"item"]) for _, f in entries]
    return [i.text for i in items if i.conversation == cid]


async def queued(rt: Runtime, cid: str, group: str) -> bool:
    return cid in {c.id for c in await rt.queues.head(group)}


async def linker(rt: Runtime, clock: FakeClock) -> Linker:
    link = Linker(rt, rt.incidents, clock=clock.now_ms, block_ms=20)
    await link.resume()  # positions at the streams' ends: made before routing
    return link


async def link_all(link: Linker) -> None:
    """Linker steps until it has read everything routed so far: until a step reads nothing (on a
    cluster a step takes the events of the slots that answered first, so one step may not read
    every shard's)."""
    for _ in range(50):
        before = dict(link._positions)
        await link.step()
        if link._positions == before:
            return
    raise AssertionError("the linker still read events after 50 steps")


async def open_tron(rt: Runtime) -> Incident:
    return await rt.incidents.open("TRON withdrawals delayed", TRON, TEXTS, "admin")


async def test_a_bad_matcher_or_texts_are_refused_with_the_reason(rt: Runtime) -> None:
    with pytest.raises(BadRequest, match="backreferences"):
        await rt.incidents.open("x", {"regex": r"(a)\1"}, TEXTS, "admin")
    with pytest.raises(BadRequest, match="unknown condition 'keyword'"):
        await rt.incidents.open("x", {"keyword": "tron"}, TEXTS, "admin")
    with pytest.raises(BadRequest, match="at least one condition"):
        await rt.incidents.open("x", [], TEXTS, "admin")
    with pytest.raises(BadRequest, match="'en' is required"):
        await rt.incidents.open("x", TRON, {"zh": "只有中文"}, "admin")
    with pytest.raises(BadRequest, match="title"):
        await rt.incidents.open(" ", TRON, TEXTS, "admin")
    assert await rt.incidents.recent() == []
    assert localized(TEXTS, "zh-Hans") == TEXTS["zh"] and localized(TEXTS, "ru") == TEXTS["en"]


async def test_matching_conversations_are_linked_answered_and_collapsed(rt: Runtime) -> None:
    clock = FakeClock()
    link = await linker(rt, clock)
    inc = await open_tron(rt)
    en, zh, other, p1 = await send_all(
        rt,
        [
            ("alice", "my TRON withdrawal has not arrived"),
            ("bo", "我的TRC20提现还没到账"),
            ("carol", "my BTC withdrawal has not arrived"),
            ("dave", "hacked! and my tron withdrawal is gone"),
        ],
    )
    await link_all(link)

    for cid, text in ((en, TEXTS["en"]), (zh, TEXTS["zh"])):
        conv = await rt.conversations.get(cid)
        assert conv.status == "incident" and not await queued(rt, cid, "payments")
        assert await replies(rt, cid) == [text]
        [entry] = [h for h in await rt.conversations.history(cid) if h.type == "incident"]
        assert entry.data == {"incident": inc.id, "title": inc.title, "linked": True}
    # Not matching: untouched. A P1 that matches: linked and answered, never collapsed.
    assert await queued(rt, other, "payments") and await replies(rt, other) == []
    assert (await rt.conversations.get(p1)).status == "new" and await queued(rt, p1, "security")
    assert await replies(rt, p1) == [TEXTS["en"]]
    assert sorted(await rt.incidents.linked(inc.id)) == sorted([en, zh, p1], key=int)
    counts = await rt.incidents.counts(inc.id, ["payments", "security", "general"])
    assert (counts.linked, counts.held, counts.sent) == (3, {"payments": 2}, 0)
    # The queue's one row, and claim-next that skips the collapsed conversations.
    assert [(i.id, n) for i, n in await rt.incidents.collapsed("payments")] == [(inc.id, 2)]
    assert await rt.conversations.claim("payments", "agent1") == other
    assert await rt.conversations.claim("payments", "agent1") is None
    # Handled again (a linker that restarts before storing its position): nothing twice.
    again = [GroupEvent("payments", "payments", "0-1", "created", cid, 0, {}) for cid in (en, zh)]
    assert await link.handle(again) == ["done", "done"]
    assert await replies(rt, en) == [TEXTS["en"]]


async def test_a_follow_up_is_collapsed_again_and_an_agent_claims_from_the_incident(rt: Runtime) -> None:
    clock = FakeClock()
    link = await linker(rt, clock)
    inc = await open_tron(rt)
    a = await send(rt, "erin", "tron withdrawal stuck")
    b = await send(rt, "frank", "tron withdrawal stuck too")
    await link_all(link)
    await send(rt, "erin", "any news?")
    assert await queued(rt, a, "payments")  # route.lua put it back: the user wrote
    await link_all(link)
    assert (await rt.conversations.get(a)).status == "incident" and not await queued(rt, a, "payments")
    assert await replies(rt, a) == [TEXTS["en"]]  # one status text, not two
    # An agent who opens the incident takes one, then the other; then there is none.
    first = await rt.incidents.claim(inc.id, "payments", "agent1")
    second = await rt.incidents.claim(inc.id, "payments", "agent1")
    assert {first, second} == {a, b} and await rt.incidents.claim(inc.id, "payments", "agent1") is None
    conv = await rt.conversations.get(a)
    assert (conv.status, conv.agent) == ("assigned", "agent1")


async def test_conversations_waiting_when_an_incident_opens_are_linked_too(rt: Runtime) -> None:
    clock = FakeClock()
    early, other = await send_all(rt, [("hana", "tron withdrawal stuck"), ("ivan", "my BTC withdrawal is late")])
    link = await linker(rt, clock)  # from the streams' ends: these two's events are behind it
    inc = await open_tron(rt)
    await link_all(link)
    assert (await rt.conversations.get(early)).status == "incident" and await replies(rt, early) == [TEXTS["en"]]
    assert await queued(rt, other, "payments") and await replies(rt, other) == []
    assert await rt.incidents.linked(inc.id) == [early]
    assert link.counts["swept"] == 2 and link.counts["gaps"] == 0


async def test_a_linker_behind_the_streams_cap_reads_the_queues_instead(rt: Runtime) -> None:
    """The event streams keep their newest ~10,000 entries: a linker further behind (a surge)
    would never see the trimmed ones. Here the cap is played by an exact XTRIM."""
    clock = FakeClock()
    link = await linker(rt, clock)
    inc = await open_tron(rt)
    await link.step()  # it has seen the incident (and swept an empty queue)
    shard = rt.shards.of_key("sandbox", "default", "u0")
    users = [u for u in (f"u{i}" for i in range(2000)) if rt.shards.of_key("sandbox", "default", u) == shard][:130]
    cids = await send_all(rt, [(u, "tron withdrawal stuck") for u in users])
    stream = rt.shards.shard[shard].events("payments")
    assert await rt.client.xlen(stream) >= 130
    await rt.client.xtrim(stream, maxlen=110, approximate=False)  # 20+ created events lost
    await link_all(link)
    assert link.counts["gaps"] == 1
    assert sorted(await rt.incidents.linked(inc.id), key=int) == sorted(cids, key=int)
    assert all([await replies(rt, cid) == [TEXTS["en"]] for cid in cids])  # each told once


async def test_stale_collapsed_entries_are_pruned(rt: Runtime) -> None:
    clock = FakeClock()
    link = await linker(rt, clock)
    inc = await open_tron(rt)
    a = await send(rt, "gina", "tron withdrawal stuck")
    await link_all(link)
    await rt.conversations.close(a, "agent1", "resolved")  # an agent closed it by its id
    assert await link.prune() == 1
    assert await rt.incidents.collapsed("payments") == []
    assert await rt.incidents.claim(inc.id, "payments", "agent1") is None


async def resolved_texts(rt: Runtime, cids: list[str]) -> dict[str, int]:
    out = {}
    for cid in cids:
        texts = await replies(rt, cid)
        out[cid] = sum(t in RESOLVED.values() for t in texts)
    return out


@pytest.mark.parametrize("mode", ["close", "requeue"])
async def test_resolve_sends_the_resolution_once_and_closes_or_requeues(rt: Runtime, mode: str) -> None:
    clock = FakeClock()
    link = await linker(rt, clock)
    inc = await open_tron(rt)
    *cids, p1 = await send_all(
        rt, [*((f"u{i}", "tron withdrawal stuck") for i in range(5)), ("victim", "hacked, tron withdrawal gone")]
    )
    await link_all(link)
    taken = await rt.incidents.claim(inc.id, "payments", "agent1")
    assert taken is not None
    with pytest.raises(BadRequest, match="mode"):
        await rt.incidents.resolve(inc.id, "admin", RESOLVED, "delete")
    resolving = await rt.incidents.resolve(inc.id, "admin", RESOLVED, mode)
    assert resolving.state == "resolving"
    # Nothing links to it from now on.
    late = await send(rt, "late", "tron withdrawal stuck")
    await link_all(link)
    assert await replies(rt, late) == [] and await queued(rt, late, "payments")

    b = Broadcaster(rt, rt.incidents, owner="b1", clock=clock)
    assert await b.tick() == 6  # the sandbox's rate (20/s) covers them in one round
    assert await b.tick() == 0
    assert (await rt.incidents.get(inc.id)).state == "resolved"
    assert await resolved_texts(rt, [*cids, p1]) == dict.fromkeys([*cids, p1], 1)
    for cid in cids:
        conv = await rt.conversations.get(cid)
        if cid == taken:
            assert conv.status == "assigned"  # an agent has it: the agent decides
        elif mode == "close":
            assert conv.status == "closed"
        else:
            assert conv.status == "new" and await queued(rt, cid, "payments")
    assert (await rt.conversations.get(p1)).status == "new"  # a P1 stays in front of an agent
    events = [h["event"] for h in await rt.incidents.history(inc.id)]
    assert events == ["opened", "resolving", "resolved"]
    assert (await rt.incidents.history(inc.id))[-1]["linked"] == 6
    audit = [(e.action, e.actor) for e in await rt.incidents._audit.recent()]
    assert ("incident.resolve", "admin") in audit and ("incident.open", "admin") in audit
    with pytest.raises(Conflict):
        await rt.incidents.resolve(inc.id, "admin", RESOLVED, mode)


async def test_the_broadcast_is_rate_limited_per_channel_and_exactly_once_across_a_takeover(rt: Runtime) -> None:
    clock = FakeClock()
    link = await linker(rt, clock)
    inc = await open_tron(rt)
    cids = await send_all(rt, [(f"user{i}", "tron withdrawal stuck") for i in range(12)])
    await link_all(link)
    await rt.incidents.resolve(inc.id, "admin", RESOLVED, "close")
    slow = IncidentSettings(rates={"sandbox": 1.0})  # one a round per shard at least
    dead = Broadcaster(rt, rt.incidents, owner="dead", clock=clock, settings=slow)
    first = await dead.tick()
    fences = [(keys, lease.fence) for keys, lease in zip(rt.shards.shard, dead.leases, strict=True) if lease.fence]
    assert 1 <= first <= rt.shards.count  # rate-limited: not all at once
    # It dies here (no close: its leases stay until they expire). Another cannot take over yet.
    heir = Broadcaster(rt, rt.incidents, owner="heir", clock=clock, settings=slow)
    assert await heir.tick() == 0
    clock.now += rt.settings.leases.ttl_ms + 1
    assert first + await broadcast_all(rt, inc.id, clock, heir) == len(cids)
    # The dead one wakes up: its leases are gone, and a script call under an old fence is
    # refused whole. Nothing is sent twice.
    assert await dead.tick() == 0
    for keys, fence in fences:
        with pytest.raises(LeaseLost):
            await dead._call(keys, "send", {"incident": inc.id, "mode": "close", "items": {}, "fence": fence})
    assert await resolved_texts(rt, cids) == dict.fromkeys(cids, 1)
    # The script's own guard: the same conversations sent again change nothing.
    keys = rt.shards.conv_keys(cids[0])
    again = await dead._call(keys, "send", {"incident": inc.id, "mode": "close", "items": {cids[0]: {}}, "fence": 0})
    assert again == [0, 1]


async def test_a_broadcaster_cancelled_midway_is_resumed_by_another(rt: Runtime) -> None:
    clock = FakeClock()
    link = await linker(rt, clock)
    inc = await open_tron(rt)
    cids = await send_all(rt, [(f"v{i}", "tron withdrawal stuck") for i in range(8)])
    await link_all(link)
    await rt.incidents.resolve(inc.id, "admin", RESOLVED, "requeue")
    slow = IncidentSettings(rates={"sandbox": 1.0}, tick_s=0.01)
    first = Broadcaster(rt, rt.incidents, owner="first", clock=clock, settings=slow)
    run = asyncio.create_task(first.rounds.run(first.tick, asyncio.Event(), slow.tick_s))
    for _ in range(200):
        if first.sent:
            break
        await asyncio.sleep(0.005)
    run.cancel()  # killed wherever it was: a script either ran whole or not at all
    with pytest.raises(asyncio.CancelledError):
        await run
    clock.now += rt.settings.leases.ttl_ms + 1
    await broadcast_all(rt, inc.id, clock, Broadcaster(rt, rt.incidents, owner="second", clock=clock, settings=slow))
    assert await resolved_texts(rt, cids) == dict.fromkeys(cids, 1)
    assert all([await queued(rt, cid, "payments") for cid in cids])


async def broadcast_all(rt: Runtime, incident_id: str, clock: FakeClock, b: Broadcaster | None = None) -> int:
    """Broadcaster rounds (of ``b``, else a new one) until the incident is resolved; the texts sent."""
    b = b or Broadcaster(rt, rt.incidents, owner="e2e", clock=clock)
    sent = 0
    for _ in range(40):
        sent += await b.tick()
        if (await rt.incidents.get(incident_id)).state == "resolved":
            await b.close()
            return sent
    raise AssertionError(f"incident {incident_id} not resolved after 40 rounds")


async def test_a_tag_surging_above_its_baseline_is_suggested(rt: Runtime) -> None:
    clock = FakeClock()
    link = await linker(rt, clock)
    settings = IncidentSettings(surge_window_m=30, surge_baseline_h=1, surge_factor=3.0, surge_min=4)
    # The hour before: security usual (8: 4 a 30-minute window), payments rare (1).
    clock.now -= 3_600_000
    await send_all(rt, [*((f"s{i}", "I was hacked") for i in range(8)), ("p0", "withdrawal late")])
    await link_all(link)
    clock.now += 3_600_000
    # Now: payments 6 (12x its 0.5 a window), security 5 (1.25x: usual).
    now = await send_all(
        rt, [*((f"p{i}", "withdrawal late") for i in range(1, 7)), *((f"s{i}", "hacked again") for i in range(8, 13))]
    )
    await link_all(link)
    found = await suggestions(rt.client, rt.shards, settings, clock.now)
    assert [(s.tag, s.recent, s.baseline, s.ratio) for s in found] == [("payments", 6, 0.5, 12.0)]
    # Counted once per conversation: the same events handled again (a restarted linker) add nothing.
    await link.handle([GroupEvent("payments", "payments", "0-1", "created", cid, 0, {}) for cid in now])
    assert await suggestions(rt.client, rt.shards, settings, clock.now) == found
    # Under the minimum count, however steep, no suggestion.
    assert await suggestions(rt.client, rt.shards, settings.model_copy(update={"surge_min": 7}), clock.now) == []
