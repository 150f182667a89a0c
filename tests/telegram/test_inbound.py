"""Inbound through the real aiogram client: which messages become which conversations, no loss, no duplicate."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from typing import Any

import pytest

from router.channel import ChannelContext
from router.cli import _dead
from router.deadletters import DeadLetters
from router.model import Envelope, decode_envelope
from router.runtime import Runtime
from tests.conftest import free_port
from tests.router.helpers import message
from tests.telegram.conftest import (
    ACCOUNT,
    FORUM,
    GROUP,
    OTHER_GROUP,
    MakeAdapter,
    consumed,
    conversation_id,
    cursor,
    route,
    until,
)
from tests.telegram.emulator import BOT_USERNAME, Emulator


async def inbox(rt: Runtime) -> list[Envelope]:
    return [decode_envelope(fields[b"env"]) for _, fields in await rt.client.xrange(rt.keys.inbox)]


async def test_private_group_and_topic_messages_become_their_conversations(
    rt: Runtime, emu: Emulator, make_adapter: MakeAdapter
) -> None:
    private = emu.push_message(emu.chat(777), "my withdrawal has not arrived")
    group = emu.push_message(emu.chat(GROUP), f"@{BOT_USERNAME} deposit missing", sender=emu.user(888, "Bob", "bob"))
    topic = emu.push_message(
        emu.chat(FORUM, forum=True), f"hello @{BOT_USERNAME.lower()}, any news?", thread_id=42, sender=emu.user(999)
    )
    await make_adapter()
    await consumed(rt, topic)
    await route(rt)

    keys = {"777": "payments", str(GROUP): "payments", f"{FORUM}:42": "general"}
    for key, group_id in keys.items():
        cid = await conversation_id(rt, key)
        assert cid is not None, key
        conv = await rt.conversations.get(cid)
        assert (conv.channel, conv.account, conv.key, conv.group) == ("telegram", ACCOUNT, key, group_id)
    [p, g, t] = await inbox(rt)
    assert p.platform_id == f"777:{private['message']['message_id']}"
    assert p.meta == {"chat_id": "777", "message_id": str(private["message"]["message_id"]), "chat_type": "private"}
    assert g.platform_id == f"{GROUP}:{group['message']['message_id']}"
    assert t.meta["thread_id"] == "42" and t.meta["chat_type"] == "supergroup"
    assert p.sender.id == "777" and p.sender.handle == "alice" and p.sender.name == "Alice"
    # The app language is an attribute for rules, not the message-language hint.
    assert p.sender.attributes == {"chat_type": "private", "language_code": "en"}
    assert p.sender.language is None
    # A topic message "replies" to the topic's root: that is not a reply worth recording.
    assert t.reply_to is None


async def test_group_messages_not_for_the_bot_are_ignored(
    rt: Runtime, emu: Emulator, make_adapter: MakeAdapter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "switchboard.telegram")
    group = emu.chat(GROUP)
    bot_said = emu.message(group, "How can we help?", sender=emu.bot_user())
    emu.push_message(group, "just chatting about the weather")  # not addressed
    emu.push_message(group, "@someotherbot hi")  # addressed to someone else
    emu.push_message(group, "/help")  # a command for every bot, not /help@ours
    emu.push_message(emu.chat(OTHER_GROUP), f"@{BOT_USERNAME} help")  # chat not configured
    emu.push_message(group, f"@{BOT_USERNAME} hi", sender=emu.bot_user() | {"id": 55, "username": "otherbot"})
    emu.push_message(group, "still waiting for my deposit", reply_to=bot_said)  # reply to the bot: taken
    emu.push_message(group, f"/status@{BOT_USERNAME}")  # command for our bot: taken
    last = emu.push_message(emu.chat(FORUM, forum=True), "only topic talk", thread_id=7)  # topic, not addressed
    adapter = await make_adapter()
    await consumed(rt, last)

    assert [m.text for m in await inbox(rt)] == ["still waiting for my deposit", f"/status@{BOT_USERNAME}"]
    health = adapter.health()["bots"][ACCOUNT]
    assert (health["received"], health["ignored"]) == (2, 6)
    # An operator learns the id of a group to add from the log, once per group.
    [hint] = [r.getMessage() for r in caplog.records if "not in allowed_chats" in r.getMessage()]
    assert f"group {OTHER_GROUP} (group {OTHER_GROUP})" in hint


async def test_edited_message_joins_the_conversation_as_an_edit(
    rt: Runtime, emu: Emulator, make_adapter: MakeAdapter
) -> None:
    first = emu.push_message(emu.chat(777), "my deposit is missing")
    edit = emu.push_edit(first["message"], "my deposit of 2 BTC is missing")
    await make_adapter()
    await consumed(rt, edit)
    await route(rt)

    [msg, ed] = await inbox(rt)
    assert ed.kind == "edit" and ed.conversation_key == msg.conversation_key == "777"
    assert ed.platform_id == f"{msg.platform_id}:edit:{first['message']['date'] + 5}"
    cid = await conversation_id(rt, "777")
    assert cid is not None
    # The router records an edit as its own history entry type.
    inbound = [(h.type, h.data["text"]) for h in await rt.conversations.history(cid) if h.type in ("inbound", "edit")]
    assert inbound == [("inbound", "my deposit is missing"), ("edit", "my deposit of 2 BTC is missing")]


async def test_media_become_attachment_metadata_fetched_on_request(
    rt: Runtime, emu: Emulator, make_adapter: MakeAdapter
) -> None:
    chat = emu.chat(777)
    photo = [
        {"file_id": "small", "file_unique_id": "s", "width": 90, "height": 90, "file_size": 900},
        {"file_id": "big", "file_unique_id": "b", "width": 1280, "height": 960, "file_size": 98_000},
    ]
    emu.push_message(chat, caption="screenshot of the error", photo=photo)
    doc = {"file_id": "doc1", "file_unique_id": "d1", "file_name": "statement.pdf", "file_size": 2048}
    emu.push_message(chat, document=doc)
    emu.push_message(chat, voice={"file_id": "v1", "file_unique_id": "v1", "duration": 3, "file_size": 4000})
    sticker = {
        "file_id": "st1",
        "file_unique_id": "st1",
        "type": "regular",
        "width": 512,
        "height": 512,
        "is_animated": False,
        "is_video": False,
        "emoji": "🙏",
    }
    last = emu.push_message(chat, sticker=sticker)
    adapter = await make_adapter(max_file_bytes=3000)
    await consumed(rt, last)

    got = [(m.text, [(a.name, a.type, a.size, a.ref) for a in m.attachments]) for m in await inbox(rt)]
    assert got == [
        ("screenshot of the error", [("photo.jpg", "photo", 98_000, "big")]),
        ("", [("statement.pdf", "document", 2048, "doc1")]),
        ("", [("voice.ogg", "voice", 4000, "v1")]),
        ("", [("sticker 🙏", "sticker", None, "st1")]),
    ]
    emu.add_file("doc1", b"%PDF-1.4 " + b"x" * 2000)
    emu.add_file("big", b"\xff" * 98_000)
    assert (await adapter.fetch_attachment(ACCOUNT, "doc1")).startswith(b"%PDF")
    from adapters.telegram import AttachmentTooLarge

    try:
        await adapter.fetch_attachment(ACCOUNT, "big")
    except AttachmentTooLarge as exc:
        assert "cap" in str(exc)
    else:
        raise AssertionError("a file over the cap was fetched")


async def test_restart_between_two_get_updates_neither_loses_nor_duplicates(
    rt: Runtime, emu: Emulator, make_adapter: MakeAdapter
) -> None:
    chat = emu.chat(777)
    first = emu.push_message(chat, "first")
    adapter = await make_adapter()
    await consumed(rt, first)
    await adapter.close()
    second = emu.push_message(chat, "second")  # arrives while the adapter is down
    polls_before = len(emu.polls)
    await make_adapter()
    await consumed(rt, second)

    assert [m.text for m in await inbox(rt)] == ["first", "second"]
    # The new process resumed from the saved offset: it never asked for "first" again.
    assert emu.polls[polls_before]["offset"] == first["update_id"] + 1
    assert await cursor(rt) == str(second["update_id"] + 1)
    assert emu.max_concurrent_polls == 1


async def _appended(rt: Runtime) -> bool:
    return bool(await rt.client.xlen(rt.keys.inbox))


class _DiesBeforeSavingOffset(ChannelContext):
    """A process killed after the inbox append, before it saved the offset or polled again."""

    async def cursor_set(self, channel: str, account: str, name: str, value: str) -> None:
        await asyncio.Event().wait()


async def test_crash_after_append_before_confirming_is_absorbed(
    rt: Runtime, emu: Emulator, make_adapter: MakeAdapter
) -> None:
    update = emu.push_message(emu.chat(777), "are you there?")
    ctx = _DiesBeforeSavingOffset(
        rt.client,
        rt.shards,
        rt.inbox,
        rt.instance,
        scripts=rt.scripts,
        leases=rt.settings.leases,
        impostors=rt.impostor_guard,
    )
    dying = await make_adapter(ctx)
    await until(lambda: _appended(rt), what="the append")
    task = dying.bots[ACCOUNT]._task
    assert task is not None
    task.cancel()  # the "kill": no offset saved, no further getUpdates confirmed the update
    await dying.close()
    assert [u["update_id"] for u in emu.updates] == [update["update_id"]]  # Telegram still has it

    restarted = await make_adapter()
    await consumed(rt, update)
    assert [m.text for m in await inbox(rt)] == ["are you there?"]
    assert restarted.health()["bots"][ACCOUNT]["duplicates"] == 1


async def test_a_full_inbox_is_not_confirmed_to_telegram_and_is_taken_later(
    rt: Runtime, emu: Emulator, make_adapter: MakeAdapter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "switchboard.telegram")
    rt.settings.inbox.maxlen = 1000
    await rt.inbox.append_many([message(f"deposit {i} missing", user=f"f{i}") for i in range(1000)])
    update = emu.push_message(emu.chat(777), "my withdrawal has not arrived")
    adapter = await make_adapter()
    await until(lambda: "inbox full" in adapter.health()["bots"][ACCOUNT]["last_error"], what="a refusal")
    assert await cursor(rt) is None  # not confirmed: getUpdates will hand the update again
    assert "inbox: inbox full" in caplog.text and "retrying in" in caplog.text
    await route(rt)  # the workers catch up: routed entries make room
    want = str(update["update_id"] + 1)

    async def taken() -> bool:
        return await cursor(rt) == want

    await until(taken, within=20, what="the update taken after the refusal")
    assert [m.text for m in await inbox(rt)][-1] == "my withdrawal has not arrived"


async def test_a_forwarded_phishing_message_shows_its_origin_and_the_urls_behind_its_links(
    rt: Runtime, emu: Emulator, make_adapter: MakeAdapter
) -> None:
    text = "Your account is restricted. Verify here within 24h or lose your funds"
    link = {"type": "text_link", "offset": 40, "length": 4, "url": "https://zentrex-verify.example/login"}
    origin = {
        "type": "channel",
        "date": 1,
        "chat": {"id": -1001, "type": "channel", "title": "Zentrex Alerts"},
        "message_id": 9,
    }
    forward = emu.push_message(emu.chat(777), text, entities=[link, dict(link)], forward_origin=origin)
    await make_adapter()
    await consumed(rt, forward)
    [env] = await inbox(rt)
    assert env.text == text  # the words as the user saw them; the url beside them
    assert env.meta["links"] == "https://zentrex-verify.example/login"
    assert env.meta["forwarded_from"] == "Zentrex Alerts (id -1001)" and env.sender.attributes["forwarded"] == "channel"
    await route(rt)
    cid = await conversation_id(rt, "777")
    assert cid is not None
    [entry] = [e for e in await rt.conversations.history(cid) if e.type == "inbound"]
    assert entry.data["links"] == "https://zentrex-verify.example/login"
    assert entry.data["forwarded_from"] == "Zentrex Alerts (id -1001)"
    # Shown beside the text only: the conversation's reply metadata stays what replies need.
    meta = json.loads(await rt.client.hget(rt.keys.conv(cid), "meta"))
    assert meta["chat_id"] == "777" and "links" not in meta and "forwarded_from" not in meta


def _unreadable_update(emu: Emulator, text: str) -> dict[str, Any]:
    """A message whose forward origin lacks a field aiogram requires (as Telegram has sent:
    aiogram#1587, #1840): aiogram cannot read the getUpdates batch it is in."""
    broken = {"type": "channel", "date": 1, "chat": {"id": -1002, "type": "channel", "title": "x"}}  # no message_id
    return emu.message(emu.chat(778), text, forward_origin=broken)


async def test_an_unreadable_update_is_a_dead_letter_and_does_not_block_the_ones_after_it(
    rt: Runtime, emu: Emulator, make_adapter: MakeAdapter, capsys: pytest.CaptureFixture[str]
) -> None:
    seed = "abandon " * 11 + "about"
    emu.push_message(emu.chat(777), "deposit missing")
    bad = emu.push({"message": _unreadable_update(emu, f"is this real? they asked for {seed}")})
    after = emu.push_message(emu.chat(777), "still missing")
    adapter = await make_adapter()
    await consumed(rt, after)
    assert [m.text for m in await inbox(rt)] == ["deposit missing", "still missing"]
    [dead] = await DeadLetters(rt.client, rt.shards).entries()
    assert dead["reason"].startswith(
        f"telegram supportbot: unreadable: update {bad['update_id']}: message.forward_origin"
    )
    assert "abandon abandon" not in dead["field:original"] and "[redacted:seed_phrase]" in dead["field:original"]
    assert json.loads(dead["field:original"])["update_id"] == bad["update_id"]
    assert adapter.health()["bots"]["supportbot"]["unreadable"] == 1
    # `switchboard dead list` shows it beside the route script's dead letters.
    assert await _dead(rt, argparse.Namespace(action="list", limit=100, json=False)) == 0
    assert f"unreadable: update {bad['update_id']}" in capsys.readouterr().out
    # Not an envelope: never retried into the inbox, only dropped once read.
    result = await DeadLetters(rt.client, rt.shards).retry(None)
    assert result.retried == 0 and "not an envelope" in result.skipped[0][1]


async def test_a_batch_read_again_after_redis_failed_part_way_keeps_each_unreadable_update_once(
    rt: Runtime, emu: Emulator, make_adapter: MakeAdapter, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The second unreadable update of a batch cannot be kept (Redis away): nothing is confirmed,
    # the batch comes back, and the first one, kept already, is not kept a second time.
    keep = ChannelContext.unreadable
    calls = 0

    async def flaky(self: ChannelContext, *args: Any) -> bool:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise ConnectionError("redis away")
        return await keep(self, *args)

    monkeypatch.setattr(ChannelContext, "unreadable", flaky)
    first = emu.push({"message": _unreadable_update(emu, "first")})
    second = emu.push({"message": _unreadable_update(emu, "second")})
    after = emu.push_message(emu.chat(777), "still missing")
    adapter = await make_adapter()
    await consumed(rt, after)
    dead = await DeadLetters(rt.client, rt.shards).entries()
    assert [json.loads(d["field:original"])["update_id"] for d in dead] == [first["update_id"], second["update_id"]]
    assert calls == 4 and adapter.health()["bots"]["supportbot"]["unreadable"] == 2
    assert [m.text for m in await inbox(rt)] == ["still missing"]


async def test_an_unreadable_webhook_update_is_a_dead_letter(
    rt: Runtime, emu: Emulator, make_adapter: MakeAdapter
) -> None:
    port = free_port()
    await make_adapter(mode="webhook", webhook={"url": f"http://127.0.0.1:{port}/hook", "port": port})
    assert await emu.deliver({"update_id": 7, "message": _unreadable_update(emu, "hello")}) == 200
    [dead] = await DeadLetters(rt.client, rt.shards).entries()
    assert dead["reason"].startswith("telegram supportbot: unreadable: update 7:")
    assert await rt.client.xlen(rt.keys.inbox) == 0
