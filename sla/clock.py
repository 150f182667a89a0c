"""The SLA clock of one conversation: deadlines, breaches and due escalation steps, from its events.

A pure function of (policy, group, tags, events, now): the same answer on every worker and after
every restart, so a caller can keep timers anywhere and recompute instead of trusting them.

Measurements:

- ``first_response``: from ``opened`` to the first ``agent_reply``; never paused.
- ``next_response``: one cycle per user message that comes after an agent's reply (later user
  messages before the next reply do not restart it), until the next ``agent_reply``; paused while
  waiting on the user.
- ``resolution``: from ``opened`` to ``closed``; paused while waiting on the user.

``closed`` stops every running measurement. A ``user_message`` ends a wait on the user (the user
answered). Time counts on the group's calendar, in business seconds.

A priority change re-targets every running measurement *from the change*: the time before it was
measured against the old priority (a breach there stays a breach), and from the change the new
priority's target runs in full. Each such stretch is a *segment*; ladders restart in each.

Escalation steps are identified by ``target:cycle:segment:index`` so that a caller records which
fired and passes them back as ``fired``: each step is then reported exactly once.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Literal

from sla.calendar import Calendar, CalendarError
from sla.policy import Action, Policy

Pause = tuple[datetime, datetime | None]  # [start, end); end None = still waiting


class EventKind(StrEnum):
    OPENED = "opened"
    USER_MESSAGE = "user_message"
    AGENT_REPLY = "agent_reply"
    WAITING_START = "waiting_start"  # waiting on the user (e.g. "pending" set by an agent)
    WAITING_END = "waiting_end"
    PRIORITY = "priority"
    CLOSED = "closed"


@dataclass(frozen=True)
class Event:
    at: datetime
    kind: EventKind
    priority: int | None = None  # OPENED and PRIORITY: 1 (P1) … 4


class ClockError(ValueError):
    """Events that do not describe a conversation (no opening, a priority missing, …)."""


@dataclass(frozen=True)
class DueStep:
    """An escalation step whose time has come while its measurement was running."""

    id: str
    target: str
    point: str
    at: datetime
    actions: tuple[Action, ...]


@dataclass(frozen=True)
class Measurement:
    """One measured target (for next_response: one cycle), as of ``now``.

    ``deadline``, ``target_seconds`` and ``remaining_seconds`` are the current (or last)
    segment's; ``deadline`` is None while paused with no end in sight or when the priority has no
    such target. ``remaining_seconds`` is business time, negative once overdue.
    """

    target: str
    cycle: int
    priority: int
    started: datetime
    stopped: datetime | None
    target_seconds: int | None
    deadline: datetime | None
    remaining_seconds: float | None
    paused: bool
    state: Literal["running", "met", "breached", "unmeasured"]


@dataclass(frozen=True)
class ClockState:
    measurements: tuple[Measurement, ...]
    due: tuple[DueStep, ...]  # in the order they became due (then ladder order)
    next_wakeup: datetime | None  # the next deadline or step after ``now``, for a timer


@dataclass(frozen=True)
class _Span:
    target: str
    cycle: int
    start: datetime
    stop: datetime | None


def evaluate(
    policy: Policy,
    group: str,
    tags: Collection[str],
    events: Sequence[Event],
    now: datetime,
    fired: Collection[str] = (),
) -> ClockState:
    """The conversation's SLA clock at ``now``; events after ``now`` are not yet known."""
    calendar = policy.calendar(group)
    history = sorted((e for e in events if e.at <= now), key=lambda e: e.at)
    spans, pauses, priorities = _replay(history)
    measurements: list[Measurement] = []
    due: list[DueStep] = []
    wakeups: list[datetime] = []
    for span in spans:
        waits = [] if span.target == "first_response" else pauses
        # A change at ``now`` itself starts a segment too: else a timer evaluating in the very
        # millisecond of the change would schedule its next look by the old priority.
        bounds = [
            span.start,
            *(t for t, _ in priorities[1:] if span.start < t and (t < span.stop if span.stop else t <= now)),
        ]
        segments = list(zip(bounds, [*bounds[1:], span.stop], strict=True))
        breached = False
        for index, (seg_start, seg_end) in enumerate(segments):
            seg = _segment(policy, calendar, group, tags, span, index, seg_start, seg_end, waits, priorities, now)
            breached = breached or seg.breached
            due.extend(s for s in seg.due if s.id not in fired)
            wakeups.extend(t for t in seg.upcoming if t > now)
        measurements.append(_measurement(span, seg, breached))
    due.sort(key=lambda s: s.at)  # stable: ladder order among equal instants
    return ClockState(tuple(measurements), tuple(due), min(wakeups, default=None))


@dataclass(frozen=True)
class _Segment:
    priority: int
    seconds: int | None
    deadline: datetime | None
    remaining: float | None
    paused: bool
    breached: bool
    due: list[DueStep]
    upcoming: list[datetime]


def _segment(
    policy: Policy,
    calendar: Calendar,
    group: str,
    tags: Collection[str],
    span: _Span,
    index: int,
    start: datetime,
    end: datetime | None,
    pauses: list[Pause],
    priorities: list[tuple[datetime, int]],
    now: datetime,
) -> _Segment:
    priority = next(p for t, p in reversed(priorities) if t <= start)
    seconds = policy.target(span.target, priority, group, tags)
    paused = end is None and any(s <= now and (e is None or now < e) for s, e in pauses)
    if seconds is None:
        return _Segment(priority, None, None, None, paused, False, [], [])
    deadline = reach(calendar, start, pauses, seconds)
    until = now if end is None else end
    remaining = seconds - counted(calendar, start, until, pauses)
    breached = deadline is not None and (deadline < end if end is not None else deadline <= now)
    due: list[DueStep] = []
    upcoming = [deadline] if deadline is not None and end is None else []
    for i, step in enumerate(policy.ladder(span.target)):
        at = reach(calendar, start, pauses, step.seconds(seconds))
        if at is None or (end is not None and at >= end):
            continue  # paused before it, or the measurement stopped first
        if at <= now:
            step_id = f"{span.target}:{span.cycle}:{index}:{i}"
            due.append(DueStep(step_id, span.target, step.point, at, step.actions))
        else:
            upcoming.append(at)
    return _Segment(priority, seconds, deadline, remaining, paused, breached, due, upcoming)


def _measurement(span: _Span, last: _Segment, breached: bool) -> Measurement:
    if last.seconds is None and not breached:
        state: Literal["running", "met", "breached", "unmeasured"] = "unmeasured"
    elif breached:
        state = "breached"
    else:
        state = "running" if span.stop is None else "met"
    return Measurement(
        span.target,
        span.cycle,
        last.priority,
        span.start,
        span.stop,
        last.seconds,
        last.deadline,
        last.remaining,
        last.paused,
        state,
    )


def _replay(history: list[Event]) -> tuple[list[_Span], list[Pause], list[tuple[datetime, int]]]:
    """Events -> measured spans, pauses and the priority timeline."""
    if not history or history[0].kind is not EventKind.OPENED:
        raise ClockError("a conversation's events begin with 'opened'")
    opened = history[0]
    if opened.priority is None:
        raise ClockError("'opened' needs the conversation's priority")
    priorities = [(opened.at, opened.priority)]
    first = _Span("first_response", 0, opened.at, None)
    resolution = _Span("resolution", 0, opened.at, None)
    cycles: list[_Span] = []
    pauses: list[Pause] = []
    replied = awaiting_reply = False
    for event in history[1:]:
        if resolution.stop is not None:
            raise ClockError(
                f"{event.kind} at {event.at.isoformat()} after 'closed': a reopened conversation is a new one"
            )
        kind, at = event.kind, event.at
        if kind is EventKind.OPENED:
            raise ClockError("'opened' twice")
        if kind is EventKind.PRIORITY:
            if event.priority is None:
                raise ClockError("'priority' needs the new priority")
            if event.priority != priorities[-1][1]:  # setting the same priority again changes nothing
                priorities.append((at, event.priority))
        elif kind is EventKind.WAITING_START and (not pauses or pauses[-1][1] is not None):
            pauses.append((at, None))
        elif (
            kind in (EventKind.WAITING_END, EventKind.USER_MESSAGE, EventKind.CLOSED)
            and pauses
            and pauses[-1][1] is None
        ):
            pauses[-1] = (pauses[-1][0], at)
        if kind is EventKind.AGENT_REPLY:
            if first.stop is None:
                first = _Span(first.target, 0, first.start, at)
            if cycles and cycles[-1].stop is None:
                cycles[-1] = _Span("next_response", cycles[-1].cycle, cycles[-1].start, at)
            replied, awaiting_reply = True, False
        elif kind is EventKind.USER_MESSAGE and replied and not awaiting_reply:
            cycles.append(_Span("next_response", len(cycles), at, None))
            awaiting_reply = True
        elif kind is EventKind.CLOSED:
            first = first if first.stop is not None else _Span(first.target, 0, first.start, at)
            cycles = [c if c.stop is not None else _Span(c.target, c.cycle, c.start, at) for c in cycles]
            resolution = _Span("resolution", 0, resolution.start, at)
    return [first, *cycles, resolution], pauses, priorities


def reach(calendar: Calendar, start: datetime, pauses: Sequence[Pause], seconds: float) -> datetime | None:
    """The instant at which ``seconds`` of unpaused business time have passed since ``start``;
    None when a pause with no end comes first."""
    cursor, remaining = start, float(seconds)
    try:
        for p_start, p_end in pauses:
            if p_end is not None and p_end <= cursor:
                continue
            if p_start > cursor:
                at = calendar.add(cursor, remaining)
                if at <= p_start:
                    return at
                remaining -= calendar.business_seconds(cursor, p_start)
            if p_end is None:
                return None
            cursor = max(cursor, p_end)
        return calendar.add(cursor, remaining)
    except CalendarError:
        return None  # closed for longer than anyone can wait: no deadline to keep


def counted(calendar: Calendar, start: datetime, end: datetime, pauses: Sequence[Pause]) -> float:
    """Unpaused business seconds in [start, end)."""
    total = calendar.business_seconds(start, end)
    for p_start, p_end in pauses:
        lo, hi = max(p_start, start), min(p_end or end, end)
        if lo < hi:
            total -= calendar.business_seconds(lo, hi)
    return total
