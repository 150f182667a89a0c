"""Satisfaction surveys end to end on Telegram, through the real aiogram client (router/csat.py):
the survey comes in the conversation's own chat and forum topic with a 1-5 inline keyboard, a tap
records the rating, a low one asks why and the user's next message is the comment; a second tap
changes nothing."""

from __future__ import annotations

from typing import Any

import pytest

from router.config import Settings
from router.csat import CsatService
from router.runtime import Runtime
from tests.router.test_csat import MIN, FakeClock, closed_by_agent, csat_entries, csat_on, now_clock
from tests.telegram.conftest import FORUM, MakeAdapter, consumed, conversation_id, route, until
from tests.telegram.emulator import Emulator


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return csat_on(settings)


async def _surveyed(
    rt: Runtime, emu: Emulator, chat: dict[str, Any], key: str, text: str, **kw: Any
) -> tuple[str, dict[str, Any], CsatService, FakeClock]:
    """A conversation opened with ``text``, closed by an agent, surveyed; (conversation, the
    survey as Telegram got it, the survey service, its clock)."""
    clock = now_clock()
    surveys = CsatService(rt, owner="A", clock=clock, block_ms=20)
    await surveys._presses.start()
    await consumed(rt, emu.push_message(chat, text, **kw))
    await route(rt)
    cid = await conversation_id(rt, key)
    assert cid is not None
    await closed_by_agent(rt, clock, cid)
    clock.now += 10 * MIN
    assert await surveys.tick() == 1
    await until(lambda: any(len(_buttons(m)) == 5 for m in emu.sent_messages), what="the survey on Telegram")
    [survey] = [m for m in emu.sent_messages if len(_buttons(m)) == 5]
    return cid, survey, surveys, clock


def _buttons(message: dict[str, Any]) -> list[dict[str, Any]]:
    markup = message.get("reply_markup") or {}
    return [b for row in markup.get("inline_keyboard", []) for b in row]


async def test_a_low_rating_in_a_forum_topic_asks_why_and_takes_the_comment(
    rt: Runtime, emu: Emulator, make_adapter: MakeAdapter
) -> None:
    await make_adapter()
    forum = emu.chat(FORUM, forum=True)
    cid, survey, surveys, _ = await _surveyed(
        rt, emu, forum, f"{FORUM}:55", f"@{emu.username} hello, my deposit is late", thread_id=55
    )
    assert survey["text"].startswith("How did we do?") and int(survey["message_thread_id"]) == 55
    buttons = _buttons(survey)
    assert [b["text"] for b in buttons] == ["1", "2", "3", "4", "5"]

    tap = emu.push_press(survey, buttons[1]["callback_data"])
    await consumed(rt, tap)
    assert await surveys.handle_press(*(await surveys._presses.read(block_ms=50))) == "follow-up"
    await until(
        lambda: any(m["text"].startswith("What could we have done better?") for m in emu.sent_messages),
        what="the follow-up question",
    )
    [follow_up] = [m for m in emu.sent_messages if m["text"].startswith("What could we")]
    assert int(follow_up["message_thread_id"]) == 55
    # Changing her mind: the first tap stands. The second is answered as every tap is (the
    # adapter's toast), and nothing more is sent.
    sent = len(emu.sent_messages)
    again = emu.push_press(survey, buttons[4]["callback_data"])
    await consumed(rt, again)
    assert await surveys.handle_press(*(await surveys._presses.read(block_ms=50))) == "late"
    assert [a.get("text") for a in emu.answers if a["callback_query_id"] == again["callback_query"]["id"]] == [
        "Thanks, noted."
    ]
    assert len(emu.sent_messages) == sent

    # In a group the bot reads what addresses it: the user answers the question as a reply to it.
    answer = emu.push_message(forum, "the agent never explained the fee", thread_id=55, reply_to=follow_up)
    await consumed(rt, answer)
    await route(rt)
    assert (await rt.conversations.get(cid)).status == "closed"
    entries = csat_entries(await rt.conversations.history(cid))
    assert [(e["rating"], e["comment"]) for e in entries] == [(2, None), (2, "the agent never explained the fee")]
    assert entries[0]["agent"] == "ann" and entries[0]["channel"] == "telegram"


async def test_a_chinese_user_gets_the_survey_in_chinese_and_rates_five(
    rt: Runtime, emu: Emulator, make_adapter: MakeAdapter
) -> None:
    await make_adapter()
    cid, survey, surveys, _ = await _surveyed(rt, emu, emu.chat(4242), "4242", "你好，我的充值一直没有到账，请帮我看看")
    assert survey["text"] == "我们的服务怎么样？请为本次服务评分：1（很差）到 5（很好）。"
    tap = emu.push_press(survey, _buttons(survey)[4]["callback_data"])
    await consumed(rt, tap)
    await surveys.press_step()
    [entry] = csat_entries(await rt.conversations.history(cid))
    assert (entry["rating"], entry["comment"], entry["language"]) == (5, None, "zh")
    assert not any(m["text"].startswith("我们哪里") for m in emu.sent_messages)  # no follow-up above 3
