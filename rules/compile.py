"""Build the compiled rule set from a validated ``RuleFile``: a matcher whose per-message cost
barely depends on the number of rules.

How (the measurements behind it are in ``../shared/PROTOCOL-NOTES.md``, "Rule matching"):

* Every keyword of every rule is normalised (``normalize_keyword``) and put in ONE Aho-Corasick
  automaton (``Scanner``); a message is scanned once per field, so keyword cost follows the text
  length, not the rule count. The literals a regex's matches must contain
  (``rules/prefilter.py``) go into the same automaton.
* Each rule gets a *gate*: a set of gate ids of which at least one must be present for the rule
  to possibly match (derived from the condition tree: ``contains_any`` -> its keywords;
  ``contains_all`` -> its rarest keyword; ``regex`` -> its required literals, or a long run of
  ASCII letters/digits; ``detector`` -> "the detector found that kind"; ``all`` -> the most
  selective gated child; ``any`` -> the union when every child is gated; ``not`` -> never
  gated). Only gated rules whose gate was hit, plus the ungated rules, are evaluated. Picking the
  *rarest* keyword matters: a specific rule (an error code + a coin + an action) is gated on its
  error code, not on "usdt", so adding 10,000 such rules does not make every USDT message
  evaluate 500 of them.
* Conditions (``rules/conditions.py``) are tried cheapest first inside ``all``/``any`` (fields,
  then time, keywords, regexes, detectors), so regexes and detectors run only when the cheap
  parts already hold.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import ahocorasick_rs

from rules import document
from rules.conditions import (
    AllNode,
    AlwaysNode,
    AnyNode,
    ConditionNode,
    DetectorNode,
    FieldNode,
    KeywordsNode,
    ModelNode,
    NotNode,
    RegexNode,
    SenderNode,
    TimeNode,
    iter_nodes,
)
from rules.detectors import expand_kinds
from rules.intent import Policy
from rules.model import GroupInfo, Hours
from rules.normalize import is_word_char, normalize_keyword
from rules.prefilter import MIN_ALNUM_RUN, leading_words, required_alnum_run, required_literals
from rules.regex import compile_regex


@dataclass(frozen=True, slots=True)
class Actions:
    """A rule's ``then``, resolved: priorities as numbers, a template name as its texts, the
    ``address`` shorthand as the detector kinds."""

    tags: tuple[str, ...]
    priority: int | None
    raise_priority: int | None
    route: str | None
    escalate: bool
    auto_reply: Mapping[str, str] | None
    redact: frozenset[str]
    stop: bool
    # The parts of the decision the triage model may override (``then: {soft: …}``).
    soft_route: bool = False
    soft_priority: bool = False


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """One rule as the engine evaluates it."""

    index: int
    id: str
    condition: ConditionNode
    then: Actions
    gate: frozenset[int] | None  # gate ids, one of which must be present; None = ungated


@dataclass(frozen=True, slots=True)
class Keyword:
    """One entry of the automaton: a rule keyword or a regex literal (see ``_Builder.keyword``)."""

    text: str  # normalised
    word_edges: bool  # False when neither end is a word character (CJK): plain substring


@dataclass(frozen=True)
class CompiledRules:
    """Everything evaluation needs, immutable once built."""

    rules: tuple[CompiledRule, ...]
    keywords: tuple[Keyword, ...]
    scanner: Scanner | None  # None when no rule has keywords
    keyword_rules: Mapping[int, tuple[int, ...]]  # gate id -> indexes of rules gated on it
    ungated: frozenset[int]
    regexes: tuple[Any, ...]  # compiled RE2 patterns, by regex id
    # Detector kinds found in one pass per message: those of ungated rules and of gates.
    eager_kinds: frozenset[str]
    groups: Mapping[str, GroupInfo]
    default_group: str
    default_priority: int
    # Gate ids past the keywords: "a detector of this kind found something" ...
    detector_gates: Mapping[str, int] = field(default_factory=dict)
    # ... and "the normalised subject or text has a run of >= n ASCII letters/digits" (n, id).
    run_gates: tuple[tuple[int, int], ...] = ()
    # By regex id: for a pattern that can only match with one of a few words at the start of the
    # text, those words (see ``leading_words``), else None.
    regex_leads: tuple[tuple[str, ...] | None, ...] = ()
    # The ``model:`` section: where the triage model decides beside the rules; None = it only
    # answers intent/urgency conditions.
    policy: Policy | None = None


class _Builder:
    """Numbers keywords, regexes and gates across the whole document while it builds each rule."""

    def __init__(self, doc: document.RuleFile) -> None:
        self.doc = doc
        self.hours = {g.id: (hours_of(g.hours) if g.hours is not None else None) for g in doc.groups}
        self.keyword_ids: dict[tuple[str, bool], int] = {}
        self.regex_ids: dict[str, int] = {}
        self._frequency_by_id: list[int] = []
        # Gates that are not keywords ("detector:txid", "run:26"), numbered after the keywords.
        self.feature_ids: dict[str, int] = {}

    def keyword(self, text: str, literal: bool = False) -> int:
        """The id of a rule keyword (normalised, word edges) or of a regex literal (verbatim)."""
        if literal:
            key = (text, False)
        else:
            norm = normalize_keyword(text)
            key = (norm, is_word_char(norm[0]) or is_word_char(norm[-1]))
        return self.keyword_ids.setdefault(key, len(self.keyword_ids))

    def regex(self, pattern: str) -> int:
        return self.regex_ids.setdefault(pattern, len(self.regex_ids))

    def condition(self, cond: Any, label: str) -> ConditionNode:
        def at(key: str) -> str:
            return f"{label}.{key}" if label else key

        if isinstance(cond, document.Always):
            return AlwaysNode(at("always"))
        if isinstance(cond, document.Channel):
            return FieldNode(at("channel"), "channel", frozenset(cond.channel))
        if isinstance(cond, document.Account):
            return FieldNode(at("account"), "account", frozenset(cond.account))
        if isinstance(cond, document.Language):
            return FieldNode(at("language"), "language", frozenset(cond.language))
        if isinstance(cond, document.Conversation):
            return FieldNode(at("conversation"), "conversation", frozenset({cond.conversation}))
        if isinstance(cond, document.Sender):
            attrs = tuple(sorted((k, frozenset(v)) for k, v in cond.sender.items()))
            return SenderNode(at("sender"), attrs)
        if isinstance(
            cond,
            document.ContainsAny | document.ContainsAll | document.SubjectContainsAny | document.SubjectContainsAll,
        ):
            key, words = next(iter(cond.model_dump().items()))
            ids = [self.keyword(w) for w in words]
            # The first position of each keyword in the author's list, for the trace label.
            positions = {kw: i for i, kw in reversed(list(enumerate(ids)))}
            return KeywordsNode(
                at(key),
                tuple(dict.fromkeys(ids)),
                key.endswith("_all"),
                key.startswith("subject_"),
                positions=positions,
            )
        if isinstance(cond, document.Regex | document.SubjectRegex):
            subject = isinstance(cond, document.SubjectRegex)
            pattern = cond.subject_regex if isinstance(cond, document.SubjectRegex) else cond.regex
            factors = required_literals(pattern)
            return RegexNode(
                at("subject_regex" if subject else "regex"),
                self.regex(pattern),
                subject,
                factors=tuple(self.keyword(f, literal=True) for f in sorted(factors or ())),
                min_run=0 if factors else required_alnum_run(pattern),
            )
        if isinstance(cond, document.Detector):
            return DetectorNode(at("detector"), expand_kinds(cond.detector))
        if isinstance(cond, document.Time):
            return TimeNode(at("time"), hours_of(cond.time))
        if isinstance(cond, document.BusinessHours):
            return TimeNode(at("business_hours"), self.hours[cond.business_hours])
        if isinstance(cond, document.Intent):
            return ModelNode(at("intent"), "group", cond.intent.is_, cond.intent.min)
        if isinstance(cond, document.Urgency):
            return ModelNode(at("urgency"), "priority", cond.urgency.is_, cond.urgency.min)
        if isinstance(cond, document.All):
            return self.combine(AllNode, at("all"), cond.all)
        if isinstance(cond, document.AnyOf):
            return self.combine(AnyNode, at("any"), cond.any)
        if isinstance(cond, document.Not):
            child = self.condition(cond.not_, at("not"))
            return NotNode(at("not"), child, child.cost)
        raise TypeError(f"unknown condition {cond!r}")  # the model makes this unreachable

    def combine(self, kind: type[AllNode] | type[AnyNode], label: str, items: Sequence[Any]) -> ConditionNode:
        children = [self.condition(c, f"{label}[{i}]") for i, c in enumerate(items)]
        if len(children) == 1:
            # all/any of one condition is that condition: the same matches (its labels already
            # carry the path), one call less per evaluation.
            return children[0]
        # sorted() is stable: equal costs keep the author's order, so evaluation is deterministic.
        children.sort(key=lambda c: c.cost)
        return kind(label, tuple(children), max(c.cost for c in children))

    def feature(self, name: str) -> int:
        """The gate id of a non-keyword gate (numbered after every keyword id)."""
        return self.feature_ids.setdefault(name, len(self.keyword_ids) + len(self.feature_ids))

    def gate(self, cond: ConditionNode) -> frozenset[int] | None:
        """Gate ids at least one of which is present in any message satisfying ``cond``."""
        if isinstance(cond, RegexNode):
            if cond.factors:
                return frozenset(cond.factors)
            if cond.min_run >= MIN_ALNUM_RUN:
                return frozenset({self.feature(f"run:{cond.min_run}")})
            return None
        if isinstance(cond, DetectorNode):
            # The engine finds these kinds for every message in its first detector pass.
            return frozenset(self.feature(f"detector:{kind}") for kind in sorted(cond.kinds))
        if isinstance(cond, KeywordsNode):
            if cond.need_all:
                return frozenset({min(cond.keyword_ids, key=self._rarity)})
            return frozenset(cond.keyword_ids)
        if isinstance(cond, AllNode):
            gates = [g for g in (self.gate(c) for c in cond.children) if g is not None]
            return min(gates, key=lambda g: sum(map(self._rarity, g))) if gates else None
        if isinstance(cond, AnyNode):
            union: set[int] = set()
            for child in cond.children:
                g = self.gate(child)
                if g is None:
                    return None
                union |= g
            return frozenset(union)
        return None  # not, and every other condition, can hold without any keyword

    def _rarity(self, gate_id: int) -> int:
        if gate_id < len(self._frequency_by_id):
            return self._frequency_by_id[gate_id]
        # A detector finding or a long alphanumeric run: prefer a rare keyword of the same rule.
        return len(self.doc.rules)

    def build(self) -> CompiledRules:
        compiled: list[CompiledRule] = []
        conds = [self.condition(_as_condition(r.when), "") for r in self.doc.rules]
        # How many rules use each keyword: gates prefer rare keywords.
        frequency = [0] * len(self.keyword_ids)
        for cond in conds:
            for kw in set(_keyword_ids(cond)):
                frequency[kw] += 1
        self._frequency_by_id = frequency
        texts = {i: t for t, i in self.keyword_ids.items()}
        keyword_rules: dict[int, list[int]] = {}
        ungated: set[int] = set()
        for index, (rule, cond) in enumerate(zip(self.doc.rules, conds, strict=True)):
            gate = self.gate(cond)
            if gate is None:
                ungated.add(index)
            else:
                for kw in gate:
                    keyword_rules.setdefault(kw, []).append(index)
            compiled.append(CompiledRule(index, rule.id, cond, self.actions(rule.then), gate))
        keywords = tuple(Keyword(*texts[i]) for i in range(len(texts)))
        # Only the features some rule's gate uses are computed per message.
        used = {kw for rule in compiled if rule.gate is not None for kw in rule.gate}
        features = {name: i for name, i in self.feature_ids.items() if i in used}
        detector_gates = {n[len("detector:") :]: i for n, i in features.items() if n.startswith("detector:")}
        run_gates = tuple(sorted((int(n[len("run:") :]), i) for n, i in features.items() if n.startswith("run:")))
        return CompiledRules(
            rules=tuple(compiled),
            keywords=keywords,
            scanner=Scanner.build(keywords),
            keyword_rules={k: tuple(v) for k, v in keyword_rules.items()},
            ungated=frozenset(ungated),
            eager_kinds=frozenset(detector_gates)
            | frozenset(
                k
                for i in ungated
                for node in iter_nodes(compiled[i].condition)
                if isinstance(node, DetectorNode)
                for k in node.kinds
            ),
            detector_gates=detector_gates,
            run_gates=run_gates,
            regexes=tuple(compile_regex(p) for p in self.regex_ids),
            regex_leads=tuple(leading_words(p) for p in self.regex_ids),
            groups={
                g.id: GroupInfo(g.id, g.name or g.id, tuple(g.languages), self.hours[g.id]) for g in self.doc.groups
            },
            default_group=self.doc.defaults.group,
            default_priority=_priority(self.doc.defaults.priority),
            policy=policy_of(self.doc.model) if self.doc.model is not None else None,
        )

    def actions(self, then: document.Then) -> Actions:
        reply: Mapping[str, str] | None = None
        if isinstance(then.auto_reply, str):
            reply = self.doc.templates[then.auto_reply]
        elif then.auto_reply is not None:
            reply = then.auto_reply
        soft = then.soft_parts()
        return Actions(
            tags=tuple(dict.fromkeys(then.tags)),
            priority=_priority(then.priority) if then.priority is not None else None,
            raise_priority=then.raise_priority,
            route=then.route,
            escalate=then.escalate,
            auto_reply=reply,
            redact=expand_kinds(then.redact or ()),
            stop=then.stop,
            soft_route="route" in soft,
            soft_priority="priority" in soft,
        )


def hours_of(window: document.Window) -> Hours:
    """A document's weekly window as the engine checks it."""
    return Hours(
        tz=window.tz,
        days=frozenset(document.DAYS.index(d) for d in window.days),
        start=_minutes(window.start),
        end=_minutes(window.end),
    )


def policy_of(section: document.ModelPolicy) -> Policy:
    """The ``model:`` section as ``rules.intent.Policy``: a threshold left out can never be met."""

    def threshold(value: float | None) -> float:
        return math.inf if value is None else value

    return Policy(
        threshold(section.route_min),
        threshold(section.priority_min),
        threshold(section.p1_min),
        threshold(section.override_route_min),
        threshold(section.override_priority_min),
    )


def _minutes(text: str) -> int:
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


def _priority(text: str) -> int:
    return int(text[1:])


def _as_condition(when: Any) -> Any:
    """``when: [a, b]`` means ``all: [a, b]``."""
    return document.All(all=when) if isinstance(when, list) else when


def _keyword_ids(cond: ConditionNode) -> Iterator[int]:
    """Every keyword id a compiled condition refers to."""
    if isinstance(cond, KeywordsNode):
        yield from cond.keyword_ids
    elif isinstance(cond, RegexNode):
        yield from cond.factors
    elif isinstance(cond, AllNode | AnyNode):
        for child in cond.children:
            yield from _keyword_ids(child)
    elif isinstance(cond, NotNode):
        yield from _keyword_ids(cond.child)


@dataclass(frozen=True, slots=True)
class Scanner:
    """Every keyword in one Aho-Corasick automaton (ahocorasick-rs: the whole scan is one call
    that returns every overlapping match, in text order, longest first at the same end).

    ``entries[i]`` lists, for the automaton's pattern ``i``, each keyword with that text as
    (keyword id, check the left edge, check the right edge). An edge is checked only when the
    keyword's own character on that side is a word character.
    """

    automaton: ahocorasick_rs.AhoCorasick
    entries: tuple[tuple[tuple[int, bool, bool], ...], ...]

    @classmethod
    def build(cls, keywords: Sequence[Keyword]) -> Scanner | None:
        if not keywords:
            return None
        # One pattern per distinct text: a rule keyword and a regex literal can be the same
        # string with different ids (and edge rules).
        by_text: dict[str, list[tuple[int, bool, bool]]] = {}
        for kw_id, kw in enumerate(keywords):
            left = kw.word_edges and is_word_char(kw.text[0])
            right = kw.word_edges and is_word_char(kw.text[-1])
            by_text.setdefault(kw.text, []).append((kw_id, left, right))
        return cls(ahocorasick_rs.AhoCorasick(list(by_text)), tuple(map(tuple, by_text.values())))


def compile_rules(doc: document.RuleFile) -> CompiledRules:
    """Build the matcher for a validated document (see the module docstring)."""
    return _Builder(doc).build()
