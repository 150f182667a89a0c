"""Staffing with Erlang C: how many agents an interval needs to answer a share of contacts in time.

The model (M/M/N): contacts arrive as a Poisson process at a steady rate within the interval,
handle times are exponential with mean ``aht``, every contact waits until answered (no
abandonment, no retries) and agents work one contact at a time. Traffic ``A = rate × aht``
(erlangs). With ``N > A`` agents:

- probability of waiting ``C(N, A) = N·B / (N − A·(1 − B))``, with ``B`` Erlang B;
- service level ``SL(T) = 1 − C · exp(−(N − A) · T / aht)``: share answered within ``T`` seconds;
- average speed of answer ``ASA = C · aht / (N − A)``;
- occupancy ``A / N``.

Erlang B comes from its recursion ``B(0) = 1, B(n) = A·B(n−1) / (n + A·B(n−1))``: no factorial
or power of A is formed, so it is exact in floating point for thousands of agents (the textbook
``A^N / N!`` form overflows a float from N ≈ 170).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo


@dataclass(frozen=True)
class Staffing:
    """An interval's staffing and what it gives."""

    agents: int
    traffic: float  # erlangs
    wait_probability: float
    service_level: float  # share answered within the target time
    asa: float  # average speed of answer, seconds
    occupancy: float


def traffic(rate_per_hour: float, aht: float) -> float:
    """Offered load in erlangs: arrivals per second × mean handle time."""
    return rate_per_hour / 3600 * aht


def erlang_b(agents: int, load: float) -> float:
    """Blocking probability of an Erlang loss system (the recursion; stable for large N)."""
    b = 1.0
    for n in range(1, agents + 1):
        b = load * b / (n + load * b)
    return b


def _erlang_c_from_b(agents: int, load: float, b: float) -> float:
    if agents <= load:
        return 1.0  # the queue grows without bound: everyone waits
    return agents * b / (agents - load * (1 - b))


def erlang_c(agents: int, load: float) -> float:
    """Probability that a contact waits (all ``agents`` busy)."""
    return _erlang_c_from_b(agents, load, erlang_b(agents, load))


def service_level(agents: int, load: float, aht: float, within: float) -> float:
    """Share of contacts answered within ``within`` seconds (0 when ``agents ≤ load``)."""
    if agents <= load:
        return 0.0
    return 1 - erlang_c(agents, load) * math.exp(-(agents - load) * within / aht)


def asa(agents: int, load: float, aht: float) -> float:
    """Average speed of answer in seconds (infinite when ``agents ≤ load``)."""
    if agents <= load:
        return math.inf
    return erlang_c(agents, load) * aht / (agents - load)


def occupancy(agents: int, load: float) -> float:
    """Share of agents' time spent handling contacts (capped at 1 when overloaded)."""
    return min(1.0, load / agents) if agents else (0.0 if load == 0 else 1.0)


def agents_needed(
    rate_per_hour: float, aht: float, target: float, within: float, max_occupancy: float = 1.0
) -> Staffing:
    """The fewest agents whose service level is at least ``target`` within ``within`` seconds
    and whose occupancy is at most ``max_occupancy``."""
    _check(rate_per_hour, aht, target, within, max_occupancy)
    load = traffic(rate_per_hour, aht)
    if load == 0:
        return Staffing(0, 0.0, 0.0, 1.0, 0.0, 0.0)
    # Erlang B grows with N one step at a time: carry it instead of recomputing from 0.
    # (less a hair, so that 8.5 / 0.85 = 10.000000000000002 asks for 10 agents, not 11)
    agents = max(math.floor(load) + 1, math.ceil(load / max_occupancy - 1e-9))
    b = erlang_b(agents, load)
    while True:
        c = _erlang_c_from_b(agents, load, b)
        level = 1 - c * math.exp(-(agents - load) * within / aht)
        if level >= target:
            return Staffing(agents, load, c, level, c * aht / (agents - load), load / agents)
        agents += 1
        b = load * b / (agents + load * b)


def _check(rate_per_hour: float, aht: float, target: float, within: float, max_occupancy: float) -> None:
    if not rate_per_hour >= 0:
        raise ValueError(f"arrival rate {rate_per_hour} per hour: must be 0 or more")
    if not aht > 0:
        raise ValueError(f"handle time {aht} s: must be more than 0")
    if not 0 < target < 1:
        raise ValueError(f"service level target {target}: must be between 0 and 1 (exclusive; 0.8 = 80%)")
    if not within >= 0:
        raise ValueError(f"answer time {within} s: must be 0 or more")
    if not 0 < max_occupancy <= 1:
        raise ValueError(f"maximum occupancy {max_occupancy}: must be above 0 and at most 1")


#: Hours in a week; slot ``d * 24 + h`` is weekday ``d`` (0 = Monday), local hour ``h``.
WEEK_HOURS = 7 * 24


def weekly_rates(instants: Sequence[datetime], tz: ZoneInfo, first: datetime, last: datetime) -> list[float]:
    """Arrivals per hour for each hour of the week (168 slots, local time in ``tz``), averaged
    over the weeks observed: a slot's count divided by how many times that local hour occurs from
    ``first``'s hour to ``last``'s (both included) — the span of the whole export, so that a
    quiet group is not averaged over its own few messages only."""
    counts = [0] * WEEK_HOURS
    for at in instants:
        if not first <= at <= last:
            raise ValueError(f"arrival {at.isoformat()} outside the observed span")
        counts[_slot(at, tz)] += 1
    occurrences = [0] * WEEK_HOURS
    hour = first.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    while hour <= last:
        occurrences[_slot(hour, tz)] += 1
        hour += timedelta(hours=1)
    return [c / n if n else 0.0 for c, n in zip(counts, occurrences, strict=True)]


def _slot(at: datetime, tz: ZoneInfo) -> int:
    local = at.astimezone(tz)
    return local.weekday() * 24 + local.hour
