"""The clock of one conversation: deadlines, pauses, priority changes and ladders, hand-computed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sla import ClockError, Event, EventKind, Measurement, Policy, evaluate
from tests.sla.conftest import berlin

K = EventKind
MIN = timedelta(minutes=1)


def utc(hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 12, 7, hour, minute, tzinfo=UTC)


def measure(state_measurements: tuple[Measurement, ...], target: str, cycle: int = 0) -> Measurement:
    return next(m for m in state_measurements if m.target == target and m.cycle == cycle)


def test_targets_precedence(policy: Policy) -> None:
    # A tag override beats a group override, which beats the base; field by field.
    assert policy.target("first_response", 3, "payments", {"vip"}) == 3600
    assert policy.target("first_response", 3, "payments", ()) == 2 * 3600
    assert policy.target("first_response", 3, "general", ()) == 4 * 3600
    assert policy.target("resolution", 3, "payments", {"vip"}) == 24 * 3600  # not overridden
    assert policy.target("first_response", 4, "general", ()) is None  # P4: {} measures nothing


def test_first_response_across_lunch_with_its_ladder(policy: Policy) -> None:
    # P2 (1h) opened Monday 11:30 in the office: 50% (30 min) falls on the closing time 12:00,
    # 80% (48 min) at 13:18 after lunch, 100% at 13:30, +30m at 14:00.
    opened = [Event(berlin(2026, 12, 7, 11, 30), K.OPENED, priority=2)]
    state = evaluate(policy, "general", (), opened, berlin(2026, 12, 7, 13, 20))
    first = measure(state.measurements, "first_response")
    assert first.deadline == berlin(2026, 12, 7, 13, 30)
    assert first.state == "running"
    assert first.remaining_seconds == 10 * 60
    assert [(s.id, s.point, s.at) for s in state.due] == [
        ("first_response:0:0:0", "50%", berlin(2026, 12, 7, 12, 0)),
        ("first_response:0:0:1", "80%", berlin(2026, 12, 7, 13, 18)),
    ]
    assert state.next_wakeup == berlin(2026, 12, 7, 13, 30)
    # A reply at 13:45: breached (the 100% step ran), and +30m (14:00) never comes.
    replied = [*opened, Event(berlin(2026, 12, 7, 13, 45), K.AGENT_REPLY)]
    later = evaluate(policy, "general", (), replied, berlin(2026, 12, 7, 15, 0), fired={s.id for s in state.due})
    assert [s.point for s in later.due] == ["100%"]
    assert [(a.kind, a.value) for a in later.due[0].actions] == [("raise_priority", 1), ("notify", "supervisors")]
    first = measure(later.measurements, "first_response")
    assert (first.state, first.stopped, first.remaining_seconds) == ("breached", berlin(2026, 12, 7, 13, 45), -900)


def test_a_reply_in_time_is_met_and_stops_the_ladder(policy: Policy) -> None:
    events = [Event(utc(10), K.OPENED, priority=1), Event(utc(10, 11), K.AGENT_REPLY)]
    state = evaluate(policy, "security", (), events, utc(12))
    first = measure(state.measurements, "first_response")
    assert (first.state, first.deadline) == ("met", utc(10, 15))
    assert [s.point for s in state.due] == ["50%"]  # 7.5 min: before the reply; 80% = 12 min: after


def test_ladder_steps_fire_in_order_and_once(policy: Policy) -> None:
    # A caller polling every minute and recording what fired sees each step once, in order.
    events = [Event(utc(10), K.OPENED, priority=1)]  # security, 24/7: 15 min
    fired: list[tuple[str, datetime]] = []
    now = utc(10)
    while now <= utc(11, 30):
        state = evaluate(policy, "security", (), events, now, fired={f for f, _ in fired})
        fired.extend((step.id, now) for step in state.due)
        now += MIN
    # 50% = 7.5 min (seen at 10:08), 80% = 12 min, 100% = 15 min, +30m = 45 min.
    assert fired == [
        ("first_response:0:0:0", utc(10, 8)),
        ("first_response:0:0:1", utc(10, 12)),
        ("first_response:0:0:2", utc(10, 15)),
        ("first_response:0:0:3", utc(10, 45)),
    ]


def test_first_response_is_never_paused(policy: Policy) -> None:
    events = [Event(utc(10), K.OPENED, priority=1), Event(utc(10, 1), K.WAITING_START)]
    state = evaluate(policy, "security", (), events, utc(10, 20))
    first = measure(state.measurements, "first_response")
    assert (first.deadline, first.state, first.paused) == (utc(10, 15), "breached", False)
    resolution = measure(state.measurements, "resolution")
    assert (resolution.deadline, resolution.paused, resolution.remaining_seconds) == (None, True, 4 * 3600 - 60)


def test_waiting_on_the_user_pauses_next_response_and_resolution(policy: Policy) -> None:
    # P1 on the 24/7 desk: reply 10:05, waiting on the user 10:10-12:10 (the user answers at 12:10).
    events = [
        Event(utc(10), K.OPENED, priority=1),
        Event(utc(10, 5), K.AGENT_REPLY),
        Event(utc(10, 10), K.WAITING_START),
        Event(utc(12, 10), K.USER_MESSAGE),
        Event(utc(12, 20), K.USER_MESSAGE),  # a second message does not restart the cycle
    ]
    paused = evaluate(policy, "security", (), events, utc(11))
    resolution = measure(paused.measurements, "resolution")
    assert (resolution.paused, resolution.deadline, resolution.remaining_seconds) == (True, None, 4 * 3600 - 600)
    state = evaluate(policy, "security", (), events, utc(12, 30))
    # Resolution (4h): 10 min before the wait, then 3h50 from 12:10 -> 16:00 (not 14:00).
    assert measure(state.measurements, "resolution").deadline == utc(16)
    cycle = measure(state.measurements, "next_response")
    assert (cycle.started, cycle.deadline, cycle.state) == (utc(12, 10), utc(12, 40), "running")
    assert [m.cycle for m in state.measurements if m.target == "next_response"] == [0]


def test_a_wait_inside_a_next_response_cycle_moves_its_deadline(policy: Policy) -> None:
    events = [
        Event(utc(10), K.OPENED, priority=1),
        Event(utc(10, 5), K.AGENT_REPLY),
        Event(utc(11), K.USER_MESSAGE),  # cycle 0: 30 min
        Event(utc(11, 10), K.WAITING_START),  # e.g. the agent asked for a document
        Event(utc(11, 40), K.WAITING_END),
        Event(utc(11, 55), K.AGENT_REPLY),
        Event(utc(13), K.USER_MESSAGE),  # cycle 1
    ]
    state = evaluate(policy, "security", (), events, utc(13, 5))
    cycle0 = measure(state.measurements, "next_response", 0)
    # 10 min before the wait, 20 min after it from 11:40 -> 12:00; the reply at 11:55 is in time.
    assert (cycle0.deadline, cycle0.state, cycle0.remaining_seconds) == (utc(12), "met", 5 * 60)
    cycle1 = measure(state.measurements, "next_response", 1)
    assert (cycle1.deadline, cycle1.state) == (utc(13, 30), "running")


def test_priority_change_retargets_from_the_change(policy: Policy) -> None:
    # P3 in the office opened Monday 09:00 (4h: 14:00 after lunch); raised to P1 at 10:00:
    # from then on 15 minutes -> 10:15, breached at 10:20; the P3 ladder (50% = 11:00) never ran.
    events = [Event(berlin(2026, 12, 7, 9, 0), K.OPENED, priority=3)]
    before = evaluate(policy, "general", (), events, berlin(2026, 12, 7, 9, 30))
    assert measure(before.measurements, "first_response").deadline == berlin(2026, 12, 7, 14, 0)
    events.append(Event(berlin(2026, 12, 7, 10, 0), K.PRIORITY, priority=1))
    state = evaluate(policy, "general", (), events, berlin(2026, 12, 7, 10, 20))
    first = measure(state.measurements, "first_response")
    assert (first.priority, first.deadline, first.state) == (1, berlin(2026, 12, 7, 10, 15), "breached")
    assert [s.id for s in state.due] == ["first_response:0:1:0", "first_response:0:1:1", "first_response:0:1:2"]
    # Resolution re-targets too: P1's 4h from 10:00 -> 15:00 (lunch 12-13).
    assert measure(state.measurements, "resolution").deadline == berlin(2026, 12, 7, 15, 0)


def test_setting_the_same_priority_again_does_not_restart_the_clock(policy: Policy) -> None:
    events = [Event(utc(10), K.OPENED, priority=1), Event(utc(10, 10), K.PRIORITY, priority=1)]
    state = evaluate(policy, "security", (), events, utc(10, 20))
    first = measure(state.measurements, "first_response")
    assert (first.deadline, first.state) == (utc(10, 15), "breached")
    assert [s.id for s in state.due] == ["first_response:0:0:0", "first_response:0:0:1", "first_response:0:0:2"]


def test_a_breach_before_a_lowering_stays_a_breach(policy: Policy) -> None:
    events = [
        Event(utc(10), K.OPENED, priority=1),
        Event(utc(10, 30), K.PRIORITY, priority=2),
        Event(utc(10, 40), K.AGENT_REPLY),
    ]
    first = measure(evaluate(policy, "security", (), events, utc(11)).measurements, "first_response")
    assert (first.priority, first.deadline, first.state) == (2, utc(11, 30), "breached")


def test_close_stops_everything_and_p4_is_unmeasured(policy: Policy) -> None:
    events = [Event(utc(10), K.OPENED, priority=4), Event(utc(10, 5), K.CLOSED)]
    state = evaluate(policy, "security", (), events, utc(23))
    assert {(m.target, m.state) for m in state.measurements} == {
        ("first_response", "unmeasured"),
        ("resolution", "unmeasured"),
    }
    assert state.due == () and state.next_wakeup is None


def test_events_after_now_are_not_known_yet(policy: Policy) -> None:
    events = [Event(utc(10), K.OPENED, priority=1), Event(utc(10, 5), K.AGENT_REPLY)]
    first = measure(evaluate(policy, "security", (), events, utc(10, 3)).measurements, "first_response")
    assert (first.state, first.stopped) == ("running", None)


@pytest.mark.parametrize(
    ("events", "message"),
    [
        ([], "begin with 'opened'"),
        ([Event(utc(10), K.AGENT_REPLY)], "begin with 'opened'"),
        ([Event(utc(10), K.OPENED)], "needs the conversation's priority"),
        ([Event(utc(10), K.OPENED, priority=1), Event(utc(11), K.PRIORITY)], "needs the new priority"),
        (
            [Event(utc(10), K.OPENED, priority=1), Event(utc(11), K.CLOSED), Event(utc(12), K.USER_MESSAGE)],
            "after 'closed'",
        ),
    ],
)
def test_events_that_are_not_a_conversation(policy: Policy, events: list[Event], message: str) -> None:
    with pytest.raises(ClockError, match=message):
        evaluate(policy, "security", (), events, utc(13))


def test_a_priority_change_at_now_already_retargets(policy: Policy) -> None:
    # Evaluated in the very instant of the change (a timer woken by it can be that quick): the
    # deadline and the next wake-up are the new priority's, not the old one's.
    t0, change = utc(10), utc(10, 10)
    events = [Event(t0, K.OPENED, priority=3), Event(change, K.PRIORITY, priority=1)]
    state = evaluate(policy, "security", (), events, change)
    first = measure(state.measurements, "first_response")
    assert first.priority == 1 and first.deadline == change + 15 * MIN
    assert state.next_wakeup is not None and state.next_wakeup <= change + 15 * MIN
