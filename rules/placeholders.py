"""Placeholders in auto-reply texts (docs/waits.md): ``{queue_position}``, ``{wait_min}`` and
``{wait_max}``, filled by the route script when it queues the conversation (lua/route.lua). Pure:
the rule validator refuses an unknown one, the router makes the fallback variant of a text.

Only ``{name}`` with a name of letters, digits and ``_`` is a placeholder; other braces are text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

POSITION = "queue_position"
WAIT_MIN = "wait_min"
WAIT_MAX = "wait_max"
PLACEHOLDERS = frozenset({POSITION, WAIT_MIN, WAIT_MAX})
WAITS = (WAIT_MIN, WAIT_MAX)

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
# A sentence ends at one of these (Latin, CJK full-width) or at a line break; the terminator is
# part of the sentence.
_SENTENCE_END = re.compile(r"[.!?。！？]+|\n")


def unknown_placeholders(text: str) -> list[str]:
    """The ``{name}``s of ``text`` that are no placeholder, in order, each once."""
    return list(dict.fromkeys(m for m in _PLACEHOLDER.findall(text) if m not in PLACEHOLDERS))


def check_text(text: str) -> None:
    """A ``ValueError`` naming the unknown placeholders of ``text``, if any."""
    unknown = unknown_placeholders(text)
    if unknown:
        names = ", ".join("{" + u + "}" for u in unknown)
        known = ", ".join("{" + k + "}" for k in sorted(PLACEHOLDERS))
        raise ValueError(f"unknown placeholder {names} (known: {known})")


def has_placeholders(text: str) -> bool:
    return any(m in PLACEHOLDERS for m in _PLACEHOLDER.findall(text))


def without_estimate(text: str, phrase: str, names: Iterable[str] = WAITS) -> str:
    """``text`` for when there is no estimate: each sentence holding ``{wait_min}`` or
    ``{wait_max}`` (or any of ``names``) replaced by ``phrase`` (a whole sentence, e.g. "We will
    answer as soon as an agent is free."), the whitespace around it kept; ``{queue_position}``
    stays to be filled unless named. Consecutive replaced sentences say the phrase once."""
    marks = ["{" + n + "}" for n in names]
    out: list[str] = []
    start = 0
    said = False
    for end in [m.end() for m in _SENTENCE_END.finditer(text)] + [len(text)]:
        if end <= start:
            continue
        sentence = text[start:end]
        start = end
        if not any(m in sentence for m in marks):
            out.append(sentence)
            said = False
        elif not said:
            body = sentence.strip()
            lead = sentence[: len(sentence) - len(sentence.lstrip())]
            out.append(lead + phrase + sentence[len(lead) + len(body) :])
            said = True
    return "".join(out)
