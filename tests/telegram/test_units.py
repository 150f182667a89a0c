"""Pure parts: text splitting, the rate limiter, error classification, reply targets."""

from __future__ import annotations

from aiogram.exceptions import TelegramForbiddenError, TelegramRetryAfter, TelegramServerError
from aiogram.methods import SendMessage

from adapters.telegram.outbound import RateLimiter, Target, classify, split_text
from adapters.text import utf16_len
from router.model import OutboxItem
from router.outbox import PermanentFailure, TemporaryFailure


def test_short_text_is_one_part() -> None:
    assert split_text("hello *world*") == ["hello *world*"]


def test_split_prefers_paragraph_then_line_then_space() -> None:
    assert split_text("aaaa bbbb\n\ncccc", limit=10) == ["aaaa bbbb", "cccc"]
    assert split_text("aaaa\nbbbb cccc", limit=10) == ["aaaa\nbbbb", "cccc"]
    assert split_text("aaaa bbbb cccc", limit=10) == ["aaaa bbbb", "cccc"]


def test_split_avoids_stub_parts_and_cuts_words_too_long() -> None:
    # A paragraph break near the start of the window would leave a stub: the space is better.
    assert split_text("ab\n\ncccc dddd eeee", limit=12) == ["ab\n\ncccc", "dddd eeee"]
    assert split_text("x" * 25, limit=10) == ["x" * 10, "x" * 10, "x" * 5]


def test_split_counts_utf16_units_and_never_halves_an_emoji() -> None:
    text = "💸" * 3000  # 6000 UTF-16 units
    parts = split_text(text)
    assert [utf16_len(p) for p in parts] == [4096, 1904]
    assert "".join(parts) == text


def test_whitespace_only_parts_are_dropped() -> None:
    assert split_text("a" * 10 + "\n\n\n\n" + " " * 12, limit=10) == ["a" * 10]


async def test_rate_limiter_spaces_each_chat_and_the_total() -> None:
    now = [0.0]
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(round(s, 3))
        now[0] += s

    limiter = RateLimiter(10.0, clock=lambda: now[0], sleep=sleep)
    await limiter.wait(1, 1.0)
    await limiter.wait(1, 1.0)  # same chat: a second later
    assert slept == [1.0]
    await limiter.wait(2, 1.0)  # another chat: only the global spacing (0.1 s) applies
    await limiter.wait(3, 1.0)
    assert slept == [1.0, 0.1, 0.1]
    limiter.hold(2, 5.0)  # a 429 for chat 2
    await limiter.wait(2, 1.0)
    assert slept[-1] == 5.0


def test_errors_map_to_permanent_or_temporary() -> None:
    method = SendMessage(chat_id=1, text="x")
    blocked = classify(TelegramForbiddenError(method, "Forbidden: bot was blocked by the user"))
    assert isinstance(blocked, PermanentFailure) and str(blocked) == "403 Forbidden: bot was blocked by the user"
    limited = classify(TelegramRetryAfter(method, "Too Many Requests", 7))
    assert isinstance(limited, TemporaryFailure) and limited.retry_after == 7
    assert isinstance(classify(TelegramServerError(method, "Bad Gateway")), TemporaryFailure)


def test_target_from_meta_or_conversation_key() -> None:
    item = OutboxItem(
        id="r", conversation="1", channel="telegram", account="a", conversation_key="-100:9", text="x", author="a"
    )
    assert Target.of(item) == Target(-100, 9, None)
    with_meta = OutboxItem(
        id="r",
        conversation="1",
        channel="telegram",
        account="a",
        conversation_key="-100:9",
        text="x",
        author="a",
        reply_to="-100:55:edit:1700000000",
        meta={"chat_id": "-100", "thread_id": "9"},
    )
    assert Target.of(with_meta) == Target(-100, 9, 55)
