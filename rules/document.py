"""The rule file as written: pydantic models for the YAML document.

They describe exactly what an admin may write (they also generate the JSON Schema in
``rules/schema.json``). Checks that need the whole document — a route to a group that exists, a
template that exists, a regex RE2 accepts, a detector kind that exists — run inside the same
validation pass through the validation *context* (see ``rules/loader.py``), so that one pass
reports every error with its position. Without a context (e.g. ``RuleFile.model_validate(data)``)
only the shape is checked. ``rules/compile.py`` turns a validated document into the engine's
values.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from rules.placeholders import check_text

DAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
PRIORITIES: tuple[str, ...] = ("P1", "P2", "P3", "P4")
#: The detector kinds documented in docs/architecture.md ("address" = any of the three).
DOCUMENTED_KINDS: tuple[str, ...] = (
    "txid",
    "btc_address",
    "eth_address",
    "tron_address",
    "address",
    "seed_phrase",
    "private_key",
    "email",
    "phone",
)

_TIME_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$|^24:00$")


# --------------------------------------------------------------------------- validation context


@dataclass(frozen=True)
class ValidationContext:
    """What the document-wide checks need; built by the loader from the raw document."""

    groups: frozenset[str]
    templates: frozenset[str]
    detector_kinds: frozenset[str]
    compile_regex: Callable[[str], str | None]  # returns the reason RE2 refuses it, or None
    normalize_keyword: Callable[[str], str]


def _validation_context(info: ValidationInfo) -> ValidationContext | None:
    ctx = info.context
    if isinstance(ctx, dict):
        value = ctx.get("rules")
        return value if isinstance(value, ValidationContext) else None
    return None


def _error(error_type: str, message: str, **values: Any) -> PydanticCustomError:
    # Formatted here (not by pydantic) so that braces in a value, e.g. a{1001}, stay literal.
    return PydanticCustomError(error_type, message.format(**values))


# --------------------------------------------------------------------------- scalar types


def _check_priority(value: Any) -> Any:
    if value not in PRIORITIES:
        raise _error("priority", "bad priority {value!r}: expected P1, P2, P3 or P4", value=value)
    return value


Priority = Annotated[
    str,
    BeforeValidator(_check_priority),
    WithJsonSchema({"type": "string", "enum": list(PRIORITIES)}),
]


def _sexagesimal_to_time(value: Any) -> Any:
    # YAML 1.1 (PyYAML) reads an unquoted 18:00 as the base-60 integer 1080 (= minutes):
    # turn it back into the text the admin wrote instead of refusing it.
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 24 * 60:
        return f"{value // 60:02d}:{value % 60:02d}"
    if isinstance(value, str) and not _TIME_RE.match(value):
        raise _error("time_format", "bad time {value!r}: expected HH:MM (24-hour)", value=value)
    return value


ClockTime = Annotated[
    str,
    BeforeValidator(_sexagesimal_to_time),
    WithJsonSchema({"type": "string", "pattern": r"^([01]\d|2[0-3]):[0-5]\d$|^24:00$"}),
]


def _time_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise _error(
            "time_zone", "unknown time zone {value!r} (an IANA name such as Europe/Berlin)", value=value
        ) from None
    return value


#: An IANA time zone name (rule windows, SLA calendars).
TimeZone = Annotated[str, AfterValidator(_time_zone)]

Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def _all_days() -> list[Day]:
    return ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


NonEmptyStr = Annotated[str, Field(min_length=1)]


class _Strict(BaseModel):
    # Unknown keys are errors (a typo must not silently disable a condition); numbers written
    # where text is expected (error codes as keywords) are taken as text.
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, coerce_numbers_to_str=True)


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str | int) and not isinstance(value, bool) else value


OneOrMany = Annotated[
    list[NonEmptyStr],
    BeforeValidator(_one_or_many),
    Field(min_length=1),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "minLength": 1},
                {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1},
            ]
        }
    ),
]


class Window(_Strict):
    """A weekly time window in a time zone: ``{tz, days, from, to}``; ``to`` is exclusive."""

    tz: TimeZone = "UTC"
    days: list[Day] = Field(default_factory=lambda: _all_days(), min_length=1)
    start: ClockTime = Field(default="00:00", alias="from")
    end: ClockTime = Field(default="24:00", alias="to")

    @model_validator(mode="after")
    def _non_empty(self) -> Window:
        if self.start == self.end:
            raise _error("time_window", "empty time window: from equals to")
        return self


# --------------------------------------------------------------------------- groups, defaults


class Group(_Strict):
    """An agent group messages are routed to."""

    id: NonEmptyStr
    name: str | None = None
    languages: list[NonEmptyStr] = Field(default_factory=list)
    hours: Window | None = None


def _known_group(value: str, info: ValidationInfo) -> str:
    ctx = _validation_context(info)
    if ctx is not None and value not in ctx.groups:
        raise _error("unknown_group", "unknown group {value!r}", value=value)
    return value


class Defaults(_Strict):
    """Where a message goes, and how urgent it is, when no rule says otherwise."""

    group: NonEmptyStr
    priority: Priority = "P3"

    _group = field_validator("group")(_known_group)


# --------------------------------------------------------------------------- conditions


def _keywords_ok(value: list[str], info: ValidationInfo) -> list[str]:
    ctx = _validation_context(info)
    for i, kw in enumerate(value):
        normalized = ctx.normalize_keyword(kw) if ctx is not None else kw.strip()
        if not normalized.strip():
            raise _error("empty_keyword", "empty keyword (item {index})", index=i)
    return value


Keywords = Annotated[list[str], Field(min_length=1)]


class Always(_Strict):
    always: Literal[True]


class Channel(_Strict):
    channel: OneOrMany


class Account(_Strict):
    account: OneOrMany


class ContainsAny(_Strict):
    contains_any: Keywords
    _check_keywords = field_validator("contains_any")(_keywords_ok)


class ContainsAll(_Strict):
    contains_all: Keywords
    _check_keywords = field_validator("contains_all")(_keywords_ok)


class SubjectContainsAny(_Strict):
    subject_contains_any: Keywords
    _check_keywords = field_validator("subject_contains_any")(_keywords_ok)


class SubjectContainsAll(_Strict):
    subject_contains_all: Keywords
    _check_keywords = field_validator("subject_contains_all")(_keywords_ok)


def _regex_ok(value: str, info: ValidationInfo) -> str:
    ctx = _validation_context(info)
    if ctx is not None:
        reason = ctx.compile_regex(value)
        if reason is not None:
            raise _error("invalid_regex", "{reason}", reason=reason)
    return value


class Regex(_Strict):
    regex: NonEmptyStr
    _check_regex = field_validator("regex")(_regex_ok)


class SubjectRegex(_Strict):
    subject_regex: NonEmptyStr
    _check_regex = field_validator("subject_regex")(_regex_ok)


class Language(_Strict):
    language: OneOrMany


class Sender(_Strict):
    sender: Annotated[dict[NonEmptyStr, OneOrMany], Field(min_length=1)]


class Conversation(_Strict):
    conversation: Literal["new", "follow_up"]


class Time(_Strict):
    time: Window


class BusinessHours(_Strict):
    business_hours: NonEmptyStr
    _group = field_validator("business_hours")(_known_group)


DetectorKind = Annotated[str, WithJsonSchema({"type": "string", "enum": list(DOCUMENTED_KINDS)})]


def _kinds_ok(value: list[str], info: ValidationInfo) -> list[str]:
    ctx = _validation_context(info)
    if ctx is not None:
        for kind in value:
            if kind not in ctx.detector_kinds:
                known = ", ".join(sorted(ctx.detector_kinds))
                raise _error(
                    "unknown_detector",
                    "unknown detector kind {kind!r} (known: {known})",
                    kind=kind,
                    known=known,
                )
    return value


DetectorKinds = Annotated[
    list[DetectorKind],
    BeforeValidator(_one_or_many),
    Field(min_length=1),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "enum": list(DOCUMENTED_KINDS)},
                {
                    "type": "array",
                    "items": {"type": "string", "enum": list(DOCUMENTED_KINDS)},
                    "minItems": 1,
                },
            ]
        }
    ),
]


class Detector(_Strict):
    detector: DetectorKinds
    _check_kinds = field_validator("detector")(_kinds_ok)


Probability = Annotated[float, Field(ge=0.0, le=1.0)]


class IntentTest(_Strict):
    """The triage model's probability that the message belongs to group ``is`` is at least ``min``."""

    is_: NonEmptyStr = Field(alias="is")
    min: Probability = 0.5

    _group = field_validator("is_")(_known_group)


class UrgencyTest(_Strict):
    """The triage model's probability that the message has priority ``is`` is at least ``min``."""

    is_: Priority = Field(alias="is")
    min: Probability = 0.5


class Intent(_Strict):
    intent: IntentTest


class Urgency(_Strict):
    urgency: UrgencyTest


class All(_Strict):
    all: list[Condition] = Field(min_length=1)


class AnyOf(_Strict):
    any: list[Condition] = Field(min_length=1)


class Not(_Strict):
    not_: Condition = Field(alias="not")


LEAF_KEYS: dict[str, type[_Strict]] = {
    "always": Always,
    "channel": Channel,
    "account": Account,
    "contains_any": ContainsAny,
    "contains_all": ContainsAll,
    "subject_contains_any": SubjectContainsAny,
    "subject_contains_all": SubjectContainsAll,
    "regex": Regex,
    "subject_regex": SubjectRegex,
    "language": Language,
    "sender": Sender,
    "conversation": Conversation,
    "time": Time,
    "business_hours": BusinessHours,
    "detector": Detector,
    "intent": Intent,
    "urgency": Urgency,
    "all": All,
    "any": AnyOf,
    "not": Not,
}


def _condition_shape(value: Any) -> Any:
    """Refuse a malformed condition with a precise reason before the union picks a member."""
    if isinstance(value, BaseModel):
        return value
    if not isinstance(value, dict):
        raise _error("condition_type", "a condition is a mapping with one key, not {t}", t=_type_name(value))
    if not value:
        raise _error("empty_condition", "empty condition")
    if len(value) > 1:
        keys = ", ".join(str(k) for k in value)
        raise _error(
            "condition_keys",
            "a condition has exactly one key, found {keys} (combine them with all: [...])",
            keys=keys,
        )
    (key,) = value
    if key not in LEAF_KEYS:
        raise _error("unknown_condition", "unknown condition {key!r}", key=key)
    return value


def _type_name(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


def one_key_tag(members: Mapping[str, type[BaseModel]]) -> Callable[[Any], str | None]:
    """The discriminator of a union of one-key mappings (``{regex: …}``): the key as written, or
    the key of an already built member. Shared with the SLA policy's actions (sla/document.py)."""

    def tag(value: Any) -> str | None:
        if isinstance(value, dict) and len(value) == 1:
            (key,) = value
            return str(key)
        return next((key for key, cls in members.items() if type(value) is cls), None)

    return tag


_condition_tag = one_key_tag(LEAF_KEYS)


Condition = Annotated[
    Union[  # noqa: UP007 - Tag needs the typing.Union spelling inside Annotated
        Annotated[Always, Tag("always")],
        Annotated[Channel, Tag("channel")],
        Annotated[Account, Tag("account")],
        Annotated[ContainsAny, Tag("contains_any")],
        Annotated[ContainsAll, Tag("contains_all")],
        Annotated[SubjectContainsAny, Tag("subject_contains_any")],
        Annotated[SubjectContainsAll, Tag("subject_contains_all")],
        Annotated[Regex, Tag("regex")],
        Annotated[SubjectRegex, Tag("subject_regex")],
        Annotated[Language, Tag("language")],
        Annotated[Sender, Tag("sender")],
        Annotated[Conversation, Tag("conversation")],
        Annotated[Time, Tag("time")],
        Annotated[BusinessHours, Tag("business_hours")],
        Annotated[Detector, Tag("detector")],
        Annotated[Intent, Tag("intent")],
        Annotated[Urgency, Tag("urgency")],
        Annotated[All, Tag("all")],
        Annotated[AnyOf, Tag("any")],
        Annotated[Not, Tag("not")],
    ],
    Discriminator(_condition_tag),
    BeforeValidator(_condition_shape),
]


def _when_tag(value: Any) -> str:
    return "list" if isinstance(value, list) else "condition"


def _when_shape(value: Any) -> Any:
    if value is None or (isinstance(value, list | dict) and not value):
        raise _error("empty_condition", "empty condition")
    return value


When = Annotated[
    Union[  # noqa: UP007
        Annotated[list[Condition], Tag("list")],
        Annotated[Condition, Tag("condition")],
    ],
    Discriminator(_when_tag),
    BeforeValidator(_when_shape),
]


# --------------------------------------------------------------------------- actions and rules


Template = Annotated[dict[NonEmptyStr, str], Field(min_length=1)]


def _placeholders_known(texts: dict[str, str]) -> None:
    """An auto-reply's texts by language use no placeholder but rules/placeholders.py's."""
    for lang, text in texts.items():
        try:
            check_text(text)
        except ValueError as exc:
            raise _error("unknown_placeholder", "{lang}: {exc}", lang=lang, exc=exc) from None


#: What of a rule's decision may be soft: the triage model may override it (``model:``'s
#: ``override_route_min`` / ``override_priority_min``).
SoftPart = Literal["route", "priority"]
# ``true``, or a list of parts: told apart first, so that a bad list gets one error, not two.
Soft = Annotated[
    Annotated[bool, Tag("bool")] | Annotated[list[SoftPart], Field(min_length=1), Tag("list")],
    Discriminator(lambda value: "list" if isinstance(value, list) else "bool"),
]


class Then(_Strict):
    """What a matching rule does."""

    tags: list[NonEmptyStr] = Field(default_factory=list)
    priority: Priority | None = None
    raise_priority: Annotated[int, Field(ge=1, le=3)] | None = None
    route: NonEmptyStr | None = None
    escalate: bool = False
    auto_reply: NonEmptyStr | Template | None = None
    redact: DetectorKinds | None = None
    stop: bool = False
    # true = the rule's route and priority (those it has); or a list of them.
    soft: Soft = False

    _route = field_validator("route")(_known_group)
    _redact = field_validator("redact")(_kinds_ok)

    @field_validator("auto_reply")
    @classmethod
    def _template_exists(cls, value: Any, info: ValidationInfo) -> Any:
        ctx = _validation_context(info)
        if ctx is not None and isinstance(value, str) and value not in ctx.templates:
            raise _error("unknown_template", "unknown template {value!r}", value=value)
        if isinstance(value, dict):
            _placeholders_known(value)
        return value

    @model_validator(mode="after")
    def _coherent(self) -> Then:
        if self.priority is not None and self.raise_priority is not None:
            raise _error("priority_conflict", "priority and raise_priority are exclusive")
        if self.escalate and self.route is None:
            raise _error("escalate_without_route", "escalate needs route (the group to move to)")
        if self.soft is True and self.route is None and self.priority is None:
            raise _error("soft_without_decision", "soft needs route or priority (a raise_priority is never soft)")
        if isinstance(self.soft, list):
            if "route" in self.soft and self.route is None:
                raise _error("soft_without_decision", "soft: route needs route")
            if "priority" in self.soft and self.priority is None:
                raise _error("soft_without_decision", "soft: priority needs priority (a raise_priority is never soft)")
        return self

    def soft_parts(self) -> frozenset[str]:
        """The parts of the decision that are soft: ``route`` and/or ``priority``."""
        if self.soft is True:
            return frozenset(
                part for part, value in (("route", self.route), ("priority", self.priority)) if value is not None
            )
        return frozenset(self.soft or ())


class Rule(_Strict):
    """One rule: when the conditions hold, then the actions apply."""

    id: NonEmptyStr
    description: str | None = None
    when: When
    then: Then


class ModelPolicy(_Strict):
    """Where the triage model decides beside the rules (``model:``); a threshold left out is off.

    The model never overrides a hard rule's route and never lowers a priority a hard rule set; it
    may override a soft rule's (``then: {soft: …}``) when confident enough."""

    route_min: Probability | None = None  # where no rule routed: the model's group
    priority_min: Probability | None = None  # where no rule set the priority: the model's
    p1_min: Probability | None = None  # any message to P1 when P(P1) is at least this
    override_route_min: Probability | None = None  # where a soft rule routed: the model's group if it differs
    override_priority_min: Probability | None = None  # where a soft rule's priority was reached: the model's


class RuleFile(_Strict):
    """The whole rule document (``version: 1``)."""

    model_config = ConfigDict(
        title="Switchboard rule file",
        extra="forbid",
        frozen=True,
        populate_by_name=True,
        coerce_numbers_to_str=True,
    )

    version: Literal[1]
    groups: list[Group] = Field(min_length=1)
    defaults: Defaults
    templates: dict[NonEmptyStr, Template] = Field(default_factory=dict)
    rules: list[Rule] = Field(default_factory=list)
    model: ModelPolicy | None = None

    @field_validator("templates")
    @classmethod
    def _template_placeholders(cls, value: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        for texts in value.values():
            _placeholders_known(texts)
        return value

    @field_validator("templates", "rules", mode="before")
    @classmethod
    def _empty_section(cls, value: Any, info: ValidationInfo) -> Any:
        # `rules:` with nothing under it is YAML null: an empty section, not an error.
        if value is None:
            return [] if info.field_name == "rules" else {}
        return value


All.model_rebuild()
AnyOf.model_rebuild()
Not.model_rebuild()
Rule.model_rebuild()
RuleFile.model_rebuild()
