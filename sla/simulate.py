"""Staffing simulation: arrivals replayed through the SLA clock and a simple assignment model, in
simulated time (``switchboard simulate``, router/simulate_cli.py).

The model, per group: ``agents`` agents with ``capacity`` conversations each (a pool of
``agents × capacity`` slots, all on shift all the time); the queue is ordered like the router's,
priority first, then the first-response deadline (business time, from the policy); a free slot
takes the head at once and the agent's first reply is that instant; the conversation then holds
the slot for its handle time (drawn by the caller's ``handle``). First-response attainment comes
from the SLA clock itself (sla/clock.py), so calendars, holidays and overrides count as they do
live. Escalation steps, next responses and resolution are not simulated.

Pure: no I/O, no wall clock; random draws come from the caller's ``handle`` (seeded).
"""

from __future__ import annotations

import heapq
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sla.calendar import CalendarError
from sla.clock import Event, EventKind, evaluate
from sla.policy import Policy


@dataclass(frozen=True)
class Arrival:
    at: datetime
    group: str
    priority: int  # 1 (P1) … 4


@dataclass(frozen=True)
class Staff:
    agents: int
    capacity: int = 1


@dataclass(frozen=True)
class GroupResult:
    group: str
    arrivals: int
    agents: int
    capacity: int
    wait_p50_s: float | None
    wait_p90_s: float | None
    met: int  # first responses within the target
    breached: int
    attainment: float | None  # met / (met + breached); None when nothing was measured
    occupancy: float  # busy slot time / slot time, from the group's first arrival to its last reply or completion


@dataclass(order=True)
class _Waiting:
    priority: int
    due: datetime
    seq: int
    arrival: Arrival = field(compare=False)


def simulate(
    policy: Policy,
    arrivals: Sequence[Arrival],
    staff: Mapping[str, Staff],
    handle: Callable[[str], float],
) -> list[GroupResult]:
    """Every arrival answered (however late) and handled; figures per group, by name.

    ``handle(group)`` gives one conversation's handle time in seconds. A group with arrivals and
    no staff raises ``ValueError`` (it would never answer).
    """
    missing = sorted({a.group for a in arrivals} - {g for g, s in staff.items() if s.agents > 0})
    if missing:
        raise ValueError(f"no agents for group(s) {', '.join(missing)}: give them in the agents spec")
    if not arrivals:
        return []
    ordered = sorted(arrivals, key=lambda a: a.at)
    start = ordered[0].at
    free = {g: s.agents * s.capacity for g, s in staff.items()}
    queues: dict[str, list[_Waiting]] = {g: [] for g in staff}
    waits: dict[str, list[float]] = {g: [] for g in staff}
    outcomes: dict[str, list[str]] = {g: [] for g in staff}
    busy = dict.fromkeys(staff, 0.0)
    # Events: (instant, order, seq, group); order 0 = a slot frees (before an arrival at the same instant).
    events: list[tuple[datetime, int, int, str]] = []
    for seq, arrival in enumerate(ordered):
        heapq.heappush(events, (arrival.at, 1, seq, arrival.group))
    first = {g: min((a.at for a in ordered if a.group == g), default=start) for g in staff}
    last = dict(first)
    while events:
        now, kind, seq, group = heapq.heappop(events)
        last[group] = max(last[group], now)
        if kind == 0:
            free[group] += 1
        else:
            arrival = ordered[seq]
            heapq.heappush(queues[group], _Waiting(arrival.priority, _due(policy, arrival), seq, arrival))
        while free[group] and queues[group]:
            taken = heapq.heappop(queues[group]).arrival
            free[group] -= 1
            waits[group].append((now - taken.at).total_seconds())
            outcomes[group].append(_first_response(policy, taken, now))
            held = max(0.0, handle(group))
            busy[group] += held
            heapq.heappush(events, (now + timedelta(seconds=held), 0, len(ordered) + len(events), group))
    results = []
    for group, s in sorted(staff.items()):
        span = max((last[group] - first[group]).total_seconds(), 1.0)
        times = sorted(waits[group])
        met, breached = outcomes[group].count("met"), outcomes[group].count("breached")
        results.append(
            GroupResult(
                group=group,
                arrivals=len(times),
                agents=s.agents,
                capacity=s.capacity,
                wait_p50_s=statistics.median(times) if times else None,
                wait_p90_s=_quantile(times, 0.9),
                met=met,
                breached=breached,
                attainment=met / (met + breached) if met + breached else None,
                occupancy=busy[group] / (s.agents * s.capacity * span),
            )
        )
    return results


def _due(policy: Policy, arrival: Arrival) -> datetime:
    """The first-response deadline (business time), the queue's second key."""
    seconds = policy.target("first_response", arrival.priority, arrival.group)
    if seconds is None:
        return datetime.max.replace(tzinfo=arrival.at.tzinfo)
    try:
        return policy.calendar(arrival.group).add(arrival.at, seconds)
    except CalendarError:
        return datetime.max.replace(tzinfo=arrival.at.tzinfo)


def _first_response(policy: Policy, arrival: Arrival, replied: datetime) -> str:
    events = [Event(arrival.at, EventKind.OPENED, arrival.priority), Event(replied, EventKind.AGENT_REPLY)]
    state = evaluate(policy, arrival.group, (), events, replied)
    return next(m.state for m in state.measurements if m.target == "first_response")


def _quantile(ordered: list[float], q: float) -> float | None:
    """The nearest-rank quantile of sorted values."""
    if not ordered:
        return None
    return ordered[max(0, math.ceil(len(ordered) * q) - 1)]
