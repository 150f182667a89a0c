"""Compile a validated ``RuleFile`` into a matcher whose per-message cost barely depends on size.

How (the measurements behind it are in ``../shared/PROTOCOL-NOTES.md``, "Rule matching"):

* Every keyword of every rule is normalised (``normalize_keyword``) and put in ONE Aho-Corasick
  automaton; a message is scanned once per field, so keyword cost follows the text length, not
  the rule count.
* Each rule gets a *gate*: a set of keywords of which at least one must be present for the rule to
  possibly match (derived from the condition tree: ``contains_any`` -> its keywords;
  ``contains_all`` -> its rarest keyword; ``all`` -> the most selective gated child; ``any`` ->
  the union when every child is gated; ``not`` -> never gated). Only gated rules whose gate was
  hit, plus the ungated rules, are evaluated. Picking the *rarest* keyword matters: a specific
  rule (an error code + a coin + an action) is gated on its error code, not on "usdt", so adding
  10,000 such rules does not make every USDT message evaluate 500 of them.
* Conditions are tried cheapest first inside ``all``/``any`` (fields, then time, keywords,
  regexes, detectors), so regexes and detectors run only when the cheap parts already hold.
"""

from __future__ import annotations

import functools
import importlib
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import ahocorasick_rs
import re2

from rules import detectors
from rules import model as m
from rules.model import Hours, Match
from rules.normalize import is_word_char, normalize_keyword

if TYPE_CHECKING:
    from datetime import datetime


# --------------------------------------------------------------------------- regexes


def _re2_options() -> Any:
    options = re2.Options()
    options.log_errors = False  # RE2 would print every refused pattern on stderr via absl
    # Only the whole match's span is ever read: without capture groups RE2 can find it with its
    # DFAs instead of the slower NFA (same spans on every benchmark message).
    options.never_capture = True
    return options


_OPTIONS = _re2_options()


@functools.lru_cache(maxsize=8192)
def compile_regex(pattern: str) -> Any:
    """Compile with RE2 (linear time: no catastrophic backtracking). Raises ``re2.error``."""
    return re2.compile(pattern, _OPTIONS)


_UNANCHORED = re2._Anchor.UNANCHORED
_NULL_SPAN = (-1, -1)


def search_utf8(regex: Any, text: bytes) -> tuple[int, int] | None:
    """First match of a compiled pattern in UTF-8 ``text``, as *character* offsets, or None.

    The public ``search(str)`` re-encodes the text for every pattern and builds a match object
    (~2 µs); a message is encoded once and the RE2 object is called directly (~0.5 µs). Offsets
    are converted only for a match, which is rare.
    """
    start, end = regex._regexp.Match(_UNANCHORED, text, 0, len(text))[0]
    if start == -1:
        return None
    char_start = len(text[:start].decode("utf-8"))
    return char_start, char_start + len(text[start:end].decode("utf-8"))


# "^" + optional leading separators + an alternation of plain words, e.g. the greeting rule's
# ``^[\s\p{P}\p{S}]*(hi|hello|你好)…``: a match starts at offset 0 with a separator or one of
# the words, so text starting with any other *letter* cannot match and RE2 need not run.
_WORD = r"[^()\[\]\\.*+?{}|^$]+"  # a plain word: no metacharacter
_LEADING_WORDS = re.compile(rf"\^(?:\[(?:\\s|\\p\{{[PSZ]\}}|\\pP|\\pS|\\pZ)+\]\*)?\(({_WORD}(?:\|{_WORD})*)\)")


_ASCII_ALNUM = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def _protected(ch: str) -> bool:
    """Letters that are in none of RE2's ``\\s``, ``\\p{P}``, ``\\p{S}``, ``\\p{Z}`` (in every
    Unicode version): ASCII letters and digits, basic Cyrillic, CJK ideographs, Hangul syllables."""
    o = ord(ch)
    return (
        (48 <= o <= 57 or 65 <= o <= 90 or 97 <= o <= 122)
        or 0x410 <= o <= 0x44F
        or 0x4E00 <= o <= 0x9FFF
        or 0xAC00 <= o <= 0xD7A3
    )


def leading_words(pattern: str) -> tuple[str, ...] | None:
    """For a pattern of the form ``^[separators]*(word|word|…)…`` (no flags), its words; None for
    any other pattern. See ``lead_excludes``."""
    m = _LEADING_WORDS.match(pattern)
    if m is None or _top_level_bar(pattern):
        return None
    words = m.group(1).split("|")
    if not all(words):
        return None
    return tuple(sorted(set(words)))


def _top_level_bar(pattern: str) -> bool:
    """Whether ``pattern`` has a ``|`` outside every group (then ``^`` binds one branch only)."""
    depth, i, in_class = 0, 0, False
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            i += 2
            continue
        if in_class:
            in_class = ch != "]"
        elif ch == "[":
            in_class = True
            if pattern[i + 1 : i + 2] == "]":
                i += 1  # a leading "]" is a literal
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            return True
        i += 1
    return False


def lead_excludes(words: tuple[str, ...], text: str) -> bool:
    """True if ``text`` cannot match a pattern whose ``leading_words`` are ``words``.

    ``^`` is the start of the text (no ``(?m)``). A ``_protected`` first character is no
    separator, so the separators match nothing and one of the words must start at offset 0.
    """
    if not text:
        return True  # every word is non-empty, so the empty text cannot match
    first = text[0]
    protected = first in _ASCII_ALNUM if first < "\x80" else _protected(first)
    return protected and not text.startswith(words)


# Pattern sizes, in characters of regex source (RE2 is linear in the text, but its cost grows
# with each pattern and every ungated pattern runs on every message: 50 rules each with a
# 1,000-word alternation took 8.3 s per 250 KB message). The shipped rule set: 16 patterns, the
# longest 379 characters, 1,769 in all; bench/patterns measures a rule set at these limits.
MAX_PATTERN_CHARS = 2_000
MAX_RULE_PATTERN_CHARS = 4_000
MAX_RULESET_PATTERN_CHARS = 60_000


def regex_error(pattern: str) -> str | None:
    """Why RE2 refuses ``pattern`` (with what RE2 cannot do, in plain words), or None."""
    if len(pattern) > MAX_PATTERN_CHARS:
        return (
            f"regex of {len(pattern):,} characters: at most {MAX_PATTERN_CHARS:,} — "
            "use a contains_any condition for long word lists (one automaton for every rule)"
        )
    try:
        compile_regex(pattern)
    except re2.error as exc:
        raw = exc.args[0] if exc.args else ""
        detail = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        hint = ""
        if "invalid escape sequence: \\" in detail and detail[-1:].isdigit():
            hint = " — RE2 (linear-time) does not support backreferences"
        elif "invalid perl operator: (?=" in detail or "(?!" in detail or "(?<" in detail:
            hint = " — RE2 (linear-time) does not support lookahead/lookbehind"
        elif "invalid repetition size" in detail or "bad repetition operator" in detail:
            hint = " — RE2 refuses repeat counts over 1000"
        elif "pattern too large" in detail:
            hint = " — the pattern exceeds RE2's memory budget; split it"
        return f"invalid regex {pattern!r}: {detail}{hint}"
    return None


# Regex literals as a prefilter: if every match of a pattern must contain one of a few literal
# strings, the rule can be gated on them through the same automaton (what hyperscan and RE2's
# FilteredRE2 do). Python's own parser reads the pattern (after RE2-only escapes are translated:
# ``\pL``/``\p{P}`` become a non-literal class, ``\x{4e00}`` the character itself); anything it
# does not know gives up (ungated), which is always safe: the regex itself still decides.
_sre: Any = importlib.import_module("re._parser")
_c: Any = importlib.import_module("re._constants")
_MIN_FACTOR = 2  # shorter literals hit almost every message: no use as a gate
_MAX_FACTORS = 64
#: A regex whose every match contains a run of at least this many ASCII letters/digits (an
#: address, a hash) is gated on the message having such a run (one cheap scan per message).
MIN_ALNUM_RUN = 8
_RE2_ESCAPE = re.compile(r"\\(?:([pP])(?:\{[^}]*\}|.)|x\{([0-9A-Fa-f]{1,6})\}|.)", re.DOTALL)


def _python_syntax(pattern: str) -> str:
    """Translate the RE2-only escapes Python's parser refuses into equivalents for our analysis:
    a Unicode class becomes ``\\W`` (some class: neither a literal nor ASCII-alphanumeric), a
    ``\\x{…}`` code point becomes that character. Other escapes are kept as they are."""

    def sub(m: re.Match[str]) -> str:
        if m.group(1):
            return r"\W"
        if m.group(2):
            return f"\\U{int(m.group(2), 16):08x}"
        return m.group()

    return _RE2_ESCAPE.sub(sub, pattern)


def _parse(pattern: str) -> tuple[list[tuple[Any, Any]], bool] | None:
    try:
        parsed = _sre.parse(_python_syntax(pattern))
    except Exception:  # RE2-only syntax ((?U), \C, ...): no prefilter, still correct
        return None
    flags = parsed.state.flags
    if flags & _c.SRE_FLAG_VERBOSE:
        return None
    return list(parsed), bool(flags & _c.SRE_FLAG_IGNORECASE)


def required_literals(pattern: str) -> frozenset[str] | None:
    """Literal strings one of which every match of ``pattern`` contains, or None if unknown.

    Under ``(?i)`` the literals are case-folded: the text they are looked for in is already
    NFKC + casefold()-normalised, so a case-insensitive match there contains the folded literal.
    Short finite alternatives are multiplied out (``被(人|别人)`` -> {``被人``, ``被别人``};
    ``% ?/`` -> {``%/``, ``% /``}) so that one-character literals still make a useful gate.
    """
    parsed = _parse(pattern)
    if parsed is None:
        return None
    found = _seq(*parsed)
    if not found or len(found) > _MAX_FACTORS or min(map(len, found)) < _MIN_FACTOR:
        return None
    return frozenset(found)


def _seq(items: list[tuple[Any, Any]], fold: bool) -> set[str] | None:
    # A concatenation: every part must match, so any one part's literal set is required; runs
    # of parts with small finite languages are multiplied out. Keep the most selective set
    # (longest shortest literal, then fewest).
    options: list[set[str]] = []
    run: set[str] = {""}

    def flush() -> None:
        nonlocal run
        if run != {""}:
            options.append(run)
        run = {""}

    for op, av in items:
        exact = _exact(op, av, fold)
        if exact is not None and len(run) * len(exact) <= _MAX_FACTORS:
            run = {a + b for a in run for b in exact}
            continue
        flush()
        if exact is not None:
            run = exact
            continue
        part = _node(op, av, fold)
        if part is not None:
            options.append(part)
    flush()
    options = [o for o in options if "" not in o]
    if not options:
        return None
    return max(options, key=lambda o: (min(map(len, o)), -len(o)))


def _exact(op: Any, av: Any, fold: bool) -> set[str] | None:
    """The whole (small, finite) set of strings a node matches, or None."""
    if op is _c.LITERAL:
        return {chr(av).casefold() if fold else chr(av)}
    if op is _c.AT:
        return {""}  # zero width
    if op is _c.IN:
        chars: set[str] = set()
        for item_op, item_av in av:
            if item_op is not _c.LITERAL:
                return None  # a range, a category, a negation
            chars.add(chr(item_av).casefold() if fold else chr(item_av))
        return chars if len(chars) <= 8 else None
    if op is _c.SUBPATTERN:
        _group, add_flags, del_flags, sub = av
        if add_flags & _c.SRE_FLAG_VERBOSE:
            return None
        fold = _fold(fold, add_flags, del_flags)
        return _exact_seq(list(sub), fold)
    if op is _c.BRANCH:
        union: set[str] = set()
        for branch in av[1]:
            part = _exact_seq(list(branch), fold)
            if part is None:
                return None
            union |= part
            if len(union) > _MAX_FACTORS:
                return None
        return union
    if op in (_c.MAX_REPEAT, _c.MIN_REPEAT, _c.POSSESSIVE_REPEAT):
        low, high, sub = av
        if high > 3:
            return None
        inner = _exact_seq(list(sub), fold)
        if inner is None:
            return None
        out: set[str] = set()
        level = {""}
        for count in range(high + 1):
            if count >= low:
                out |= level
            if count < high:
                level = {a + b for a in level for b in inner}
            if len(out) > _MAX_FACTORS or len(level) > _MAX_FACTORS:
                return None
        return out
    return None


def _exact_seq(items: list[tuple[Any, Any]], fold: bool) -> set[str] | None:
    out = {""}
    for op, av in items:
        part = _exact(op, av, fold)
        if part is None:
            return None
        out = {a + b for a in out for b in part}
        if len(out) > _MAX_FACTORS:
            return None
    return out


def _fold(fold: bool, add_flags: int, del_flags: int) -> bool:
    if add_flags & _c.SRE_FLAG_IGNORECASE:
        return True
    if del_flags & _c.SRE_FLAG_IGNORECASE:
        return False
    return fold


def _node(op: Any, av: Any, fold: bool) -> set[str] | None:
    if op is _c.SUBPATTERN:
        _group, add_flags, del_flags, sub = av
        if add_flags & _c.SRE_FLAG_VERBOSE:
            return None
        return _seq(list(sub), _fold(fold, add_flags, del_flags))
    if op is _c.BRANCH:
        union: set[str] = set()
        for branch in av[1]:
            part = _seq(list(branch), fold)
            if part is None:
                return None
            union |= part
        return union
    if op in (_c.MAX_REPEAT, _c.MIN_REPEAT, _c.POSSESSIVE_REPEAT):
        low, _high, sub = av
        return _seq(list(sub), fold) if low >= 1 else None
    return None


# A second, character-class prefilter: address- and hash-shaped patterns (``[13][1-9a-km-z]{25,34}``)
# have no literal, but every match is a long run of ASCII letters and digits, which most messages
# do not contain. RE2 semantics: ``\d`` is [0-9].
_ALNUM = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def required_alnum_run(pattern: str) -> int:
    """A length n such that every match of ``pattern`` contains n consecutive ASCII letters or
    digits (0 when none is known). Case-insensitive patterns give 0: under RE2's case folding
    ``[a-z]`` also matches the Kelvin sign and the long s."""
    parsed = _parse(pattern)
    if parsed is None or parsed[1]:
        return 0
    return _run_seq(parsed[0])[1]


def _run_seq(items: list[tuple[Any, Any]]) -> tuple[int | None, int]:
    # (minimum length if every match is made of ASCII letters/digits only else None,
    #  a run length every match contains)
    total: int | None = 0
    best = current = 0
    for op, av in items:
        full, inner = _run_node(op, av)
        if full is not None:
            current += full
            if total is not None:
                total += full
        else:
            total = None
            best = max(best, current, inner)
            current = 0
    return total, max(best, current)


def _run_node(op: Any, av: Any) -> tuple[int | None, int]:
    if op is _c.LITERAL:
        return (1, 1) if chr(av) in _ALNUM else (None, 0)
    if op is _c.AT:
        return 0, 0  # zero width: the characters around it are adjacent in the match
    if op is _c.IN:
        for item_op, item_av in av:
            if item_op is _c.LITERAL:
                ok = chr(item_av) in _ALNUM
            elif item_op is _c.RANGE:
                lo, hi = item_av
                ok = any(ord(a) <= lo and hi <= ord(b) for a, b in ("09", "az", "AZ"))
            elif item_op is _c.CATEGORY:
                ok = item_av is _c.CATEGORY_DIGIT
            else:
                ok = False  # NEGATE and the rest
            if not ok:
                return None, 0
        return 1, 1
    if op is _c.SUBPATTERN:
        _group, add_flags, _del_flags, sub = av
        if add_flags & (_c.SRE_FLAG_IGNORECASE | _c.SRE_FLAG_VERBOSE):
            return None, 0
        return _run_seq(list(sub))
    if op is _c.BRANCH:
        fulls: list[int | None] = []
        inners: list[int] = []
        for branch in av[1]:
            full, inner = _run_seq(list(branch))
            fulls.append(full)
            inners.append(inner)
        return (None if None in fulls else min(f for f in fulls if f is not None)), min(inners)
    if op in (_c.MAX_REPEAT, _c.MIN_REPEAT, _c.POSSESSIVE_REPEAT):
        low, _high, sub = av
        full, inner = _run_seq(list(sub))
        if full is not None:
            return low * full, low * full
        return None, inner if low >= 1 else 0
    return None, 0


_ADDRESS_KINDS = ("btc_address", "eth_address", "tron_address")


def expand_kinds(kinds: Iterable[str]) -> frozenset[str]:
    """Replace the ``address`` shorthand by the concrete address kinds the detectors report."""
    out: set[str] = set()
    for kind in kinds:
        if kind == "address" and "address" not in detectors.KINDS:
            out.update(_ADDRESS_KINDS)
        else:
            out.add(kind)
    return frozenset(out)


# --------------------------------------------------------------------------- per-message view


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


# --------------------------------------------------------------------------- condition nodes
#
# Each node's match() returns None when the condition does not hold, else the list of matches
# that explain it (possibly empty). Costs order the children of all/any: lower first.

COST_FIELD, COST_TIME, COST_KEYWORD, COST_REGEX, COST_DETECTOR = 0, 1, 2, 3, 4


@dataclass(frozen=True, slots=True)
class AlwaysC:
    label: str
    cost: int = COST_FIELD

    def match(self, ctx: Context) -> list[Match] | None:
        return [(self.label, None, None, None)]


@dataclass(frozen=True, slots=True)
class FieldC:
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
class SenderC:
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
class KeywordsC:
    """contains_any / contains_all (subject and text) and the subject_ variants."""

    label: str
    kw_ids: tuple[int, ...]
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
        for kw in self.kw_ids:
            found = self._find(ctx, self.positions[kw], kw)
            if found is None:
                return None
            out.append(found)
        return out


@dataclass(frozen=True, slots=True)
class RegexC:
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
class DetectorC:
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
class TimeC:
    """time windows, and business_hours (hours None = the group works around the clock)."""

    label: str
    hours: Hours | None
    cost: int = COST_TIME

    def match(self, ctx: Context) -> list[Match] | None:
        if self.hours is None or self.hours.contains(ctx.now()):
            return [(self.label, "received_at", None, None)]
        return None


@dataclass(frozen=True, slots=True)
class AllC:
    label: str
    children: tuple[Cond, ...]
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
class AnyC:
    label: str
    children: tuple[Cond, ...]
    cost: int

    def match(self, ctx: Context) -> list[Match] | None:
        for child in self.children:
            found = child.match(ctx)
            if found is not None:
                return found
        return None


@dataclass(frozen=True, slots=True)
class NotC:
    label: str
    child: Cond
    cost: int

    def match(self, ctx: Context) -> list[Match] | None:
        if self.child.match(ctx) is None:
            return [(self.label, None, None, None)]
        return None


Cond = AlwaysC | FieldC | SenderC | KeywordsC | RegexC | DetectorC | TimeC | AllC | AnyC | NotC


# --------------------------------------------------------------------------- rules and rule set


@dataclass(frozen=True, slots=True)
class Actions:
    tags: tuple[str, ...]
    priority: int | None
    raise_priority: int | None
    route: str | None
    escalate: bool
    auto_reply: Mapping[str, str] | None
    redact: frozenset[str]
    stop: bool


@dataclass(frozen=True, slots=True)
class CompiledRule:
    index: int
    id: str
    cond: Cond
    then: Actions
    gate: frozenset[int] | None  # gate ids, one of which must be present; None = ungated


@dataclass(frozen=True, slots=True)
class Keyword:
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
    groups: Mapping[str, m.GroupInfo]
    default_group: str
    default_priority: int
    # Gate ids past the keywords: "a detector of this kind found something" ...
    detector_gates: Mapping[str, int] = field(default_factory=dict)
    # ... and "the normalised subject or text has a run of >= n ASCII letters/digits" (n, id).
    run_gates: tuple[tuple[int, int], ...] = ()
    # By regex id: for a pattern that can only match with one of a few words at the start of the
    # text, those words (see ``leading_words``), else None.
    regex_leads: tuple[tuple[str, ...] | None, ...] = ()


class _Builder:
    def __init__(self, doc: m.RuleFile) -> None:
        self.doc = doc
        self.hours = {g.id: (Hours.from_window(g.hours) if g.hours is not None else None) for g in doc.groups}
        self.kw_ids: dict[tuple[str, bool], int] = {}
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
        return self.kw_ids.setdefault(key, len(self.kw_ids))

    def regex(self, pattern: str) -> int:
        return self.regex_ids.setdefault(pattern, len(self.regex_ids))

    def condition(self, cond: Any, label: str) -> Cond:
        def at(key: str) -> str:
            return f"{label}.{key}" if label else key

        if isinstance(cond, m.Always):
            return AlwaysC(at("always"))
        if isinstance(cond, m.Channel):
            return FieldC(at("channel"), "channel", frozenset(cond.channel))
        if isinstance(cond, m.Account):
            return FieldC(at("account"), "account", frozenset(cond.account))
        if isinstance(cond, m.Language):
            return FieldC(at("language"), "language", frozenset(cond.language))
        if isinstance(cond, m.Conversation):
            return FieldC(at("conversation"), "conversation", frozenset({cond.conversation}))
        if isinstance(cond, m.Sender):
            attrs = tuple(sorted((k, frozenset(v)) for k, v in cond.sender.items()))
            return SenderC(at("sender"), attrs)
        if isinstance(cond, m.ContainsAny | m.ContainsAll | m.SubjectContainsAny | m.SubjectContainsAll):
            key, words = next(iter(cond.model_dump().items()))
            ids = [self.keyword(w) for w in words]
            # The first position of each keyword in the author's list, for the trace label.
            positions = {kw: i for i, kw in reversed(list(enumerate(ids)))}
            return KeywordsC(
                at(key),
                tuple(dict.fromkeys(ids)),
                key.endswith("_all"),
                key.startswith("subject_"),
                positions=positions,
            )
        if isinstance(cond, m.Regex | m.SubjectRegex):
            subject = isinstance(cond, m.SubjectRegex)
            pattern = cond.subject_regex if isinstance(cond, m.SubjectRegex) else cond.regex
            factors = required_literals(pattern)
            return RegexC(
                at("subject_regex" if subject else "regex"),
                self.regex(pattern),
                subject,
                factors=tuple(self.keyword(f, literal=True) for f in sorted(factors or ())),
                min_run=0 if factors else required_alnum_run(pattern),
            )
        if isinstance(cond, m.Detector):
            return DetectorC(at("detector"), expand_kinds(cond.detector))
        if isinstance(cond, m.Time):
            return TimeC(at("time"), Hours.from_window(cond.time))
        if isinstance(cond, m.BusinessHours):
            return TimeC(at("business_hours"), self.hours[cond.business_hours])
        if isinstance(cond, m.All):
            return self.combine(AllC, at("all"), cond.all)
        if isinstance(cond, m.AnyOf):
            return self.combine(AnyC, at("any"), cond.any)
        if isinstance(cond, m.Not):
            child = self.condition(cond.not_, at("not"))
            return NotC(at("not"), child, child.cost)
        raise TypeError(f"unknown condition {cond!r}")  # the model makes this unreachable

    def combine(self, kind: type[AllC] | type[AnyC], label: str, items: Sequence[Any]) -> Cond:
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
        return self.feature_ids.setdefault(name, len(self.kw_ids) + len(self.feature_ids))

    def gate(self, cond: Cond) -> frozenset[int] | None:
        """Gate ids at least one of which is present in any message satisfying ``cond``."""
        if isinstance(cond, RegexC):
            if cond.factors:
                return frozenset(cond.factors)
            if cond.min_run >= MIN_ALNUM_RUN:
                return frozenset({self.feature(f"run:{cond.min_run}")})
            return None
        if isinstance(cond, DetectorC):
            # The engine finds these kinds for every message in its first detector pass.
            return frozenset(self.feature(f"detector:{kind}") for kind in sorted(cond.kinds))
        if isinstance(cond, KeywordsC):
            if cond.need_all:
                return frozenset({min(cond.kw_ids, key=self._rarity)})
            return frozenset(cond.kw_ids)
        if isinstance(cond, AllC):
            gates = [g for g in (self.gate(c) for c in cond.children) if g is not None]
            return min(gates, key=lambda g: sum(map(self._rarity, g))) if gates else None
        if isinstance(cond, AnyC):
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
        frequency = [0] * len(self.kw_ids)
        for cond in conds:
            for kw in set(_ids(cond)):
                frequency[kw] += 1
        self._frequency_by_id = frequency
        texts = {i: t for t, i in self.kw_ids.items()}
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
                for node in iter_nodes(compiled[i].cond)
                if isinstance(node, DetectorC)
                for k in node.kinds
            ),
            detector_gates=detector_gates,
            run_gates=run_gates,
            regexes=tuple(compile_regex(p) for p in self.regex_ids),
            regex_leads=tuple(leading_words(p) for p in self.regex_ids),
            groups={
                g.id: m.GroupInfo(g.id, g.name or g.id, tuple(g.languages), self.hours[g.id]) for g in self.doc.groups
            },
            default_group=self.doc.defaults.group,
            default_priority=_priority(self.doc.defaults.priority),
        )

    def actions(self, then: m.Then) -> Actions:
        reply: Mapping[str, str] | None = None
        if isinstance(then.auto_reply, str):
            reply = self.doc.templates[then.auto_reply]
        elif then.auto_reply is not None:
            reply = then.auto_reply
        return Actions(
            tags=tuple(dict.fromkeys(then.tags)),
            priority=_priority(then.priority) if then.priority is not None else None,
            raise_priority=then.raise_priority,
            route=then.route,
            escalate=then.escalate,
            auto_reply=reply,
            redact=expand_kinds(then.redact or ()),
            stop=then.stop,
        )


def _priority(text: str) -> int:
    return int(text[1:])


def _as_condition(when: Any) -> Any:
    """``when: [a, b]`` means ``all: [a, b]``."""
    return m.All(all=when) if isinstance(when, list) else when


def iter_nodes(cond: Cond) -> Iterator[Cond]:
    """A condition and every condition inside it."""
    yield cond
    if isinstance(cond, AllC | AnyC):
        for child in cond.children:
            yield from iter_nodes(child)
    elif isinstance(cond, NotC):
        yield from iter_nodes(cond.child)


def _ids(cond: Cond) -> Iterator[int]:
    """Every keyword id a compiled condition refers to."""
    if isinstance(cond, KeywordsC):
        yield from cond.kw_ids
    elif isinstance(cond, RegexC):
        yield from cond.factors
    elif isinstance(cond, AllC | AnyC):
        for child in cond.children:
            yield from _ids(child)
    elif isinstance(cond, NotC):
        yield from _ids(cond.child)


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


def compile_rules(doc: m.RuleFile) -> CompiledRules:
    """Build the matcher for a validated document (see the module docstring)."""
    return _Builder(doc).build()
