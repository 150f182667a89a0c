"""Virtual shards (router/keys.py ``Shards``, router/shards.py): balanced tags, stable shards,
conversation ids that tell their shard, and a shard count fixed per deployment."""

from __future__ import annotations

import asyncio
import zlib
from collections import Counter
from collections.abc import AsyncIterator

import pytest
import redis as syncredis
from redis.crc import key_slot

from router.config import Settings, load_settings
from router.errors import ConfigError
from router.events import GroupEvents
from router.keys import Keys, Shards, shard_prefix
from router.runtime import Runtime
from router.shards import check_shard_count
from router.worker import Workers
from tests.cluster import RedisClusterProcess
from tests.router.helpers import drain, message

pytestmark = pytest.mark.cluster


def _primary_ranges(primaries: int) -> list[tuple[int, int]]:
    """The slot ranges ``redis-cli --cluster create`` gives ``primaries`` primaries, as its
    clusterManagerCommandCreate computes them (16384/primaries each, rounded; the last to the end)."""
    per, ranges, first, cursor = 16384 / primaries, [], 0, 0.0
    for i in range(primaries):
        last = 16383 if i == primaries - 1 else round(cursor + per - 1)
        ranges.append((first, last))
        first, cursor = last + 1, cursor + per
    return ranges


def _spread(shards: Shards, ranges: list[tuple[int, int]]) -> list[int]:
    slots = [key_slot(k.prefix.encode()) for k in shards.shard]
    return [sum(low <= s <= high for s in slots) for low, high in ranges]


@pytest.mark.parametrize("count", [12, 16])
@pytest.mark.parametrize("prefix", ["{sb}:", "sb:", "{t01JX}:app:"])
def test_shard_tags_are_balanced_over_contiguous_slot_ranges(prefix: str, count: int) -> None:
    shards = Shards(prefix, count)
    for i, keys in enumerate(shards.shard):
        assert i * 16384 // count <= key_slot(keys.prefix.encode()) < (i + 1) * 16384 // count
    assert len({k.prefix for k in shards.shard}) == count
    for per_primary in _spread(shards, _primary_ranges(3)):
        assert abs(per_primary - count / 3) <= 1


def test_shard_prefixes_keep_the_deployment_and_one_shard_is_the_home_prefix() -> None:
    assert Shards("{sb}:", 1).shard[0] == Keys("{sb}:") == Shards("{sb}:", 1).home
    assert Shards("sb:", 1).shard[0].prefix == "sb:"
    four = Shards("{sb}:app:", 4)
    assert all(k.prefix.startswith("{sb.s") and k.prefix.endswith("}:app:") for k in four.shard)
    assert Shards("sb:", 4).shard[2].prefix.startswith("sb:{s2.")
    # Two deployments never share a shard prefix.
    assert not {k.prefix for k in Shards("{a}:", 8).shard} & {k.prefix for k in Shards("{b}:", 8).shard}
    with pytest.raises(ValueError):
        shard_prefix("{sb}:", 4, 4)


def test_every_key_of_a_shard_is_in_the_slot_of_its_prefix() -> None:
    for keys in Shards("{sb}:", 5).shard:
        slot = key_slot(keys.prefix.encode())
        derived = [keys.inbox, keys.dead, keys.failures, keys.stats, keys.conv_seq, keys.closed, keys.labels]
        derived += [keys.conv_key("telegram", "bot", "42"), keys.conv("17"), keys.history("17")]
        derived += [keys.queue("payments"), keys.waiting("payments"), keys.agent("ann"), keys.events("payments")]
        derived += [keys.outbox("email"), keys.delivery("17"), keys.request("r1"), keys.model_observed]
        assert {key_slot(k.encode()) for k in derived} == {slot}


def test_a_conversation_key_always_has_the_same_shard_and_keys_spread() -> None:
    shards = Shards("{sb}:", 4)
    keys = [("telegram", "bot", str(n)) for n in range(2000)]
    first = [shards.of_key(*k) for k in keys]
    assert [shards.of_key(*k) for k in keys] == first
    # Stable across processes and versions: CRC32 of "channel:account:key", not Python's hash().
    assert shards.of_key("email", "support", "<a@b>") == zlib.crc32(b"email:support:<a@b>") % 4
    assert all(400 <= n <= 600 for n in Counter(first).values())
    assert Shards("{sb}:", 1).of_key("telegram", "bot", "1") == 0


def test_conversation_ids_tell_their_shard() -> None:
    shards = Shards("{sb}:", 4)
    for n in range(1, 50):
        for i in range(4):
            cid = shards.conv_id(n, i)
            assert shards.of_conv(cid) == shards.of_conv(str(cid)) == i
            assert shards.conv_keys(cid) == shards.shard[i]
    assert len({shards.conv_id(n, i) for n in range(1, 50) for i in range(4)}) == 49 * 4
    assert [Shards("{sb}:", 1).conv_id(n, 0) for n in (1, 2, 3)] == [1, 2, 3]  # unchanged ids
    for bad in ("abc", "0", "-4", ""):
        with pytest.raises(ValueError):
            shards.of_conv(bad)


def test_the_shard_count_setting() -> None:
    assert load_settings(None).redis.shards == 1
    assert load_settings(None, redis={"shards": 12}).redis.shards == 12
    for bad in (0, 1025):
        with pytest.raises(ConfigError, match=r"redis\.shards"):
            load_settings(None, redis={"shards": bad})


async def test_the_first_start_records_the_count_and_another_count_is_refused(
    settings: Settings, redis_url: str
) -> None:
    async with Runtime(settings, redis_url) as rt:
        assert await rt.client.get(rt.keys.shard_count) == b"1"
        # A deployment made with 4 shards (by a later version, or by hand): this one refuses it.
        await rt.client.set(rt.keys.shard_count, 4)
    with pytest.raises(ConfigError, match=r"redis.shards is 1, but .* was created with 4 shards"):
        async with Runtime(settings, redis_url):
            pass


async def test_a_count_recorded_or_kept_by_the_keys_is_checked(settings: Settings, redis_url: str) -> None:
    async with Runtime(settings, redis_url) as rt:  # records 1, and has an inbox (one-shard layout)
        await rt.client.delete(rt.keys.shard_count)
        with pytest.raises(ConfigError, match=r"already has an inbox .* in the one-shard layout"):
            await check_shard_count(rt.client, Shards(settings.prefix, 4))
        assert await rt.client.get(rt.keys.shard_count) is None
        fresh = f"{settings.prefix}fresh:"
        await check_shard_count(rt.client, Shards(fresh, 4))
        await check_shard_count(rt.client, Shards(fresh, 4))  # the same count again: accepted
        assert await rt.client.get(Keys(fresh).shard_count) == b"4"
        with pytest.raises(ConfigError, match="created with 4 shards"):
            await check_shard_count(rt.client, Shards(fresh, 1))


def test_shards_of_a_deployment_spread_over_the_real_cluster(redis_cluster: RedisClusterProcess) -> None:
    client = syncredis.Redis(port=redis_cluster.ports[0])
    try:
        served = client.execute_command("CLUSTER", "SLOTS")
    finally:
        client.close()
    per_node = Counter[int]()
    for start, end, primary, *_ in served:
        per_node[int(primary[1])] += sum(start <= key_slot(k.prefix.encode()) <= end for k in Shards("{sb}:", 12).shard)
    assert sorted(per_node.values()) == [4, 4, 4]


@pytest.fixture
async def sharded(settings: Settings, redis_url: str) -> AsyncIterator[Runtime]:
    """A runtime of a deployment with 4 shards, on the single server too."""
    four = settings.model_copy(update={"redis": settings.redis.model_copy(update={"shards": 4})})
    async with Runtime(four, redis_url) as runtime:
        yield runtime


async def _route_all(rt: Runtime) -> int:
    return await drain(Workers(rt))


async def test_a_conversation_stays_in_its_shard(sharded: Runtime) -> None:
    rt = sharded
    users = [f"user{i}" for i in range(24)]
    await rt.inbox.append_many([message("my deposit is missing", user=u) for u in users])
    await rt.inbox.append_many([message("still missing", user=u) for u in users])
    assert await _route_all(rt) == 48
    seen = set()
    for u in users:
        shard = rt.shards.of_key("telegram", "bot1", u)
        keys = rt.shards.shard[shard]
        cid = (await rt.client.get(keys.conv_key("telegram", "bot1", u))).decode()
        assert rt.shards.of_conv(cid) == shard
        conv = await rt.conversations.get(cid)
        assert (conv.key, conv.messages) == (u, 2)
        assert [h.type for h in await rt.conversations.history(cid)] == ["inbound", "inbound"]
        seen.add(shard)
    assert seen == {0, 1, 2, 3}
    assert len(await rt.queues.head("payments")) == 24
    [stats] = await rt.queues.stats(["payments"])
    assert stats.depth == 24 and stats.oldest_wait_s is not None
    assert await rt.queues.groups_with_queues() == ["payments"]


async def test_claim_next_takes_the_most_urgent_of_all_shards(sharded: Runtime) -> None:
    rt = sharded
    await rt.inbox.append_many([message("my deposit is missing", user=f"user{i}") for i in range(16)])
    await _route_all(rt)
    convs = await rt.queues.head("payments")
    # One priority per conversation, spread over the shards: the queue's global order is theirs.
    for i, conv in enumerate(convs):
        await rt.conversations.set_priority(conv.id, 1 + i % 4, "lead")
    # The global order, from each conversation's own state: priority, then due time.
    everyone = [await rt.conversations.get(c.id) for c in convs]
    expected = [c.id for c in sorted(everyone, key=lambda c: (c.priority, c.due_ms))]
    # The shards' loops route at once: conversations of two shards may share a due time (the same
    # millisecond), and their order among themselves is not defined; the urgency order is.
    urgency = {c.id: (c.priority, c.due_ms) for c in everyone}
    assert [urgency[c.id] for c in await rt.queues.head("payments")] == sorted(urgency.values())
    assert len({rt.shards.of_conv(cid) for cid in expected[:4]}) > 1
    claimed = [await rt.conversations.claim("payments", "ann") for _ in range(16)]
    assert [urgency[cid] for cid in claimed] == sorted(urgency.values()) and sorted(claimed) == sorted(expected)
    assert await rt.conversations.claim("payments", "ann") is None
    assert [c.id for c in await rt.conversations.of_agent("ann")] == sorted(expected, key=int)


async def test_concurrent_claims_across_shards_never_double_assign(sharded: Runtime) -> None:
    rt = sharded
    await rt.inbox.append_many([message("my deposit is missing", user=f"user{i}") for i in range(40)])
    await _route_all(rt)
    results = await asyncio.gather(*(rt.conversations.claim("payments", f"agent{i % 12}") for i in range(60)))
    claimed = [r for r in results if r is not None]
    assert len(claimed) == len(set(claimed)) == 40
    assert results.count(None) == 20  # no agent went empty-handed while a conversation waited
    for i, cid in enumerate(results):
        if cid is not None:
            assert (await rt.conversations.get(cid)).agent == f"agent{i % 12}"


async def test_a_repeated_claim_next_returns_what_it_claimed(sharded: Runtime) -> None:
    rt = sharded
    await rt.inbox.append_many([message("my deposit is missing", user=f"user{i}") for i in range(6)])
    await _route_all(rt)
    first = await rt.conversations.claim("payments", "ann", request_id="req-1")
    assert first is not None
    assert await rt.conversations.claim("payments", "ann", request_id="req-1") == first
    assert len(await rt.queues.head("payments")) == 5


async def test_every_key_routing_writes_is_in_the_slot_of_its_shard_prefix(sharded: Runtime) -> None:
    """The route and conversation scripts get one shard's prefix as KEYS[1] and derive the rest:
    each key they made must be in that prefix's slot (on a cluster, a key of another slot on the
    same node would not even fail in Redis 6.2)."""
    rt = sharded
    await rt.inbox.append_many([message("my deposit is missing", user=f"user{i}") for i in range(20)])
    await _route_all(rt)
    cid = await rt.conversations.claim("payments", "ann")
    assert cid is not None
    await rt.conversations.reply(cid, "on it", "ann")
    await rt.conversations.close(cid, "ann")
    found = [k.decode() async for k in rt.client.scan_iter(match=rt.shards.glob("*"), count=1000)]
    per_shard = Counter[int]()
    for key in found:
        where = rt.shards.split(key)
        assert where is not None, key
        assert key_slot(key.encode()) == key_slot(rt.shards.shard[where[0]].prefix.encode()), key
        per_shard[where[0]] += 1
    assert set(per_shard) == {0, 1, 2, 3}


async def test_live_events_of_every_shard_are_read_from_their_positions(sharded: Runtime) -> None:
    rt = sharded
    events = GroupEvents(rt.client, rt.client, rt.shards)
    positions = await events.ends(["payments"])
    assert positions == {f"payments@{i}": "0-0" for i in range(4)}
    await rt.inbox.append_many([message("my deposit is missing", user=f"user{i}") for i in range(12)])
    await _route_all(rt)
    created: list[str] = []
    for _ in range(20):  # on a cluster each read answers with the slots that answered first
        for event in await events.after(positions, 100):
            positions[event.stream] = event.entry
            created.append(event.conv)
        if len(created) == 12:
            break
    assert sorted(created, key=int) == [c.id for c in sorted(await rt.queues.head("payments"), key=lambda c: int(c.id))]
    assert {name for name, at in positions.items() if at != "0-0"} == {f"payments@{i}" for i in range(4)}
    assert await events.after(positions, 50) == []  # nothing read twice
