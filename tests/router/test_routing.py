"""The router worker against a real Redis: conversations, queues, history, outbox, dead letters."""

from __future__ import annotations

import asyncio
import json

import msgspec
import pytest

from router.deadletters import DeadLetters
from router.keys import ROUTER_GROUP
from router.model import Attachment, Sender, decode_envelope, decode_outbox, encode
from router.runtime import Runtime
from router.worker import Worker
from tests.router.helpers import drain, message

pytestmark = pytest.mark.cluster


async def test_message_creates_conversation_in_group_queue(rt: Runtime) -> None:
    await rt.inbox.append(message("My account was hacked, someone withdrew all my BTC!", user="alice"))
    worker = Worker(rt)
    assert await drain(worker) == 1
    convs = await rt.queues.head("security")
    assert [c.sender_id for c in convs] == ["alice"]
    conv = convs[0]
    assert conv.priority == 1 and conv.status == "new"
    history = await rt.conversations.history(conv.id)
    assert history[0].type == "inbound"
    assert history[0].data["decision"]["group"] == "security"
    assert history[0].data["decision"]["trace"], "the decision carries its trace"


async def test_follow_up_joins_open_conversation_and_keeps_group_and_agent(rt: Runtime) -> None:
    worker = Worker(rt)
    await rt.inbox.append(message("my withdrawal has not arrived", user="bob"))
    await drain(worker)
    [conv] = await rt.queues.head("payments")
    assert await rt.conversations.claim("payments", "agent-a") == conv.id
    # A follow-up about something else stays with the payments agent (sticky).
    await rt.inbox.append(message("also how do I do KYC?", user="bob"))
    await drain(worker)
    after = await rt.conversations.get(conv.id)
    assert (after.group, after.agent, after.status, after.messages) == (
        "payments",
        "agent-a",
        "assigned",
        2,
    )
    assert [h.type for h in await rt.conversations.history(conv.id)].count("inbound") == 2


async def test_duplicate_platform_message_is_appended_once(rt: Runtime) -> None:
    first = await rt.inbox.append(message("hello", platform_id="42"))
    again = await rt.inbox.append(message("hello", platform_id="42"))
    assert not first.duplicate and again.duplicate and again.entry_id == first.entry_id
    assert await rt.client.xlen(rt.keys.inbox) == 1


async def test_closed_conversation_reopens_within_window(rt: Runtime) -> None:
    worker = Worker(rt)
    await rt.inbox.append(message("deposit missing", user="carol"))
    await drain(worker)
    [conv] = await rt.queues.head("payments")
    await rt.conversations.close(conv.id, "agent-b")
    assert await rt.queues.head("payments") == []
    await rt.inbox.append(message("still missing!", user="carol"))
    await drain(worker)
    again = await rt.conversations.get(conv.id)
    assert again.status == "new" and [c.id for c in await rt.queues.head("payments")] == [conv.id]


async def test_closed_conversation_outside_window_starts_a_new_one(rt: Runtime) -> None:
    rt.settings.conversations.reopen_window_s = 0
    worker = Worker(rt)
    await rt.inbox.append(message("deposit missing", user="dan"))
    await drain(worker)
    [conv] = await rt.queues.head("payments")
    await rt.conversations.close(conv.id, "agent-b")
    await asyncio.sleep(0.01)
    await rt.inbox.append(message("deposit missing again", user="dan"))
    await drain(worker)
    [new] = await rt.queues.head("payments")
    assert new.id != conv.id


async def test_queue_orders_by_priority_then_due_time(rt: Runtime) -> None:
    worker = Worker(rt)
    await rt.inbox.append(message("how do I reset my 2FA", user="p2"))
    await drain(worker)
    await rt.inbox.append(message("HACKED! unauthorized withdrawal from my account", user="p1"))
    await drain(worker)
    order = [c.sender_id for c in await rt.queues.head("security")]
    assert order.index("p1") < order.index("p2")


async def test_stopping_routes_the_batch_in_flight_and_the_one_read_ahead(rt: Runtime) -> None:
    small = rt.settings.model_copy(update={"worker": rt.settings.worker.model_copy(update={"batch": 20})})
    await rt.inbox.append_many([message(f"deposit {i} missing", user=f"st{i}") for i in range(400)])
    worker = Worker(rt, settings=small)
    running = asyncio.create_task(worker.run())
    for _ in range(5000):  # until its first batch is routed
        if worker.processed:
            break
        await asyncio.sleep(0.001)
    worker.stop()
    await running
    # Every entry it read was routed before it returned: none is left pending on it...
    assert (await rt.client.xpending(rt.keys.inbox, ROUTER_GROUP))["pending"] == 0
    routed = int(await rt.client.hget(rt.keys.stats, "routed:telegram") or 0)
    assert routed == worker.processed
    # ... and it stopped early: the rest waits in the stream for the other workers.
    assert 0 < worker.processed < 400


async def test_follow_ups_keep_or_move_the_queue_place_as_their_priority_says(rt: Runtime) -> None:
    worker = Worker(rt)
    for user in ("q1", "q2"):
        await rt.inbox.append(message("how do I reset my 2FA", user=user))
        await drain(worker)
    first, second = await rt.queues.head("security")
    assert (first.sender_id, second.sender_id) == ("q1", "q2")
    place = (
        await rt.client.zscore(rt.keys.queue("security"), second.id),
        await rt.client.zscore(rt.keys.waiting("security"), second.id),
    )
    # No rule matches (P3 by default): it stays P2, where it was, as long waiting as it was.
    await rt.inbox.append(message("hello? anyone there", user="q2"))
    await drain(worker)
    assert [c.sender_id for c in await rt.queues.head("security")] == ["q1", "q2"]
    assert (
        await rt.client.zscore(rt.keys.queue("security"), second.id),
        await rt.client.zscore(rt.keys.waiting("security"), second.id),
    ) == place
    # P1 now: ahead of the older P2.
    await rt.inbox.append(message("HACKED! unauthorized withdrawal", user="q2"))
    await drain(worker)
    assert [c.sender_id for c in await rt.queues.head("security")] == ["q2", "q1"]
    conv = await rt.conversations.get(second.id)
    assert (conv.priority, conv.messages, conv.tags.count("security")) == (1, 3, 1)


async def test_routed_and_auto_reply_counters_add_up_per_channel(rt: Runtime) -> None:
    seed = "athlete mechanic twin pluck cousin physical route trend jaguar pet already around"
    for i in range(3):
        await rt.inbox.append(message(f"my seed: {seed}", user=f"s{i}"))  # each gets an auto-reply
    await rt.inbox.append(message("my deposit is missing", user="d1", channel="discord"))
    await drain(Worker(rt))
    counters = await rt.client.hgetall(rt.keys.stats)
    assert (counters[b"routed:telegram"], counters[b"routed:discord"], counters[b"out:telegram"]) == (b"3", b"1", b"3")
    assert b"out:discord" not in counters


async def test_invalid_and_oversize_entries_are_dead_lettered_and_worker_continues(
    rt: Runtime,
) -> None:
    await rt.client.xadd(rt.keys.inbox, {"env": b"{not json"})
    await rt.client.xadd(rt.keys.inbox, {"env": json.dumps({"v": 99, "id": "x"})})
    await rt.client.xadd(rt.keys.inbox, {"something": "else"})
    big = message("x" * (rt.settings.inbox.max_message_bytes + 10))
    await rt.inbox.append(big)
    await rt.inbox.append(message("my deposit is missing", user="eve"))
    worker = Worker(rt)
    await drain(worker)
    dead = await rt.client.xrange(rt.keys.dead)
    reasons = [f[b"reason"].decode() for _, f in dead]
    assert len(reasons) == 4
    assert any(r.startswith("invalid envelope") for r in reasons)
    assert any("oversize" in r for r in reasons)
    assert any("no 'env' field" in r for r in reasons)
    assert sum("invalid envelope" in r or "version" in r for r in reasons) == 2
    assert [c.sender_id for c in await rt.queues.head("payments")] == ["eve"]
    pending = await rt.client.xpending(rt.keys.inbox, ROUTER_GROUP)
    assert pending["pending"] == 0


async def test_reclaimed_entry_is_applied_once(rt: Runtime) -> None:
    """A slow worker that finishes after its entry was reclaimed must not route it twice."""
    await rt.inbox.append(message("withdrawal stuck", user="frank"))
    slow = Worker(rt, name="slow")
    fast = Worker(rt, name="fast")
    # The slow worker reads the entry, then stalls before routing it.
    streams = await rt.client.xreadgroup(ROUTER_GROUP, "slow", {rt.keys.inbox: ">"}, count=10)
    entries = streams[0][1]
    await asyncio.sleep(rt.settings.worker.claim_idle_ms / 1000 + 0.1)
    assert await fast.reclaim() == 1
    await slow.process(entries, attempts=1)  # it wakes up and tries anyway
    [conv] = await rt.queues.head("payments")
    history = await rt.conversations.history(conv.id)
    assert [h.type for h in history] == ["inbound"]
    assert fast.processed == 1 and slow.processed == 1  # both ran the script; only one applied


async def test_entry_failing_repeatedly_is_dead_lettered_with_reason(rt: Runtime) -> None:
    rt.settings.worker.max_attempts = 2
    await rt.inbox.append(message("deposit missing", user="gina"))
    worker = Worker(rt)

    class Broken:
        version = "broken"
        reads_conversation_state = False

        def evaluate(self, _msg: object) -> object:
            raise RuntimeError("engine exploded")

    worker.rules.engine = Broken()  # type: ignore[assignment]
    await drain(worker)
    assert await rt.client.hget(rt.keys.failures, (await rt.client.xrange(rt.keys.inbox))[0][0])
    for _ in range(3):
        await asyncio.sleep(rt.settings.worker.claim_idle_ms / 1000 + 0.05)
        await worker.reclaim()
    [(_, fields)] = await rt.client.xrange(rt.keys.dead)
    assert fields[b"reason"] == b"RuntimeError: engine exploded"
    assert b"gina" in fields[b"payload"]


async def test_a_message_failing_in_the_route_script_is_dead_lettered_and_its_batch_routed(rt: Runtime) -> None:
    # Corrupt state for one conversation key: its conversation "hash" is a string, so the
    # script's HMGET fails with WRONGTYPE for that message only.
    await rt.client.set(rt.keys.prefix + "ck:telegram:bot1:broken", "999")
    await rt.client.set(rt.keys.prefix + "conv:999", "not a hash")
    for user in ("ok1", "broken", "ok2"):
        await rt.inbox.append(message("my deposit is missing", user=user, key=user))
    worker = Worker(rt)
    await drain(worker)
    assert sorted(c.sender_id for c in await rt.queues.head("payments")) == ["ok1", "ok2"]
    [(_, fields)] = await rt.client.xrange(rt.keys.dead)
    assert fields[b"reason"].startswith(b"route script: WRONGTYPE")
    assert b"broken" in fields[b"payload"]
    pending = await rt.client.xpending(rt.keys.inbox, ROUTER_GROUP)
    assert pending["pending"] == 0


async def test_route_script_is_loaded_again_when_redis_lost_it(rt: Runtime) -> None:
    worker = Worker(rt)
    await rt.inbox.append(message("my deposit is missing", user="first"))
    await drain(worker)
    await rt.client.script_flush()  # what a restarted Redis without the script cache looks like
    for user in ("second", "third"):
        await rt.inbox.append(message("my deposit is missing", user=user))
    await drain(worker)
    assert sorted(c.sender_id for c in await rt.queues.head("payments")) == ["first", "second", "third"]
    assert worker.processed == 3


async def test_conversation_state_is_looked_up_only_for_rules_that_read_it(rt: Runtime) -> None:
    from rules import Engine

    worker = Worker(rt)
    assert not worker.rules.engine.reads_conversation_state  # tests/router/rules.yaml
    worker.rules.engine = Engine.from_yaml(
        """
version: 1
groups: [{id: general}]
defaults: {group: general, priority: P3}
rules:
  - id: again
    when: {conversation: follow_up}
    then: {tags: [follow-up]}
"""
    )
    assert worker.rules.engine.reads_conversation_state
    await rt.inbox.append(message("hello", user="ivy"))
    await drain(worker)
    await rt.inbox.append(message("anyone?", user="ivy"))
    await drain(worker)
    [conv] = await rt.queues.head("general")
    inbound = [h.data["decision"]["tags"] for h in await rt.conversations.history(conv.id) if h.type == "inbound"]
    assert ["follow-up" in tags for tags in inbound] == [False, True]


async def test_idle_consumers_with_nothing_pending_are_forgotten(rt: Runtime) -> None:
    rt.settings.worker.forget_consumer_s = 0.2
    for user in ("p", "q"):
        await rt.inbox.append(message("my deposit is missing", user=user))
    # "gone" routed its entry and exited; "stuck" died holding one (left for reclaim).
    gone = Worker(rt, name="gone")
    await rt.client.xreadgroup(ROUTER_GROUP, "stuck", {rt.keys.inbox: ">"}, count=1)
    await drain(gone)
    await asyncio.sleep(0.3)
    live = Worker(rt, name="live")
    await drain(live)  # joins the group, nothing to do
    assert await live.forget_consumers() == ["gone"]
    names = {c["name"] for c in await rt.client.xinfo_consumers(rt.keys.inbox, ROUTER_GROUP)}
    assert names == {b"stuck", b"live"}
    # The script re-checks "nothing pending" itself: a consumer that holds an entry stays.
    assert await live.scripts.forget(args=[rt.keys.prefix, 0, ROUTER_GROUP, "stuck"]) == 0


async def test_secret_is_redacted_everywhere_and_the_inbox_entry_kept_masked(rt: Runtime) -> None:
    seed = "athlete mechanic twin pluck cousin physical route trend jaguar pet already around"
    await rt.inbox.append(message(f"is this my recovery phrase? {seed}", user="hank"))
    worker = Worker(rt)
    await drain(worker)
    [conv] = await rt.queues.head("security")
    assert "secret-leak" in conv.tags
    dump = json.dumps([h.to_dict() for h in await rt.conversations.history(conv.id)]) + conv.last_text
    assert "pluck" not in dump and "jaguar" not in dump
    # Masked on append, so the entry stays for replays like any routed message (in the P1 lane:
    # a pasted seed phrase is a P1 situation).
    assert await rt.client.xlen(rt.keys.inbox) == 0
    [(_, fields)] = await rt.client.xrange(rt.keys.lane)
    assert b"[redacted:seed_phrase]" in fields[b"env"] and b"jaguar" not in fields[b"env"]


async def test_auto_reply_goes_to_outbox_with_the_reply_target(rt: Runtime) -> None:
    seed = "athlete mechanic twin pluck cousin physical route trend jaguar pet already around"
    msg = message(f"my seed: {seed}", user="ivy", meta={"chat_id": "777"})
    await rt.inbox.append(msg)
    await drain(Worker(rt))
    [(_, fields)] = await rt.client.xrange(rt.keys.outbox("telegram"))
    item = json.loads(fields[b"item"])
    assert item["auto"] and item["text"].startswith("Never share")
    assert item["reply_to"] == msg.platform_id and item["meta"] == {"chat_id": "777"}
    [conv] = await rt.queues.head("security")
    assert item["conversation"] == conv.id
    assert decode_outbox(fields[b"item"]).conversation == conv.id  # as the channel's adapter reads it
    inbound, outbound = await rt.conversations.history(conv.id)
    assert (inbound.type, outbound.type) == ("inbound", "outbound")
    assert outbound.data == item
    # The inbound entry leaves out what is empty, and the auto-reply its outbound entry records.
    assert "auto_reply" not in inbound.data["decision"]
    assert not {"subject", "attachments", "reply_to"} & set(inbound.data)


async def test_escalating_rule_moves_open_conversation(rt: Runtime) -> None:
    worker = Worker(rt)
    await rt.inbox.append(message("my deposit is missing", user="jack"))
    await drain(worker)
    [conv] = await rt.queues.head("payments")
    await rt.conversations.claim("payments", "agent-p")
    await rt.inbox.append(message("this is fraud, someone else did it", user="jack"))
    await drain(worker)
    moved = await rt.conversations.get(conv.id)
    assert (moved.group, moved.priority, moved.status, moved.agent) == ("security", 1, "new", "")
    assert [c.id for c in await rt.queues.head("security")] == [conv.id]
    assert conv.id not in await rt.client.smembers(rt.keys.agent("agent-p"))


async def test_no_auto_reply_to_auto_submitted_messages(rt: Runtime) -> None:
    seed = "athlete mechanic twin pluck cousin physical route trend jaguar pet already around"
    await rt.inbox.append(message(f"out of office: {seed}", user="bot", meta={"auto_submitted": "1"}))
    await drain(Worker(rt))
    assert await rt.client.xlen(rt.keys.outbox("telegram")) == 0
    [conv] = await rt.queues.head("security")
    assert conv.sender_id == "bot"
    # The history still says which reply the rules chose, since none was sent.
    [inbound] = await rt.conversations.history(conv.id)
    assert inbound.data["decision"]["auto_reply"].startswith("Never share")


async def test_trim_by_age_never_drops_unrouted_entries(rt: Runtime) -> None:
    rt.settings.inbox.max_age_s = 1
    worker = Worker(rt)
    await rt.inbox.append(message("deposit missing", user="old"))
    await drain(worker)  # routed: may go once old enough
    await asyncio.sleep(1.1)
    await rt.inbox.append(message("withdrawal stuck", user="pending1"))
    await rt.client.xreadgroup(ROUTER_GROUP, "ghost", {rt.keys.inbox: ">"}, count=1)  # pending, not routed
    await asyncio.sleep(1.1)
    await rt.inbox.append(message("withdrawal stuck", user="unread"))  # not even delivered
    await worker.trim()
    remaining = [json.loads(f[b"env"])["sender"]["id"] for _, f in await rt.client.xrange(rt.keys.inbox)]
    assert remaining == ["pending1", "unread"]


async def test_follow_up_routed_by_a_rule_moves_a_conversation_the_defaults_placed(rt: Runtime) -> None:
    worker = Worker(rt)
    await rt.inbox.append(message("/start", user="kim"))
    await drain(worker)
    [conv] = await rt.queues.head("general")
    await rt.inbox.append(message("my deposit is missing", user="kim"))
    await drain(worker)
    moved = await rt.conversations.get(conv.id)
    assert (moved.group, moved.priority, moved.routed_by) == ("payments", 2, "payments")
    assert await rt.queues.head("general") == []
    # Once a rule placed it, the conversation is sticky again.
    await rt.inbox.append(message("also 2fa question", user="kim"))
    await drain(worker)
    assert (await rt.conversations.get(conv.id)).group == "payments"


async def test_full_body_never_travels_and_is_kept_redacted(rt: Runtime) -> None:
    seed = "athlete mechanic twin pluck cousin physical route trend jaguar pet already around"
    body = f"my withdrawal is stuck\n\n> earlier you asked for my phrase: {seed}"
    await rt.inbox.append(message("my withdrawal is stuck", user="lee", meta={"full_body": body, "chat_id": "9"}))
    await drain(Worker(rt))
    [conv] = await rt.queues.head("payments")
    [inbound] = await rt.conversations.history(conv.id)
    assert "[redacted:seed_phrase]" in inbound.data["full_body"] and "jaguar" not in inbound.data["full_body"]
    stored_meta = await rt.client.hget(rt.keys.conv(conv.id), "meta")
    assert json.loads(stored_meta) == {"chat_id": "9"}
    await rt.conversations.reply(conv.id, "checking", "agent")
    [(_, fields)] = await rt.client.xrange(rt.keys.outbox("telegram"))
    assert "full_body" not in json.loads(fields[b"item"])["meta"]


async def test_poison_envelopes_are_refused_at_parse_and_never_retried(rt: Runtime) -> None:
    """Issue 12, finding 9: received_at=1e20 raised OverflowError in the rules step, and the entry
    was retried for ~150 s (max_attempts reclaims) before it was dead-lettered."""
    ok = message("my deposit is missing", user="pat")
    poison = {
        "received_at": msgspec.structs.replace(ok, received_at=1e20),
        "id": msgspec.structs.replace(ok, id=""),
        "sender.id": msgspec.structs.replace(ok, sender=Sender(id="")),
        "attachments[0].size": msgspec.structs.replace(ok, attachments=(Attachment(size=-1),)),
    }
    for env in poison.values():
        await rt.client.xadd(rt.keys.inbox, {"env": encode(env)})
    await rt.inbox.append(ok)
    await drain(Worker(rt))
    reasons = [f[b"reason"].decode() for _, f in await rt.client.xrange(rt.keys.dead)]
    assert len(reasons) == len(poison)
    for field, reason in zip(poison, reasons, strict=True):
        assert reason.startswith("invalid envelope") and reason.endswith(f"`$.{field}`"), reason
    assert (await rt.client.xpending(rt.keys.inbox, ROUTER_GROUP))["pending"] == 0
    assert await rt.client.hlen(rt.keys.failures) == 0
    assert [c.sender_id for c in await rt.queues.head("payments")] == ["pat"]


async def test_dead_letters_keep_every_field_and_count_each_message_once(rt: Runtime) -> None:
    """Issue 12, finding 9: a foreign entry was kept with an empty payload, `dead retry` skipped it
    without a word, and a retried message that failed again was counted again (42 for 24)."""
    foreign = await rt.client.xadd(rt.keys.inbox, {"something": "else", "raw": b"\xff\x00"})
    await rt.client.xadd(rt.keys.inbox, {"env": b"{broken"})
    worker = Worker(rt)
    await drain(worker)
    [(odd_id, odd), (_, bad)] = await rt.client.xrange(rt.keys.dead)
    assert (odd[b"entry"], odd[b"field:something"], odd[b"field:raw"]) == (foreign, b"else", b"\xff\x00")
    assert bad[b"payload"] == b"{broken"
    dead = DeadLetters(rt.client, rt.shards)
    for _ in range(2):  # retried, dead-lettered again, retried again
        result = await dead.retry(None)
        assert result.retried == 1
        assert [(i, why.split(";")[0]) for i, why in result.skipped] == [
            (odd_id.decode(), "not an envelope (fields: raw, something)")
        ]
        await drain(worker)
    [_, (_, again)] = await rt.client.xrange(rt.keys.dead)
    assert again[b"payload"] == b"{broken" and again[b"retry_of"] == bad[b"entry"]
    assert await rt.client.hget(rt.keys.stats, "dead") == b"2", "two messages, however often retried"


async def test_dead_letters_written_in_clear_are_masked_when_listed_and_retried(rt: Runtime) -> None:
    """Issue 13: a dead letter from before masking on append (or from a writer that bypassed
    ``Inbox.append``) held a seed phrase in clear; ``dead list`` printed it and ``dead retry``
    wrote it back to the inbox as it was."""
    seed = "athlete mechanic twin pluck cousin physical route trend jaguar pet already around"
    clear = msgspec.structs.replace(message(f"my words {seed}", user="old"), received_at=1e20)  # invalid
    await rt.client.xadd(rt.keys.inbox, {"env": encode(clear)})
    await rt.client.xadd(rt.keys.inbox, {"env": f"{{broken {seed}".encode()})
    limit = rt.settings.inbox.max_message_bytes
    oversize = message(f"{seed} " + "x" * limit, user="big", subject=f"words: {seed}")  # a valid envelope
    await rt.client.xadd(rt.keys.inbox, {"env": encode(oversize)})
    worker = Worker(rt)
    await drain(worker)
    dead = DeadLetters(rt.client, rt.shards)
    listed = json.dumps(await dead.entries())
    assert "jaguar" not in listed and listed.count("[redacted:seed_phrase]") == 4
    assert (await dead.retry(None)).retried == 3
    retried = [f[b"env"] for _, f in await rt.client.xrange(rt.keys.inbox) if b"retry_of" in f]
    assert len(retried) == 3 and not any(b"jaguar" in r for r in retried)
    assert json.loads(retried[0])["text"] == "my words [redacted:seed_phrase]"
    assert decode_envelope(retried[2]).subject == "words: [redacted:seed_phrase]"
