"""RE2 patterns: compile (linear time, no catastrophic backtracking), search, size limits, and
why a pattern is refused, in plain words.

``search_utf8`` calls RE2's internal object directly (``re2._Anchor``, ``regex._regexp``): the public
``search`` costs four times as much per pattern, and every ungated regex runs on every message.
"""

from __future__ import annotations

import functools
from typing import Any

import re2


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
