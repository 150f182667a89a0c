"""Automatic assignment: the right agent for a waiting conversation, atomically, across processes.

Agents (their presence, capacity and load) are at the home prefix, conversations and queues in
their shard's slot: on a Redis Cluster no one script may touch both. So an assignment is the
reservation model of Twilio TaskRouter, in three steps (docs/assignment.md):

1. **reserve** (lua/assign.lua, home slot): among the candidates (the group's agents whose skills
   fit, by a snapshot), pick one by the group's policy that is online and under capacity, and take
   a unit of its capacity, with a reservation on the conversation that expires ``reservation_s``
   later. One step: two assigners can never both take an agent's last unit.
2. **assign** (lua/conv.lua 'assign', the conversation's shard): only while the conversation is
   still in the queue (one winner) and the reservation has not expired; with its history entry
   and the group's ``assigned`` event (the console sees it live).
3. **commit** (the capacity stays taken; sent with the next reservation, a round trip less) or
   **release** (it goes back at once), home slot.

A crash between the steps leaves a reservation; the sweep settles it once expired (plus the
clock skew allowed), by what the conversation's shard shows: step 2 refuses past the expiry, so
that answer is final. The load an agent's capacity is checked against (``load:{name}``) counts
its reserved and open assignments; it never counts less than the truth (the shards' agent sets):
it grows in step 1, before the conversation is the agent's, and shrinks only in the sweep, after
the conversation left the agent. Hence no agent is ever above capacity, whatever runs or dies.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError

from router.assignstore import PoliciesInForce
from router.config import AssignSettings, Settings
from router.conversations import Conversations
from router.errors import ConfigError, Conflict, NotFound, SwitchboardError
from router.keys import Keys, Shards
from router.leases import Clock, Exclusive, WallClock
from router.lifecycle import keep_running, wait_or_stop
from router.model import new_id
from router.presence import AgentState, Presence
from router.redis import reply_text
from router.scripts import Scripts
from sla.assignment import Agent, AssignmentPolicies, AssignmentPolicyError, GroupPolicy, eligible, load_file

log = logging.getLogger("switchboard.assignment")

BY = "assign"
#: How many candidates a reservation is offered first (``Assigner.shortlist``).
SHORTLIST = 8
_FIELDS = ("status", "channel", "tags", "last_agent", "offered", "waiting_ms", "group")


@dataclass
class Counts:
    assigned: int = 0
    no_agent: int = 0
    lost_race: int = 0
    overflowed: int = 0
    reoffered: int = 0
    requeued_offline: int = 0
    settled: int = 0
    freed: int = 0
    adopted: int = 0
    decision_ms: list[float] = field(default_factory=list)


class Assigner:
    """The three steps for one conversation, and the sweep (load, reservations, presence,
    re-offers). Safe to run in any number of processes at once."""

    def __init__(
        self,
        client: Any,
        shards: Shards,
        scripts: Scripts,
        conversations: Conversations,
        presence: Presence,
        policies: AssignmentPolicies,
        settings: AssignSettings,
        *,
        max_skew_ms: int = 500,
        clock: Clock | None = None,
        keep_latencies: bool = False,
    ) -> None:
        self.client = client
        self.shards = shards
        self.keys: Keys = shards.home
        self.scripts = scripts
        self.conversations = conversations
        self.presence = presence
        self.policies = policies
        self.settings = settings
        self.clock = clock or WallClock()
        self.max_skew_ms = max_skew_ms
        self.resv_ms = round(settings.reservation_s * 1000)
        self.grace_ms = round(settings.grace_s * 1000)
        self.agents: list[AgentState] = []
        self._profiles: dict[str, tuple[AgentState, Agent]] = {}
        self._by_group: dict[str, list[tuple[AgentState, Agent]]] = {}
        self._rr: dict[str, str] = {}
        self._done: list[tuple[str, str]] = []
        self._fit: dict[tuple[str, str, tuple[str, ...]], list[AgentState]] = {}
        self.counts = Counts()
        self._keep = keep_latencies
        #: Called with (conversation, agent) after each assignment (the bench's agents take it).
        self.on_assign: Callable[[str, str], None] | None = None

    # -- selection and the three steps ----------------------------------------------------------
    async def refresh(self) -> None:
        """Re-read every agent's presence, profile and load (the candidates' snapshot)."""
        self.agents = await self.presence.all()
        self._profiles = {a.name: (a, a.profile()) for a in self.agents}
        by_group: dict[str, list[tuple[AgentState, Agent]]] = {}
        for state, profile in self._profiles.values():
            for group in profile.groups:
                by_group.setdefault(group, []).append((state, profile))
        self._by_group = {g: sorted(members, key=lambda m: m[0].name) for g, members in by_group.items()}
        self._fit = {}

    def candidates(self, policy: GroupPolicy, channel: str, tags: list[str], exclude: set[str]) -> list[AgentState]:
        """Agents whose skills fit, online and under capacity in the snapshot (the reservation
        checks both again, atomically), by name (round-robin's order). Who fits by skills and is
        online is worked out once per snapshot for each kind of conversation."""
        kind = (policy.group, channel, tuple(t for t in tags if t.startswith("lang:") or t in policy.skill_tags))
        fit = self._fit.get(kind)
        if fit is None:
            now = self.clock.now_ms()
            fit = [
                a
                for a, profile in self._by_group.get(policy.group, ())
                if a.eligible(now, self.grace_ms) and a.capacity.get(channel, 0) > 0 and eligible(policy, profile, tags)
            ]
            self._fit[kind] = fit
        return [a for a in fit if a.load.get(channel, 0) < a.capacity[channel] and a.name not in exclude]

    def shortlist(self, policy: GroupPolicy, cands: list[AgentState], channel: str) -> list[str]:
        """The ``SHORTLIST`` candidates the policy would pick first by the snapshot, by name: the
        reservation reads each one it is given, so a group of 500 costs it 500 reads otherwise.
        Least loaded: lowest load relative to capacity, then assigned longest ago; round robin:
        the next ones after the agent this process assigned last."""
        if len(cands) <= SHORTLIST:
            return [a.name for a in cands]
        if policy.policy == "least_loaded":
            idle = [a.name for a in cands if not a.load.get(channel, 0)]
            if len(idle) >= SHORTLIST:
                # Enough agents with nothing open (the lowest ratio there is): the reservation
                # orders these by who was assigned longest ago.
                return idle[:SHORTLIST]
            best = heapq.nsmallest(
                SHORTLIST, cands, key=lambda a: (a.load.get(channel, 0) / a.capacity[channel], a.last_ms, a.name)
            )
            return sorted(a.name for a in best)
        last = self._rr.get(policy.group, "")
        after = [a.name for a in cands if a.name > last] + [a.name for a in cands if a.name <= last]
        return sorted(after[:SHORTLIST])

    async def _home(self, op: str, **args: Any) -> Any:
        return await self.scripts.assign(args=[self.keys.prefix, self.clock.now_ms(), op, json.dumps(args)])

    async def assign_one(self, policy: GroupPolicy, cid: str, conv: dict[str, str]) -> str | None:
        """Try to assign conversation ``cid`` (its fields ``conv``) of ``policy``'s group: the
        agent, or None (no eligible agent, or another assigner took it meanwhile)."""
        started = time.perf_counter()
        channel = conv.get("channel", "")
        tags = json.loads(conv.get("tags") or "[]")
        tags = tags if isinstance(tags, list) else []
        offered = json.loads(conv.get("offered") or "[]")
        exclude = set(offered) if isinstance(offered, list) else set()
        everyone = self.candidates(policy, channel, tags, exclude)
        cands = self.shortlist(policy, everyone, channel)
        sticky = conv.get("last_agent", "") if policy.sticky else ""
        if sticky and sticky not in cands and sticky not in exclude:
            # Sticky whatever the snapshot says of its load: the reservation decides, online only.
            known = self._profiles.get(sticky)
            if known is not None and eligible(policy, known[1], tags):
                cands = sorted([*cands, sticky])
        if not cands:
            self.counts.no_agent += 1
            return None
        token = new_id()
        until = self.clock.now_ms() + self.resv_ms
        args: dict[str, Any] = {"cid": cid, "channel": channel, "group": policy.group, "policy": policy.policy}
        args.update(sticky=sticky, token=token, grace_ms=self.grace_ms, until=until)
        done, self._done = self._done, []
        raw = await self._home("reserve", cands=cands, done=done, **args)
        if not raw and len(everyone) > len(cands):
            # The shortlist was full or away by now (the snapshot is older): ask of everyone once.
            raw = await self._home("reserve", cands=sorted({a.name for a in everyone} | set(cands)), **args)
        agent_name = reply_text(raw)
        if not agent_name:
            self.counts.no_agent += 1
            return None
        self._took(agent_name, channel)
        if policy.policy == "round_robin":
            self._rr[policy.group] = agent_name
        # A failure here leaves the reservation to expire: the sweep settles it.
        assigned = await self.conversations.assign(
            cid,
            policy.group,
            agent_name,
            token,
            until,
            policy=policy.policy,
            reason="sticky" if agent_name == sticky else "",
            reoffer_at_ms=self.clock.now_ms() + policy.reoffer_s * 1000 if policy.reoffer_s else 0,
        )
        if assigned:
            self._done.append((cid, token))  # committed with the next reservation, or by flush()
            self.counts.assigned += 1
            if self._keep:
                self.counts.decision_ms.append((time.perf_counter() - started) * 1000)
            if self.on_assign is not None:
                self.on_assign(cid, agent_name)
            return agent_name
        await self._home("release", cid=cid, token=token)
        self._took(agent_name, channel, -1)
        self.counts.lost_race += 1
        return None

    async def flush(self) -> None:
        """Commit the assignments made since the last reservation (step 3)."""
        if self._done:
            done, self._done = self._done, []
            await self._home("commit", done=done)

    def _took(self, name: str, channel: str, n: int = 1) -> None:
        """Keep the snapshot's load in step with this process's own reservations."""
        known = self._profiles.get(name)
        if known is not None:
            known[0].load[channel] = known[0].load.get(channel, 0) + n

    async def assign_shard(self, shard: int) -> int:
        """One pass over the head of each automatic group's queue partition in ``shard``: the
        number of conversations assigned."""
        keys = self.shards.shard[shard]
        done = 0
        for group in self.policies.automatic:
            policy = self.policies.of(group)
            head = await self.client.zrange(keys.queue(group), 0, self.settings.batch - 1)
            if not head:
                continue
            pipe = self.client.pipeline(transaction=False)
            for member in head:
                pipe.hmget(keys.conv(reply_text(member)), *_FIELDS)
            rows = await pipe.execute()
            for member, row in zip(head, rows, strict=True):
                cid = reply_text(member)
                conv = {k: reply_text(v) for k, v in zip(_FIELDS, row, strict=True) if v is not None}
                if conv.get("status") != "new" or conv.get("group") != group:
                    continue
                if await self.assign_one(policy, cid, conv):
                    done += 1
                elif policy.overflow_s and self._waited(conv) >= policy.overflow_s * 1000:
                    moved = await self._overflow(policy, cid)
                    self.counts.overflowed += moved
        await self.flush()
        return done

    async def _overflow(self, policy: GroupPolicy, cid: str) -> bool:
        """Move ``cid`` to the overflow group, only while still unclaimed in its own (``review``:
        not a label for the triage model either)."""
        reason = f"overflow: no eligible agent for {policy.overflow_s}s"
        try:
            return await self.conversations.transfer(
                cid, policy.overflow_to, BY, reason, review=policy.group, count="assign:overflowed"
            )
        except (Conflict, NotFound):
            return False  # closed meanwhile

    def _waited(self, conv: dict[str, str]) -> int:
        return self.clock.now_ms() - int(conv.get("waiting_ms") or self.clock.now_ms())

    # -- the sweep ----------------------------------------------------------------------------
    async def sweep(self) -> None:
        """Settle expired reservations, bring every agent's load to the truth, give the open
        conversations of gone agents back to the queue, re-offer unanswered ones; then refresh
        the snapshot."""
        await self.settle_expired()
        await self.refresh()
        names = [a.name for a in self.agents]
        if names:
            await self.requeue_gone()
            await self._reconcile_load(names)  # keeps the snapshot's loads in step
        for shard in range(self.shards.count):
            await self.reoffer(shard)

    async def _truth(self, names: list[str]) -> dict[str, set[str]]:
        """Each agent's open conversations, from its set in every shard (kept by the scripts)."""
        pipe = self.client.pipeline(transaction=False)
        for keys in self.shards.shard:
            for name in names:
                pipe.smembers(keys.agent(name))
        raw = await pipe.execute()
        out: dict[str, set[str]] = {name: set() for name in names}
        for i, members in enumerate(raw):
            out[names[i % len(names)]].update(reply_text(m) for m in members)
        return out

    async def _reconcile_load(self, names: list[str]) -> None:
        """Bring each agent's load to its open conversations (the truth).

        The loads, then the reservations, in one transaction, and the truth after both: a
        conversation counted there and not reserved had its step 2 done before, so a truth
        without it means it left the agent since (lua/assign.lua 'free')."""
        async with self.client.pipeline(transaction=True) as pipe:
            for name in names:
                pipe.hgetall(self.keys.load(name))
            pipe.hkeys(self.keys.reservations)
            raw = await pipe.execute()
        reserved = {reply_text(k) for k in raw[-1]}
        truth = await self._truth(names)
        for name, load in zip(names, raw[:-1], strict=True):
            counted = {reply_text(k): reply_text(v) for k, v in load.items()}
            free = {c: v for c, v in counted.items() if c not in reserved and c not in truth[name]}
            adopt = sorted(truth[name] - counted.keys(), key=int)
            if free:
                for cid in await self._home("free", agent=name, items=free):
                    self._took(name, free[reply_text(cid)].split()[0], -1)
                    self.counts.freed += 1
            if adopt:
                channels = await self._channels(adopt)
                if channels:
                    for cid in await self._home("adopt", agent=name, items=channels):
                        self._took(name, channels[reply_text(cid)], 1)
                        self.counts.adopted += 1

    async def _channels(self, ids: list[str]) -> dict[str, str]:
        pipe = self.client.pipeline(transaction=False)
        for cid in ids:
            pipe.hget(self.conversations.keys(cid).conv(cid), "channel")
        return {cid: reply_text(ch) for cid, ch in zip(ids, await pipe.execute(), strict=True) if ch}

    async def settle_expired(self) -> None:
        """Reservations past their expiry (and the allowed skew): kept as load if their step 2
        assigned the conversation, given back otherwise."""
        due = await self.client.zrangebyscore(
            self.keys.reservations_due, "-inf", self.clock.now_ms() - self.max_skew_ms
        )
        for member in due:
            cid = reply_text(member)
            raw = await self.client.hget(self.keys.reservations, cid)
            if raw is None:
                continue
            token = json.loads(raw)["token"]
            status, conv_token = await self.client.hmget(
                self.conversations.keys(cid).conv(cid), "status", "assign_token"
            )
            assigned = (
                status is not None
                and reply_text(status) in ("assigned", "waiting")
                and reply_text(conv_token or b"") == token
            )
            self.counts.settled += int(await self._home("settle", cid=cid, token=token, assigned=assigned))

    async def requeue_gone(self) -> None:
        """The open conversations of agents gone past the grace, in automatic groups, back to
        their queue (the history says why). Gone by the snapshot, and still gone read again."""
        now = self.clock.now_ms()
        maybe = [a.name for a in self.agents if a.gone(now, self.grace_ms) and any(a.load.values())]
        gone = [a.name for a in await self.presence.many(maybe) if a.gone(now, self.grace_ms)] if maybe else []
        if not gone:
            return
        for name, open_ids in (await self._truth(gone)).items():
            for conv in await self.conversations.get_many(sorted(open_ids, key=int)):
                if conv.agent != name or not self.policies.of(conv.group).automatic:
                    continue
                try:
                    await self.conversations.release(
                        conv.id, BY, reason="agent offline", count="assign:requeued_offline"
                    )
                except (Conflict, NotFound):
                    continue  # closed or released meanwhile (another process's sweep, say)
                self.counts.requeued_offline += 1

    async def reoffer(self, shard: int) -> None:
        """Assignments past their group's first-reply time with no reply: to another agent."""
        keys = self.shards.shard[shard]
        due = await self.client.zrangebyscore(keys.offers, "-inf", self.clock.now_ms())
        for member in due:
            cid = reply_text(member)
            group, token = await self.client.hmget(keys.conv(cid), "group", "assign_token")
            policy = self.policies.of(reply_text(group or b""))
            try:
                self.counts.reoffered += await self.conversations.reoffer(
                    cid, reply_text(token or b""), policy.max_hops
                )
            except (Conflict, NotFound):
                continue  # closed meanwhile: nothing to re-offer


def load_policies(settings: AssignSettings) -> AssignmentPolicies:
    """The configured policy file (``assign.policy_file``), or none: every group manual."""
    if settings.policy_file is None:
        return AssignmentPolicies.none()
    try:
        return load_file(settings.policy_file)
    except AssignmentPolicyError as exc:
        raise ConfigError(f"assign.policy_file:\n{exc}") from None


class AssignService:
    """A ``Service`` of the worker processes: per shard, the assigner loop (under a lease
    ``assign:{i}`` when ``assign.leases``: one process per shard at a time), and the sweep."""

    name = "assign"

    def __init__(
        self,
        rt: Any,
        policies: AssignmentPolicies,
        settings: Settings,
        *,
        in_force: PoliciesInForce | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._rt = rt
        self._in_force = in_force
        self._settings = settings.assign
        self._leases = settings.leases
        self.presence = Presence(rt.client, rt.keys, settings.assign, clock)
        self.assigner = Assigner(
            rt.client,
            rt.shards,
            rt.scripts,
            rt.conversations,
            self.presence,
            policies,
            settings.assign,
            max_skew_ms=settings.leases.max_skew_ms,
            clock=clock,
        )
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._exclusive: list[Exclusive] = []

    async def start(self) -> None:
        await self.assigner.refresh()
        self._tasks.append(asyncio.create_task(self._keep(self._sweep_step, "assign sweep")))
        for shard in range(self._rt.shards.count):
            step = self._shard_step(shard)
            if not self._settings.leases:
                self._tasks.append(asyncio.create_task(self._keep(step, f"assign shard {shard}")))
                continue
            exclusive = self._rt.exclusive(f"assign:{shard}")
            self._exclusive.append(exclusive)
            body = self._bound(step, f"assign shard {shard}")
            self._tasks.append(asyncio.create_task(exclusive.run(body, self._stopping)))

    def _bound(self, step: Callable[[], Any], what: str) -> Callable[[], Any]:
        async def body() -> None:
            await self._keep(step, what)

        return body

    async def _keep(self, step: Callable[[], Any], what: str) -> None:
        # A state that changed under a step (a conversation closed meanwhile) is handled where it
        # can happen; anything else of ours is logged and the loop goes on after a backoff.
        await keep_running(step, self._stopping, what=what, retry_on=(RedisError, OSError, SwitchboardError))

    def _shard_step(self, shard: int) -> Callable[[], Any]:
        async def step() -> bool:
            if not await self.assigner.assign_shard(shard):
                return await wait_or_stop(self._stopping, self._settings.poll_s)
            return False

        return step

    async def _sweep_step(self) -> bool:
        # A newly published (or rolled back) policy version is taken here, before the sweep's
        # re-offers and requeues, which read it; the shard loops read it at their next pass.
        if self._in_force is not None and (policies := await self._in_force.changed()) is not None:
            self.assigner.policies = policies
        await self.assigner.sweep()
        return await wait_or_stop(self._stopping, self._settings.sweep_s)

    async def close(self) -> None:
        self._stopping.set()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=self._leases.ttl_s)
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()

    def health(self) -> dict[str, Any]:
        c = self.assigner.counts
        return {
            "connected": True,
            "detail": f"{c.assigned} assigned, {c.reoffered} re-offered, {c.overflowed} overflowed",
            "leases": [e.state() for e in self._exclusive],
            "assigned": c.assigned,
            "no_agent": c.no_agent,
            "lost_race": c.lost_race,
            "requeued_offline": c.requeued_offline,
            "settled": c.settled,
            "policy": self._in_force.number if self._in_force is not None else None,
        }


async def service(rt: Any, settings: Settings) -> AssignService | None:
    """The assignment service ``switchboard run``/``worker`` starts, or None: nothing published
    and no policy file (or no automatic group in it), so today's manual claim only. Once a
    version is published the service runs, following the active version (router/assignstore.py)."""
    in_force = PoliciesInForce(rt.assignments)
    policies = await in_force.changed()
    if policies is None:
        policies = load_policies(settings.assign)
        if in_force.number is None and not policies.automatic:
            return None
    return AssignService(rt, policies, settings, in_force=in_force)
