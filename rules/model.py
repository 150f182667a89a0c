"""The values the engine takes and gives: the message in, the decision out (with its trace and
redactions), a group as the engine knows it, and the errors of a rule file.

All frozen: frozen dataclasses, and msgspec structs (without garbage-collector tracking) for the
per-message ones. The YAML document an admin writes is ``rules/document.py``; ``rules/compile.py``
turns it into these values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

import msgspec


@dataclass(frozen=True, slots=True)
class Hours:
    """A compiled weekly window (``GroupInfo.hours``, ``time`` conditions)."""

    tz: str
    days: frozenset[int]  # 0 = Monday, as datetime.weekday()
    start: int  # minutes after midnight
    end: int  # minutes after midnight, exclusive; may be < start (window crosses midnight)

    def contains(self, when: datetime) -> bool:
        """True when ``when`` (aware) falls inside the window, in the window's time zone."""
        local = when.astimezone(ZoneInfo(self.tz))
        minute = local.hour * 60 + local.minute
        if self.start < self.end:
            return local.weekday() in self.days and self.start <= minute < self.end
        # Crossing midnight: the part after midnight belongs to the previous day's window.
        if minute >= self.start:
            return local.weekday() in self.days
        return minute < self.end and (local.weekday() - 1) % 7 in self.days


@dataclass(frozen=True, slots=True)
class GroupInfo:
    """A group as the engine knows it."""

    id: str
    name: str
    languages: tuple[str, ...]
    hours: Hours | None


class Triage(msgspec.Struct, frozen=True, gc=False, array_like=True):
    """The triage model's prediction of a message, made once at ingest (the P1 lane's precheck,
    ``Engine.precheck``) and carried with it to the router, which then does not predict again.

    ``model``: the digest of the model that made it (``IntentModel.digest``); the engine uses it only
    when its own model has that digest, and predicts anew otherwise. ``group``/``priority``: the
    calibrated probabilities in that model's label order (JSON keeps every float exactly)."""

    model: Annotated[str, msgspec.Meta(max_length=64)]
    group: Annotated[tuple[float, ...], msgspec.Meta(max_length=256)]
    priority: Annotated[tuple[float, ...], msgspec.Meta(max_length=16)]


class MessageIn(msgspec.Struct, frozen=True, gc=False):
    """One message to classify; everything the engine may look at (``triage``: a prediction made
    earlier of this same text, see ``Triage``)."""

    channel: str
    text: str
    subject: str | None = None
    account: str = ""
    sender: Mapping[str, str] = msgspec.field(default_factory=dict)
    language: str | None = None
    new_conversation: bool = True
    received_at: datetime | None = None
    triage: Triage | None = None


class Redaction(msgspec.Struct, frozen=True, gc=False):
    """A masked span: offsets in the original field; never the secret itself."""

    field: str
    kind: str
    start: int
    end: int
    mask: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "field": self.field,
            "kind": self.kind,
            "start": self.start,
            "end": self.end,
            "mask": self.mask,
        }


#: One matched condition: (condition path, field, start, end); start/end are offsets in the
#: original field, or None for conditions that are not about text.
Match = tuple[str, str | None, int | None, int | None]


class ModelScores(msgspec.Struct, frozen=True, gc=False):
    """What the triage model said about a message (the trace entry ``model``): its best labels,
    best first, with their calibrated probabilities rounded to 3 decimals, which thresholds of
    the rule set's ``model:`` section applied, and which soft rules' decisions it overrode."""

    group: tuple[tuple[str, float], ...]  # the top 3 groups
    priority: tuple[tuple[str, float], ...]  # the top 2 priorities
    # "route", "priority", "p1", "override_route", "override_priority"; empty when none did
    applied: tuple[str, ...]
    # (decision "route" | "priority", the soft rule's id, what it had decided, the threshold met)
    overrode: tuple[tuple[str, str, str, float], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "group": [{"label": k, "p": p} for k, p in self.group],
            "priority": [{"label": k, "p": p} for k, p in self.priority],
            "applied": "+".join(self.applied) or "none",
        }
        if self.overrode:
            out["overrode"] = [
                {"decision": what, "rule": rule, "was": was, "min": threshold}
                for what, rule, was, threshold in self.overrode
            ]
        return out


#: The trace entry's rule id when the model was consulted.
MODEL_TRACE_ID = "model"


class TraceEntry(msgspec.Struct, frozen=True, gc=False):
    """A rule that matched and why; or (rule id ``model``, with ``model`` set) what the triage
    model said, when it was consulted."""

    rule_id: str
    matches: tuple[Match, ...]
    model: ModelScores | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "rule": self.rule_id,
            "matches": [{"condition": c, "field": f, "start": s, "end": e} for c, f, s, e in self.matches],
        }
        if self.model is not None:
            out["model"] = self.model.to_dict()
        return out


class Decision(msgspec.Struct, frozen=True, gc=False):
    """The outcome of evaluating one message (see docs/architecture.md)."""

    group: str
    priority: int
    tags: tuple[str, ...]
    language: str | None
    text: str
    subject: str | None
    redactions: tuple[Redaction, ...]
    auto_reply: str | None
    escalate: bool
    routed_by: str | None
    trace: tuple[TraceEntry, ...]
    rules_version: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict; priority as ``"P1"``…``"P4"``."""
        return {
            "group": self.group,
            "priority": f"P{self.priority}",
            "tags": list(self.tags),
            "language": self.language,
            "text": self.text,
            "subject": self.subject,
            "redactions": [r.to_dict() for r in self.redactions],
            "auto_reply": self.auto_reply,
            "escalate": self.escalate,
            "routed_by": self.routed_by,
            "trace": [t.to_dict() for t in self.trace],
            "rules_version": self.rules_version,
        }


@dataclass(frozen=True, slots=True)
class RuleError:
    """A finding of validation/compilation, with its position in the rule file."""

    file: str
    line: int
    col: int
    rule_id: str | None
    reason: str
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.col}: "
        who = f"rule {self.rule_id}: " if self.rule_id is not None else ""
        level = "warning: " if self.severity == "warning" else ""
        return f"{where}{who}{level}{self.reason}"


class RuleSetError(Exception):
    """A rule file that cannot be used; ``errors`` lists every problem found."""

    def __init__(self, errors: list[RuleError]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(str(e) for e in self.errors))
