"""Purity and the adjusted Rand index against values worked out by hand."""

from __future__ import annotations

import pytest

from insight.metrics import adjusted_rand_index, contingency, purity

TRUTH = ["a", "a", "a", "b", "b", "b"]
FOUND = [0, 0, 1, 1, 2, 2]


def test_contingency_counts_items_per_pair_of_labels() -> None:
    assert contingency(TRUTH, FOUND).tolist() == [[2, 1, 0], [0, 1, 2]]


def test_purity_by_hand() -> None:
    # Cluster 0 is {a, a}: 2; cluster 1 is {a, b}: 1; cluster 2 is {b, b}: 2. (2 + 1 + 2) / 6.
    assert purity(TRUTH, FOUND) == pytest.approx(5 / 6)


def test_adjusted_rand_index_by_hand() -> None:
    # Pairs together in both: C(2,2) + C(2,2) = 2. Rows: C(3,2) * 2 = 6; columns: 3 * C(2,2) = 3.
    # Expected = 6 * 3 / C(6,2) = 1.2; max = (6 + 3) / 2 = 4.5; (2 - 1.2) / (4.5 - 1.2) = 8/33.
    assert adjusted_rand_index(TRUTH, FOUND) == pytest.approx(8 / 33)


def test_the_same_partition_under_other_names_scores_one() -> None:
    assert adjusted_rand_index(TRUTH, [7, 7, 7, 3, 3, 3]) == pytest.approx(1.0)
    assert purity(TRUTH, [7, 7, 7, 3, 3, 3]) == 1.0


def test_a_partition_against_its_opposite_scores_below_zero() -> None:
    # {a,a | b,b} against {a,b | a,b}: no pair together in both. Rows 2, columns 2, C(4,2) = 6:
    # expected = 2 * 2 / 6 = 2/3, max = 2; (0 - 2/3) / (2 - 2/3) = -1/2.
    assert adjusted_rand_index(["a", "a", "b", "b"], [0, 1, 0, 1]) == pytest.approx(-0.5)


def test_one_cluster_of_everything_scores_zero_and_the_share_of_the_largest_cause() -> None:
    assert adjusted_rand_index(TRUTH, [0] * 6) == pytest.approx(0.0)
    assert purity(TRUTH, [0] * 6) == pytest.approx(0.5)


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        purity(["a"], [0, 1])
    with pytest.raises(ValueError, match="at least two"):
        adjusted_rand_index(["a"], [0])
    with pytest.raises(ValueError, match="no items"):
        purity([], [])
