"""Admission control (router/admission.py, lua/route.lua "Admission") against a real Redis: the
per-sender token bucket and flood folding, bans, mutes, spam, restore; nothing lost."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from router.admission import Senders
from router.audit import Audit
from router.conversations import Conversation
from router.errors import BadRequest, Conflict
from router.model import Envelope, decode_outbox
from router.runtime import Runtime
from router.worker import Worker
from tests.router.helpers import drain, inbound_ids, message

pytestmark = pytest.mark.cluster

T0 = 1_800_000_000_000  # the injected clock's start (ms)
SPAM_RULE = """
  - id: spam
    when: {contains_any: [free airdrop]}
    then: {tags: [spam]}
"""


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    """The router tests' rule set and a rule that tags spam."""
    path = tmp_path / "rules.yaml"
    path.write_text((Path(__file__).parent / "rules.yaml").read_text() + SPAM_RULE)
    return path


class Clock:
    def __init__(self) -> None:
        self.ms = T0

    def __call__(self) -> int:
        return self.ms


async def queued(rt: Runtime) -> Counter[str]:
    """Queue entries by sender, over every group's queue."""
    found: Counter[str] = Counter()
    for group in ("security", "payments", "verification", "general"):
        for conv in await rt.queues.head(group, 1000):
            found[conv.sender_id] += 1
    return found


async def conversation_of(rt: Runtime, env: Envelope) -> Conversation:
    keys = rt.shards.shard[rt.shards.of_key(env.channel, env.account, env.conversation_key)]
    cid = await rt.client.get(keys.conv_key(env.channel, env.account, env.conversation_key))
    assert cid is not None, "no conversation"
    return await rt.conversations.get(cid.decode())


async def route(rt: Runtime, worker: Worker, env: Envelope) -> Conversation:
    """Append ``env``, route everything, and return its conversation."""
    await rt.inbox.append(env)
    await drain(worker)
    return await conversation_of(rt, env)


async def notices(rt: Runtime, channel: str = "telegram") -> list[tuple[str, str]]:
    """(conversation, text) of every notice on the channel's outbox, in every shard."""
    out = []
    for keys in rt.shards.shard:
        for _, fields in await rt.client.xrange(keys.outbox(channel)):
            item = decode_outbox(fields[b"item"])
            if item.id.startswith("notice-"):
                out.append((item.conversation, item.text))
    return out


async def test_flood_makes_one_queue_entry_one_notice_and_loses_nothing(rt: Runtime) -> None:
    clock = Clock()
    worker = Worker(rt, clock=clock)
    sent: list[Envelope] = []
    # 200 messages in 10 s from one sender, beside a quiet one writing every second.
    for second in range(10):
        for i in range(20):
            env = message(f"where is my withdrawal?? {second}.{i}", user="flood")
            sent.append(env)
            await rt.inbox.append(env)
        quiet = message(f"my deposit is missing, second {second}", user="quiet")
        sent.append(quiet)
        await rt.inbox.append(quiet)
        await drain(worker)
        clock.ms += 1000

    assert await queued(rt) == Counter({"flood": 1, "quiet": 1})
    conv = await conversation_of(rt, sent[0])
    history = await rt.conversations.history(conv.id)
    inbound = [h for h in history if h.type == "inbound"]
    throttled = [h for h in inbound if h.data.get("admission") == "throttled"]
    # A burst of 20, then 0.5 a second: 9 s of refill gave 4 more.
    assert len(inbound) == 200 and len(throttled) == 200 - 24
    assert conv.messages == 200
    assert await rt.client.hget(rt.conversations.keys(conv.id).conv(conv.id), "throttled") == b"176"
    assert await notices(rt) == [(conv.id, rt.settings.admission.notice["en"])]
    quiet_conv = await conversation_of(rt, sent[20])
    assert quiet_conv.messages == 10
    assert not [
        h for h in await rt.conversations.history(quiet_conv.id) if h.type == "inbound" and "admission" in h.data
    ]
    # Nothing lost, nothing doubled: every message in one history, once.
    ids = await inbound_ids(rt)
    assert set(ids) == {e.id for e in sent} and set(ids.values()) == {1}
    counted = [await rt.client.hget(keys.stats, "throttled:telegram") for keys in rt.shards.shard]
    assert sum(int(n or 0) for n in counted) == 176


async def test_notice_in_the_senders_language_once_per_window(rt: Runtime) -> None:
    rt.settings.admission.burst = 2
    rt.settings.admission.notice_window_s = 60
    clock = Clock()
    worker = Worker(rt, clock=clock)
    for i in range(6):
        await rt.inbox.append(message(f"我的提现还没有到账，请帮我查一下 {i}", user="li"))
    await drain(worker)
    [(cid, text)] = await notices(rt)
    assert text == rt.settings.admission.notice["zh"]
    clock.ms += 30_000  # within the window: refilled, then throttled again, no second notice
    for i in range(40):
        await rt.inbox.append(message(f"我的提现还没有到账 {i}", user="li"))
    await drain(worker)
    assert len(await notices(rt)) == 1
    clock.ms += 60_000  # the window is over: the next throttled message brings one more
    for i in range(40):
        await rt.inbox.append(message(f"还没有到账 {i}", user="li"))
    await drain(worker)
    assert [c for c, _ in await notices(rt)] == [cid, cid]


async def test_two_workers_at_once_do_not_exceed_the_bucket(rt: Runtime) -> None:
    rt.settings.admission.burst = 10
    rt.settings.admission.rate_per_s = 0.001
    rt.settings.worker.batch = 5
    clock = Clock()
    a, b = Worker(rt, "a", clock=clock), Worker(rt, "b", clock=clock)
    for i in range(100):
        await rt.inbox.append(message(f"withdrawal stuck {i}", user="flood"))
    routed = await asyncio.gather(drain(a), drain(b))
    assert sum(routed) == 100 and all(routed), "both workers routed a share"
    ids = await inbound_ids(rt)
    assert len(ids) == 100 and set(ids.values()) == {1}
    [conv] = [c for c in await rt.queues.head("payments", 100)]
    inbound = [h for h in await rt.conversations.history(conv.id) if h.type == "inbound"]
    assert sum("admission" not in h.data for h in inbound) == 10


async def test_a_flood_over_many_threads_folds_into_the_senders_latest_conversation(rt: Runtime) -> None:
    rt.settings.admission.burst = 3
    worker = Worker(rt, clock=Clock())
    sent = [message(f"deposit missing {i}", user="mailer", channel="email", key=f"thread-{i}") for i in range(10)]
    for env in sent:
        await rt.inbox.append(env)
    await drain(worker)
    # Three threads admitted (three conversations), seven folded into the latest of them.
    assert (await queued(rt))["mailer"] == 3
    latest = await conversation_of(rt, sent[2])
    folded = [h for h in await rt.conversations.history(latest.id) if h.data.get("folded_from")]
    assert [h.data["folded_from"] for h in folded] == [f"email:bot1:thread-{i}" for i in range(3, 10)]
    assert all(h.data["admission"] == "throttled" for h in folded)
    assert len(await inbound_ids(rt)) == 10


async def test_admission_off_routes_every_message_as_before(rt: Runtime) -> None:
    rt.settings.admission.enabled = False
    rt.settings.admission.burst = 1
    worker = Worker(rt, clock=Clock())
    for i in range(5):
        await rt.inbox.append(message(f"withdrawal {i}", user="x"))
    await drain(worker)
    [conv] = await rt.queues.head("payments")
    history = await rt.conversations.history(conv.id)
    assert sum(h.type == "inbound" and "admission" not in h.data for h in history) == 5
    assert await notices(rt) == []


async def test_banned_sender_is_held_out_of_the_queues_and_restored(rt: Runtime) -> None:
    await rt.senders.block("ban", "telegram:mallory", by="admin", reason="scam links")
    worker = Worker(rt, clock=Clock())
    env = message(
        "my seed phrase is abandon abandon abandon abandon abandon abandon abandon abandon "
        "abandon abandon abandon about",
        user="mallory",
    )
    await rt.inbox.append(env)
    await rt.inbox.append(message("withdrawal please", user="mallory"))
    await rt.inbox.append(message("withdrawal please", user="carol"))
    await drain(worker)
    assert await queued(rt) == Counter({"carol": 1})
    conv = await conversation_of(rt, env)
    assert conv.status == "held" and "banned" in conv.tags and conv.messages == 2
    inbound = [h for h in await rt.conversations.history(conv.id) if h.type == "inbound"]
    assert [h.data["admission"] for h in inbound] == ["banned", "banned"]
    # No auto-reply to a banned sender (the secret rule has one), nor a notice.
    assert not await rt.client.exists(rt.conversations.keys(conv.id).outbox("telegram"))

    await rt.senders.restore(conv.id, by="admin")
    assert (await queued(rt))["mallory"] == 1
    restored = await rt.conversations.get(conv.id)
    assert restored.status == "new" and restored.group == "security"
    with pytest.raises(Conflict):
        await rt.senders.restore(conv.id, by="admin")
    actions = [(e.action, e.target) for e in await Audit(rt.client, rt.keys, 1000).recent()]
    assert ("sender.ban", "telegram:mallory") in actions
    assert ("sender.restore", f"conversation {conv.id}") in actions


async def test_ban_takes_an_open_conversation_out_of_its_queue_and_off_its_agent(rt: Runtime) -> None:
    conv = await route(rt, Worker(rt, clock=Clock()), message("withdrawal not arrived", user="eve"))
    assert await rt.conversations.claim("payments", "agent-a") == conv.id
    await rt.senders.block("mute", "telegram:eve", by="admin")
    worker = Worker(rt, clock=Clock())  # a worker started after the mute (others: within rules_poll_s)
    await rt.inbox.append(message("hello???", user="eve"))
    await drain(worker)
    held = await rt.conversations.get(conv.id)
    assert (held.status, held.agent) == ("held", "")
    assert {"payments", "muted"} <= set(held.tags)  # its tags kept, the hold added
    assert conv.id not in {c.id for c in await rt.conversations.of_agent("agent-a")}
    assert await queued(rt) == Counter()


async def test_an_expired_mute_lets_the_next_message_back_into_the_queue(rt: Runtime) -> None:
    clock = Clock()
    senders = Senders(rt.client, rt.keys, Audit(rt.client, rt.keys, 1000), rt.conversations, clock=clock)
    await senders.block("mute", "telegram:bob", by="admin", for_s=3600)
    assert [b.sender for b in await senders.list()] == ["bob"]
    worker = Worker(rt, clock=clock)
    env = message("withdrawal missing", user="bob")
    assert (await route(rt, worker, env)).status == "held"
    clock.ms += 3600 * 1000
    assert await senders.list() == []  # expired, and removed
    await rt.inbox.append(message("still missing", user="bob"))
    await drain(worker)
    back = await conversation_of(rt, env)
    assert back.status == "new" and (await queued(rt))["bob"] == 1
    statuses = [h.data for h in await rt.conversations.history(back.id) if h.type == "status"]
    assert statuses[-1]["reason"] == "a message not held"


async def test_spam_tagged_by_the_rules_is_held(rt: Runtime) -> None:
    conv = await route(rt, Worker(rt, clock=Clock()), message("FREE AIRDROP click here", user="bot9"))
    assert conv.status == "held" and await queued(rt) == Counter()
    [inbound] = [h for h in await rt.conversations.history(conv.id) if h.type == "inbound"]
    assert inbound.data["admission"] == "spam"


async def test_unban_and_bad_input(rt: Runtime) -> None:
    await rt.senders.block("ban", "discord:42", by="admin", for_s=60)
    assert await rt.senders.unban("discord:42", by="admin") is True
    assert await rt.senders.unban("discord:42", by="admin") is False
    for bad in ("discord", ":42", "discord:"):
        with pytest.raises(BadRequest):
            await rt.senders.block("ban", bad, by="admin")
    with pytest.raises(BadRequest):
        await rt.senders.block("kick", "discord:42", by="admin")


async def test_in_a_group_chat_one_members_flood_does_not_throttle_the_others(rt: Runtime) -> None:
    rt.settings.admission.burst = 5
    worker = Worker(rt, clock=Clock())
    first = message("pump 0", user="loud", key="group-1")
    await rt.inbox.append(first)
    for i in range(1, 30):
        await rt.inbox.append(message(f"pump {i}", user="loud", key="group-1"))
    for i in range(3):
        await rt.inbox.append(message(f"my deposit is missing {i}", user="calm", key="group-1"))
    await drain(worker)
    conv = await conversation_of(rt, first)
    inbound = [h.data for h in await rt.conversations.history(conv.id) if h.type == "inbound"]
    throttled = Counter(d["sender"]["id"] for d in inbound if d.get("admission") == "throttled")
    assert throttled == Counter({"loud": 25}) and len(inbound) == 33
