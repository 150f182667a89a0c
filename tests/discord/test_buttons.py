"""Buttons through the real discord.py client: a component row under a reply, a press (component
interaction) recorded once in the reply's conversation, then answered within Discord's 3 s."""

from __future__ import annotations

import logging

import pytest

from adapters.discord_bot import DiscordAdapter
from router.model import Button
from router.runtime import Runtime
from router.worker import Worker
from tests.discord.conftest import SUPPORT, conversation_id, eventually, wait_inbox
from tests.discord.emulator import Emulator, Json
from tests.router.helpers import drain, presses

SOLVED = Button(label="✅ This solved it", data="kb:42:solved")
HUMAN = Button(label="🙋 Talk to a person", data="kb:42:human")


async def _answered(rt: Runtime, emu: Emulator, key: str, *buttons: Button) -> Json:
    """Route what was posted, reply on ``key`` with ``buttons``; the reply's message as stored."""
    await drain(Worker(rt))
    cid = await conversation_id(rt, key)
    reply = await rt.conversations.reply(cid, "Withdrawals take 10-30 minutes.", "kb", buttons=buttons)

    async def delivered() -> bool:
        return (await rt.conversations.deliveries(cid)).get(reply) == "delivered"

    await eventually(delivered, 10, "the reply's delivery")
    return next(m for m in emu.messages[emu.sent[-1]["channel_id"]] if m.get("components"))


async def _responded(emu: Emulator, count: int) -> None:
    async def enough() -> bool:
        return len(emu.responses) >= count

    await eventually(enough, 5, f"{count} interaction responses")


async def test_a_press_in_a_dm_is_recorded_then_answered_ephemerally(
    rt: Runtime, emu: Emulator, bot: DiscordAdapter
) -> None:
    alice = emu.user("alice")
    dm = emu.dm(alice)
    await emu.post(dm, alice, "how long does a withdrawal take?")
    await wait_inbox(rt, 1)
    message = await _answered(rt, emu, str(dm), SOLVED, HUMAN)
    [row] = emu.sent[-1]["body"]["components"]
    assert [(b["label"], b["custom_id"]) for b in row["components"]] == [
        (SOLVED.label, SOLVED.data),
        (HUMAN.label, HUMAN.data),
    ]

    interaction = await emu.press(message, HUMAN.data, alice)
    await _responded(emu, 1)

    [pressed] = await presses(rt)
    press = pressed.press
    assert (press.id, press.channel, press.account) == (str(interaction), "discord", bot.account)
    assert (press.conversation_key, press.user, press.data) == (str(dm), alice["id"], HUMAN.data)
    [response] = emu.responses
    # 4 = a message in answer, flag 64 = only the presser sees it; well within the 3 s Discord allows.
    assert response["body"]["type"] == 4
    assert response["body"]["data"]["flags"] == 64 and response["body"]["data"]["content"] == "Thanks, noted."
    assert response["after_s"] < 3
    assert bot.health()["presses"] == 1


async def test_a_press_in_a_support_channel_belongs_to_the_replys_conversation(
    rt: Runtime, emu: Emulator, bot: DiscordAdapter
) -> None:
    bob, carol = emu.user("bob"), emu.user("carol")
    await emu.post(SUPPORT, bob, "deposit missing")
    await wait_inbox(rt, 1)
    message = await _answered(rt, emu, f"{SUPPORT}:{bob['id']}", SOLVED)

    await emu.press(message, SOLVED.data, carol)  # someone else in the channel presses Bob's button
    await _responded(emu, 1)

    [pressed] = await presses(rt)
    # The conversation of the reply (Bob's), the presser as who pressed: the consumer decides.
    assert (pressed.press.conversation_key, pressed.press.user) == (f"{SUPPORT}:{bob['id']}", carol["id"])


async def test_presses_not_on_a_replys_buttons_are_refused_and_answered(
    rt: Runtime, emu: Emulator, bot: DiscordAdapter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "switchboard")
    alice = emu.user("alice")
    dm = emu.dm(alice)
    await emu.post(dm, alice, "hello")
    await wait_inbox(rt, 1)
    message = await _answered(rt, emu, str(dm), SOLVED)
    await emu.press(message, "kb:1:admin", alice)  # not one of the message's buttons
    stranger = emu.store(dm, emu.bot, "an older message", components=message["components"])
    await emu.press(stranger, SOLVED.data, alice)  # a message whose buttons were never recorded
    await _responded(emu, 2)

    assert await presses(rt) == []
    assert {r["body"]["data"]["content"] for r in emu.responses} == {"This button no longer works."}
    assert "custom_id 'kb:1:admin' is not a button of message" in caplog.text
    assert f"message {stranger['id']} is not a reply with buttons on record" in caplog.text
    assert bot.health()["presses_refused"] == 2


async def test_more_buttons_than_discord_takes_fail_the_reply_at_once(
    rt: Runtime, emu: Emulator, bot: DiscordAdapter
) -> None:
    alice = emu.user("alice")
    dm = emu.dm(alice)
    await emu.post(dm, alice, "rate us")
    await wait_inbox(rt, 1)
    await drain(Worker(rt))
    cid = await conversation_id(rt, str(dm))
    many = [Button(label=str(n), data=f"csat:1:{n}") for n in range(26)]
    reply = await rt.conversations.reply(cid, "Pick one.", "kb", buttons=many)

    async def failed() -> bool:
        return (await rt.conversations.deliveries(cid)).get(reply) == "failed"

    await eventually(failed, 10, "the reply's failure")
    [entry] = [h for h in await rt.conversations.history(cid) if h.type == "delivery"]
    assert entry.data["detail"] == "a Discord message takes at most 25 buttons, this reply has 26"
    assert emu.sent == []
