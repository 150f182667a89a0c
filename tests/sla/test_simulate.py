"""The staffing simulation (sla/simulate.py): queue order, waits, first-response attainment in
business time, occupancy — worked out by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sla import load
from sla.simulate import Arrival, Staff, simulate

POLICY = load(
    """\
version: 1
calendars:
  office:
    tz: Europe/Berlin
    hours: {mon-fri: ["09:00-18:00"]}
default_calendar: office
groups: {desk: 24/7}
targets:
  P1: {first_response: 5m}
  P2: {first_response: 2h}
  P3: {first_response: 15m}
  P4: {}
"""
)
T0 = datetime(2026, 12, 7, 10, tzinfo=UTC)


def fixed(seconds: float):  # type: ignore[no-untyped-def]
    return lambda group: seconds


def test_one_agent_answers_in_order_and_the_third_breaches() -> None:
    arrivals = [Arrival(T0, "desk", 3) for _ in range(3)]
    [r] = simulate(POLICY, arrivals, {"desk": Staff(1)}, fixed(600))
    # Waits 0, 600 and 1200 s against a 15-minute first response: two met, one breached.
    assert (r.arrivals, r.wait_p50_s, r.wait_p90_s) == (3, 600.0, 1200.0)
    assert (r.met, r.breached, r.attainment) == (2, 1, pytest.approx(2 / 3))
    assert r.occupancy == pytest.approx(1.0)  # busy from the first arrival to the last completion


def test_capacity_and_priority_order_the_queue() -> None:
    arrivals = [Arrival(T0, "desk", 3) for _ in range(4)]
    arrivals.append(Arrival(T0 + timedelta(seconds=1), "desk", 1))  # P1 goes before the waiting P3s
    [r] = simulate(POLICY, arrivals, {"desk": Staff(1, capacity=2)}, fixed(600))
    # Two slots: two P3 at once; at 600 s both free: the P1 (waited 599 s, over its 5 minutes) and
    # a P3 (600 s, within 15); the last P3 at 1200 s (breached). First come first served would
    # give waits 0, 0, 600, 600 and 1199.
    assert (r.wait_p50_s, r.wait_p90_s) == (599.0, 1200.0)
    assert (r.met, r.breached) == (3, 2)


def test_first_response_counts_business_hours() -> None:
    friday = datetime(2026, 12, 11, 16, tzinfo=UTC)  # 17:00 in Berlin; the office closes at 18:00
    arrivals = [Arrival(friday, "payments", 2), Arrival(friday, "payments", 2)]
    [r] = simulate(POLICY, arrivals, {"payments": Staff(1)}, fixed(3 * 3600))
    # The second is answered at 20:00, 3 h later; 2 business hours run to Monday 10:00: met.
    assert (r.met, r.breached, r.wait_p90_s) == (2, 0, 3 * 3600.0)


def test_a_group_without_agents_is_refused() -> None:
    with pytest.raises(ValueError, match="no agents for group"):
        simulate(POLICY, [Arrival(T0, "desk", 3)], {"other": Staff(2)}, fixed(60))
