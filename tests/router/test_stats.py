"""The one stats reader (router/stats.py): the CLI's figures, the dashboard's samples and the
scrape's totals are the same reads, against the real Redis."""

from __future__ import annotations

import json

import pytest

from router.canned import DEFAULT_CANNED, CannedReplies
from router.errors import NotFound
from router.runtime import Runtime
from router.samples import Samples
from router.worker import Worker
from tests.router.helpers import drain, message

pytestmark = pytest.mark.cluster


async def _routed(rt: Runtime, texts: list[str]) -> None:
    await rt.inbox.append_many([message(t, user=f"u{i}") for i, t in enumerate(texts)])
    await drain(Worker(rt))


async def test_read_counts_queues_counters_and_dead_letters(rt: Runtime) -> None:
    await _routed(rt, ["my deposit is missing", "my withdrawal is stuck", "hello"])
    await rt.client.xadd(rt.keys.dead, {"reason": "test"})
    stats = await rt.stats.read()
    assert sum(q["depth"] for q in stats["queues"].values()) == 3
    assert set(stats["queues"]) == set(await rt.stats.groups())
    assert stats["counters"]["in:telegram"] == 3
    assert stats["counters"]["routed:telegram"] == 3
    assert stats["dead_letters"] == 1
    assert stats["inbox"]["lag"] == 0
    assert stats["alerts"] == []


async def test_sample_agrees_with_read(rt: Runtime) -> None:
    await _routed(rt, ["my deposit is missing", "my withdrawal is stuck"])
    stats, sample = await rt.stats.read(), await rt.stats.sample()
    assert sample["depth"] == {g: q["depth"] for g, q in stats["queues"].items()}
    assert (sample["in"], sample["routed"], sample["out"]) == (2, 2, 0)
    assert sample["lag"] == stats["inbox"]["lag"]


async def test_totals_by_prefix_and_workers_alive(rt: Runtime) -> None:
    await rt.client.hset(rt.keys.stats, mapping={"in:telegram": 4, "in:email": 1, "out:email": 2})
    await rt.client.set(rt.keys.health("worker", "w1"), json.dumps({"at": 0}))
    totals = await rt.stats.totals()
    assert totals.by_prefix("in:") == {"email": 1, "telegram": 4}
    assert await rt.stats.workers_alive() == 1
    assert "worker:w1" in await rt.stats.health()


async def test_top_tags_leave_language_tags_out(rt: Runtime) -> None:
    await _routed(rt, ["my deposit is missing", "my deposit has not arrived"])
    tags = dict(await rt.stats.top_tags())
    assert tags and not any(t.startswith("lang:") for t in tags)


async def test_samples_take_one_per_interval(rt: Runtime) -> None:
    samples = Samples(rt.client, rt.keys, interval_s=60)
    assert await samples.take(rt.stats.sample)
    assert not await samples.take(rt.stats.sample)  # another process took this interval's sample
    [taken] = await samples.recent()
    assert taken["lag"] == 0


async def test_canned_replies_default_until_edited(rt: Runtime) -> None:
    canned = CannedReplies(rt.client, rt.keys)
    assert await canned.all() == DEFAULT_CANNED
    for title in DEFAULT_CANNED:
        await canned.delete(title)
    assert await canned.all() == {}  # emptied by an admin: the examples do not come back
    await canned.put("Hi", "Hello")
    assert await canned.all() == {"Hi": "Hello"}
    with pytest.raises(NotFound):
        await canned.delete("nope")
