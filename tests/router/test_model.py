"""The shared records' helpers."""

from __future__ import annotations

import time

from router.model import new_id

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def _decode(ulid: str) -> int:
    value = 0
    for ch in ulid:
        value = value * 32 + CROCKFORD.index(ch)
    return value


def test_new_id_is_a_ulid_of_the_current_millisecond() -> None:
    before = time.time_ns() // 1_000_000
    ulid = new_id()
    after = time.time_ns() // 1_000_000
    assert len(ulid) == 26 and set(ulid) <= set(CROCKFORD)
    assert ulid[0] in "01234567"  # 128 bits in 26 digits: the first holds 3
    assert before <= _decode(ulid) >> 80 <= after


def test_new_ids_are_unique_and_sort_by_time() -> None:
    ids = {new_id() for _ in range(20_000)}
    assert len(ids) == 20_000
    earlier = new_id()
    time.sleep(0.002)
    assert new_id() > earlier
    # The 80 random bits are not stuck: the low digits of ids of one millisecond differ.
    assert len({i[-16:] for i in ids}) == len(ids)
