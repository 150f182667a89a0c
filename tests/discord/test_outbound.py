"""Replies from the outbox to the emulator's REST: right channel, no mentions, split, failures."""

from __future__ import annotations

from adapters.discord_bot import DiscordAdapter, split
from router.runtime import Runtime
from router.worker import Worker
from tests.discord.conftest import SUPPORT, AdapterFactory, conversation_id, eventually, wait_inbox
from tests.discord.emulator import Emulator
from tests.router.helpers import drain


async def _delivery(rt: Runtime, cid: str, reply_id: str, status: str) -> None:
    async def done() -> bool:
        return (await rt.conversations.deliveries(cid)).get(reply_id) == status

    await eventually(done, 10, f"delivery {status} of {reply_id}")


async def test_replies_reach_the_right_channel_with_mentions_disabled(
    rt: Runtime, emu: Emulator, bot: DiscordAdapter
) -> None:
    alice, bob, carol = emu.user("alice"), emu.user("bob"), emu.user("carol")
    dm = emu.dm(alice)
    thread = await emu.create_thread(SUPPORT, "carol", owner=carol)
    await emu.post(dm, alice, "my withdrawal has not arrived")
    m_ch = await emu.post(SUPPORT, bob, "deposit missing")
    m_th = await emu.post(thread, carol, "deposit missing too")
    await wait_inbox(rt, 3)
    await drain(Worker(rt))

    text = "Hi @everyone and @here, <@123456789012345678> and <@&223456789012345678>: fixed."
    for key, target in ((str(dm), dm), (f"{SUPPORT}:{bob['id']}", SUPPORT), (str(thread), thread)):
        cid = await conversation_id(rt, key)
        reply_id = await rt.conversations.reply(cid, text, "agent-a")
        await _delivery(rt, cid, reply_id, "delivered")
        sent = emu.sent[-1]
        assert sent["channel_id"] == target
        assert sent["body"]["content"] == text
        assert sent["body"]["allowed_mentions"] == {"parse": []}
    dm_body, ch_body, th_body = (s["body"] for s in emu.sent)
    # A quote of the user's message in shared channels and threads, none in a DM; never failing.
    assert "message_reference" not in dm_body
    assert str(ch_body["message_reference"]["message_id"]) == m_ch["id"]
    assert ch_body["message_reference"]["fail_if_not_exists"] is False
    assert str(th_body["message_reference"]["message_id"]) == m_th["id"]
    # The bot's own messages came back over the gateway and were not taken in.
    assert len(await wait_inbox(rt, 3)) == 3


async def test_long_reply_is_split_cleanly(rt: Runtime, emu: Emulator, bot: DiscordAdapter) -> None:
    alice = emu.user("alice")
    dm = emu.dm(alice)
    await emu.post(dm, alice, "my withdrawal has not arrived")
    await wait_inbox(rt, 1)
    await drain(Worker(rt))
    cid = await conversation_id(rt, str(dm))
    paragraphs = [f"Step {i}: " + " ".join(f"word{i}-{j}" for j in range(120)) for i in range(5)]
    text = "\n\n".join(paragraphs)
    assert len(text) > 4000
    reply_id = await rt.conversations.reply(cid, text, "agent-a")
    await _delivery(rt, cid, reply_id, "delivered")
    parts = [s["body"]["content"] for s in emu.sent]
    assert len(parts) >= 3 and all(len(p) <= 2000 for p in parts)
    assert " ".join(parts).split() == text.split()
    assert all(s["body"]["allowed_mentions"] == {"parse": []} for s in emu.sent)
    # Cuts fall between words: no part starts or ends inside a word.
    words = set(text.split())
    assert all(p.split()[0] in words and p.split()[-1] in words for p in parts)


def test_split_counts_like_discord() -> None:
    assert split("") == [] and split("short") == ["short"]
    emoji = "😀" * 1500  # 3000 UTF-16 units: Discord counts 2 per emoji
    parts = split(emoji)
    assert [len(p) for p in parts] == [1000, 500]
    assert split("a" * 4500) == ["a" * 2000, "a" * 2000, "a" * 500]
    assert split("line one\nline two", limit=12) == ["line one", "line two"]


async def test_closed_dms_are_recorded_as_failed(rt: Runtime, emu: Emulator, bot: DiscordAdapter) -> None:
    alice = emu.user("alice")
    dm = emu.dm(alice)
    await emu.post(dm, alice, "my withdrawal has not arrived")
    await wait_inbox(rt, 1)
    await drain(Worker(rt))
    cid = await conversation_id(rt, str(dm))
    emu.fail_sends[dm] = (403, 50007, "Cannot send messages to this user")
    reply_id = await rt.conversations.reply(cid, "Fixed!", "agent-a")
    await _delivery(rt, cid, reply_id, "failed")
    [entry] = [h for h in await rt.conversations.history(cid) if h.type == "delivery"]
    assert "50007" in entry.data["detail"] and "DMs" in entry.data["detail"]
    assert len(emu.sent) == 1  # a permanent failure is not retried


async def test_server_errors_are_retried(rt: Runtime, emu: Emulator, bot: DiscordAdapter) -> None:
    alice = emu.user("alice")
    dm = emu.dm(alice)
    await emu.post(dm, alice, "my withdrawal has not arrived")
    await wait_inbox(rt, 1)
    await drain(Worker(rt))
    cid = await conversation_id(rt, str(dm))
    emu.fail_sends[dm] = (503, 0, "Service Unavailable")
    reply_id = await rt.conversations.reply(cid, "Fixed!", "agent-a")
    await _delivery(rt, cid, reply_id, "retrying")
    del emu.fail_sends[dm]
    await _delivery(rt, cid, reply_id, "delivered")
    assert [s["body"]["content"] for s in emu.sent][-1] == "Fixed!"


async def test_a_long_rate_limit_goes_back_to_the_outbox_instead_of_holding_a_send_slot(
    rt: Runtime, emu: Emulator, make_bot: AdapterFactory
) -> None:
    await make_bot(close_grace_s=0.2)
    alice = emu.user("alice")
    dm = emu.dm(alice)
    await emu.post(dm, alice, "my withdrawal has not arrived")
    await wait_inbox(rt, 1)
    await drain(Worker(rt))
    cid = await conversation_id(rt, str(dm))
    emu.rate_limit_sends[dm] = 600.0
    reply_id = await rt.conversations.reply(cid, "Fixed!", "agent-a")
    # discord.py alone would sleep 600 s, five times, inside the send: the outbox would hear nothing.
    await _delivery(rt, cid, reply_id, "retrying")
    [entry] = [h for h in await rt.conversations.history(cid) if h.type == "delivery"]
    assert "rate limited for 600.0s" in entry.data["detail"]
    assert len(emu.sent) == 1  # one request: the retry is the outbox's, after retry_after


async def test_a_reply_to_a_locked_thread_fails_explaining_why(rt: Runtime, emu: Emulator, bot: DiscordAdapter) -> None:
    carol = emu.user("carol")
    thread = await emu.create_thread(SUPPORT, "carol", owner=carol)
    await emu.post(thread, carol, "my deposit is missing")
    await wait_inbox(rt, 1)
    await drain(Worker(rt))
    cid = await conversation_id(rt, str(thread))
    await emu.lock_thread(thread)
    reply_id = await rt.conversations.reply(cid, "Found it!", "agent-a")
    await _delivery(rt, cid, reply_id, "failed")
    [entry] = [h for h in await rt.conversations.history(cid) if h.type == "delivery"]
    # What the agent reads in the conversation: why, and what to do.
    assert "locked by a moderator" in entry.data["detail"] and "unlock it" in entry.data["detail"]
    assert len(emu.sent) == 1  # permanent: not retried
