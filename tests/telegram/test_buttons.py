"""Buttons through the real aiogram client: an inline keyboard under a reply, a tap (callback
query) recorded as a press once, then answered; forged and duplicated taps."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from router.model import Button
from router.runtime import Runtime
from tests.conftest import free_port
from tests.router.helpers import presses
from tests.telegram.conftest import ACCOUNT, FORUM, MakeAdapter, consumed, conversation_id, delivery, route
from tests.telegram.emulator import BOT_USERNAME, Emulator

SOLVED = Button(label="✅ This solved it", data="kb:42:solved")
HUMAN = Button(label="🙋 Talk to a person", data="kb:42:human")


async def _answered(rt: Runtime, emu: Emulator, update: dict[str, Any], key: str, *buttons: Button) -> dict[str, Any]:
    """Route ``update``, reply with ``buttons`` and return the Message Telegram stored for it."""
    await consumed(rt, update)
    await route(rt)
    cid = await conversation_id(rt, key)
    assert cid is not None
    reply = await rt.conversations.reply(cid, "Withdrawals take 10-30 minutes on TRC20.", "kb", buttons=buttons)
    assert await delivery(rt, cid, reply) == "delivered"
    return emu.sent_messages[-1]


async def test_a_tap_is_a_press_in_the_chats_conversation_then_answered(
    rt: Runtime, emu: Emulator, make_adapter: MakeAdapter
) -> None:
    update = emu.push_message(emu.chat(777), "how long does a withdrawal take?")
    adapter = await make_adapter()
    message = await _answered(rt, emu, update, "777", SOLVED, HUMAN)
    # One button a row: the labels are sentences.
    assert emu.sent[-1]["reply_markup"] == {
        "inline_keyboard": [
            [{"text": SOLVED.label, "callback_data": SOLVED.data}],
            [{"text": HUMAN.label, "callback_data": HUMAN.data}],
        ]
    }

    tap = emu.push_press(message, HUMAN.data)
    await consumed(rt, tap)

    [pressed] = await presses(rt)
    query = tap["callback_query"]
    assert (pressed.press.id, pressed.press.channel, pressed.press.account) == (query["id"], "telegram", ACCOUNT)
    assert (pressed.press.conversation_key, pressed.press.user, pressed.press.data) == ("777", "777", HUMAN.data)
    assert emu.answers == [{"callback_query_id": query["id"], "text": "Thanks, noted.", "show_alert": None}]
    # Asked for, or Telegram would never send the taps.
    [call] = [params for name, params, _ in emu.calls if name == "getUpdates"][-1:]
    assert "callback_query" in call["allowed_updates"]
    assert adapter.health()["bots"][ACCOUNT]["presses"] == 1


async def test_a_tap_in_a_topic_belongs_to_the_topic_and_a_redelivered_one_is_kept_once(
    rt: Runtime, emu: Emulator, make_adapter: MakeAdapter
) -> None:
    update = emu.push_message(emu.chat(FORUM, forum=True), f"@{BOT_USERNAME} rate us", thread_id=42)
    await make_adapter()
    rating = [Button(label=str(n), data=f"csat:9:{n}") for n in range(1, 6)]
    message = await _answered(rt, emu, update, f"{FORUM}:42", *rating)
    # Short labels: one row, as a 1-5 rating is read.
    assert [[b["text"] for b in row] for row in emu.sent[-1]["reply_markup"]["inline_keyboard"]] == [
        ["1", "2", "3", "4", "5"]
    ]
    tap = emu.press_update(message, "csat:9:4", sender=emu.user(999, "Bob", "bob"))
    emu.updates.append(tap)
    emu.updates.append({**tap, "update_id": tap["update_id"] + 1})  # Telegram sent it again
    await consumed(rt, emu.updates[-1])

    [pressed] = await presses(rt)
    press = pressed.press
    assert (press.conversation_key, press.user, press.data) == (f"{FORUM}:42", "999", "csat:9:4")


async def test_data_that_is_not_a_button_of_the_message_is_refused_and_answered(
    rt: Runtime, emu: Emulator, make_adapter: MakeAdapter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "switchboard")
    update = emu.push_message(emu.chat(777), "hi")
    adapter = await make_adapter()
    message = await _answered(rt, emu, update, "777", SOLVED)
    forged = emu.push_press(message, "kb:1:admin")  # a modified client's data
    oversized = {**message, "reply_markup": {"inline_keyboard": [[{"text": "x", "callback_data": "y" * 80}]]}}
    too_long = emu.push_press(oversized, "y" * 80)
    await consumed(rt, too_long)

    assert await presses(rt) == []
    assert [a["callback_query_id"] for a in emu.answers] == [
        forged["callback_query"]["id"],
        too_long["callback_query"]["id"],
    ]
    assert {a["text"] for a in emu.answers} == {"This button no longer works."}
    assert "'kb:1:admin' is not a button of message 777:" in caplog.text
    assert "refused" in caplog.text and "at `$.data`" in caplog.text
    assert adapter.health()["bots"][ACCOUNT]["presses_refused"] == 2


async def test_a_press_over_the_webhook_is_recorded_before_the_200(
    rt: Runtime, emu: Emulator, make_adapter: MakeAdapter
) -> None:
    port = free_port()
    await make_adapter(mode="webhook", webhook={"url": f"http://127.0.0.1:{port}/tg", "port": port})
    assert emu.webhook is not None
    assert "callback_query" in [c for name, c, _ in emu.calls if name == "setWebhook"][-1]["allowed_updates"]
    assert await emu.deliver({"update_id": 1, "message": emu.message(emu.chat(777), "question")}) == 200
    await route(rt)
    cid = await conversation_id(rt, "777")
    assert cid is not None
    reply = await rt.conversations.reply(cid, "answer", "kb", buttons=[SOLVED])
    assert await delivery(rt, cid, reply) == "delivered"

    tap = emu.press_update(emu.sent_messages[-1], SOLVED.data)
    assert await emu.deliver(tap) == 200
    [pressed] = await presses(rt)
    assert pressed.press.data == SOLVED.data
    assert [a["callback_query_id"] for a in emu.answers] == [tap["callback_query"]["id"]]
