"""The auto-answer decision and the agents' suggestions.

An article is sent to a user by itself only when all of these hold:

* the caller allows it: not a P1 situation, and no secret, txid or address in the message (the
  router knows the priority and runs the detectors, so it passes ``p1`` and ``sensitive``; this
  package never guesses them);
* the best article's score clears ``Policy.min_score`` and its lead over the runner-up clears
  ``Policy.min_gap`` (both calibrated on a labelled question set, kb/calibrate.py);
* the article is marked ``auto: true``; an ``auto: false`` article is only ever suggested.

Agents get the top three articles in the user's language whatever the decision.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from kb.article import Article, KnowledgeBase, Variant
from kb.loader import KBError
from kb.retrieval import Hit, Method, Retriever

__all__ = ["Answer", "Answerer", "Calibration", "Policy", "Reason", "Suggestion", "decide"]

SUGGESTIONS = 3


class Reason(StrEnum):
    """Why an answer was or was not sent."""

    SENT = "sent"
    P1 = "p1"  # the caller said the situation is P1
    SENSITIVE = "sensitive"  # the caller found a secret, txid or address in the message
    LOW_SCORE = "low-score"
    SMALL_GAP = "small-gap"
    NOT_AUTO = "not-auto"  # the best article is for agents only
    EMPTY = "empty"  # the knowledge base has no article


@dataclass(frozen=True, slots=True)
class Policy:
    """The thresholds of the auto-answer decision (kb/calibrate.py chooses them)."""

    min_score: float
    min_gap: float


@dataclass(frozen=True, slots=True)
class Calibration:
    """What ``switchboard kb calibrate`` writes: the method, the thresholds, and the files of
    labelled questions the question model learns from (paths relative to the calibration file;
    none: no question model). A file written before several were allowed names one, as a string."""

    method: Method
    policy: Policy
    examples: tuple[str, ...] = ()

    @classmethod
    def load(cls, path: Path) -> Calibration:
        """The calibration in ``path`` (``KBError`` if it is not one)."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            policy = Policy(float(data["policy"]["min_score"]), float(data["policy"]["min_gap"]))
            return cls(Method(**data["method"]), policy, _examples(data.get("examples")))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise KBError([f"{path}: not a usable calibration file ({exc})"]) from None

    def examples_paths(self, calibration_file: Path) -> list[Path]:
        return [calibration_file.parent / e for e in self.examples]

    def dump(self, meta: dict[str, Any]) -> str:
        data = {"method": asdict(self.method), "policy": asdict(self.policy), "examples": list(self.examples)}
        return json.dumps(data | meta, indent=2, ensure_ascii=False) + "\n"


def _examples(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ValueError(f"examples must be a path or a list of paths, not {value!r}")


@dataclass(frozen=True, slots=True)
class Suggestion:
    """An article offered to an agent: its score and the variant in the user's language."""

    article: Article
    score: float
    variant: Variant


@dataclass(frozen=True, slots=True)
class Answer:
    """The decision for one message: ``send`` is the article to send (None: leave it to an agent,
    ``reason`` says why), ``suggestions`` the top three for the agent, best first."""

    send: Suggestion | None
    reason: Reason
    suggestions: tuple[Suggestion, ...]
    gap: float


def decide(
    hits: list[Hit], kb: KnowledgeBase, policy: Policy, lang: str | None, *, p1: bool = False, sensitive: bool = False
) -> Answer:
    """The decision on ranked ``hits`` (best first, at least the top two for the gap)."""
    suggestions = tuple(
        Suggestion(kb.get(h.article), h.score, kb.get(h.article).variant(lang)) for h in hits[:SUGGESTIONS]
    )
    if not hits:
        return Answer(None, Reason.EMPTY, (), 0.0)
    gap = hits[0].score - hits[1].score if len(hits) > 1 else hits[0].score
    top = suggestions[0]
    if p1:
        reason = Reason.P1
    elif sensitive:
        reason = Reason.SENSITIVE
    elif hits[0].score < policy.min_score:
        reason = Reason.LOW_SCORE
    elif gap < policy.min_gap:
        reason = Reason.SMALL_GAP
    elif not top.article.auto:
        reason = Reason.NOT_AUTO
    else:
        return Answer(top, Reason.SENT, suggestions, gap)
    return Answer(None, reason, suggestions, gap)


class Answerer:
    """A retriever and a policy: a message in, the decision and the suggestions out."""

    def __init__(self, retriever: Retriever, policy: Policy) -> None:
        self.retriever = retriever
        self.policy = policy

    @property
    def kb(self) -> KnowledgeBase:
        return self.retriever.kb

    def answer(self, text: str, lang: str, *, p1: bool = False, sensitive: bool = False) -> Answer:
        """Blocking (one embedding, tens of ms): call it in a thread from an event loop."""
        hits = self.retriever.search(text, lang, k=max(SUGGESTIONS, 2))
        return decide(hits, self.kb, self.policy, lang, p1=p1, sensitive=sensitive)
