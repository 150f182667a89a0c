"""The compiled condition nodes: one small immutable object per condition of a rule, whose
``match`` answers for one message and says why (the trace).

Each node's ``match()`` returns None when the condition does not hold, else the list of matches
that explain it (possibly empty). Costs order the children of all/any: lower first. The nodes
ask the message through ``Context`` (implemented by ``rules/evaluate.py``); they are built by
``rules/compile.py``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from rules.model import Hours, Match

if TYPE_CHECKING:
    from datetime import datetime

    from rules.intent import Prediction


class Context(Protocol):
    """What a condition may ask about the message being evaluated (see rules/evaluate.py)."""

    channel: str
    account: str
    sender: Mapping[str, str]
    language: str | None
    new_conversation: bool
    text_hits: dict[int, tuple[int, int]]
    subject_hits: dict[int, tuple[int, int]]

    def span(self, field: str, start: int, end: int) -> tuple[int, int]: ...
    def regex(self, regex_id: int, field: str) -> tuple[int, int] | None: ...
    def found(self, field: str, kinds: frozenset[str]) -> tuple[int, int] | None: ...
    def now(self) -> datetime: ...
    def has_subject(self) -> bool: ...
    def prediction(self) -> Prediction | None: ...


COST_FIELD, COST_TIME, COST_KEYWORD, COST_REGEX, COST_DETECTOR, COST_MODEL = 0, 1, 2, 3, 4, 5


@dataclass(frozen=True, slots=True)
class AlwaysNode:
    label: str
    cost: int = COST_FIELD

    def match(self, ctx: Context) -> list[Match] | None:
        return [(self.label, None, None, None)]


@dataclass(frozen=True, slots=True)
class FieldNode:
    """channel / account / language / conversation: the message attribute is one of values."""

    label: str
    field: str
    values: frozenset[str]
    cost: int = COST_FIELD

    def match(self, ctx: Context) -> list[Match] | None:
        if self.field == "conversation":
            value: str | None = "new" if ctx.new_conversation else "follow_up"
        else:
            value = getattr(ctx, self.field)
        if value in self.values:
            return [(self.label, self.field, None, None)]
        return None


@dataclass(frozen=True, slots=True)
class SenderNode:
    label: str
    attrs: tuple[tuple[str, frozenset[str]], ...]
    cost: int = COST_FIELD

    def match(self, ctx: Context) -> list[Match] | None:
        sender = ctx.sender
        for attr, values in self.attrs:
            if sender.get(attr) not in values:
                return None
        return [(self.label, f"sender.{a}", None, None) for a, _ in self.attrs]


@dataclass(frozen=True, slots=True)
class KeywordsNode:
    """contains_any / contains_all (subject and text) and the subject_ variants."""

    label: str
    keyword_ids: tuple[int, ...]
    need_all: bool
    subject_only: bool
    cost: int = COST_KEYWORD
    positions: Mapping[int, int] = field(default_factory=dict)  # keyword id -> index in list

    def _find(self, ctx: Context, i: int, kw: int) -> Match | None:
        hit = ctx.subject_hits.get(kw)
        if hit is not None:
            s, e = ctx.span("subject", *hit)
            return (f"{self.label}[{i}]", "subject", s, e)
        if not self.subject_only:
            hit = ctx.text_hits.get(kw)
            if hit is not None:
                s, e = ctx.span("text", *hit)
                return (f"{self.label}[{i}]", "text", s, e)
        return None

    def match(self, ctx: Context) -> list[Match] | None:
        if not self.need_all:
            # Walk the message's hits (a handful) rather than the rule's keywords (maybe
            # hundreds); the first hit in text order explains the match.
            positions = self.positions
            if ctx.subject_hits:
                for kw, (start, end) in ctx.subject_hits.items():
                    i = positions.get(kw)
                    if i is not None:
                        s, e = ctx.span("subject", start, end)
                        return [(f"{self.label}[{i}]", "subject", s, e)]
            if not self.subject_only:
                for kw, (start, end) in ctx.text_hits.items():
                    i = positions.get(kw)
                    if i is not None:
                        s, e = ctx.span("text", start, end)
                        return [(f"{self.label}[{i}]", "text", s, e)]
            return None
        out: list[Match] = []
        for kw in self.keyword_ids:
            found = self._find(ctx, self.positions[kw], kw)
            if found is None:
                return None
            out.append(found)
        return out


@dataclass(frozen=True, slots=True)
class RegexNode:
    label: str
    regex_id: int
    subject_only: bool
    cost: int = COST_REGEX
    factors: tuple[int, ...] = ()  # literal keyword ids, one of which every match contains
    min_run: int = 0  # every match contains this many consecutive ASCII letters/digits

    def match(self, ctx: Context) -> list[Match] | None:
        names = ("subject",) if self.subject_only else ("subject", "text")
        for name in names:
            if name == "subject" and not ctx.has_subject():
                continue
            hit = ctx.regex(self.regex_id, name)
            if hit is not None:
                s, e = ctx.span(name, *hit)
                return [(self.label, name, s, e)]
        return None


@dataclass(frozen=True, slots=True)
class DetectorNode:
    label: str
    kinds: frozenset[str]
    cost: int = COST_DETECTOR

    def match(self, ctx: Context) -> list[Match] | None:
        for name in ("subject", "text"):
            if name == "subject" and not ctx.has_subject():
                continue
            hit = ctx.found(name, self.kinds)
            if hit is not None:
                return [(self.label, name, hit[0], hit[1])]
        return None


@dataclass(frozen=True, slots=True)
class TimeNode:
    """time windows, and business_hours (hours None = the group works around the clock)."""

    label: str
    hours: Hours | None
    cost: int = COST_TIME

    def match(self, ctx: Context) -> list[Match] | None:
        if self.hours is None or self.hours.contains(ctx.now()):
            return [(self.label, "received_at", None, None)]
        return None


@dataclass(frozen=True, slots=True)
class ModelNode:
    """intent / urgency: the triage model's probability of a group (task "group") or a priority
    (task "priority") is at least ``min``. Never holds without a model."""

    label: str
    task: str
    value: str
    min: float
    cost: int = COST_MODEL

    def match(self, ctx: Context) -> list[Match] | None:
        prediction = ctx.prediction()
        if prediction is None:
            return None
        probs = prediction.group if self.task == "group" else prediction.priority
        if probs.get(self.value, 0.0) >= self.min:
            return [(self.label, None, None, None)]
        return None


@dataclass(frozen=True, slots=True)
class AllNode:
    label: str
    children: tuple[ConditionNode, ...]
    cost: int

    def match(self, ctx: Context) -> list[Match] | None:
        out: list[Match] = []
        for child in self.children:
            found = child.match(ctx)
            if found is None:
                return None
            out.extend(found)
        return out


@dataclass(frozen=True, slots=True)
class AnyNode:
    label: str
    children: tuple[ConditionNode, ...]
    cost: int

    def match(self, ctx: Context) -> list[Match] | None:
        for child in self.children:
            found = child.match(ctx)
            if found is not None:
                return found
        return None


@dataclass(frozen=True, slots=True)
class NotNode:
    label: str
    child: ConditionNode
    cost: int

    def match(self, ctx: Context) -> list[Match] | None:
        if self.child.match(ctx) is None:
            return [(self.label, None, None, None)]
        return None


ConditionNode = (
    AlwaysNode
    | FieldNode
    | SenderNode
    | KeywordsNode
    | RegexNode
    | DetectorNode
    | TimeNode
    | ModelNode
    | AllNode
    | AnyNode
    | NotNode
)


def iter_nodes(cond: ConditionNode) -> Iterator[ConditionNode]:
    """A condition and every condition inside it."""
    yield cond
    if isinstance(cond, AllNode | AnyNode):
        for child in cond.children:
            yield from iter_nodes(child)
    elif isinstance(cond, NotNode):
        yield from iter_nodes(cond.child)
