"""A conversation's SLA countdowns, for reading (the console): each target's deadline as of now.

The same clock as the timer's (router/slatimer.py ``clock_events`` and sla/clock.py ``evaluate``,
with the policy the conversation started under), so the page and the timer never disagree about
a deadline; nothing is written. A deadline is a real instant: a page counts down to it in wall
time, which is right even across closed hours (business time is already in the instant).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from router.conversations import Conversation, HistoryEntry
from router.slatimer import clock_events
from sla import Policy, evaluate

#: The targets in the order a page shows them.
TARGETS = ("first_response", "next_response", "resolution")


def countdowns(
    policy: Policy, conv: Conversation, history: Sequence[HistoryEntry], now_ms: int
) -> list[dict[str, Any]]:
    """One entry per target the policy measures for the conversation (next response: its latest
    cycle): ``target``, ``cycle``, ``state`` (running, met, breached: it stays breached once
    answered), ``open`` (not yet stopped by a reply or the close), ``paused``, ``deadline_ms``
    (None while paused with no end in sight) and ``remaining_s`` (business seconds)."""
    _, events = clock_events(conv.created_ms, conv.priority, history)
    state = evaluate(policy, conv.group, conv.tags, events, datetime.fromtimestamp(now_ms / 1000, UTC))
    latest = {m.target: m for m in state.measurements if m.state != "unmeasured"}  # cycles come in order
    return [
        {
            "target": m.target,
            "cycle": m.cycle,
            "state": m.state,
            "open": m.stopped is None,
            "paused": m.paused,
            "deadline_ms": None if m.deadline is None else round(m.deadline.timestamp() * 1000),
            "remaining_s": m.remaining_seconds,
        }
        for m in (latest[t] for t in TARGETS if t in latest)
    ]


def nearest_ms(entries: Sequence[dict[str, Any]]) -> int | None:
    """The nearest deadline of the targets still open (breached ones included: they are overdue)."""
    return min((e["deadline_ms"] for e in entries if e["open"] and e["deadline_ms"] is not None), default=None)
