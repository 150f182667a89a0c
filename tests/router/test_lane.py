"""The P1 lane (docs/surge.md): a suspected P1 situation is routed ahead of the inbox's backlog,
every message once, and no conversation's later message before an earlier one."""

from __future__ import annotations

import json

import msgspec
import pytest

from router.keys import ROUTER_GROUP, Keys
from router.model import Envelope, decode_envelope, encode
from router.routing import message_in
from router.runtime import Runtime
from router.worker import Worker
from rules import Triage
from tests.conftest import ROUTER_RULES
from tests.router.helpers import drain, inbound_ids, message

pytestmark = pytest.mark.cluster

HACKED = "I was hacked, someone made an unauthorized withdrawal!"


def _keys(rt: Runtime, env: Envelope) -> Keys:
    return rt.shards.shard[rt.shards.of_key(env.channel, env.account, env.conversation_key)]


async def _entry(rt: Runtime, env: Envelope) -> tuple[str, bytes]:
    """The stream ``env`` was appended to ("inbox" or "lane"), and the envelope as it holds it."""
    keys = _keys(rt, env)
    entry_id = (await rt.client.get(f"{keys.prefix}dedup:{env.channel}:{env.account}:{env.platform_id}")).decode()
    # Entry ids are unique per stream only: the envelope tells.
    lane = await rt.client.xrange(keys.lane, entry_id, entry_id)
    if lane and json.loads(lane[0][1][b"env"])["id"] == env.id:
        return "lane", lane[0][1][b"env"]
    [(_, fields)] = await rt.client.xrange(keys.inbox, entry_id, entry_id)
    return "inbox", fields[b"env"]


async def _where(rt: Runtime, env: Envelope) -> str:
    return (await _entry(rt, env))[0]


async def _stored(rt: Runtime, env: Envelope) -> Envelope:
    return decode_envelope((await _entry(rt, env))[1])


async def _waiting(rt: Runtime) -> int:
    return sum([int(await rt.client.get(k.prefix + "lane:waiting") or 0) for k in rt.shards.shard])


async def test_a_suspected_p1_is_routed_before_the_backlog(rt: Runtime) -> None:
    backlog = [message(f"where is my deposit {i}?", user=f"b{i}") for i in range(300)]
    await rt.inbox.append_many(backlog)
    p1 = message(HACKED, user="victim")
    await rt.inbox.append(p1)
    assert await _where(rt, p1) == "lane"
    worker = Worker(rt)
    assert worker.lane is not None
    # One step of the lane's loop routes it while all 300 wait in the inbox, unread.
    assert await worker.lane.step() == 0  # its recovery first: nothing of its own pending
    assert await worker.lane.step() == 1
    await worker.lane.flush()
    [conv] = await rt.queues.head("security")
    assert conv.priority == 1
    assert await _waiting(rt) == 0
    assert sum([(await rt.client.xpending(k.inbox, ROUTER_GROUP))["pending"] for k in rt.shards.shard]) == 0
    await drain(worker)
    routed = await inbound_ids(rt)
    assert set(routed) == {e.id for e in [*backlog, p1]} and set(routed.values()) == {1}
    assert worker.processed == 301


async def test_a_conversation_is_never_split_across_the_streams_unrouted(rt: Runtime) -> None:
    worker = Worker(rt)
    assert worker.lane is not None
    first = message("hello, a question about my account", user="carol")
    await rt.inbox.append(first)
    # Its first message waits in the inbox: the P1 one queues behind it there.
    second = message(HACKED, user="carol")
    await rt.inbox.append(second)
    assert [await _where(rt, first), await _where(rt, second)] == ["inbox", "inbox"]
    await drain(worker)
    # All routed: the next suspect takes the lane, and a plain follow-up follows it there while
    # it waits, then, once it is routed, the inbox again.
    third = message("hacked again, please freeze it", user="carol")
    fourth = message("are you there?", user="carol")
    await rt.inbox.append_many([third, fourth])
    assert [await _where(rt, third), await _where(rt, fourth)] == ["lane", "lane"]
    assert await _waiting(rt) == 2
    await drain(worker)
    fifth = message("thanks", user="carol")
    await rt.inbox.append(fifth)
    assert await _where(rt, fifth) == "inbox"
    await drain(worker)
    [conv] = await rt.queues.head("security")
    # The history stream as written, i.e. in the order the messages were routed.
    written = await rt.client.xrange(_keys(rt, first).history(conv.id))
    routed = [json.loads(f[b"data"])["msg"] for _, f in written if f[b"type"] == b"inbound"]
    assert routed == [e.id for e in (first, second, third, fourth, fifth)]
    assert await _waiting(rt) == 0


async def test_a_suspect_whose_conversation_may_wait_beyond_the_marker_stays_in_the_inbox(rt: Runtime) -> None:
    """Without a marker, the lane is taken only when no unrouted inbox entry is older than the
    marker's TTL (an older one may be this conversation's, its marker expired)."""
    p1 = message(HACKED, user="dave")
    keys = _keys(rt, p1)
    # An unrouted entry from long ago (its id in 1970): older than any marker's TTL.
    old = message("an old question", user="someone-else")
    await rt.client.xadd(keys.inbox, {"env": encode(old)}, id="1000-0")
    await rt.inbox.append(p1)
    assert await _where(rt, p1) == "inbox"
    await drain(Worker(rt))
    later = message(HACKED + " still", user="erin")
    await rt.inbox.append(later)
    assert await _where(rt, later) == "lane"


async def test_lane_capacity_bounds_new_conversations_only(rt: Runtime) -> None:
    rt.settings.inbox.lane_maxlen = 2
    suspects = [message(HACKED, user=f"v{i}") for i in range(4)]
    for env in suspects:
        await rt.inbox.append(env)
    places = [await _where(rt, env) for env in suspects]
    if rt.shards.count == 1:
        assert places == ["lane", "lane", "inbox", "inbox"]
    else:  # per shard: at most two waiting in each
        assert places.count("lane") >= 2
    follow = message("more details", user="v0")
    await rt.inbox.append(follow)
    assert await _where(rt, follow) == "lane"  # behind its conversation's first, whatever the cap
    await drain(Worker(rt))
    routed = await inbound_ids(rt)
    assert set(routed) == {e.id for e in [*suspects, follow]} and set(routed.values()) == {1}
    assert await _waiting(rt) == 0


async def test_a_lane_entry_that_fails_is_dead_lettered_and_counted_down(rt: Runtime) -> None:
    p1 = message(HACKED, user="frank")
    keys = _keys(rt, p1)
    await rt.client.xadd(keys.lane, {"env": b"{not json"})
    await rt.client.incr(keys.prefix + "lane:waiting")
    await rt.inbox.append(p1)
    await drain(Worker(rt))
    assert await _waiting(rt) == 0
    [(_, dead)] = await rt.client.xrange(keys.dead)
    assert b"invalid envelope" in dead[b"reason"]
    assert set(await inbound_ids(rt)) == {p1.id}


async def test_with_the_lane_off_everything_goes_to_the_inbox(rt: Runtime) -> None:
    rt.settings.inbox.p1_lane = "off"
    p1 = message(HACKED, user="gina")
    await rt.inbox.append(p1)
    assert await _where(rt, p1) == "inbox"
    assert not await rt.client.exists(_keys(rt, p1).prefix + f"tail:{p1.channel}:{p1.account}:gina")
    await drain(Worker(rt))
    assert set(await inbound_ids(rt)) == {p1.id}


async def test_entries_appended_before_the_lane_was_on_keep_their_conversations_in_the_inbox(rt: Runtime) -> None:
    """Appends with the lane off write no marker: once it is on, a suspect without a marker takes
    the lane only when no inbox entry from before is still unrouted."""
    rt.settings.inbox.p1_lane = "off"
    hello = message("hello, a question", user="jack")
    await rt.inbox.append(hello)
    rt.settings.inbox.p1_lane = "model"
    hacked = message(HACKED, user="jack")
    await rt.inbox.append(hacked)
    assert await _where(rt, hacked) == "inbox"  # behind "hello", unmarked but unrouted
    await drain(Worker(rt))
    later = message(HACKED, user="kate")
    await rt.inbox.append(later)
    assert await _where(rt, later) == "lane"
    await drain(Worker(rt))
    keys = _keys(rt, hello)
    conv_id = (await rt.client.get(f"{keys.prefix}ck:{hello.channel}:{hello.account}:jack")).decode()
    written = await rt.client.xrange(keys.history(conv_id))
    assert [json.loads(f[b"data"])["msg"] for _, f in written if f[b"type"] == b"inbound"] == [hello.id, hacked.id]


async def test_the_console_replay_reads_the_lane_too(rt: Runtime) -> None:
    from router.backoffice import Backoffice

    p1, plain = message(HACKED, user="hal"), message("hello", user="ian")
    await rt.inbox.append_many([p1, plain])
    office = Backoffice(rt, rt.settings.web)
    await office.start()
    try:
        recent = await office.recent_inbox(10)
    finally:
        await office.close()
    assert {json.loads(raw)["id"] for _, raw in recent} == {p1.id, plain.id}


async def test_the_precheck_prediction_goes_with_the_envelope(rt: Runtime) -> None:
    """The triage model is asked once a message: the precheck's prediction is stored with the
    envelope (the router uses it, tests/rules/test_intent_rules.py), one an adapter wrote is never
    kept, and none is added where it would take the entry past ``inbox.max_message_bytes``."""
    source = ROUTER_RULES.read_text(encoding="utf-8") + "\nmodel: {p1_min: 0.9}\n"
    await rt.rules.publish(source, "admin")
    engine = await rt.engine(fresh=True)  # the precheck asks the model: a rule set raises to P1 by it
    model = rt.triage.live
    assert model is not None and model.digest is not None
    plain = message("where is my deposit? it has been 3 hours", user="lia")
    forged = message("where is my deposit?", user="max", triage=Triage("f" * 16, (1.0,) * 6, (1.0, 0.0, 0.0, 0.0)))
    await rt.inbox.append_many([plain, forged])
    for env in (plain, forged):
        stored = await _stored(rt, env)
        expected = engine.precheck(message_in(msgspec.structs.replace(env, triage=None)), model=True).triage
        assert stored.triage is not None and stored.triage == expected and stored.triage.model == model.digest

    rt.settings.inbox.p1_lane = "off"  # no precheck: nothing predicted, and a given one is dropped
    unchecked = message("where is my deposit?", user="ned", triage=forged.triage)
    await rt.inbox.append(unchecked)
    assert (await _stored(rt, unchecked)).triage is None

    rt.settings.inbox.p1_lane = "model"
    long = message("where is my deposit? " + "x" * 2000, user="ola")
    rt.settings.inbox.max_message_bytes = len(encode(long)) + 20  # fits, but not with a prediction
    await rt.inbox.append(long)
    assert (await _stored(rt, long)).triage is None
    await drain(Worker(rt))
    assert set(await inbound_ids(rt)) == {e.id for e in (plain, forged, unchecked, long)}
