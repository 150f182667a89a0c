"""The SLA policy file as written: pydantic models for the YAML document.

They describe exactly what an admin may write; ``sla/policy.py`` loads the YAML, runs the checks
that need the whole document (a calendar that exists) and compiles it into the values the clock
uses. Times of day and priorities are written as in rule files (``rules/document.py``).
"""

from __future__ import annotations

import re
from datetime import date
from itertools import pairwise
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from rules.document import DAYS, ClockTime, Priority, TimeZone, one_key_tag

#: The measured targets, in the order the clock reports them.
TARGETS: tuple[str, ...] = ("first_response", "next_response", "resolution")
TargetName = Literal["first_response", "next_response", "resolution"]
AROUND_THE_CLOCK = "24/7"

_DURATION_RE = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_CLOCK = r"(?:[01]\d|2[0-3]):[0-5]\d|24:00"
_INTERVAL_RE = re.compile(rf"^({_CLOCK})\s*-\s*({_CLOCK})$")
_POINT_RE = re.compile(r"^(?:(\d+(?:\.\d+)?)%|([+-])(.+))$")


def _error(error_type: str, message: str, **values: Any) -> PydanticCustomError:
    # Formatted here (not by pydantic) so that braces in a value stay literal.
    return PydanticCustomError(error_type, message.format(**values))


def parse_duration(value: Any) -> int:
    """``"1h30m"``, ``"15m"``, ``"90s"`` or a number of seconds -> seconds."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = _DURATION_RE.match(value) if isinstance(value, str) else None
    if not isinstance(value, str) or not value or match is None:
        raise _error("duration", "bad duration {value!r}: write e.g. 90s, 15m, 4h or 1h30m", value=value)
    hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def _positive_duration(value: Any) -> int:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise _error("duration", "a target must be longer than 0 seconds")
    return seconds


Duration = Annotated[
    int,
    BeforeValidator(_positive_duration),
    WithJsonSchema({"anyOf": [{"type": "string", "pattern": _DURATION_RE.pattern}, {"type": "integer"}]}),
]


class _Strict(BaseModel):
    # Unknown keys are errors: a typo must not silently drop a target.
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# --------------------------------------------------------------------------- calendars


def minutes(clock: str) -> int:
    """``"13:30"`` -> 810 (``"24:00"`` -> 1440)."""
    hours, mins = clock.split(":")
    return int(hours) * 60 + int(mins)


def _interval(value: Any) -> Any:
    match = _INTERVAL_RE.match(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise _error("interval", "bad interval {value!r}: write HH:MM-HH:MM, e.g. 09:00-12:00", value=value)
    start, end = match.groups()
    if minutes(start) >= minutes(end):
        raise _error("interval", "interval {value!r} ends before it starts", value=value)
    return f"{start}-{end}"


OpenInterval = Annotated[
    str,
    BeforeValidator(_interval),
    WithJsonSchema({"type": "string", "pattern": _INTERVAL_RE.pattern}),
]


def day_keys(key: str) -> list[str]:
    """``"mon"`` -> [mon]; ``"mon-fri"`` -> [mon, tue, wed, thu, fri]."""
    first, _, last = key.partition("-")
    if first not in DAYS or (last and last not in DAYS):
        raise _error("day", "bad day {key!r}: write mon … sun, or a range such as mon-fri", key=key)
    if not last:
        return [first]
    i, j = DAYS.index(first), DAYS.index(last)
    if j < i:
        raise _error("day", "bad day range {key!r}: it must run forward within a week (mon-fri)", key=key)
    return list(DAYS[i : j + 1])


class Holiday(_Strict):
    """A date closed all day, or only ``from``-``to`` (local time) for a partial holiday."""

    date: date
    start: ClockTime = Field(default="00:00", alias="from")
    end: ClockTime = Field(default="24:00", alias="to")
    name: str | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Holiday:
        if minutes(self.start) >= minutes(self.end):
            raise _error("interval", "a holiday's from must be before its to")
        return self


def _holiday(value: Any) -> Any:
    return {"date": value} if isinstance(value, date | str) else value


class CalendarDoc(_Strict):
    """A group's working time: a time zone, weekly intervals per day (or 24/7), holidays."""

    tz: TimeZone = "UTC"
    hours: dict[str, list[OpenInterval]]
    holidays: list[Annotated[Holiday, BeforeValidator(_holiday)]] = Field(default_factory=list)

    @field_validator("hours", mode="before")
    @classmethod
    def _around_the_clock(cls, value: Any) -> Any:
        return {"mon-sun": ["00:00-24:00"]} if value == AROUND_THE_CLOCK else value

    @field_validator("hours")
    @classmethod
    def _days(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        seen: dict[str, str] = {}
        for key, intervals in value.items():
            for day in day_keys(key):
                if day in seen:
                    raise _error("day", "{day} is given twice ({a} and {b})", day=day, a=seen[day], b=key)
                seen[day] = key
            spans = sorted((minutes(a), minutes(b), f"{a}-{b}") for a, b in (i.split("-") for i in intervals))
            for prev, cur in pairwise(spans):
                if cur[0] < prev[1]:
                    raise _error("overlap", "{key}: {a} overlaps {b}", key=key, a=prev[2], b=cur[2])
        if not any(value.values()):
            raise _error("closed", "no opening hours at all: give at least one interval (or hours: 24/7)")
        return value


def _calendar(value: Any) -> Any:
    # `name: 24/7` is short for a UTC calendar open around the clock.
    return {"hours": AROUND_THE_CLOCK} if value == AROUND_THE_CLOCK else value


# --------------------------------------------------------------------------- targets


class Targets(_Strict):
    """A priority's targets; one left out is not measured for that priority."""

    first_response: Duration | None = None
    next_response: Duration | None = None
    resolution: Duration | None = None


PriorityTargets = dict[Priority, Targets]


class Override(_Strict):
    """Targets that replace the base ones for conversations with a tag, or in a group."""

    tag: str | None = Field(default=None, min_length=1)
    group: str | None = Field(default=None, min_length=1)
    targets: PriorityTargets = Field(min_length=1)

    @model_validator(mode="after")
    def _one_match(self) -> Override:
        if (self.tag is None) == (self.group is None):
            raise _error("override", "an override names exactly one of tag or group")
        return self


# --------------------------------------------------------------------------- escalation ladders


def _point(value: Any) -> Any:
    match = _POINT_RE.match(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise _error(
            "point",
            "bad point {value!r}: a share of the target (80%) or an offset from it (+30m, -10m)",
            value=value,
        )
    percent, _, offset = match.groups()
    if percent is not None and float(percent) <= 0:
        raise _error("point", "a point must be above 0%")
    if offset is not None:
        parse_duration(offset)
    return value.strip()


Point = Annotated[
    str,
    BeforeValidator(_point),
    WithJsonSchema({"type": "string", "pattern": _POINT_RE.pattern}),
]


class Notify(_Strict):
    notify: str = Field(min_length=1)  # whom: e.g. agent, group, supervisors


class RaisePriority(_Strict):
    raise_priority: int = Field(ge=1, le=3)  # by how many steps (P3 -> P1 is 2)


class Reassign(_Strict):
    reassign: Literal[True]


class MoveGroup(_Strict):
    move_group: str = Field(min_length=1)


ACTIONS: dict[str, type[BaseModel]] = {
    "notify": Notify,
    "raise_priority": RaisePriority,
    "reassign": Reassign,
    "move_group": MoveGroup,
}


def _action_shape(value: Any) -> Any:
    """Refuse a malformed action with a precise reason before the union picks a member."""
    if isinstance(value, dict) and len(value) == 1 and next(iter(value)) in ACTIONS:
        return value
    if isinstance(value, BaseModel):
        return value
    known = ", ".join(ACTIONS)
    raise _error("action", "an action is a mapping with one key of {known}, not {value!r}", known=known, value=value)


Action = Annotated[
    Union[  # noqa: UP007 - Tag needs the typing.Union spelling inside Annotated
        Annotated[Notify, Tag("notify")],
        Annotated[RaisePriority, Tag("raise_priority")],
        Annotated[Reassign, Tag("reassign")],
        Annotated[MoveGroup, Tag("move_group")],
    ],
    Discriminator(one_key_tag(ACTIONS)),
    BeforeValidator(_action_shape),
]


class Step(_Strict):
    """One rung of a ladder: at a point relative to the target, do these actions."""

    at: Point
    do: list[Action] = Field(min_length=1)


class PolicyFile(_Strict):
    """The whole SLA policy document (``version: 1``)."""

    model_config = ConfigDict(title="Switchboard SLA policy", extra="forbid", frozen=True, populate_by_name=True)

    version: Literal[1]
    calendars: dict[str, Annotated[CalendarDoc, BeforeValidator(_calendar)]] = Field(default_factory=dict)
    default_calendar: str = AROUND_THE_CLOCK
    groups: dict[str, str] = Field(default_factory=dict)  # group id -> calendar name
    targets: PriorityTargets
    overrides: list[Override] = Field(default_factory=list)
    escalations: dict[TargetName, list[Step]] = Field(default_factory=dict)

    @field_validator("targets")
    @classmethod
    def _every_priority(cls, value: PriorityTargets) -> PriorityTargets:
        missing = [p for p in ("P1", "P2", "P3", "P4") if p not in value]
        if missing:
            raise _error(
                "priorities",
                "targets for {missing} missing: give every priority (an empty {{}} measures nothing)",
                missing=", ".join(missing),
            )
        return value

    @field_validator("escalations")
    @classmethod
    def _distinct_points(cls, value: dict[str, list[Step]]) -> dict[str, list[Step]]:
        for target, steps in value.items():
            points = [s.at for s in steps]
            twice = sorted({p for p in points if points.count(p) > 1})
            if twice:
                raise _error("point", "{target}: point {p} given twice", target=target, p=twice[0])
        return value
