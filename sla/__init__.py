"""SLA policies, business-hour calendars, the clock of one conversation, and staffing (Erlang C).

Pure: no Redis, no I/O, no wall clock — every function takes the instants it needs (aware
datetimes). See docs/sla.md.
"""

from __future__ import annotations

from sla.calendar import Calendar, CalendarError
from sla.clock import ClockError, ClockState, DueStep, Event, EventKind, Measurement, evaluate
from sla.policy import Action, Policy, PolicyError, Step, load, load_file

__all__ = [
    "Action",
    "Calendar",
    "CalendarError",
    "ClockError",
    "ClockState",
    "DueStep",
    "Event",
    "EventKind",
    "Measurement",
    "Policy",
    "PolicyError",
    "Step",
    "evaluate",
    "load",
    "load_file",
]
