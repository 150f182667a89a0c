"""The engine: load and compile a rule set once, then evaluate messages against it.

Per message: normalise each field once, scan it once with the keyword automaton, find the
built-in secrets (seed phrase, private key), detect the language, then walk the candidate rules
in file order. Regex results and detector findings are computed on first use and cached for the
message. See docs/rules.md for the semantics.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import hashlib
import logging
import operator
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import msgspec

from rules import detectors
from rules.compile import CompiledRules, compile_rules
from rules.conditions import FieldNode, ModelNode, iter_nodes
from rules.document import PRIORITIES, RuleFile
from rules.intent import Policy, Prediction, Predictor, Ruled, decide
from rules.language import LanguageDetector
from rules.loader import load
from rules.model import (
    MODEL_TRACE_ID,
    Decision,
    GroupInfo,
    MessageIn,
    ModelScores,
    Redaction,
    RuleError,
    RuleSetError,
    TraceEntry,
    Triage,
)
from rules.normalize import Normalized, is_word_char, normalize
from rules.prefilter import MIN_ALNUM_RUN, lead_excludes
from rules.regex import search_utf8

_log = logging.getLogger("switchboard.rules")

#: Languages detected when no group declares the languages it serves.
DEFAULT_LANGUAGES: tuple[str, ...] = ("zh", "en", "ru", "es", "tr", "vi", "pt", "ko")
SECRET_TAG = "secret-leak"
_EMPTY = Normalized("", None)
_ASCII_WORD = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


@functools.lru_cache(maxsize=8)
def _language_detector(languages: tuple[str, ...]) -> LanguageDetector:
    # Building a detector costs tens of milliseconds: share it between reloads of a rule set.
    return LanguageDetector(languages)


_SECRET_KINDS = detectors.expand_kinds(detectors.SECRET_KINDS)
_NOTHING: frozenset[str] = frozenset()


class _Message:
    """The per-message view conditions read (implements ``rules.conditions.Context``)."""

    __slots__ = (
        "_checked",
        "_found",
        "_leads",
        "_model",
        "_norm",
        "_now",
        "_orig",
        "_prediction",
        "_received_at",
        "_regex_cache",
        "_regexes",
        "_triage",
        "_utf8",
        "account",
        "channel",
        "language",
        "new_conversation",
        "sender",
        "subject_hits",
        "text_hits",
    )

    def __init__(
        self,
        msg: MessageIn,
        regexes: tuple[Any, ...],
        leads: tuple[tuple[str, ...] | None, ...],
        model: Predictor | None = None,
    ) -> None:
        self.channel = msg.channel
        self.account = msg.account
        self.sender: Mapping[str, str] = msg.sender
        self.new_conversation = msg.new_conversation
        self.language: str | None = msg.language
        self._received_at = msg.received_at
        self._now: datetime | None = None
        self._orig = {"text": msg.text, "subject": msg.subject or ""}
        self._norm: dict[str, Normalized] = {}
        self._regexes = regexes
        self._leads = leads
        self._regex_cache: dict[tuple[int, str], tuple[int, int] | None] = {}
        self._utf8: dict[str, bytes] = {}
        # Per field: the kinds looked for so far, and what was found by kind (found kinds only).
        self._checked: dict[str, frozenset[str]] = {"text": _NOTHING, "subject": _NOTHING}
        self._found: dict[str, dict[str, list[detectors.Finding]]] = {"text": {}, "subject": {}}
        self.text_hits: dict[int, tuple[int, int]] = {}
        self.subject_hits: dict[int, tuple[int, int]] = {}
        self._model = model
        self._prediction: Prediction | None = None
        self._triage = msg.triage

    def has_subject(self) -> bool:
        return bool(self._orig["subject"])

    def span(self, field: str, start: int, end: int) -> tuple[int, int]:
        return self._norm[field].span_to_original(start, end)

    def regex(self, regex_id: int, field: str) -> tuple[int, int] | None:
        key = (regex_id, field)
        if key in self._regex_cache:
            return self._regex_cache[key]
        leads = self._leads[regex_id] if self._leads else None
        if leads is not None and lead_excludes(leads, self._norm[field].text):
            self._regex_cache[key] = None
            return None
        encoded = self._utf8.get(field)
        if encoded is None:
            encoded = self._utf8[field] = self._norm[field].text.encode("utf-8")
        span = search_utf8(self._regexes[regex_id], encoded)
        self._regex_cache[key] = span
        return span

    def findings(self, field: str, kinds: frozenset[str]) -> list[detectors.Finding]:
        checked = self._checked[field]
        if not kinds <= checked:
            missing = kinds - checked
            self._checked[field] = checked | missing
            text = self._orig[field]
            if text:
                found = self._found[field]
                for finding in detectors.detect(text, missing):
                    found.setdefault(finding.kind, []).append(finding)
        found = self._found[field]
        return [f for k in kinds if k in found for f in found[k]] if found else []

    def found(self, field: str, kinds: frozenset[str]) -> tuple[int, int] | None:
        first: tuple[int, int] | None = None
        for f in self.findings(field, kinds):
            if first is None or (f.start, f.end) < first:
                first = f.start, f.end
        return first

    def prediction(self) -> Prediction | None:
        """The model's prediction, made on first use (None without a model). Redaction first,
        always: the model reads the text and subject with every seed phrase and private key
        masked, as the decision carries them, so it can never see (or learn) a secret."""
        model = self._model
        if self._prediction is None and model is not None:
            carried = self._triage
            if (
                carried is not None
                and carried.model == model.digest
                and len(carried.group) == len(model.group_labels)
                and len(carried.priority) == len(model.priority_labels)
            ):
                # Made at ingest by this same model of this same text (masked the same way).
                self._prediction = Prediction(
                    dict(zip(model.group_labels, carried.group, strict=True)),
                    dict(zip(model.priority_labels, carried.priority, strict=True)),
                )
                return self._prediction
            masked = {
                name: _redact(self._orig[name], self.findings(name, _SECRET_KINDS), name, [])
                for name in ("text", "subject")
            }
            self._prediction = model.predict(masked["text"], masked["subject"] or None)
        return self._prediction

    def triage(self) -> Triage | None:
        """The prediction made, to be carried with the message (None: none made, or a model
        without a digest)."""
        prediction, model = self._prediction, self._model
        if prediction is None or model is None or model.digest is None:
            return None
        return Triage(model.digest, tuple(prediction.group.values()), tuple(prediction.priority.values()))

    def now(self) -> datetime:
        if self._now is None:
            when = self._received_at or datetime.now(UTC)
            # A naive time is taken as UTC rather than the host's local zone: deterministic.
            self._now = when if when.tzinfo is not None else when.replace(tzinfo=UTC)
        return self._now


@dataclass(frozen=True, slots=True)
class Precheck:
    """The ingest precheck's answer (``Engine.precheck``): whether the message goes to the P1
    lane, and the model's prediction to carry with it (None: the model was not asked)."""

    suspect: bool
    triage: Triage | None = None


@dataclass(slots=True)
class _Ruling:
    """What the rules decided for one message, before the ``model:`` section applies."""

    ctx: _Message
    ruled: Ruled
    tags: dict[str, None]
    escalate: bool
    reply: Mapping[str, str] | None
    redact: set[str]
    trace: list[TraceEntry]
    secret: bool  # a seed phrase or private key in the text or subject


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    # Building allocates ~100 objects per rule and frees none of them: the cyclic collector's
    # full passes over that growing heap made a 10,000-rule build 4x slower (6 s -> 1.6 s).
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def default_source() -> str:
    """The text of the rule set shipped with the package (``rules/default.yaml``)."""
    return resources.files("rules").joinpath("default.yaml").read_text(encoding="utf-8")


class Engine:
    """A compiled, immutable rule set. Build with ``from_yaml``/``from_file``/``default``."""

    def __init__(
        self,
        compiled: CompiledRules,
        version: str,
        warnings: tuple[RuleError, ...],
        model: Predictor | None = None,
    ):
        self._compiled = compiled
        self._version = version
        self._warnings = warnings
        self._model = model
        served = sorted({lang for g in compiled.groups.values() for lang in g.languages})
        self._languages = tuple(served) or DEFAULT_LANGUAGES
        self._detector = _language_detector(self._languages)
        self._reads_conversation = any(
            isinstance(node, FieldNode) and node.field == "conversation"
            for rule in compiled.rules
            for node in iter_nodes(rule.condition)
        )
        # The ingest precheck's rules (suspects_p1): those that set P1, and whether one reads the language.
        self._p1_rules = frozenset(rule.index for rule in compiled.rules if rule.then.priority == 1)
        self._p1_reads_language = any(
            isinstance(node, FieldNode) and node.field == "language"
            for rule in compiled.rules
            if rule.index in self._p1_rules
            for node in iter_nodes(rule.condition)
        )
        # Found in one detector pass at the start: the secrets, and what ungated rules ask for.
        self._eager = compiled.eager_kinds | _SECRET_KINDS
        # A run gate (n, id) holds when the normalised subject or text has a run of >= n ASCII
        # letters/digits (runs shorter than MIN_ALNUM_RUN do not count; n <= 0 always holds):
        # one search that stops at the first such run, rather than measuring every run.
        self._run_gates = tuple(
            (_run_re(max(n, MIN_ALNUM_RUN)) if n > 0 else None, gate_id) for n, gate_id in compiled.run_gates
        )

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_yaml(cls, text: str, filename: str = "<rules>", model: Predictor | None = None) -> Engine:
        """Validate and compile; raise ``RuleSetError`` with every error found. ``model``: the
        triage model that ``intent``/``urgency`` conditions and the ``model:`` section ask
        (``rules.intent.IntentModel``); a rule set that names a label the model lacks is refused
        like any invalid one (``RuleSetError``)."""
        with _gc_paused():
            loaded = load(text, filename)
        version = hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
        return cls.from_document(loaded.document, filename, version, loaded.warnings, model)

    @classmethod
    def from_document(
        cls,
        document: RuleFile,
        filename: str,
        version: str,
        warnings: tuple[RuleError, ...] = (),
        model: Predictor | None = None,
    ) -> Engine:
        """Compile a validated document (``rules.loader.load``), e.g. one a tool changed in
        memory (triage/evaluate.py makes rules soft); ``from_yaml`` is the usual way in."""
        with _gc_paused():
            compiled = compile_rules(document)
        misfits = _model_misfits(compiled, model) if model is not None else []
        if misfits:
            raise RuleSetError([RuleError(filename, 1, 1, rule_id, reason) for rule_id, reason in misfits])
        # DEBUG: every CLI command that loads the rules compiles them (a line on each); the rule
        # set workers route with is logged by router/rulestore.py.
        _log.debug(
            "compiled %d rules (%d keywords, %d regexes) from %s, version %s",
            len(compiled.rules),
            len(compiled.keywords),
            len(compiled.regexes),
            filename,
            version,
        )
        return cls(compiled, version, warnings, model)

    @classmethod
    def from_file(cls, path: str | Path, model: Predictor | None = None) -> Engine:
        """Read a rule file (UTF-8) and compile it; raise ``RuleSetError`` (see ``from_yaml``)."""
        return cls.from_yaml(Path(path).read_text(encoding="utf-8"), str(path), model)

    @classmethod
    def load(cls, path: str | Path | None, model: Predictor | None = None) -> Engine:
        """A rule file, or the rule set shipped with the package when ``path`` is None."""
        return cls.default(model) if path is None else cls.from_file(path, model)

    @classmethod
    def default(cls, model: Predictor | None = None) -> Engine:
        """The rule set shipped with the package (``rules/default.yaml``)."""
        return cls.from_yaml(default_source(), "default.yaml", model)

    # ------------------------------------------------------------------ properties

    @property
    def version(self) -> str:
        """sha256 of the source text, first 12 hex digits."""
        return self._version

    @property
    def groups(self) -> Mapping[str, GroupInfo]:
        return self._compiled.groups

    @property
    def default_group(self) -> str:
        return self._compiled.default_group

    @property
    def default_priority(self) -> int:
        """The priority (1-4) a message gets when no rule sets one."""
        return self._compiled.default_priority

    @property
    def model(self) -> Predictor | None:
        """The triage model the engine asks, if any."""
        return self._model

    @property
    def policy(self) -> Policy | None:
        """The rule set's ``model:`` section (None without one)."""
        return self._compiled.policy

    @functools.cached_property
    def soft_routes(self) -> frozenset[str]:
        """The ids of the rules whose route the triage model may override (``then: {soft: …}``)."""
        return frozenset(rule.id for rule in self._compiled.rules if rule.then.soft_route)

    def hard_routed(self, routed_by: str | None) -> bool:
        """Whether a hard rule routed a decision (``routed_by``: its): the rules keep control there.
        Where no rule routed, the triage model did, or a soft rule did, the model's second opinion
        (router/review.py) may move the conversation."""
        return routed_by not in (None, MODEL_TRACE_ID) and routed_by not in self.soft_routes

    @property
    def warnings(self) -> tuple[RuleError, ...]:
        return self._warnings

    @property
    def rule_count(self) -> int:
        return len(self._compiled.rules)

    @property
    def reads_conversation_state(self) -> bool:
        """Whether any rule has a ``conversation`` (new / follow-up) condition: a caller that
        must look the state up can skip that when none has."""
        return self._reads_conversation

    @property
    def languages(self) -> tuple[str, ...]:
        """The languages the detector chooses among."""
        return self._languages

    # ------------------------------------------------------------------ evaluation

    def _scan(self, text: str) -> dict[int, tuple[int, int]]:
        hits: dict[int, tuple[int, int]] = {}
        scanner = self._compiled.scanner
        if scanner is None or not text:
            return hits
        entries = scanner.entries
        n = len(text)
        # has_word_edges() inlined: the matched text is the keyword, so whether its first/last
        # character is a word character was decided at build time (``left``/``right``); only the
        # neighbours are looked at here, and a keyword already recorded is skipped first.
        for pattern, start, end in scanner.automaton.find_matches_as_indexes(text, overlapping=True):
            for kw_id, left, right in entries[pattern]:
                if kw_id in hits:
                    continue
                if left and start > 0:
                    ch = text[start - 1]
                    if ch in _ASCII_WORD or (not ch.isascii() and is_word_char(ch)):
                        continue
                if right and end < n:
                    ch = text[end]
                    if ch in _ASCII_WORD or (not ch.isascii() and is_word_char(ch)):
                        continue
                hits[kw_id] = (start, end)
        return hits

    def ruled(self, msg: MessageIn) -> Ruled:
        """What the rules alone decided for ``msg``, before the ``model:`` section applies: for
        choosing a policy offline (triage/evaluate.py), where the model's predictions are known."""
        return self._apply_rules(msg).ruled

    def _prepare(self, msg: MessageIn, model: Predictor | None) -> _Message:
        """The message view with its fields normalised and scanned, the eager detectors run and,
        when no hint came, the language detected."""
        compiled = self._compiled
        ctx = _Message(msg, compiled.regexes, compiled.regex_leads, model)
        ctx._norm["text"] = normalize(msg.text)
        ctx._norm["subject"] = normalize(msg.subject) if msg.subject else _EMPTY
        ctx.text_hits = self._scan(ctx._norm["text"].text)
        ctx.subject_hits = self._scan(ctx._norm["subject"].text)
        # One detector pass per field: the secrets, and the kinds of detector gates.
        eager_text = ctx.findings("text", self._eager)
        if msg.subject:
            ctx.findings("subject", self._eager)
        if ctx.language is None:
            secret_text = [x for x in eager_text if x.kind in _SECRET_KINDS]
            ctx.language = self._detector.detect(_without(msg.text, secret_text), secrets_removed=True)
        return ctx

    def _candidates(self, ctx: _Message) -> set[int]:
        """The rules whose gate (a keyword, a detector finding, a run of letters) the message
        passes, and the ungated ones: the only rules that can match."""
        compiled = self._compiled
        candidates = set(compiled.ungated)
        keyword_rules = compiled.keyword_rules
        for kw in ctx.text_hits:
            candidates.update(keyword_rules.get(kw, ()))
        for kw in ctx.subject_hits:
            candidates.update(keyword_rules.get(kw, ()))
        found_text, found_subject = ctx._found["text"], ctx._found["subject"]
        if compiled.detector_gates and (found_text or found_subject):
            for kind, gate_id in compiled.detector_gates.items():
                if found_text.get(kind) or found_subject.get(kind):
                    candidates.update(keyword_rules[gate_id])
        if self._run_gates:
            texts = (ctx._norm["text"].text, ctx._norm["subject"].text)
            for run, gate_id in self._run_gates:
                if run is None or (texts[0] and run.search(texts[0])) or (texts[1] and run.search(texts[1])):
                    candidates.update(keyword_rules[gate_id])
        return candidates

    def precheck(self, msg: MessageIn, *, model: bool = False) -> Precheck:
        """Whether ``msg`` looks like a P1 situation: the ingest precheck of the P1 lane
        (router/inbox.py, docs/surge.md). First the rules that set P1, each tried whatever the
        rules before it did (no ``stop``), without the triage model (its conditions do not hold)
        and with the language detected only when one of them reads it; then, with ``model`` and
        a rule set whose ``model:`` section raises to P1, the model's P(P1) against that
        threshold (~5x the cost of the rules). A false positive costs lane capacity; a miss is
        routed in turn, by the full evaluation. The model's prediction (made with ``model``
        whether or not a P1 rule caught the message) comes back to be carried with the message
        (``Triage``): the router's evaluation uses it instead of predicting the same text again."""
        compiled = self._compiled
        ctx: _Message | None = None
        asks_model = model and self._model is not None and compiled.policy is not None
        caught = False
        p1 = self._p1_rules
        if p1:
            probe = msg
            if msg.language is None and not self._p1_reads_language:
                # No P1 rule asks: skip the detector (the costliest step after the scan).
                probe = msgspec.structs.replace(msg, language="")
            ctx = self._prepare(probe, None)
            rules = compiled.rules
            caught = any(rules[i].condition.match(ctx) is not None for i in sorted(self._candidates(ctx) & p1))
        if not asks_model or compiled.policy is None:
            return Precheck(caught)
        if ctx is None:
            ctx = _Message(msg, compiled.regexes, compiled.regex_leads, self._model)
        else:
            ctx._model = self._model  # now, after the P1 rules: their model conditions did not hold
        # Asked even when a P1 rule caught the message: the router's evaluation asks the model of
        # every message anyway (the P1 threshold applies to all), and the appending processes
        # scale out where the router's shard does not.
        prediction = ctx.prediction()
        assert prediction is not None  # a model was given
        return Precheck(caught or prediction.priority.get("P1", 0.0) >= compiled.policy.p1_min, ctx.triage())

    def _apply_rules(self, msg: MessageIn) -> _Ruling:
        compiled = self._compiled
        ctx = self._prepare(msg, self._model)
        found_text, found_subject = ctx._found["text"], ctx._found["subject"]
        secret = any(kind in _SECRET_KINDS for kind in (*found_text, *found_subject))
        candidates = self._candidates(ctx)

        tags: dict[str, None] = {}
        priority: int | None = None
        hard_priority: int | None = None  # the most urgent a hard rule set (soft rules aside)
        priority_by: str | None = None
        group: str | None = None
        routed_by: str | None = None
        route_soft = False
        escalate = False
        reply: Mapping[str, str] | None = None
        redact: set[str] = set()
        trace: list[TraceEntry] = []
        for index in sorted(candidates):
            rule = compiled.rules[index]
            matches = rule.condition.match(ctx)
            if matches is None:
                continue
            trace.append(TraceEntry(rule.id, tuple(matches)))
            then = rule.then
            for tag in then.tags:
                tags[tag] = None
            if then.priority is not None:
                if priority is None or then.priority < priority:
                    priority, priority_by = then.priority, rule.id
                if not then.soft_priority and (hard_priority is None or then.priority < hard_priority):
                    hard_priority = then.priority
            if then.raise_priority is not None:
                base = priority if priority is not None else compiled.default_priority
                # A raise is never soft: it fixes the priority reached.
                priority = hard_priority = max(1, base - then.raise_priority)
                priority_by = rule.id
            if then.route is not None and group is None:
                group, routed_by, escalate, route_soft = then.route, rule.id, then.escalate, then.soft_route
            if then.auto_reply is not None and reply is None:
                reply = then.auto_reply
            redact |= then.redact
            if then.stop:
                break
        ruled = Ruled(group, route_soft, priority, hard_priority, routed_by, priority_by)
        return _Ruling(ctx, ruled, tags, escalate, reply, redact, trace, secret)

    def evaluate(self, msg: MessageIn) -> Decision:
        """Classify one message: tags, priority, group, auto-reply, redactions and trace."""
        compiled = self._compiled
        ruling = self._apply_rules(msg)
        ctx, ruled, tags, trace = ruling.ctx, ruling.ruled, ruling.tags, ruling.trace
        group, priority, routed_by, escalate = ruled.group, ruled.priority, ruled.routed_by, ruling.escalate

        policy = compiled.policy
        applied: tuple[str, ...] = ()
        overrode: list[tuple[str, str, str, float]] = []
        prediction = (
            ctx.prediction()  # None without a model: the section is then inert
            if policy is not None and _policy_asks(policy, ruled)
            else None
        )
        if policy is not None and prediction is not None:
            verdict = decide(ruled, prediction, policy)
            applied = verdict.applied
            if verdict.group is not None:
                if "override_route" in applied and group is not None and routed_by is not None:
                    overrode.append(("route", routed_by, group, policy.override_route_min))
                    escalate = False  # the rule's escalate went with its group
                group, routed_by = verdict.group, MODEL_TRACE_ID
            if verdict.priority is not None:
                if "override_priority" in applied and priority is not None and ruled.priority_by is not None:
                    overrode.append(("priority", ruled.priority_by, f"P{priority}", policy.override_priority_min))
                priority = verdict.priority
        if ctx._prediction is not None:
            trace.append(_model_trace(ctx._prediction, applied, tuple(overrode)))

        if ruling.secret:
            tags[SECRET_TAG] = None
        if ctx.language:
            tags[f"lang:{ctx.language}"] = None

        kinds = frozenset(ruling.redact | _SECRET_KINDS)
        redactions: list[Redaction] = []
        text = _redact(msg.text, ctx.findings("text", kinds), "text", redactions)
        subject = (
            _redact(msg.subject, ctx.findings("subject", kinds), "subject", redactions)
            if msg.subject is not None
            else None
        )
        decision = Decision(  # positional (cheaper than keywords), in the field order
            group if group is not None else compiled.default_group,  # group
            priority if priority is not None else compiled.default_priority,  # priority
            tuple(tags),  # tags
            ctx.language,  # language
            text,  # text
            subject,  # subject
            tuple(redactions),  # redactions
            _choose_reply(ruling.reply, ctx.language),  # auto_reply
            escalate,  # escalate
            routed_by,  # routed_by
            tuple(trace),  # trace
            self._version,  # rules_version
        )
        if _log.isEnabledFor(logging.DEBUG):
            # Ids, counts and positions only: message text never reaches the logs.
            _log.debug(
                "routed to %s (P%d) by %s; rules %s; %d redactions",
                decision.group,
                decision.priority,
                decision.routed_by,
                ",".join(t.rule_id for t in decision.trace),
                len(decision.redactions),
            )
        return decision


def _model_misfits(compiled: CompiledRules, model: Predictor) -> list[tuple[str | None, str]]:
    """(rule id, reason) for each way the model's labels do not fit the rule set: a group or
    priority a condition asks about that the model cannot predict, or (for the ``model:`` section)
    a group the model may route to that the rule set lacks, or a priority that is not P1-P4."""
    problems: list[tuple[str | None, str]] = []
    labels = {"group": frozenset(model.group_labels), "priority": frozenset(model.priority_labels)}
    for rule in compiled.rules:
        for node in iter_nodes(rule.condition):
            if isinstance(node, ModelNode) and node.value not in labels[node.task]:
                known = ", ".join(sorted(labels[node.task]))
                problems.append((rule.id, f"{node.label} {node.value!r} is not a label of the triage model ({known})"))
    policy = compiled.policy
    if policy is not None:
        unknown = sorted(labels["group"] - set(compiled.groups))
        routes = [name for name in ("route_min", "override_route_min") if getattr(policy, name) <= 1.0]
        if routes and unknown:
            where = "/".join(f"model.{name}" for name in routes)
            problems.append((None, f"{where}: the triage model's groups {unknown} are not groups of the rule set"))
        odd = sorted(labels["priority"] - set(PRIORITIES))
        if odd:
            problems.append((None, f"model: the triage model's priorities {odd} are not P1-P4"))
    return problems


def _policy_asks(policy: Policy, ruled: Ruled) -> bool:
    """Whether a threshold of the ``model:`` section could apply (a threshold left out is inf):
    only then is the model asked for the policy's sake."""
    return (
        policy.p1_min <= 1.0
        or (policy.route_min <= 1.0 if ruled.group is None else ruled.route_soft and policy.override_route_min <= 1.0)
        or (
            policy.priority_min <= 1.0
            if ruled.priority is None
            else ruled.priority_soft and policy.override_priority_min <= 1.0
        )
    )


_second = operator.itemgetter(1)


def _top(probs: Mapping[str, float], n: int) -> tuple[tuple[str, float], ...]:
    best = sorted(probs.items(), key=_second, reverse=True)[:n]
    return tuple((label, round(p, 3)) for label, p in best)


def _model_trace(
    prediction: Prediction, applied: tuple[str, ...], overrode: tuple[tuple[str, str, str, float], ...]
) -> TraceEntry:
    scores = ModelScores(_top(prediction.group, 3), _top(prediction.priority, 2), applied, overrode)
    return TraceEntry(MODEL_TRACE_ID, (), scores)


@functools.lru_cache(maxsize=64)
def _run_re(n: int) -> re.Pattern[str]:
    """Finds a run of at least ``n`` ASCII letters/digits (keyed on the rule set's lengths only)."""
    return re.compile(f"[0-9A-Za-z]{{{n}}}")


def _without(text: str, spans: list[detectors.Finding]) -> str:
    """The text with secret spans blanked, so a pasted English seed phrase does not make a
    Portuguese message "English"."""
    if not spans:
        return text
    out, pos = [], 0
    for f in sorted(spans, key=lambda f: f.start):
        if f.start >= pos:
            out.append(text[pos : f.start])
            out.append(" ")
            pos = f.end
    out.append(text[pos:])
    return "".join(out)


def redact_secrets(text: str) -> str:
    """``text`` with every seed phrase and private key masked, for text kept beside a decision
    (e.g. an e-mail's full body, of which only the stripped part was evaluated)."""
    return _redact(text, detectors.detect(text, detectors.SECRET_KINDS), "text", [])


def _redact(text: str, findings: list[detectors.Finding], field: str, out: list[Redaction]) -> str:
    if not findings:
        return text
    # Earliest first, longest first on a tie; a finding overlapping a kept one is already masked.
    ordered = sorted(findings, key=lambda f: (f.start, -f.end, f.kind))
    parts: list[str] = []
    pos = 0
    for f in ordered:
        if f.start < pos:
            if f.end > pos:  # partial overlap: widen the previous mask rather than leak a tail
                prev = out[-1]
                out[-1] = Redaction(prev.field, prev.kind, prev.start, f.end, prev.mask)
                pos = f.end
            continue
        mask = f"[redacted:{f.kind}]"
        parts.append(text[pos : f.start])
        parts.append(mask)
        out.append(Redaction(field, f.kind, f.start, f.end, mask))
        pos = f.end
    parts.append(text[pos:])
    return "".join(parts)


def _choose_reply(template: Mapping[str, str] | None, language: str | None) -> str | None:
    if template is None:
        return None
    if language is not None and language in template:
        return template[language]
    return template.get("default", template.get("en"))
