"""SLA policies published as data, and the SLA timer (router/slastore.py, router/slatimer.py)
against a real Redis, in simulated time: the conversations, the routing and the timers all take
their time from one fake clock that the tests move; nothing sleeps."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from redis.exceptions import ResponseError

from router.config import SlaDestination
from router.console.metrics import _Snapshot, sla_families
from router.conversations import Conversations, HistoryEntry
from router.errors import Conflict, NotFound
from router.retention import DAY_MS, Retention
from router.runtime import Runtime
from router.slatimer import SlaTimer
from router.worker import Worker
from sla import PolicyError
from tests.router.helpers import drain, message

pytestmark = pytest.mark.cluster(shards=4)

POLICY = """\
version: 1
calendars:
  office:
    tz: Europe/Berlin
    hours:
      mon-fri: ["09:00-12:00", "13:00-18:00"]
    holidays:
      - 2026-12-25
default_calendar: office
groups:
  payments: 24/7
targets:
  P1: {first_response: 15m}
  P2: {first_response: 1h, next_response: 2h, resolution: 8h}
  P3: {first_response: 4h}
  P4: {}
escalations:
  first_response:
    - at: 50%
      do: [{notify: supervisors}]
    - at: 100%
      do: [{notify: supervisors}]
    - at: +30m
      do: [{raise_priority: 1}, {move_group: security}, {reassign: true}]
"""

H = 3600_000
M = 60_000


def registry_of(families: list[Any]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(families))
    return registry


def utc_ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


@dataclass
class FakeClock:
    now: int

    def now_ms(self) -> int:
        return self.now


async def open_conversation(rt: Runtime, clock: FakeClock, text: str, user: str) -> str:
    """Route one message at the clock's time; the id of its conversation."""
    env = message(text, user=user)
    await rt.inbox.append_many([env])
    worker = Worker(rt, shard=rt.shards.of_key(env.channel, env.account, env.conversation_key), clock=clock.now_ms)
    await worker.follow_published()
    await drain(worker)
    keys = rt.shards.shard[rt.shards.of_key(env.channel, env.account, env.conversation_key)]
    cid = await rt.client.get(keys.conv_key(env.channel, env.account, env.conversation_key))
    assert cid is not None
    return str(cid.decode())


def sla_entries(history: list[HistoryEntry]) -> list[str]:
    return [h.data.get("point") or f"breached {h.data['breached']}" for h in history if h.type == "sla"]


async def score(rt: Runtime, cid: str) -> int | None:
    found = await rt.client.zscore(rt.shards.conv_keys(cid).sla_due, cid)
    return None if found is None else int(found)


async def stat(rt: Runtime, name: str) -> int:
    total = 0
    for keys in rt.shards.shard:
        total += int(await rt.client.hget(keys.stats, name) or 0)
    return total


async def test_a_policy_is_published_checked_against_the_rules_and_rolled_back(rt: Runtime) -> None:
    assert await rt.sla.active_number() is None
    first = await rt.sla.publish(POLICY, "admin", "office hours")
    assert first.number == 1 and await rt.sla.active_number() == 1
    with pytest.raises(PolicyError) as bad:
        await rt.sla.publish(POLICY.replace("1h, next", "1 hour, next"), "admin")
    assert "bad duration '1 hour'" in str(bad.value.errors[0])
    with pytest.raises(PolicyError) as unknown:
        await rt.sla.publish(POLICY.replace("move_group: security", "move_group: legal"), "admin")
    assert "'legal' is not a group of the rule set in force" in str(unknown.value.errors[0])
    assert await rt.sla.active_number() == 1  # the running policy stays
    second = await rt.sla.publish(POLICY.replace("P3: {first_response: 4h}", "P3: {first_response: 2h}"), "lead")
    assert second.number == 2
    assert "-  P3: {first_response: 4h}" in await rt.sla.diff(1, 2)
    back = await rt.sla.rollback("admin")
    assert back.number == 1 and await rt.sla.active_number() == 1
    assert [e["action"] for e in await rt.sla.log()] == ["rollback", "publish", "publish"]


async def test_without_a_policy_routing_is_unchanged_and_nothing_is_timed(rt: Runtime) -> None:
    clock = FakeClock(utc_ms(2026, 12, 24, 15))
    cid = await open_conversation(rt, clock, "hello", "nopolicy")
    conv = await rt.conversations.get(cid)
    assert conv.sla_policy is None and conv.due_ms == clock.now + 4 * H  # conversations.sla_s
    assert await score(rt, cid) is None
    assert await SlaTimer(rt, owner="A", clock=clock).tick() == 0


async def test_first_response_breach_fires_once_at_the_right_time_across_hours_and_a_holiday(rt: Runtime) -> None:
    await rt.sla.publish(POLICY, "admin")
    # Thursday 24 December 2026, 16:00 in Berlin (15:00 UTC); group general, P3: 4 business hours.
    # Thursday 16-18 gives 2; Friday 25 is a holiday, then the weekend; Monday 09-11 the other 2.
    clock = FakeClock(utc_ms(2026, 12, 24, 15))
    cid = await open_conversation(rt, clock, "hello", "office")
    assert (await rt.conversations.get(cid)).sla_policy == 1
    timer = SlaTimer(rt, owner="A", clock=clock)
    assert await timer.tick() == 0
    half, deadline = utc_ms(2026, 12, 24, 17), utc_ms(2026, 12, 28, 10)
    assert await score(rt, cid) == half  # the 50% point: Thursday's closing time, 18:00 Berlin
    # The queue is ordered by the policy's deadline (business time), not the configured 4 h.
    assert (await rt.conversations.get(cid)).due_ms == deadline

    clock.now = half - 1
    assert await timer.tick() == 0
    clock.now = half
    assert await timer.tick() == 1
    assert await score(rt, cid) == deadline
    clock.now = utc_ms(2026, 12, 25, 12)  # the holiday: nothing due
    assert await timer.tick() == 0
    clock.now = deadline - 1
    assert await timer.tick() == 0
    assert await stat(rt, "sla_breached:first_response") == 0
    clock.now = deadline
    assert await timer.tick() == 1
    assert await timer.tick() == 0  # once
    assert await stat(rt, "sla_breached:first_response") == 1
    history = await rt.conversations.history(cid)
    assert sla_entries(history) == ["50%", "breached first_response", "100%"]
    breach = next(h for h in history if h.type == "sla" and "breached" in h.data)
    assert breach.at_ms == deadline and breach.data["deadline_ms"] == deadline


async def test_escalation_raises_moves_and_reassigns_and_notifies_supervisors(rt: Runtime) -> None:
    await rt.sla.publish(POLICY, "admin")
    clock = FakeClock(utc_ms(2026, 12, 28, 8))  # Monday 09:00 Berlin
    cid = await open_conversation(rt, clock, "hello", "ladder")
    conversations = Conversations(rt.client, rt.settings, rt.scripts, shards=rt.shards, clock=clock.now_ms)
    assert await conversations.claim("general", "ann", cid) == cid
    timer = SlaTimer(rt, owner="A", clock=clock)
    await timer.tick()
    clock.now += 4 * H + H + 30 * M  # 4 business hours + the lunch hour + 30 minutes
    assert await timer.tick() == 3  # 50%, 100% and +30m, in that order, in one tick
    conv = await rt.conversations.get(cid)
    assert (conv.group, conv.priority, conv.agent, conv.status) == ("security", 2, "", "new")
    assert cid in [c.id for c in await rt.queues.head("security")]
    history = await rt.conversations.history(cid)
    assert sla_entries(history) == ["50%", "breached first_response", "100%", "+30m"]
    changes = [h.data for h in history if h.type == "status" and h.data.get("by") == "sla"]
    assert changes == [
        {"prio": 2, "from": 3, "by": "sla"},
        {"group": "security", "from": "general", "by": "sla", "reason": "escalated"},
    ]  # the reassign found it unassigned already: the move put it back in a queue


async def test_notify_goes_to_a_configured_destination_through_the_outbox(rt: Runtime) -> None:
    rt.settings.sla.notify = {"supervisors": SlaDestination(channel="telegram", account="bot1", to="-100777")}
    await rt.sla.publish(POLICY, "admin")
    clock = FakeClock(utc_ms(2026, 12, 28, 8))
    cid = await open_conversation(rt, clock, "hello", "notify")
    timer = SlaTimer(rt, owner="A", clock=clock)
    clock.now += 2 * H
    assert await timer.tick() == 1
    outbox = await rt.client.xrange(rt.shards.conv_keys(cid).outbox("telegram"))
    items = [fields[b"item"].decode() for _, fields in outbox]
    assert len(items) == 1 and '"conversation_key":"-100777"' in items[0] and "first response 50%" in items[0]
    assert '"auto":true' in items[0]


async def test_waiting_on_user_pauses_next_response_and_resolution_never_first_response(rt: Runtime) -> None:
    await rt.sla.publish(POLICY, "admin")
    t0 = utc_ms(2026, 12, 26, 10)  # a Saturday: payments is 24/7
    clock = FakeClock(t0)
    conversations = Conversations(rt.client, rt.settings, rt.scripts, shards=rt.shards, clock=clock.now_ms)
    timer = SlaTimer(rt, owner="A", clock=clock)

    # First response never pauses: waiting on the user before any answer does not stop its clock.
    silent = await open_conversation(rt, clock, "my deposit is missing", "silent")
    assert await conversations.claim("payments", "bob", silent) == silent
    with pytest.raises(Conflict):  # in the queue: nothing to wait for yet
        await conversations.wait_on_user(await open_conversation(rt, clock, "hello", "queued"), True, "bob")
    clock.now = t0 + 5 * M
    await conversations.wait_on_user(silent, True, "bob")

    # Next response and resolution pause: opened at 5 min, answered at 10 min, then waiting on the
    # user until 9 h.
    paused = await open_conversation(rt, clock, "withdrawal stuck", "paused")
    clock.now = t0 + 10 * M
    await conversations.reply(paused, "Which network did you use?", "bob")
    await conversations.wait_on_user(paused, True, "bob")
    clock.now = t0 + 9 * H
    await timer.tick()
    assert await stat(rt, "sla_breached:first_response") == 1  # `silent`, at t0 + 1 h
    assert await stat(rt, "sla_met:first_response") == 1  # `paused`, answered in 10 min
    assert await stat(rt, "sla_breached:resolution") == 0  # 9 h open, but paused after 5 min of it
    # The user answers: the pause ends, a next-response cycle starts (2 h), resolution resumes.
    await open_conversation(rt, clock, "TRC20", "paused")
    await timer.tick()
    assert await score(rt, paused) == t0 + 11 * H
    clock.now = t0 + 11 * H
    await timer.tick()
    assert await stat(rt, "sla_breached:next_response") == 1
    assert await stat(rt, "sla_breached:resolution") == 0
    # Resolution: 8 h, of which 5 min ran before the pause: 7 h 55 min after the user's answer.
    clock.now = t0 + 9 * H + 8 * H - 5 * M - 1
    await timer.tick()
    assert await stat(rt, "sla_breached:resolution") == 0
    clock.now += 1
    await timer.tick()
    assert await stat(rt, "sla_breached:resolution") == 1
    figures = (await rt.stats.totals()).sla()
    assert figures["first_response"] == {"met": 1, "breached": 1, "attainment": 0.5}
    exposition = generate_latest(registry_of(sla_families(figures))).decode()
    assert 'switchboard_sla_outcomes_total{outcome="breached",target="resolution"} 1.0' in exposition
    assert 'switchboard_sla_attainment{target="first_response"} 0.5' in exposition


async def test_a_follow_up_that_raises_the_priority_retargets_the_clock(rt: Runtime) -> None:
    await rt.sla.publish(POLICY, "admin")
    start = utc_ms(2026, 12, 28, 8)  # Monday 09:00 Berlin
    clock = FakeClock(start)
    cid = await open_conversation(rt, clock, "hello", "followup")  # general (defaults), P3: 4 h
    timer = SlaTimer(rt, owner="A", clock=clock)
    await timer.tick()
    assert await score(rt, cid) == start + 2 * H  # the 50% point of 4 business hours
    clock.now = start + 10 * M
    # The rules now know better: payments (24/7 in the policy), P2 — 1 h from the change.
    assert await open_conversation(rt, clock, "my deposit is missing", "followup") == cid
    assert await score(rt, cid) == clock.now  # the route script woke the timer
    await timer.tick()
    assert await score(rt, cid) == start + 10 * M + 30 * M  # 50% of P2's hour, from the change
    history = await rt.conversations.history(cid)
    assert {"prio": 2, "from": 3, "by": "rules"} in [h.data for h in history if h.type == "status"]
    conv = await rt.conversations.get(cid)
    assert (conv.group, conv.priority, conv.due_ms) == ("payments", 2, start + 70 * M)


async def run_until(clock: FakeClock, until: int, *timers: SlaTimer, step: int = 10 * M) -> list[int]:
    """Move the clock to ``until`` ``step`` by ``step``, each timer ticking at each step (so a
    live timer renews its leases); the steps each carried out."""
    fired = [0] * len(timers)
    while clock.now < until:
        clock.now = min(until, clock.now + step)
        for i, timer in enumerate(timers):
            fired[i] += await timer.tick()
    return fired


async def test_steps_run_in_order_exactly_once_with_two_timers_and_a_restart(rt: Runtime) -> None:
    rt.settings.leases.ttl_s = 3600  # the timers tick every 10 simulated minutes
    await rt.sla.publish(POLICY, "admin")
    start = utc_ms(2026, 12, 28, 8)  # Monday 09:00 Berlin, P3: first response in 4 business hours
    clock = FakeClock(start)
    cid = await open_conversation(rt, clock, "hello", "twotimers")
    a, b = SlaTimer(rt, owner="A", clock=clock), SlaTimer(rt, owner="B", clock=clock)
    await a.tick()
    await b.tick()
    assert a.held() == list(range(rt.shards.count)) and b.held() == []
    assert await run_until(clock, start + 2 * H, a, b) == [1, 0]  # 50%: A holds the shards
    await a.close()  # a clean stop releases the leases: B takes over at its next tick
    assert await run_until(clock, start + 5 * H, b) == [1]  # 100% (the lunch hour does not count)
    assert b.held() == list(range(rt.shards.count))
    # B dies without releasing; A comes back (a new timer) and waits out B's lease: the +30m step
    # (due at 5 h 30) fires when B's lease expires, one TTL after its last renewal at 5 h.
    restarted = SlaTimer(rt, owner="A", clock=clock)
    assert await run_until(clock, start + 5 * H + 50 * M, restarted) == [0]
    assert await run_until(clock, start + 6 * H, restarted) == [1]
    # B wakes up believing it still holds its leases: its fence is refused, nothing is written.
    stale = b.leases[rt.shards.of_conv(cid)].fence
    assert stale is not None
    forged = [{"id": "x/forged", "target": "first_response", "point": "x", "actions": [], "items": {}}]
    with pytest.raises(ResponseError, match="FENCED"):
        await rt.scripts.conv(args=rt.conversations.sla_call(cid, stale, seen="", todo=forged, due=None, next=None))
    assert await b.tick() == 0 and b.held() == []
    assert await restarted.tick() == 0
    assert sla_entries(await rt.conversations.history(cid)) == ["50%", "breached first_response", "100%", "+30m"]


async def test_a_conversation_deleted_meanwhile_leaves_the_timer(rt: Runtime) -> None:
    await rt.sla.publish(POLICY, "admin")
    clock = FakeClock(utc_ms(2026, 12, 28, 8))
    cid = await open_conversation(rt, clock, "hello", "gone")
    await rt.client.delete(rt.shards.conv_keys(cid).conv(cid))
    assert await SlaTimer(rt, owner="A", clock=clock).tick() == 0
    assert await score(rt, cid) is None
    with pytest.raises(NotFound):
        await rt.conversations.get(cid)


async def test_a_closed_conversation_leaves_the_timer_and_its_records_go_with_it(rt: Runtime) -> None:
    await rt.sla.publish(POLICY, "admin")
    clock = FakeClock(utc_ms(2026, 12, 28, 8))
    cid = await open_conversation(rt, clock, "hello", "closing")
    conversations = Conversations(rt.client, rt.settings, rt.scripts, shards=rt.shards, clock=clock.now_ms)
    timer = SlaTimer(rt, owner="A", clock=clock)
    await timer.tick()
    clock.now += 30 * M
    await conversations.close(cid, "ann")  # before the first response's deadline: met
    assert await score(rt, cid) == clock.now  # the close woke the timer
    await timer.tick()
    assert await stat(rt, "sla_met:first_response") == 1
    assert await score(rt, cid) is None  # nothing left to watch
    keys = rt.shards.conv_keys(cid)
    assert await rt.client.scard(keys.sla_fired(cid)) == 1
    swept = await Retention(rt.client, rt.settings, "sweeper", keys=keys).sweep(clock.now + 31 * DAY_MS)
    assert swept.conversations == 1 and await rt.client.exists(keys.sla_fired(cid)) == 0
