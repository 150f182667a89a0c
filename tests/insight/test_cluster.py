"""Agglomeration against a brute-force reference, terms, centring, and the period comparison."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from insight.causes import causes, is_spike
from insight.cluster import Centering, Complaint, Vectors, agglomerate, cluster, nearest
from insight.metrics import adjusted_rand_index
from insight.terms import ctfidf, tokens, top_terms


def _unit(v: np.ndarray) -> Vectors:  # type: ignore[type-arg]
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def _reference(vectors: Vectors, threshold: float) -> list[int]:
    """Average linkage from its definition: the mean pairwise distance, recomputed every step."""
    d = 1.0 - vectors.astype(np.float64) @ vectors.astype(np.float64).T
    groups = [[i] for i in range(len(vectors))]
    while len(groups) > 1:
        best, pair = min(
            (float(np.mean(d[np.ix_(a, b)])), (x, y)) for (x, a), (y, b) in itertools.combinations(enumerate(groups), 2)
        )
        if best > threshold:
            break
        x, y = pair
        groups[x] = groups[x] + groups[y]
        del groups[y]
    labels = [0] * len(vectors)
    for n, g in enumerate(groups):
        for i in g:
            labels[i] = n
    return labels


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("threshold", [0.5, 0.9, 1.1])
def test_agglomerate_matches_the_definition(seed: int, threshold: float) -> None:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(4, 8))
    vectors = _unit(np.repeat(centres, 10, axis=0) + rng.normal(scale=0.6, size=(40, 8)))
    found = agglomerate(vectors, threshold).tolist()
    expected = _reference(vectors, threshold)
    assert adjusted_rand_index(expected, found) == pytest.approx(1.0)
    assert len(set(found)) == len(set(expected))


def test_agglomerate_numbers_clusters_by_size_and_stops_at_the_threshold() -> None:
    e = np.eye(3, dtype=np.float32)
    vectors = _unit(np.array([e[1], e[0], e[0], e[0] + 0.01 * e[2], e[1] + 0.01 * e[2], e[2]]))
    assert agglomerate(vectors, 0.01).tolist() == [1, 0, 0, 0, 1, 2]
    # Only the two equal vectors merge; singletons are numbered by their member's position.
    assert agglomerate(vectors, 0.0).tolist() == [1, 0, 0, 2, 3, 4]
    assert agglomerate(np.zeros((0, 3), dtype=np.float32), 0.5).tolist() == []


def test_tokens_are_bigrams_for_chinese_and_words_without_stop_words_otherwise() -> None:
    assert tokens("提现三天 still pending!! 2000 USDT") == ["pending", "usdt", "提现", "现三", "三天"]
    assert tokens("Мой вывод завис") == ["вывод", "завис"]
    assert tokens("ＢＴＣ") == ["btc"]  # NFKC: full-width letters


def test_ctfidf_ranks_a_term_of_one_cluster_over_a_term_of_all() -> None:
    docs = [["fee", "high"], ["fee", "withdrawal"], ["withdrawal", "high"]]
    vocab, scores = ctfidf(docs, [0, 0, 1])
    # "fee" is only in cluster 0: tf 2/4, f 2; "high" is in both: tf 1/4, f 2. A = 6/2 = 3.
    assert scores[0, vocab["fee"]] == pytest.approx(0.5 * np.log(1 + 3 / 2))
    assert scores[0, vocab["high"]] == pytest.approx(0.25 * np.log(1 + 3 / 2))
    assert top_terms(docs, ["en", "en", "ru"], [0, 0, 1], k=1) == [{"en": ("fee",)}, {"ru": ("high",)}]


def test_centering_removes_each_languages_offset() -> None:
    rng = np.random.default_rng(0)
    topic = rng.normal(size=(2, 16))
    lang = rng.normal(size=(2, 16)) * 5  # each language's offset dwarfs the topics
    raw = _unit(np.array([topic[t] + lang[g] + rng.normal(scale=0.1, size=16) for g in (0, 1) for t in (0, 1) * 6]))
    langs = ["en"] * 12 + ["zh"] * 12
    truth = [0, 1] * 12
    assert adjusted_rand_index(truth, agglomerate(raw, 0.5).tolist()) < 0.1  # grouped by language
    centred = Centering.fit(raw, langs, shrink=0).apply(raw, langs)
    assert adjusted_rand_index(truth, agglomerate(centred, 0.5).tolist()) == pytest.approx(1.0)


def _complaint(n: int, lang: str = "en", tags: tuple[str, ...] = ("complaint",)) -> Complaint:
    return Complaint(f"c{n}", f"text {n}", lang, tags)


def test_cluster_describes_each_cause() -> None:
    e = np.eye(4, dtype=np.float32)
    vectors = _unit(np.array([e[0] + 0.1 * e[3], e[0], e[0] - 0.1 * e[3], e[1]]))
    complaints = [
        Complaint("c1", "withdrawal pending again", "en", ("complaint", "withdrawal")),
        Complaint("c2", "提现 pending 三天", "zh", ("complaint", "withdrawal")),
        Complaint("c3", "withdrawal pending forever", "en", ("complaint",)),
        Complaint("c4", "fees too high", "en", ("complaint", "fees")),
    ]
    first, second = cluster(complaints, vectors, threshold=0.05)
    assert first.size == 3
    assert first.members[0] == 1  # the member nearest the centroid is quoted first
    assert first.quotes == (1, 0, 2)
    assert first.tags == (("withdrawal", 2),)
    # All its terms are its own; "pending" is 3 of its 9 tokens, "withdrawal" 2, the rest 1 (ties
    # by the term's text; "again" is a stop word); a language's terms are its members' only.
    assert first.terms == {"en": ("pending", "withdrawal", "forever"), "zh": ("pending", "三天", "提现")}
    assert first.name == "pending · withdrawal · forever · 三天 · #withdrawal"
    assert second.members == (3,) and second.tags == (("fees", 1),)
    with pytest.raises(ValueError, match="4 complaints but 3 vectors"):
        cluster(complaints, vectors[:3])


def test_nearest_assigns_within_the_threshold_only() -> None:
    e = np.eye(3, dtype=np.float32)
    found = cluster([_complaint(1), _complaint(2)], _unit(np.array([e[0], e[1]])), threshold=0.1)
    probe = _unit(np.array([e[0] + 0.05 * e[2], e[2], e[1]]))
    assert nearest(probe, found, 0.1) == [0, None, 1]


def test_spike_is_double_and_at_least_five_more() -> None:
    assert is_spike(5, 0)
    assert not is_spike(4, 0)
    assert is_spike(12, 6)
    assert not is_spike(11, 6)
    assert is_spike(6, 1)
    assert not is_spike(30, 20)


def test_causes_count_the_previous_period_and_flag_spikes() -> None:
    e = np.eye(3, dtype=np.float32)
    rng = np.random.default_rng(4)

    def near(axis: int, n: int) -> Vectors:
        return _unit(e[axis] + rng.normal(scale=0.01, size=(n, 3)))

    current = [_complaint(n) for n in range(9)]
    previous = [_complaint(100 + n) for n in range(6)]
    now = np.vstack([near(0, 6), near(1, 3)])
    before = np.vstack([near(0, 1), near(1, 3), near(2, 2)])
    found = causes(current, now, previous, before, threshold=0.5)
    assert [(c.size, c.previous, c.change, c.spike) for c in found.causes] == [(6, 1, 5, True), (3, 3, 0, False)]
    assert found.unmatched == 2 and found.complaints == 9 and found.previous == 6
    first = found.causes[0]
    assert len(first.quotes) == 3 and len(first.examples) == 5
    assert {q.ref for q in first.quotes} <= set(first.examples) <= {f"c{n}" for n in range(6)}
    assert first.examples[:3] == tuple(q.ref for q in first.quotes)
