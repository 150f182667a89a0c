"""Assignment policies published like rule sets (router/assignstore.py), a running service that
follows them, and the assigner's counters (router/stats.py, /metrics) — against a real Redis."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from router import assignment
from router.console.metrics import _Snapshot, assignment_families
from router.runtime import Runtime
from sla.assignment import AssignmentPolicyError
from tests.router.test_assignment import SETTINGS, FakeClock, agents, assign_all, assigned_entries, assigner, fill
from tests.router.test_cli import sb

pytestmark = pytest.mark.cluster(shards=4)

POLICY = "version: 1\ngroups:\n  payments: {policy: least_loaded}\n"


async def test_publish_refuse_diff_and_rollback(rt: Runtime) -> None:
    store = rt.assignments
    assert await store.active_number() is None
    first = await store.publish(POLICY, "admin", "least loaded")
    assert first.number == 1 and await store.active_number() == 1
    with pytest.raises(AssignmentPolicyError) as bad:
        await store.publish(POLICY.replace("least_loaded", "fastest"), "admin", filename="a.yaml")
    assert str(bad.value.errors[0]).startswith("a.yaml:3:22: groups.payments.policy")
    unknown = POLICY + "  billing: {policy: round_robin, overflow: {after: 5m, to: legal}}\n"
    with pytest.raises(AssignmentPolicyError) as groups:
        await store.publish(unknown, "admin", filename="a.yaml")
    reasons = [str(e) for e in groups.value.errors]
    assert reasons[0].startswith("a.yaml:4:3: group 'billing' is not a group of the rule set in force (known: ")
    assert reasons[1].startswith("a.yaml:4:60: group 'legal' is not a group of the rule set in force")
    assert await store.active_number() == 1  # the running version stays
    second = await store.publish(POLICY.replace("least_loaded", "round_robin"), "lead")
    assert second.number == 2
    assert "-  payments: {policy: least_loaded}\n+  payments: {policy: round_robin}" in await store.diff(1, 2)
    back = await store.rollback("admin")
    assert back.number == 1 and back.version == first.version and await store.active_number() == 1
    assert [e["action"] for e in await store.log()] == ["rollback", "publish", "publish"]


async def test_nothing_published_and_no_file_no_service(rt: Runtime, tmp_path: Path) -> None:
    assert await assignment.service(rt, rt.settings) is None
    manual = tmp_path / "assignment.yaml"
    manual.write_text("version: 1\ngroups:\n  payments: {policy: manual}\n")
    only_manual = rt.settings.model_copy(update={"assign": SETTINGS.model_copy(update={"policy_file": manual})})
    assert await assignment.service(rt, only_manual) is None
    # Once anything is published the service runs (and follows later versions).
    await rt.assignments.publish("version: 1\ngroups:\n  payments: {policy: manual}\n", "admin")
    svc = await assignment.service(rt, only_manual)
    assert svc is not None and svc.assigner.policies.automatic == []


async def test_a_running_service_picks_up_a_published_version(rt: Runtime, tmp_path: Path) -> None:
    # The file is in force while nothing is published: payments manual, so nothing is assigned.
    policy = tmp_path / "assignment.yaml"
    policy.write_text("version: 1\ngroups:\n  payments: {policy: manual}\n  security: {policy: least_loaded}\n")
    settings = SETTINGS.model_copy(update={"policy_file": policy, "poll_s": 0.05, "sweep_s": 0.1})
    svc = await assignment.service(rt, rt.settings.model_copy(update={"assign": settings}))
    assert svc is not None and svc.health()["policy"] is None
    for name in ("ann", "bob"):
        await svc.presence.set_profile(name, groups=["payments"], capacity={"telegram": 2})
        await svc.presence.set_status(name, "online")
    await fill(rt, 3)
    await svc.start()
    try:
        await asyncio.sleep(0.5)  # several passes and sweeps
        assert await assigned_entries(rt) == []
        await rt.assignments.publish(POLICY, "admin")
        for _ in range(100):
            if len(await assigned_entries(rt)) == 3:
                break
            await asyncio.sleep(0.05)
        assert svc.health()["policy"] == 1
    finally:
        await svc.close()
    # Three conversations, two agents of capacity 2: one each, and the third to either.
    assert sorted(Counter(agent for _, agent in await assigned_entries(rt)).values()) == [1, 2]


async def test_counters_for_assignments_reoffers_overflows_and_offline_requeues(rt: Runtime) -> None:
    clock = FakeClock()
    text = (
        "  payments: {policy: least_loaded, reoffer: {after: 30s, max_hops: 1}}\n"
        "  security: {policy: least_loaded, overflow: {after: 5m, to: general}}\n"
    )
    a = assigner(rt, (await rt.assignments.validate("version: 1\ngroups:\n" + text)), clock)
    await agents(a, ["ann", "bob"])
    await fill(rt, 2)  # payments
    assert await assign_all(a) == 2
    await fill(rt, 1, "my account was hacked", start=10)  # security: nobody serves it
    [(conv, _), _] = sorted(await assigned_entries(rt))

    clock.offset = 31_000  # no first reply: both re-offered once
    for name in ("ann", "bob"):
        await a.presence.beat(name)
    await a.sweep()
    assert (await rt.conversations.get(conv)).status == "new"
    clock.offset = 330_000  # the security one waited past its overflow
    for name in ("ann", "bob"):
        await a.presence.beat(name)
    await a.refresh()
    assert await assign_all(a) == 2  # the re-offered ones, to the other agent
    clock.offset = 330_000 + 61_000  # both agents' heartbeats lapse past the grace
    await a.sweep()

    counted = (await rt.stats.totals()).assignment()
    assert counted == {
        "assigned": {"payments": 4},
        "reoffered": {"payments": 2},
        "overflowed": {"security": 1},
        "requeued_offline": {"payments": 2},
    }
    assert (await rt.stats.read())["assignment"] == counted
    registry = CollectorRegistry()
    registry.register(_Snapshot(assignment_families(counted)))
    exposition = generate_latest(registry).decode()
    assert 'switchboard_assignments_total{group="payments"} 4.0' in exposition
    assert 'switchboard_assignment_reoffers_total{group="payments"} 2.0' in exposition
    assert 'switchboard_assignment_overflows_total{group="security"} 1.0' in exposition
    assert 'switchboard_assignment_offline_requeues_total{group="payments"} 2.0' in exposition


async def test_cli_validate_publish_history_diff_rollback(rt: Runtime, env: dict[str, str], tmp_path: Path) -> None:
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(POLICY)
    bad.write_text(POLICY + "  legal: {policy: round_robin}\n")
    out = await asyncio.to_thread(sb, env, "assign", "validate", str(good))
    assert "ok — version" in out.stdout and "automatic groups: payments" in out.stdout
    refused = await asyncio.to_thread(sb, env, "assign", "validate", str(bad), check=False)
    assert refused.returncode == 1 and f"{bad}:4:3: group 'legal' is not a group" in refused.stderr
    # The SLA store's validate shares the code: an assignment text is no SLA policy.
    refused = await asyncio.to_thread(sb, env, "sla", "validate", str(good), check=False)
    assert refused.returncode == 1 and refused.stderr.endswith("error(s)\n")
    refused = await asyncio.to_thread(sb, env, "assign", "publish", str(bad), "--author", "eve", check=False)
    assert refused.returncode == 1 and "refused: the running assignment policy stays in force" in refused.stderr
    assert await rt.assignments.active_number() is None
    out = await asyncio.to_thread(sb, env, "assign", "publish", str(good), "--author", "ann")
    assert "published assignment policy v1" in out.stdout and "next restart" in out.stdout
    good.write_text(POLICY.replace("least_loaded", "round_robin"))
    # Sent twice with its request id, a publish or a rollback changes things once (one log entry).
    for _ in range(2):
        out = await asyncio.to_thread(sb, env, "assign", "publish", str(good), "--author", "bob", "--request-id", "p")
        assert "published assignment policy v2" in out.stdout and "restart" not in out.stdout
    diff = (await asyncio.to_thread(sb, env, "assign", "diff", "1", "2")).stdout
    assert diff.startswith("--- v1\n+++ v2\n") and "+  payments: {policy: round_robin}" in diff
    for _ in range(2):
        out = await asyncio.to_thread(sb, env, "assign", "rollback", "--author", "carol", "--request-id", "r")
        assert "assignment policy v1 (" in out.stdout and await rt.assignments.active_number() == 1
    history = json.loads((await asyncio.to_thread(sb, env, "assign", "history", "--json")).stdout)
    assert [(e["action"], e["number"], e["author"]) for e in history] == [
        ("rollback", "1", "carol"),
        ("publish", "2", "bob"),
        ("publish", "1", "ann"),
    ]
    newest = json.loads((await asyncio.to_thread(sb, env, "assign", "history", "--json", "--count", "1")).stdout)
    assert newest == history[:1]
