"""Business time on the policy's calendars, against hand-computed instants (Berlin wall clock)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from sla import Calendar, CalendarError, Policy
from tests.sla.conftest import berlin

H = 3600


def office(policy: Policy) -> Calendar:
    return policy.calendar("payments")  # no calendar of its own: the default, office


def test_across_the_lunch_break(policy: Policy) -> None:
    # Monday 11:30 + 1h: 30 min before lunch, lunch 12-13, 30 min after -> 13:30.
    cal = office(policy)
    assert cal.add(berlin(2026, 12, 7, 11, 30), H) == berlin(2026, 12, 7, 13, 30)
    assert cal.business_seconds(berlin(2026, 12, 7, 11, 30), berlin(2026, 12, 7, 13, 30)) == H


def test_across_a_weekend(policy: Policy) -> None:
    # Friday 17:30 + 2h: 30 min on Friday, Monday 09:00 + 1h30 -> 10:30.
    cal = office(policy)
    assert cal.add(berlin(2026, 12, 11, 17, 30), 2 * H) == berlin(2026, 12, 14, 10, 30)
    # Friday 17:30 -> Monday 10:30 is 2 business hours, whatever the 65 wall-clock hours.
    assert cal.business_seconds(berlin(2026, 12, 11, 17, 30), berlin(2026, 12, 14, 10, 30)) == 2 * H


def test_across_christmas(policy: Policy) -> None:
    # Thu 24 Dec 11:00 + 4h: 11-12 (1h); closed from 13:00 (partial holiday); Fri 25 a holiday;
    # the weekend; Mon 28 09:00-12:00 (3h): the deadline is the closing time 12:00, not 13:00.
    cal = office(policy)
    assert cal.add(berlin(2026, 12, 24, 11, 0), 4 * H) == berlin(2026, 12, 28, 12, 0)
    assert cal.business_seconds(berlin(2026, 12, 24, 0, 0), berlin(2026, 12, 28, 0, 0)) == 3 * H
    assert not cal.is_open(berlin(2026, 12, 24, 14, 0))
    assert cal.is_open(berlin(2026, 12, 23, 14, 0))


def test_outside_hours_starts_at_the_next_opening(policy: Policy) -> None:
    cal = office(policy)
    assert cal.next_opening(berlin(2026, 12, 12, 10, 0)) == berlin(2026, 12, 14, 9, 0)  # Saturday
    assert cal.add(berlin(2026, 12, 7, 12, 15), 600) == berlin(2026, 12, 7, 13, 10)  # at lunch
    assert cal.next_opening(berlin(2026, 12, 7, 10, 0)) == berlin(2026, 12, 7, 10, 0)  # open: itself


def test_dst_spring_forward(policy: Policy) -> None:
    # Sun 29 Mar 2026 the clocks skip 02:00-03:00: that night's 00:00-06:00 holds 5 hours.
    cal = policy.calendar("night")
    night = (berlin(2026, 3, 29, 0, 0), berlin(2026, 3, 30, 0, 0))
    assert cal.business_seconds(*night) == 5 * H
    # 6h from 00:00 on the 29th: 5h that night, 1h the next -> Mon 30 Mar 01:00 (23:00 UTC),
    # where wall-clock arithmetic would say 06:00 on the 29th.
    assert cal.add(berlin(2026, 3, 29, 0, 0), 6 * H) == datetime(2026, 3, 29, 23, 0, tzinfo=UTC)


def test_dst_fall_back(policy: Policy) -> None:
    # Sun 25 Oct 2026 the clocks repeat 02:00-03:00: that night's 00:00-06:00 holds 7 hours.
    cal = policy.calendar("night")
    assert cal.business_seconds(berlin(2026, 10, 25, 0, 0), berlin(2026, 10, 26, 0, 0)) == 7 * H
    # 00:00 CEST is 22:00 UTC the day before; 6h later is 04:00 UTC = 05:00 CET (wall clock: 06:00).
    assert cal.add(berlin(2026, 10, 25, 0, 0), 6 * H) == datetime(2026, 10, 25, 4, 0, tzinfo=UTC)


def test_around_the_clock(policy: Policy) -> None:
    cal = policy.calendar("security")
    start = datetime(2026, 12, 24, 23, 0, tzinfo=UTC)
    assert cal.add(start, 5 * H) == start + timedelta(hours=5)
    assert cal.business_seconds(start, start + timedelta(days=3)) == 72 * H


def test_add_and_business_seconds_agree(policy: Policy) -> None:
    # For any start and amount, the business time between the start and add(start, n) is n.
    cal = office(policy)
    start = berlin(2026, 12, 18, 8, 0)
    for minutes in range(0, 60 * 60, 37):
        for offset in (0, 5 * H + 1234, 3 * 24 * H):
            begin = start + timedelta(seconds=offset)
            end = cal.add(begin, minutes * 60)
            assert cal.business_seconds(begin, end) == minutes * 60


def test_bad_instants_and_calendars() -> None:
    cal = Calendar.always()
    with pytest.raises(CalendarError, match="naive"):
        cal.add(datetime(2026, 1, 1), 10)
    with pytest.raises(ValueError, match="at least one opening"):
        Calendar(cal.tz, ((),) * 7)
    with pytest.raises(ValueError, match="overlapping"):
        Calendar(cal.tz, (((0, 600), (500, 700)),) * 7)
    with pytest.raises(ValueError, match="must not be negative"):
        cal.add(datetime(2026, 1, 1, tzinfo=UTC), -1)
    # Open on Mondays only, and every Monday for three years a holiday: no deadline exists.
    mondays = {date(2026, 1, 5) + timedelta(weeks=w): ((0, 1440),) for w in range(160)}
    closed = Calendar(cal.tz, (((0, 60),),) + ((),) * 6, mondays)
    with pytest.raises(CalendarError, match="no opening hours within"):
        closed.add(datetime(2026, 1, 1, tzinfo=UTC), 1)
