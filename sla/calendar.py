"""Business-hour calendars: when a group works, and business time between instants.

A calendar is a time zone, weekly opening intervals in local wall-clock time (several a day) and
holidays (a whole date closed, or part of it). Instants are aware datetimes; durations are
seconds. Each local day's intervals are turned into real instants through ``zoneinfo``, so a day
on which the clocks change is as long as it really is: an interval 00:00-06:00 on the night the
clocks go forward holds 5 hours; a wall-clock time the change skips maps forward past the gap
(02:30 on that night is 03:30 summer time), and one it repeats is taken at its first occurrence.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

#: Minutes in a day; an interval may end at 24:00 (= 1440).
DAY_MINUTES = 24 * 60
#: How far ahead ``add`` looks for opening hours before it gives up (a calendar closed by
#: holidays for longer than this is a mistake in the policy, not a deadline).
SEARCH_DAYS = 2 * 366

Interval = tuple[int, int]  # [start, end) in minutes after local midnight


class CalendarError(ValueError):
    """An instant the calendar cannot place (naive, or no opening hours ahead)."""


@dataclass(frozen=True)
class Calendar:
    """Weekly opening hours in a time zone, minus holidays.

    ``weekly[d]`` holds day ``d``'s intervals (0 = Monday), sorted and disjoint;
    ``holidays[date]`` the intervals of that local date that are closed ((0, 1440) = all day).
    """

    tz: ZoneInfo
    weekly: tuple[tuple[Interval, ...], ...]
    holidays: Mapping[date, tuple[Interval, ...]] = field(default_factory=dict)
    # Each local day's opening instants, computed once: the SLA timer evaluates clocks over the
    # same few days again and again, and the zoneinfo conversions were ~80% of an evaluation.
    _days: dict[date, list[tuple[datetime, datetime]]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if len(self.weekly) != 7:
            raise ValueError("a calendar has 7 weekdays")
        for day in (*self.weekly, *self.holidays.values()):
            for prev, cur in pairwise(day):
                if cur[0] < prev[1]:
                    raise ValueError(f"overlapping intervals {prev} and {cur}")
            for start, end in day:
                if not 0 <= start < end <= DAY_MINUTES:
                    raise ValueError(f"bad interval ({start}, {end})")
        if not any(self.weekly):
            raise ValueError("a calendar needs at least one opening interval a week")

    @classmethod
    def always(cls, tz: str = "UTC") -> Calendar:
        """Open around the clock (24/7)."""
        return cls(ZoneInfo(tz), (((0, DAY_MINUTES),),) * 7)

    @property
    def around_the_clock(self) -> bool:
        return not self.holidays and all(day == ((0, DAY_MINUTES),) for day in self.weekly)

    # ------------------------------------------------------------------------- local days

    def open_intervals(self, day: date) -> list[tuple[datetime, datetime]]:
        """The real instants (UTC) the calendar is open on local date ``day`` (do not change the list)."""
        found = self._days.get(day)
        if found is None:
            found = self._days[day] = self._open_intervals(day)
        return found

    def _open_intervals(self, day: date) -> list[tuple[datetime, datetime]]:
        closed = self.holidays.get(day, ())
        spans: list[tuple[datetime, datetime]] = []
        for start, end in _subtract(self.weekly[day.weekday()], closed):
            lo, hi = self._instant(day, start), self._instant(day, end)
            if lo < hi:  # an interval inside a skipped hour is empty
                spans.append((lo, hi))
        return spans

    def _instant(self, day: date, minute: int) -> datetime:
        if minute == DAY_MINUTES:
            day, minute = day + timedelta(days=1), 0
        local = datetime.combine(day, time(minute // 60, minute % 60), tzinfo=self.tz)
        return local.astimezone(UTC)

    def _spans_from(self, day: date) -> Iterator[tuple[datetime, datetime]]:
        for offset in range(SEARCH_DAYS):
            yield from self.open_intervals(day + timedelta(days=offset))

    def _local_date(self, at: datetime) -> date:
        return _aware(at).astimezone(self.tz).date()

    # ------------------------------------------------------------------------- business time

    def is_open(self, at: datetime) -> bool:
        """True when ``at`` is inside opening hours."""
        day = self._local_date(at)
        return any(lo <= at < hi for lo, hi in self.open_intervals(day))

    def business_seconds(self, start: datetime, end: datetime) -> float:
        """Seconds of opening hours in [start, end) (0 when end is not after start)."""
        start, end = _aware(start), _aware(end)
        if end <= start:
            return 0.0
        if self.around_the_clock:
            return (end - start).total_seconds()
        total = 0.0
        # A day's intervals may spill past local midnight in UTC terms: begin a day early.
        day, last = self._local_date(start) - timedelta(days=1), self._local_date(end)
        while day <= last:
            for lo, hi in self.open_intervals(day):
                overlap = (min(hi, end) - max(lo, start)).total_seconds()
                total += max(0.0, overlap)
            day += timedelta(days=1)
        return total

    def add(self, start: datetime, seconds: float) -> datetime:
        """The instant at which ``seconds`` of opening hours have passed since ``start``.

        An instant outside hours starts counting at the next opening (so ``add(t, 0)`` is the next
        opening, or ``t`` itself when open); a deadline that falls on a closing time is that
        closing time, not the next opening.
        """
        start = _aware(start)
        if seconds < 0:
            raise ValueError("business seconds to add must not be negative")
        if self.around_the_clock:
            return start + timedelta(seconds=seconds)
        remaining = seconds
        for lo, hi in self._spans_from(self._local_date(start) - timedelta(days=1)):
            if hi <= start:
                continue
            begin = max(lo, start)
            available = (hi - begin).total_seconds()
            if remaining <= available:
                return begin + timedelta(seconds=remaining)
            remaining -= available
        raise CalendarError(f"no opening hours within {SEARCH_DAYS} days after {start.isoformat()}")

    def next_opening(self, at: datetime) -> datetime:
        """``at`` when open, else the next instant the calendar opens."""
        return self.add(at, 0)


def _aware(at: datetime) -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise CalendarError(f"naive datetime {at.isoformat()}: give a time zone (UTC instants)")
    return at


def _subtract(opening: tuple[Interval, ...], closed: tuple[Interval, ...]) -> list[Interval]:
    """``opening`` minus ``closed`` (both sorted and disjoint)."""
    out: list[Interval] = []
    for start, end in opening:
        cursor = start
        for c_start, c_end in closed:
            if c_end <= cursor or c_start >= end:
                continue
            if c_start > cursor:
                out.append((cursor, c_start))
            cursor = max(cursor, c_end)
        if cursor < end:
            out.append((cursor, end))
    return out
