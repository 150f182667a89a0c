"""Prefilters read from a regex's source: what every match must contain or start with, so that
the engine skips a pattern (and the rule behind it) on messages that cannot match.

* ``required_literals``: literal strings one of which every match contains; a rule is gated on
  them through the keyword automaton (what hyperscan and RE2's FilteredRE2 do).
* ``required_alnum_run``: a run of ASCII letters/digits every match contains (addresses, hashes).
* ``leading_words`` / ``lead_excludes``: ``^(word|word…)`` patterns cannot match text that starts
  with another letter.

The analysis reads the pattern with Python's own (private) parser, ``re._parser``; anything it
does not know gives up (no prefilter), which is always safe: the regex itself still decides.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

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


# Regex literals as a prefilter: if every match of a pattern must contain one of a few literal
# strings, the rule can be gated on them through the same automaton (what hyperscan and RE2's
# FilteredRE2 do). Python's own parser reads the pattern (after RE2-only escapes are translated:
# ``\pL``/``\p{P}`` become a non-literal class, ``\x{4e00}`` the character itself); anything it
# does not know gives up (ungated), which is always safe: the regex itself still decides.
_sre_parser: Any = importlib.import_module("re._parser")
_sre_constants: Any = importlib.import_module("re._constants")
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
        parsed = _sre_parser.parse(_python_syntax(pattern))
    except Exception:  # RE2-only syntax ((?U), \C, ...): no prefilter, still correct
        return None
    flags = parsed.state.flags
    if flags & _sre_constants.SRE_FLAG_VERBOSE:
        return None
    return list(parsed), bool(flags & _sre_constants.SRE_FLAG_IGNORECASE)


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
    if op is _sre_constants.LITERAL:
        return {chr(av).casefold() if fold else chr(av)}
    if op is _sre_constants.AT:
        return {""}  # zero width
    if op is _sre_constants.IN:
        chars: set[str] = set()
        for item_op, item_av in av:
            if item_op is not _sre_constants.LITERAL:
                return None  # a range, a category, a negation
            chars.add(chr(item_av).casefold() if fold else chr(item_av))
        return chars if len(chars) <= 8 else None
    if op is _sre_constants.SUBPATTERN:
        _group, add_flags, del_flags, sub = av
        if add_flags & _sre_constants.SRE_FLAG_VERBOSE:
            return None
        fold = _fold(fold, add_flags, del_flags)
        return _exact_seq(list(sub), fold)
    if op is _sre_constants.BRANCH:
        union: set[str] = set()
        for branch in av[1]:
            part = _exact_seq(list(branch), fold)
            if part is None:
                return None
            union |= part
            if len(union) > _MAX_FACTORS:
                return None
        return union
    if op in (_sre_constants.MAX_REPEAT, _sre_constants.MIN_REPEAT, _sre_constants.POSSESSIVE_REPEAT):
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
    if add_flags & _sre_constants.SRE_FLAG_IGNORECASE:
        return True
    if del_flags & _sre_constants.SRE_FLAG_IGNORECASE:
        return False
    return fold


def _node(op: Any, av: Any, fold: bool) -> set[str] | None:
    if op is _sre_constants.SUBPATTERN:
        _group, add_flags, del_flags, sub = av
        if add_flags & _sre_constants.SRE_FLAG_VERBOSE:
            return None
        return _seq(list(sub), _fold(fold, add_flags, del_flags))
    if op is _sre_constants.BRANCH:
        union: set[str] = set()
        for branch in av[1]:
            part = _seq(list(branch), fold)
            if part is None:
                return None
            union |= part
        return union
    if op in (_sre_constants.MAX_REPEAT, _sre_constants.MIN_REPEAT, _sre_constants.POSSESSIVE_REPEAT):
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
    if op is _sre_constants.LITERAL:
        return (1, 1) if chr(av) in _ALNUM else (None, 0)
    if op is _sre_constants.AT:
        return 0, 0  # zero width: the characters around it are adjacent in the match
    if op is _sre_constants.IN:
        for item_op, item_av in av:
            if item_op is _sre_constants.LITERAL:
                ok = chr(item_av) in _ALNUM
            elif item_op is _sre_constants.RANGE:
                lo, hi = item_av
                ok = any(ord(a) <= lo and hi <= ord(b) for a, b in ("09", "az", "AZ"))
            elif item_op is _sre_constants.CATEGORY:
                ok = item_av is _sre_constants.CATEGORY_DIGIT
            else:
                ok = False  # NEGATE and the rest
            if not ok:
                return None, 0
        return 1, 1
    if op is _sre_constants.SUBPATTERN:
        _group, add_flags, _del_flags, sub = av
        if add_flags & (_sre_constants.SRE_FLAG_IGNORECASE | _sre_constants.SRE_FLAG_VERBOSE):
            return None, 0
        return _run_seq(list(sub))
    if op is _sre_constants.BRANCH:
        fulls: list[int | None] = []
        inners: list[int] = []
        for branch in av[1]:
            full, inner = _run_seq(list(branch))
            fulls.append(full)
            inners.append(inner)
        return (None if None in fulls else min(f for f in fulls if f is not None)), min(inners)
    if op in (_sre_constants.MAX_REPEAT, _sre_constants.MIN_REPEAT, _sre_constants.POSSESSIVE_REPEAT):
        low, _high, sub = av
        full, inner = _run_seq(list(sub))
        if full is not None:
            return low * full, low * full
        return None, inner if low >= 1 else 0
    return None, 0
