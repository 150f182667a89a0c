"""Erlang C against the textbook example and against the formula written out with factorials.

The classic worked example (Call Centre Helper, "Erlang C formula – made simple"): 100 calls in
30 minutes, 180 s average handle time, target 80% answered within 20 s. Traffic 10 erlangs;
with 11 agents the probability of waiting is 68.21%, the service level 39.0% and the ASA 122.8 s;
14 agents are the fewest meeting the target (88.8%, ASA 7.8 s, occupancy 71.4%).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from sla import staffing


def erlang_c_by_factorials(n: int, a: float) -> float:
    """The textbook form: (A^N/N! · N/(N−A)) / (Σ_{k<N} A^k/k! + A^N/N! · N/(N−A))."""
    top = a**n / math.factorial(n) * n / (n - a)
    return top / (sum(a**k / math.factorial(k) for k in range(n)) + top)


def test_the_classic_example() -> None:
    load = staffing.traffic(200, 180)  # 100 calls per half hour
    assert load == pytest.approx(10.0)
    assert staffing.erlang_c(11, load) == pytest.approx(0.6821, abs=5e-5)
    assert staffing.service_level(11, load, 180, 20) == pytest.approx(0.390, abs=5e-4)
    assert staffing.asa(11, load, 180) == pytest.approx(122.8, abs=0.05)
    best = staffing.agents_needed(200, 180, 0.8, 20)
    assert best.agents == 14
    assert (best.service_level, best.asa, best.occupancy) == (
        pytest.approx(0.888, abs=5e-4),
        pytest.approx(7.8, abs=0.05),
        pytest.approx(0.714, abs=5e-4),
    )
    assert staffing.service_level(13, load, 180, 20) < 0.8  # 13 is not enough: 79.6%


@pytest.mark.parametrize(("n", "a"), [(1, 0.5), (2, 1.2), (5, 3.7), (11, 10.0), (30, 24.4), (60, 55.5)])
def test_recursion_equals_the_factorial_form(n: int, a: float) -> None:
    assert staffing.erlang_c(n, a) == pytest.approx(erlang_c_by_factorials(n, a), rel=1e-12)
    # SL and ASA written out from the same independent value.
    c = erlang_c_by_factorials(n, a)
    assert staffing.service_level(n, a, 300, 60) == pytest.approx(1 - c * math.exp(-(n - a) * 60 / 300), rel=1e-12)
    assert staffing.asa(n, a, 300) == pytest.approx(c * 300 / (n - a), rel=1e-12)


def test_large_centres_stay_finite() -> None:
    # A^N/N! overflows a float from N = 171; the recursion does not.
    with pytest.raises(OverflowError):
        erlang_c_by_factorials(400, 380.0)
    best = staffing.agents_needed(100_000, 300, 0.8, 20)  # 8,333 erlangs
    assert 8334 <= best.agents <= 8400
    assert best.service_level >= 0.8
    assert staffing.service_level(best.agents - 1, best.traffic, 300, 20) < 0.8  # the fewest


def test_the_occupancy_cap_can_decide() -> None:
    # 8.5 erlangs, an easy target: SL alone would take 10 agents (85% busy) — allowed at 0.85;
    # at a 0.75 cap it takes 12 (70.8%), since 11 would be 77.3% busy.
    easy = staffing.agents_needed(170, 180, 0.5, 60, 0.85)
    assert (easy.agents, easy.occupancy) == (10, pytest.approx(0.85))
    capped = staffing.agents_needed(170, 180, 0.5, 60, 0.75)
    assert capped.agents == 12 and capped.occupancy <= 0.75


def test_edges() -> None:
    assert staffing.agents_needed(0, 300, 0.8, 60).agents == 0
    assert staffing.erlang_c(5, 5.0) == 1.0 and staffing.service_level(5, 5.0, 60, 20) == 0.0
    assert staffing.asa(4, 5.0, 60) == math.inf
    assert staffing.erlang_b(0, 3.0) == 1.0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((-1, 300, 0.8, 60, 0.85), "arrival rate -1 per hour"),
        ((10, 0, 0.8, 60, 0.85), "handle time 0 s"),
        ((10, 300, 1.0, 60, 0.85), "target 1.0: must be between 0 and 1"),
        ((10, 300, 80, 60, 0.85), "target 80"),
        ((10, 300, 0.8, -5, 0.85), "answer time -5 s"),
        ((10, 300, 0.8, 60, 0), "maximum occupancy 0"),
        ((math.nan, 300, 0.8, 60, 0.85), "arrival rate nan"),
    ],
)
def test_bad_inputs(args: tuple[float, float, float, float, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        staffing.agents_needed(*args)


def test_weekly_rates_average_over_the_span() -> None:
    utc = ZoneInfo("UTC")
    first = datetime(2026, 11, 30, 0, 0, tzinfo=UTC)  # a Monday
    last = first + timedelta(weeks=3) - timedelta(seconds=1)  # three whole weeks
    arrivals = [first + timedelta(hours=9, minutes=m) for m in range(6)]  # six in the first Monday 09:00
    rates = staffing.weekly_rates(arrivals, utc, first, last)
    assert len(rates) == staffing.WEEK_HOURS
    assert rates[9] == 2.0 and sum(rates) == 2.0  # 6 arrivals / 3 Mondays 09:00
    # In Shanghai (UTC+8) the same instants are Monday 17:00.
    assert staffing.weekly_rates(arrivals, ZoneInfo("Asia/Shanghai"), first, last)[17] == 2.0
    with pytest.raises(ValueError, match="outside the observed span"):
        staffing.weekly_rates([last + timedelta(hours=1)], utc, first, last)


def test_weekly_rates_count_a_repeated_local_hour_twice() -> None:
    # The week of 25 Oct 2026 in Berlin: Sunday 02:00-03:00 happens twice (CEST, then CET).
    berlin = ZoneInfo("Europe/Berlin")
    first = datetime(2026, 10, 19, 0, 0, tzinfo=berlin).astimezone(UTC)
    last = datetime(2026, 10, 26, 0, 0, tzinfo=berlin).astimezone(UTC) - timedelta(seconds=1)
    sunday_2am = [datetime(2026, 10, 25, 0, 30, tzinfo=UTC), datetime(2026, 10, 25, 1, 30, tzinfo=UTC)]
    assert staffing.weekly_rates(sunday_2am, berlin, first, last)[6 * 24 + 2] == 1.0  # 2 arrivals / 2 occurrences
