"""A period's causes beside the previous period's: sizes, week-over-week change, spikes.

The current period is clustered (insight/cluster.py). The previous period is not clustered on its
own — its clusters would not line up with this period's — but each of its complaints is counted
for the current cause whose centroid is nearest, if within the merge threshold; the rest are
counted as matching no current cause. Both periods are centred with the current period's language
means, so they are in one space. A cause is a spike when it at least doubled and grew by at least
five complaints (a cause new this period counts as doubled).

Pure: no Redis, no clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from insight.cluster import DEFAULT_THRESHOLD, Centering, Complaint, Vectors, cluster, nearest

__all__ = ["SPIKE_MIN", "SPIKE_RATIO", "Cause", "Causes", "Quote", "causes", "is_spike"]

SPIKE_RATIO = 2.0
SPIKE_MIN = 5
#: Conversation ids given per cause, nearest the centroid first.
EXAMPLES = 5


@dataclass(frozen=True, slots=True)
class Quote:
    ref: str
    lang: str
    text: str


@dataclass(frozen=True, slots=True)
class Cause:
    """One cause: its name (top terms, top tag), its size this period and the previous one's
    complaints nearest it, what it says in each language, and where to read more."""

    name: str
    size: int
    previous: int
    spike: bool
    terms: dict[str, tuple[str, ...]]
    tags: tuple[tuple[str, int], ...]
    quotes: tuple[Quote, ...]
    examples: tuple[str, ...]

    @property
    def change(self) -> int:
        return self.size - self.previous

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "size": self.size,
            "previous": self.previous,
            "change": self.change,
            "spike": self.spike,
            "terms": {lang: list(t) for lang, t in self.terms.items()},
            "tags": [{"tag": tag, "count": n} for tag, n in self.tags],
            "quotes": [{"conversation": q.ref, "lang": q.lang, "text": q.text} for q in self.quotes],
            "examples": list(self.examples),
        }


@dataclass(frozen=True, slots=True)
class Causes:
    """The causes, largest first; ``unmatched`` counts the previous period's complaints near no
    current cause (what went away, or changed shape)."""

    causes: tuple[Cause, ...]
    complaints: int
    previous: int
    unmatched: int


def is_spike(size: int, previous: int) -> bool:
    return size >= SPIKE_RATIO * previous and size - previous >= SPIKE_MIN


def causes(
    current: Sequence[Complaint],
    current_vectors: Vectors,
    previous: Sequence[Complaint],
    previous_vectors: Vectors,
    threshold: float = DEFAULT_THRESHOLD,
) -> Causes:
    """The current period's causes with the previous period's counts (vectors as ``embed``
    gives them: centring is done here)."""
    langs = [c.lang for c in current]
    centering = Centering.fit(current_vectors, langs)
    found = cluster(current, centering.apply(current_vectors, langs), threshold)
    before = [0] * len(found)
    unmatched = 0
    for k in nearest(centering.apply(previous_vectors, [c.lang for c in previous]), found, threshold):
        if k is None:
            unmatched += 1
        else:
            before[k] += 1
    out = []
    for c, n in zip(found, before, strict=True):
        refs = list(dict.fromkeys(current[i].ref for i in c.members))
        quotes = tuple(Quote(current[i].ref, current[i].lang, current[i].text) for i in c.quotes)
        out.append(Cause(c.name, c.size, n, is_spike(c.size, n), c.terms, c.tags, quotes, tuple(refs[:EXAMPLES])))
    return Causes(tuple(out), len(current), len(previous), unmatched)
