"""Automatic assignment in one process against a real Redis: policies, capacity, presence with an
injected clock, sticky, re-offer, overflow, and the reservations a crash leaves behind."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from router import assignment
from router.assignment import Assigner
from router.config import AssignSettings
from router.errors import BadRequest, ConfigError
from router.presence import Presence, parse_capacity
from router.runtime import Runtime
from router.scripts import now_ms
from router.worker import Workers
from sla.assignment import AssignmentPolicies, AssignmentPolicyError, load
from tests.router.helpers import drain, message

pytestmark = pytest.mark.cluster(shards=4)

SETTINGS = AssignSettings(grace_s=60, heartbeat_s=10, reservation_s=90)


class FakeClock:
    """Stands still at the wall time it was made at, plus an offset the test moves. (The scripts'
    own now is wall time: step 2 checks a reservation's expiry, made by this clock, against it;
    the tests take far less than ``reservation_s``.)"""

    def __init__(self) -> None:
        self.base = now_ms()
        self.offset = 0

    def now_ms(self) -> int:
        return self.base + self.offset


def policies(text: str) -> AssignmentPolicies:
    return load("version: 1\ngroups:\n" + text)


def assigner(rt: Runtime, pol: AssignmentPolicies, clock: FakeClock) -> Assigner:
    presence = Presence(rt.client, rt.keys, SETTINGS, clock)
    return Assigner(rt.client, rt.shards, rt.scripts, rt.conversations, presence, pol, SETTINGS, clock=clock)


async def agents(a: Assigner, names: list[str], capacity: int = 3, **profile: list[str]) -> None:
    for name in names:
        await a.presence.set_profile(name, groups=["payments"], capacity={"telegram": capacity}, **profile)
        await a.presence.set_status(name, "online")
    await a.refresh()


async def fill(rt: Runtime, n: int, text: str = "my deposit is missing", start: int = 0) -> None:
    await rt.inbox.append_many([message(text, user=f"user{start + i}") for i in range(n)])
    await drain(Workers(rt))


async def assign_all(a: Assigner) -> int:
    total = 0
    for shard in range(a.shards.count):
        total += await a.assign_shard(shard)
    return total


async def assigned_entries(rt: Runtime) -> list[tuple[str, str]]:
    out = []
    for c in await rt.queues.conversations.get_many([str(i) for i in range(1, 200)]):
        for h in await rt.conversations.history(c.id):
            if h.type == "status" and h.data.get("status") == "assigned":
                out.append((c.id, h.data["agent"]))
    return out


async def test_least_loaded_fills_capacity_and_never_beyond(rt: Runtime) -> None:
    a = assigner(rt, policies("  payments: {policy: least_loaded}\n"), FakeClock())
    await agents(a, ["ann", "bob"])
    await fill(rt, 10)
    assert await assign_all(a) == 6
    mine = {n: len(await rt.conversations.of_agent(n)) for n in ("ann", "bob")}
    assert mine == {"ann": 3, "bob": 3}
    assert (await rt.queues.stats(["payments"]))[0].depth == 4
    entries = await assigned_entries(rt)
    assert len(entries) == 6 and len({cid for cid, _ in entries}) == 6
    assert all(h for h in entries)
    # An agent closing one frees a unit once the sweep sees it; then exactly one more goes out.
    closed = (await rt.conversations.of_agent("ann"))[0].id
    await rt.conversations.close(closed, "ann")
    assert await assign_all(a) == 0
    await a.sweep()
    assert await assign_all(a) == 1
    assert len(await rt.conversations.of_agent("ann")) == 3


async def test_round_robin_takes_turns(rt: Runtime) -> None:
    a = assigner(rt, policies("  payments: {policy: round_robin}\n"), FakeClock())
    await agents(a, ["ann", "bob", "cid"], capacity=10)
    await fill(rt, 6)
    assert await assign_all(a) == 6
    got = [agent for _, agent in sorted(await assigned_entries(rt), key=lambda e: int(e[0]))]
    assert sorted(got) == ["ann", "ann", "bob", "bob", "cid", "cid"]


async def test_skills_filter_language_and_tags(rt: Runtime) -> None:
    a = assigner(rt, policies("  payments: {policy: least_loaded, skill_tags: [payments]}\n"), FakeClock())
    await agents(a, ["ann"], languages=["zh"])  # no "payments" tag, and not English
    await agents(a, ["bob"], languages=["en"], tags=["payments"])
    await fill(rt, 2)
    assert await assign_all(a) == 2
    assert {agent for _, agent in await assigned_entries(rt)} == {"bob"}


async def test_manual_groups_and_no_policy_assign_nothing(rt: Runtime) -> None:
    a = assigner(rt, AssignmentPolicies.none(), FakeClock())
    await agents(a, ["ann"])
    await fill(rt, 2)
    assert await assign_all(a) == 0
    assert await rt.conversations.claim("payments", "ann") is not None  # today's claim, unchanged


async def test_away_and_offline_agents_get_nothing(rt: Runtime) -> None:
    a = assigner(rt, policies("  payments: {policy: least_loaded}\n"), FakeClock())
    await agents(a, ["ann", "bob"])
    await a.presence.set_status("ann", "away")
    await a.presence.set_status("bob", "offline")
    await a.refresh()
    await fill(rt, 2)
    assert await assign_all(a) == 0


async def test_heartbeat_lapse_requeues_after_the_grace_and_not_before(rt: Runtime) -> None:
    clock = FakeClock()
    a = assigner(rt, policies("  payments: {policy: least_loaded}\n"), clock)
    await agents(a, ["ann"])
    await fill(rt, 2)
    assert await assign_all(a) == 2
    clock.offset = 59_000  # the grace is 60 s: still alive
    await a.sweep()
    assert len(await rt.conversations.of_agent("ann")) == 2
    await a.presence.beat("ann")  # a beat at +59 s keeps it another 60 s
    clock.offset = 118_000
    await a.sweep()
    assert len(await rt.conversations.of_agent("ann")) == 2
    clock.offset = 120_000  # the heartbeats stopped at +59 s: gone now
    await a.sweep()
    assert await rt.conversations.of_agent("ann") == []
    assert (await rt.queues.stats(["payments"]))[0].depth == 2
    for c in await rt.queues.head("payments"):
        last = [h for h in await rt.conversations.history(c.id) if h.type == "status"][-1]
        assert last.data == {"status": "new", "by": "assign", "reason": "agent offline", "agent": "ann"}
    assert (await a.presence.get("ann")).load == {}  # the sweep gave the capacity back
    assert await assign_all(a) == 0  # and nothing goes to a gone agent


async def test_sticky_only_while_the_previous_agent_is_online(rt: Runtime) -> None:
    a = assigner(rt, policies("  payments: {policy: least_loaded, sticky: true}\n"), FakeClock())
    await agents(a, ["ann", "bob"], capacity=5)
    await fill(rt, 1)
    assert await assign_all(a) == 1
    [(cid, first)] = await assigned_entries(rt)
    other = "bob" if first == "ann" else "ann"
    await rt.conversations.release(cid, first)
    # Make the other agent the less loaded one: sticky still wins while the first is online.
    await fill(rt, 1, start=50)
    await a.refresh()
    assert await assign_all(a) == 2
    assert (await rt.conversations.get(cid)).agent == first
    await rt.conversations.release(cid, first)
    await a.presence.set_status(first, "offline")
    await a.sweep()
    assert await assign_all(a) == 1
    assert (await rt.conversations.get(cid)).agent == other


async def test_reoffer_after_no_first_reply_at_most_max_hops(rt: Runtime) -> None:
    clock = FakeClock()
    a = assigner(rt, policies("  payments: {policy: round_robin, reoffer: {after: 30s, max_hops: 1}}\n"), clock)
    await agents(a, ["ann", "bob", "cid"])
    await fill(rt, 1)
    assert await assign_all(a) == 1
    [(conv, first)] = await assigned_entries(rt)
    clock.offset = 29_000
    await a.sweep()
    assert (await rt.conversations.get(conv)).agent == first
    clock.offset = 31_000
    await a.sweep()
    assert (await rt.conversations.get(conv)).status == "new"
    assert await assign_all(a) == 1
    second = (await rt.conversations.get(conv)).agent
    assert second not in ("", first)
    clock.offset = 62_000
    for name in ("ann", "bob", "cid"):
        await a.presence.beat(name)
    await a.sweep()  # one hop only: it stays
    assert (await rt.conversations.get(conv)).agent == second


async def test_reply_stops_the_reoffer(rt: Runtime) -> None:
    clock = FakeClock()
    a = assigner(rt, policies("  payments: {policy: least_loaded, reoffer: {after: 30s}}\n"), clock)
    await agents(a, ["ann"])
    await fill(rt, 1)
    await assign_all(a)
    [(conv, _)] = await assigned_entries(rt)
    await rt.conversations.reply(conv, "on it", "ann")
    clock.offset = 40_000
    await a.presence.beat("ann")
    await a.sweep()
    assert (await rt.conversations.get(conv)).agent == "ann"


async def test_overflow_to_another_group_without_an_eligible_agent(rt: Runtime) -> None:
    clock = FakeClock()
    a = assigner(rt, policies("  payments: {policy: least_loaded, overflow: {after: 5m, to: general}}\n"), clock)
    await fill(rt, 1)
    await a.refresh()
    assert await assign_all(a) == 0
    assert (await rt.queues.stats(["payments"]))[0].depth == 1
    clock.offset = 330_000  # the wait counts from the routing (wall time), after the clock was made
    await assign_all(a)
    [conv] = await rt.queues.head("general")
    last = [h for h in await rt.conversations.history(conv.id) if h.type == "status"][-1]
    assert last.data["from"] == "payments" and last.data["reason"].startswith("overflow")
    assert await rt.client.xlen(rt.shards.conv_keys(conv.id).labels) == 0  # not a label for training


async def reserve_for_ann(a: Assigner, cid: str, until: int) -> object:
    """Step 1 alone, as an assigner that dies before step 2 (or 3) leaves it."""
    args = {"channel": "telegram", "group": "payments", "policy": "least_loaded", "sticky": ""}
    return await a._home("reserve", cid=cid, cands=["ann"], token="t1", grace_ms=60_000, until=until, **args)


async def test_a_crashed_reservation_is_settled_after_its_expiry(rt: Runtime) -> None:
    clock = FakeClock()
    a = assigner(rt, policies("  payments: {policy: least_loaded}\n"), clock)
    await agents(a, ["ann"], capacity=1)
    await fill(rt, 2)
    [c1, c2] = await rt.queues.head("payments")
    # A reservation whose assigner died before step 2: the capacity is held until it expires.
    got = await reserve_for_ann(a, c1.id, clock.now_ms() + 90_000)
    assert got == b"ann"
    await a.refresh()
    assert await assign_all(a) == 0
    await a.sweep()  # not expired yet
    assert await assign_all(a) == 0
    clock.offset = 91_000
    await a.presence.beat("ann")
    await a.sweep()
    assert a.counts.settled == 1
    assert await assign_all(a) == 1
    # Step 2 after the expiry is refused: the reconciler's answer stands.
    assert not await rt.conversations.assign(
        c2.id, "payments", "ann", "t1", now_ms() - 1, policy="least_loaded", reason="", reoffer_at_ms=0
    )


async def test_a_reservation_whose_step_two_ran_keeps_its_capacity(rt: Runtime) -> None:
    clock = FakeClock()
    a = assigner(rt, policies("  payments: {policy: least_loaded}\n"), clock)
    await agents(a, ["ann"], capacity=1)
    await fill(rt, 2)
    [c1, _] = await rt.queues.head("payments")
    until = clock.now_ms() + 90_000
    await reserve_for_ann(a, c1.id, until)
    assert await rt.conversations.assign(c1.id, "payments", "ann", "t1", until, policy="p", reason="", reoffer_at_ms=0)
    clock.offset = 91_000  # died before the commit
    await a.presence.beat("ann")
    await a.sweep()
    assert a.counts.settled == 1
    assert (await a.presence.get("ann")).load == {"telegram": 1}
    assert await assign_all(a) == 0


def test_policy_file_errors_are_clear() -> None:
    with pytest.raises(AssignmentPolicyError) as err:
        load(
            "version: 1\ngroups:\n  payments:\n    policy: fastest\n"
            "  security:\n    policy: round_robin\n    reoffer: {after: soon}\n    speed: 3\n",
            "p.yaml",
        )
    assert str(err.value).splitlines() == [
        "p.yaml:4:13: groups.payments.policy: Input should be 'manual', 'round_robin' or 'least_loaded'",
        "p.yaml:7:22: groups.security.reoffer.after: bad duration 'soon': write e.g. 90s, 15m, 4h or 1h30m",
        "p.yaml:8:5: groups.security: unknown field 'speed'",
    ]
    with pytest.raises(AssignmentPolicyError) as err:
        load("version: 1\ngroups:\n  general:\n    overflow: {after: 1m, to: general}\n", "q.yaml")
    assert str(err.value).splitlines() == [
        "q.yaml:4:5: groups.general: reoffer and overflow need an automatic policy",
        "q.yaml:4:31: groups.general.overflow.to: a group cannot overflow to itself",
    ]
    assert load("version: 1\n").automatic == []


def test_capacity_and_profile_input_errors() -> None:
    assert parse_capacity(["telegram=3", "email=10"]) == {"telegram": 3, "email": 10}
    for bad in (["telegram"], ["telegram=x"], ["=3"], ["telegram=-1"]):
        with pytest.raises(BadRequest):
            parse_capacity(bad)


async def test_profile_validation(rt: Runtime) -> None:
    presence = Presence(rt.client, rt.keys, SETTINGS)
    with pytest.raises(BadRequest):
        await presence.set_profile("ann", languages=["english"])
    with pytest.raises(BadRequest):
        await presence.set_status("ann", "busy")
    state = await presence.set_profile("ann", groups=["payments"], languages=["EN"], capacity={"email": 10})
    assert json.loads(json.dumps(state.to_dict(0, 1)))["languages"] == ["en"]


async def test_the_service_assigns_under_its_shard_leases(rt: Runtime, tmp_path: Path) -> None:
    policy = tmp_path / "assignment.yaml"
    policy.write_text("version: 1\ngroups:\n  payments: {policy: least_loaded}\n")
    assign = SETTINGS.model_copy(update={"policy_file": policy, "poll_s": 0.05, "sweep_s": 0.1})
    svc = await assignment.service(rt, rt.settings.model_copy(update={"assign": assign}))
    assert svc is not None
    for name in ("ann", "bob"):
        await svc.presence.set_profile(name, groups=["payments"], capacity={"telegram": 2})
        await svc.presence.set_status(name, "online")
    await fill(rt, 6)
    await svc.start()
    try:
        for _ in range(200):
            if len(await assigned_entries(rt)) == 4:
                break
            await asyncio.sleep(0.05)
        assert [s["lease"] for s in svc.health()["leases"]] == ["held"] * rt.shards.count
    finally:
        await svc.close()
    assert sorted(agent for _, agent in await assigned_entries(rt)) == ["ann", "ann", "bob", "bob"]
    assert (await rt.queues.stats(["payments"]))[0].depth == 2


def test_no_policy_no_service_and_a_bad_file_stops_the_start(tmp_path: Path) -> None:
    assert assignment.load_policies(AssignSettings()).automatic == []
    bad = tmp_path / "assignment.yaml"
    bad.write_text("version: 1\ngroups:\n  payments: {policy: fastest}\n")
    with pytest.raises(ConfigError, match=r"assign.policy_file:\n.*assignment.yaml:3:22: groups.payments.policy"):
        assignment.load_policies(AssignSettings(policy_file=bad))
    with pytest.raises(ConfigError, match=r"missing\.yaml:1:1: cannot read: No such file"):
        assignment.load_policies(AssignSettings(policy_file=tmp_path / "missing.yaml"))
    with pytest.raises(ValueError, match="grace_s"):
        AssignSettings(grace_s=5, heartbeat_s=10)
