"""An SLA policy: YAML text -> validated document -> the values the clock uses.

Parsing (positions, YAML limits, duplicate keys) is the rule files' (``rules/loader.py``), so a
policy is refused the same way: every problem at once, as ``FILE:LINE:COL: reason``. The policy's
version is the digest of its text, as a rule set's is: a conversation keeps the version it
started under (the caller keeps the policy object or its text by that version).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ValidationError

from rules.document import DAYS
from rules.loader import Positions, duplicate_keys, parse
from rules.model import RuleError, RuleSetError
from sla import document
from sla.calendar import Calendar, Interval
from sla.document import AROUND_THE_CLOCK, TARGETS, PolicyFile, day_keys, minutes, parse_duration

PRIORITIES = (1, 2, 3, 4)


class PolicyError(RuleSetError):
    """An SLA policy file that cannot be used; ``errors`` lists every problem found."""


@dataclass(frozen=True)
class Action:
    """What an escalation step does, as data: ``kind`` is notify, raise_priority, reassign or
    move_group; ``value`` whom to notify, by how many steps, nothing, or the group."""

    kind: str
    value: str | int | None


@dataclass(frozen=True)
class Step:
    """A rung of a ladder: ``share`` of the target, plus ``offset`` seconds (either may be 0)."""

    point: str  # as written: "80%", "+30m"
    share: float
    offset: int
    actions: tuple[Action, ...]

    def seconds(self, target: int) -> float:
        """Business seconds after the start at which this step is due, for a target."""
        return max(0.0, self.share * target + self.offset)


@dataclass(frozen=True)
class Policy:
    """A compiled SLA policy (immutable; pure functions of its inputs)."""

    version: str
    calendars: Mapping[str, Calendar]
    default_calendar: str
    group_calendars: Mapping[str, str]
    base: Mapping[tuple[int, str], int]  # (priority, target) -> seconds
    by_tag: Sequence[tuple[str, Mapping[tuple[int, str], int]]]
    by_group: Mapping[str, Sequence[Mapping[tuple[int, str], int]]]
    ladders: Mapping[str, tuple[Step, ...]]

    def calendar(self, group: str) -> Calendar:
        """The group's calendar (the default calendar for a group the policy does not name)."""
        return self.calendars[self.group_calendars.get(group, self.default_calendar)]

    def target(self, target: str, priority: int, group: str, tags: Collection[str] = ()) -> int | None:
        """Seconds of business time for ``target`` at ``priority``, or None when not measured.

        Precedence, field by field: the first tag override (in file order) of a tag the
        conversation has, then the group's overrides (in file order), then the base targets.
        """
        key = (priority, target)
        for tag, targets in self.by_tag:
            if tag in tags and key in targets:
                return targets[key]
        for targets in self.by_group.get(group, ()):
            if key in targets:
                return targets[key]
        return self.base.get(key)

    def ladder(self, target: str) -> tuple[Step, ...]:
        return self.ladders.get(target, ())


M = TypeVar("M", bound=BaseModel)


def read_document(
    text: str, filename: str, model: type[M], error: type[RuleSetError], what: str
) -> tuple[M | None, list[RuleError], Positions]:
    """A YAML document validated by ``model``: the document (None when it did not validate), every
    problem found so far with its line and column, and the positions for further checks. A text
    that is not YAML, or not a mapping, raises ``error`` at once."""
    try:
        root, data = parse(text, filename)
    except RuleSetError as exc:
        raise error(exc.errors) from None
    errors = duplicate_keys(root, filename)
    if not isinstance(data, dict):
        raise error([*errors, RuleError(filename, 1, 1, None, f"{what} must be a YAML mapping")])
    positions = Positions(root)
    doc: M | None = None
    try:
        doc = model.model_validate(data)
    except ValidationError as exc:
        errors.extend(_convert(exc, positions, filename))
    return doc, errors, positions


def load(text: str, filename: str = "<sla>") -> Policy:
    """Parse, validate and compile a policy; ``PolicyError`` lists every problem found."""
    doc, errors, positions = read_document(text, filename, PolicyFile, PolicyError, "the SLA policy")
    if doc is not None:
        errors.extend(_unknown_calendars(doc, positions, filename))
    if errors or doc is None:
        raise PolicyError(sorted(errors, key=lambda e: (e.line, e.col)))
    return _compile(doc, hashlib.sha256(text.encode("utf-8")).hexdigest()[:12])


def load_file(path: str | Path) -> Policy:
    path = Path(path)
    return load(path.read_text(encoding="utf-8"), str(path))


def _convert(exc: ValidationError, positions: Positions, filename: str) -> list[RuleError]:
    out: list[RuleError] = []
    for err in exc.errors(include_url=False):
        loc = err["loc"]
        node, key_node, taken = positions.walk(loc)
        where = ".".join(str(step) for step in taken)
        if err["type"] == "extra_forbidden":
            reason, target = f"unknown field {loc[-1]!r}", key_node
            where = ".".join(str(step) for step in taken[:-1])
        elif err["type"] == "missing":
            reason, target = f"missing field {loc[-1]}", node
        else:
            reason, target = err["msg"], node
        line, col = (target.start_mark.line + 1, target.start_mark.column + 1) if target is not None else (1, 1)
        error = RuleError(filename, line, col, None, f"{where}: {reason}" if where else reason)
        if error not in out:  # a union reports one problem once per member
            out.append(error)
    return out


def _unknown_calendars(doc: PolicyFile, positions: Positions, filename: str) -> list[RuleError]:
    known = set(doc.calendars) | {AROUND_THE_CLOCK}
    refs: list[tuple[tuple[str, ...], str]] = [(("default_calendar",), doc.default_calendar)]
    refs += [(("groups", group), name) for group, name in doc.groups.items()]
    errors = []
    for path, name in refs:
        if name not in known:
            line, col = positions.locate(path)
            choices = ", ".join(sorted(known))
            reason = f"{'.'.join(path)}: unknown calendar {name!r} (known: {choices})"
            errors.append(RuleError(filename, line, col, None, reason))
    return errors


# --------------------------------------------------------------------------- compile


def _compile(doc: PolicyFile, version: str) -> Policy:
    calendars = {name: _calendar(cal) for name, cal in doc.calendars.items()}
    calendars.setdefault(AROUND_THE_CLOCK, Calendar.always())
    by_group: dict[str, list[Mapping[tuple[int, str], int]]] = {}
    by_tag: list[tuple[str, Mapping[tuple[int, str], int]]] = []
    for override in doc.overrides:
        targets = _targets(override.targets)
        if override.tag is not None:
            by_tag.append((override.tag, targets))
        elif override.group is not None:
            by_group.setdefault(override.group, []).append(targets)
    return Policy(
        version=version,
        calendars=calendars,
        default_calendar=doc.default_calendar,
        group_calendars=dict(doc.groups),
        base=_targets(doc.targets),
        by_tag=tuple(by_tag),
        by_group={g: tuple(t) for g, t in by_group.items()},
        ladders={target: tuple(_step(s) for s in steps) for target, steps in doc.escalations.items()},
    )


def _targets(targets: document.PriorityTargets) -> dict[tuple[int, str], int]:
    out: dict[tuple[int, str], int] = {}
    for priority, values in targets.items():
        for name in TARGETS:
            seconds = getattr(values, name)
            if seconds is not None:
                out[(int(priority[1]), name)] = seconds
    return out


def _calendar(cal: document.CalendarDoc) -> Calendar:
    weekly: list[list[Interval]] = [[] for _ in range(7)]
    for key, intervals in cal.hours.items():
        for day in day_keys(key):
            index = DAYS.index(day)
            weekly[index].extend(_span(i) for i in intervals)
    holidays: dict[date, list[Interval]] = {}
    for holiday in cal.holidays:
        holidays.setdefault(holiday.date, []).append((minutes(holiday.start), minutes(holiday.end)))
    return Calendar(
        ZoneInfo(cal.tz),
        tuple(tuple(sorted(day)) for day in weekly),
        {day: tuple(_merge(spans)) for day, spans in holidays.items()},
    )


def _span(interval: str) -> Interval:
    start, end = interval.split("-")
    return minutes(start.strip()), minutes(end.strip())


def _merge(spans: list[Interval]) -> list[Interval]:
    """Holiday closures of one date may overlap (two entries): merge them."""
    out: list[Interval] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


_OFFSET_RE = re.compile(r"^([+-])(.+)$")


def _step(step: document.Step) -> Step:
    offset = _OFFSET_RE.match(step.at)
    if offset is None:
        share, seconds = float(step.at.rstrip("%")) / 100, 0
    else:
        sign = -1 if offset.group(1) == "-" else 1
        share, seconds = 1.0, sign * parse_duration(offset.group(2))
    actions = tuple(_action(a) for a in step.do)
    return Step(step.at, share, seconds, actions)


def _action(action: Any) -> Action:
    ((kind, value),) = action.model_dump().items()
    return Action(kind, None if kind == "reassign" else value)
