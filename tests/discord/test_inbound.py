"""Inbound through the real discord.py client: DMs, support channels, threads, edits, deletions."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import discord
import pytest

from adapters.discord_bot import DiscordAdapter
from router.runtime import Runtime
from router.worker import Worker
from tests.discord.conftest import (
    ACCOUNT,
    ELSEWHERE,
    GUILD,
    SUPPORT,
    AdapterFactory,
    conversation_id,
    eventually,
    inbox,
    wait_inbox,
)
from tests.discord.emulator import Emulator
from tests.router.helpers import drain


async def test_dm_channel_and_thread_messages_become_their_conversations(
    rt: Runtime, emu: Emulator, bot: DiscordAdapter
) -> None:
    alice, bob, carol = emu.user("alice"), emu.user("bob"), emu.user("carol")
    dm = emu.dm(alice)
    thread = await emu.create_thread(SUPPORT, "carol's question", owner=carol)
    # Not served: another channel of the guild, and the bot's own messages.
    await emu.post(ELSEWHERE, bob, "my deposit is missing (posted in off-topic)")
    await emu.post(SUPPORT, emu.bot, "Welcome to support!")
    m_dm = await emu.post(dm, alice, "my withdrawal has not arrived")
    m_ch = await emu.post(SUPPORT, bob, "deposit missing since yesterday")
    m_th = await emu.post(
        thread,
        carol,
        "my 2fa does not work",
        attachments=[
            {
                "id": str(emu.snowflake()),
                "filename": "screen.png",
                "size": 12345,
                "url": "https://cdn.example/screen.png",
                "proxy_url": "https://media.example/screen.png",
                "content_type": "image/png",
            }
        ],
    )
    envs = await wait_inbox(rt, 3)
    await asyncio.sleep(0.2)  # anything else would have arrived by now
    envs = await wait_inbox(rt, 3)
    # One task per event in discord.py: channels may interleave, each channel keeps its order.
    assert sorted(e.platform_id for e in envs) == sorted([m_dm["id"], m_ch["id"], m_th["id"]])
    assert {e.account for e in envs} == {ACCOUNT}

    by_key = {e.conversation_key: e for e in envs}
    assert set(by_key) == {str(dm), f"{SUPPORT}:{bob['id']}", str(thread)}
    assert by_key[str(dm)].meta == {"channel_id": str(dm), "guild_id": "", "thread_id": "", "message_id": m_dm["id"]}
    assert by_key[str(thread)].meta == {
        "channel_id": str(SUPPORT),
        "guild_id": str(GUILD),
        "thread_id": str(thread),
        "message_id": m_th["id"],
    }
    [att] = by_key[str(thread)].attachments
    # The ref names the attachment by ids (its CDN url expires): adapters.discord_bot.attachment_url.
    attachment_id = m_th["attachments"][0]["id"]
    assert (att.name, att.type, att.size, att.ref) == (
        "screen.png",
        "image/png",
        12345,
        f"{thread}/{m_th['id']}/{attachment_id}",
    )
    assert by_key[str(dm)].sender.id == alice["id"] and by_key[str(dm)].sender.handle == "alice"

    await drain(Worker(rt))
    payments = {c.key for c in await rt.queues.head("payments")}
    security = {c.key for c in await rt.queues.head("security")}
    assert payments == {str(dm), f"{SUPPORT}:{bob['id']}"}
    assert security == {str(thread)}
    # Each channel's cursor is the last message appended from it.
    for channel, message in ((dm, m_dm), (SUPPORT, m_ch), (thread, m_th)):
        assert await rt.channel_context().cursor_get("discord", ACCOUNT, f"last:{channel}") == message["id"]
    assert bot.health()["connected"] is True and bot.health()["received"] == 3


async def test_messages_outside_support_channels_are_ignored(rt: Runtime, emu: Emulator, bot: DiscordAdapter) -> None:
    bob = emu.user("bob")
    other_thread = await emu.create_thread(ELSEWHERE, "chit-chat", owner=bob)
    other_bot = emu.user("other-bot", bot=True)
    await emu.post(ELSEWHERE, bob, "my deposit is missing")
    await emu.post(other_thread, bob, "my deposit is missing")
    await emu.post(SUPPORT, other_bot, "beep")
    await emu.post(SUPPORT, bob, "this one counts")
    [env] = await wait_inbox(rt, 1)
    await asyncio.sleep(0.2)
    assert [e.text for e in await wait_inbox(rt, 1)] == ["this one counts"]
    assert env.conversation_key == f"{SUPPORT}:{bob['id']}"


async def test_edits_and_deletions_update_the_history(rt: Runtime, emu: Emulator, bot: DiscordAdapter) -> None:
    alice = emu.user("alice")
    dm = emu.dm(alice)
    first = await emu.post(dm, alice, "my withdrawal has not arrived")
    second = await emu.post(dm, alice, "txid 0xdeadbeef")
    await wait_inbox(rt, 2)
    await emu.edit(first, "my withdrawal of 2 BTC has not arrived")
    await emu.delete(second)
    envs = await wait_inbox(rt, 4)
    edit, delete = envs[2], envs[3]
    assert edit.kind == "edit" and edit.platform_id.startswith(f"{first['id']}:edit:")
    assert edit.text == "my withdrawal of 2 BTC has not arrived" and edit.conversation_key == str(dm)
    assert delete.kind == "delete" and delete.platform_id == f"{second['id']}:delete"
    await drain(Worker(rt))
    cid = await conversation_id(rt, str(dm))
    kinds = [h.type for h in await rt.conversations.history(cid)]
    assert kinds == ["inbound", "inbound", "edit", "delete"]
    conv = await rt.conversations.get(cid)
    assert conv.messages == 2


async def test_private_thread_per_user(rt: Runtime, emu: Emulator, make_bot: AdapterFactory) -> None:
    await make_bot(private_threads=True)
    bob = emu.user("bob")
    await emu.post(SUPPORT, bob, "my deposit is missing")
    [env] = await wait_inbox(rt, 1)
    thread = int(env.conversation_key)
    assert emu.channels[thread]["type"] == 12 and emu.channels[thread]["parent_id"] == str(SUPPORT)
    assert emu.thread_members[thread] == {int(bob["id"])}
    # Bob continues in the thread, or writes in the channel again: the same conversation.
    await emu.post(thread, bob, "any news?")
    await emu.post(SUPPORT, bob, "hello??")
    envs = await wait_inbox(rt, 3)
    assert {e.conversation_key for e in envs} == {str(thread)}
    assert [c for c in emu.channels.values() if c["type"] == 12] == [emu.channels[thread]]


async def test_the_live_handler_and_the_backfill_open_one_private_thread(
    rt: Runtime, emu: Emulator, make_bot: AdapterFactory
) -> None:
    """The same message handled at once by the live handler and by a backfill (a reconnect while
    it arrives): both find no thread yet, and only one may open it."""
    bot = await make_bot(private_threads=True)
    bob = emu.user("bob")
    posted = await emu.post(SUPPORT, bob, "my deposit is missing")
    [env] = await wait_inbox(rt, 1)
    assert bot._client is not None
    support = bot._client.get_channel(SUPPORT)
    assert isinstance(support, discord.TextChannel)
    # Stored, not dispatched: no live handler; the two calls below stand for it and the backfill.
    stored = emu.store(SUPPORT, emu.user("carol"), "me too")
    message = await support.fetch_message(int(stored["id"]))
    place = await bot._place(support)
    assert place is not None and posted["id"] != message.id
    first, second = await asyncio.gather(*(bot._conversation_place(message, place) for _ in range(2)))
    assert first == second
    threads = [c for c in emu.channels.values() if c["type"] == 12]
    assert len(threads) == 2 and {int(c["id"]) for c in threads} == {int(env.conversation_key), first.target}


SEED = "abandon ability able about above absent absorb abstract absurd abuse access accident"


async def test_private_thread_mode_removes_the_public_message(
    rt: Runtime, emu: Emulator, make_bot: AdapterFactory
) -> None:
    bot = await make_bot(private_threads=True)
    bob = emu.user("bob")
    public = await emu.post(SUPPORT, bob, f"my wallet is empty, my words are {SEED}")
    [env] = await wait_inbox(rt, 1)
    thread = int(env.conversation_key)
    # Checked at Discord's REST: the bot deleted the public copy, and told bob why in his thread.
    await eventually(lambda: _has(emu.deleted, (SUPPORT, int(public["id"]))), 5, "the public message deleted")
    assert [m["id"] for m in emu.messages[SUPPORT]] == []
    await eventually(lambda: _has([s["channel_id"] for s in emu.sent], thread), 5, "a notice in the thread")
    assert "moved to this private thread" in emu.sent[-1]["body"]["content"]
    await asyncio.sleep(0.2)
    # The bot's own deletion is not recorded as the user deleting a message.
    assert [e.kind for e in await inbox(rt)] == ["message"] and bot.health()["left_public"] == 0


async def test_without_manage_messages_the_user_is_told_and_moderators_alerted_for_a_secret(
    rt: Runtime, emu: Emulator, make_bot: AdapterFactory
) -> None:
    emu.manage_messages = False
    await make_bot(private_threads=True, alert_channel=str(ELSEWHERE))
    bob = emu.user("bob")
    public = await emu.post(SUPPORT, bob, f"my words are {SEED}")
    [env] = await wait_inbox(rt, 1)
    thread = int(env.conversation_key)
    await eventually(lambda: _has([s["channel_id"] for s in emu.sent], ELSEWHERE), 5, "the moderators' alert")
    [told] = [s["body"]["content"] for s in emu.sent if s["channel_id"] == thread]
    assert "still visible to everyone" in told and "recovery phrase" in told
    [alert] = [s["body"] for s in emu.sent if s["channel_id"] == ELSEWHERE]
    assert public["id"] in alert["content"] and "seed phrase" in alert["content"]
    assert alert["allowed_mentions"] == {"parse": []} and SEED not in alert["content"]
    assert emu.deleted == []


async def _has(items: list[Any], item: Any) -> bool:
    return item in items


async def test_forwarded_message_is_routed_with_the_forwarded_text(
    rt: Runtime, emu: Emulator, bot: DiscordAdapter
) -> None:
    alice = emu.user("alice")
    dm = emu.dm(alice)
    original = {"type": 0, "content": "Withdrawal of 0.5 BTC stuck", "embeds": [], "attachments": []}
    snapshot = {**original, "timestamp": "2026-12-01T10:00:00+00:00", "edited_timestamp": None, "flags": 0}
    forward = await emu.post(
        dm,
        alice,
        "",  # a forward has no text of its own
        message_reference={"type": 1, "message_id": str(emu.snowflake()), "channel_id": str(SUPPORT)},
        message_snapshots=[{"message": snapshot}],
    )
    [env] = await wait_inbox(rt, 1)
    assert env.platform_id == forward["id"] and env.text == "Withdrawal of 0.5 BTC stuck"
    assert env.reply_to is None  # the forwarded message is elsewhere: not a reply in this conversation
    # Someone else's words, as the agent and the rules are told (Discord does not say whose).
    assert env.meta["forwarded_from"] == f"a Discord message in channel {SUPPORT}"
    assert env.sender.attributes["forwarded"] == "message"
    await drain(Worker(rt))
    [conv] = await rt.queues.head("payments")
    assert conv.key == str(dm)
    [entry] = [e for e in await rt.conversations.history(conv.id) if e.type == "inbound"]
    assert entry.data["forwarded_from"] == f"a Discord message in channel {SUPPORT}"


async def test_attachment_urls_are_fetched_fresh_when_opened(rt: Runtime, emu: Emulator, bot: DiscordAdapter) -> None:
    alice = emu.user("alice")
    dm = emu.dm(alice)
    shot = emu.attachment("receipt.png", b"\x89PNG receipt", "image/png")
    posted = await emu.post(dm, alice, "here is the receipt", attachments=[shot])
    [env] = await wait_inbox(rt, 1)
    [att] = env.attachments
    stale = posted["attachments"][0]["url"]
    emu.time_shift = 25 * 3600  # a day later, when an agent opens the conversation: the url has expired
    async with aiohttp.ClientSession() as http, http.get(stale) as expired:
        assert expired.status == 404
    fresh = await bot.attachment_url(att.ref)
    assert fresh != stale and fresh.split("?")[0] == stale.split("?")[0]
    assert await bot.fetch_attachment(ACCOUNT, att.ref) == b"\x89PNG receipt"
    assert f"GET /api/v10/channels/{dm}/messages/{posted['id']}" in emu.requests  # the message, fetched again


async def test_a_dms_first_message_that_could_not_be_appended_is_appended_by_a_backfill(
    rt: Runtime, emu: Emulator, make_bot: AdapterFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    bot = await make_bot(append_retry_s=0, backfill_retry_s=0.2)
    append = bot._ctx.append
    failures = [ConnectionError("redis away")]

    async def flaky(env: Any) -> Any:
        if failures:
            raise failures.pop()
        return await append(env)

    monkeypatch.setattr(bot._ctx, "append", flaky)
    alice = emu.user("alice")
    dm = emu.dm(alice)
    await emu.post(dm, alice, "my first message")
    await emu.post(dm, alice, "my second message")
    envs = await wait_inbox(rt, 2)
    assert sorted(e.text for e in envs) == ["my first message", "my second message"]
