"""Satisfaction surveys (router/csat.py, lua/csat.lua, the comment in route.lua): scheduled at
close, sent once after the delay under the shard's lease, skipped where they must be, the first
press recorded, the follow-up and its comment.

Real Redis (a single server and a 4-shard cluster), real workers and the sandbox channel's
conversations; the survey service's time is a fake clock the tests move (it starts at wall time:
the workers route at wall time)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from adapters.sandbox import SandboxUsers, from_config
from router.actions import Actions, Press
from router.config import CsatSettings, Settings
from router.conversations import Conversations, HistoryEntry
from router.csat import CsatService, button_data, parse_button, service
from router.errors import LeaseLost
from router.lifecycle import running
from router.model import decode_outbox
from router.runtime import Runtime
from router.worker import Worker, Workers
from tests.conftest import SWITCHBOARD
from tests.router.helpers import THREE_GROUPS, drain
from tests.router.test_answerer import FAQ, answerer

pytestmark = pytest.mark.cluster(shards=4)

RULES = (
    THREE_GROUPS
    + """\
  - id: hacked
    when: {contains_any: [hacked]}
    then: {priority: P1, route: security}
  - id: payments
    when: {contains_any: [withdrawal, 提现]}
    then: {route: payments}
"""
)
MIN = 60_000


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES, encoding="utf-8")
    return path


def csat_on(settings: Settings) -> Settings:
    """``settings`` with surveys on: 10 minutes after close (1 for payments), none for security."""
    csat = CsatSettings(
        enabled=True, delay_s=600, group_delay_s={"payments": 60}, skip_groups=["security"], comment_window_s=3600
    )
    return settings.model_copy(update={"csat": csat})


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return csat_on(settings)


@dataclass
class FakeClock:
    now: int

    def now_ms(self) -> int:
        return self.now


def now_clock() -> FakeClock:
    return FakeClock(int(time.time() * 1000))


@pytest.fixture
def clock() -> FakeClock:
    return now_clock()


@pytest.fixture
async def surveys(rt: Runtime, clock: FakeClock) -> CsatService:
    svc = CsatService(rt, owner="A", clock=clock, block_ms=20)
    await svc._presses.start()  # its consumer group, before anything is pressed
    return svc


def convs(rt: Runtime, clock: FakeClock) -> Conversations:
    return Conversations(rt.client, rt.settings, rt.scripts, shards=rt.shards, clock=clock.now_ms)


async def send(rt: Runtime, user: str, text: str) -> str:
    """A sandbox message from ``user``, routed; its conversation id."""
    await SandboxUsers(rt.channel_context()).send(user, text)
    await drain(Workers(rt))
    keys = rt.shards.shard[rt.shards.of_key("sandbox", "default", user)]
    cid = await rt.client.get(keys.prefix + "ck:sandbox:default:" + user)
    assert cid is not None
    return str(cid.decode())


async def closed(rt: Runtime, clock: FakeClock, user: str, text: str, reason: str = "resolved") -> str:
    """A conversation of ``user`` claimed by agent ``ann`` and closed by her."""
    cid = await send(rt, user, text)
    await closed_by_agent(rt, clock, cid, reason)
    return cid


async def closed_by_agent(rt: Runtime, clock: FakeClock, cid: str, reason: str = "resolved") -> None:
    c = convs(rt, clock)
    conv = await c.get(cid)
    assert await c.claim(conv.group, "ann", cid) == cid
    await c.close(cid, "ann", reason)


async def surveyed(rt: Runtime, clock: FakeClock, surveys: CsatService, user: str, text: str) -> tuple[str, str]:
    """A conversation of ``user`` closed by an agent and surveyed; (conversation id, survey id)."""
    cid = await closed(rt, clock, user, text)
    clock.now += 10 * MIN
    assert await surveys.tick() == 1
    return cid, await survey_of(rt, cid)


async def surveys_of(rt: Runtime, cid: str) -> list[dict[str, Any]]:
    entries = await rt.client.xrange(rt.shards.conv_keys(cid).outbox("sandbox"))
    items = [decode_outbox(f[b"item"]) for _, f in entries]
    return [
        {"text": i.text, "buttons": [(b.label, b.data) for b in i.buttons], "auto": i.auto}
        for i in items
        if i.conversation == cid and i.author == "csat"
    ]


async def press(rt: Runtime, user: str, data: str, n: int, *, by: str | None = None) -> None:
    p = Press(
        id=f"{user}-{n}", channel="sandbox", account="default", conversation_key=user, user=by or user, data=data, at=0
    )
    await Actions(rt.client, rt.shards, rt.scripts).append(p)


def csat_entries(history: list[HistoryEntry]) -> list[dict[str, Any]]:
    return [h.data for h in history if h.type == "csat"]


async def counters(rt: Runtime) -> dict[str, int]:
    return {k: v for k, v in (await rt.stats.totals()).counters.items() if k.startswith("csat:") and v}


async def survey_of(rt: Runtime, cid: str) -> str:
    [survey] = await surveys_of(rt, cid)
    parsed = parse_button(survey["buttons"][0][1])
    assert parsed is not None and parsed[0] == cid
    return parsed[1]


async def test_sent_once_after_the_groups_delay_with_five_buttons(
    rt: Runtime, clock: FakeClock, surveys: CsatService
) -> None:
    cid = await closed(rt, clock, "alice", "hello, where is my account page")
    assert (await rt.conversations.get(cid)).group == "general"
    other = CsatService(rt, owner="B", clock=clock, block_ms=20)  # a second replica
    clock.now += 10 * MIN - 1
    assert await surveys.tick() + await other.tick() == 0
    clock.now += 1
    assert await surveys.tick() + await other.tick() == 1
    assert await surveys.tick() + await other.tick() == 0  # once
    [survey] = await surveys_of(rt, cid)
    assert survey["text"] == "How did we do? Rate our help from 1 (poor) to 5 (excellent)." and survey["auto"]
    sid = await survey_of(rt, cid)
    assert survey["buttons"] == [(str(r), button_data(cid, sid, r)) for r in range(1, 6)]
    assert len(button_data(cid, sid, 5)) <= 64
    # On the conversation's own channel and thread; its history has it as a reply.
    [out] = [h for h in await rt.conversations.history(cid) if h.type == "outbound"]
    assert out.data["conversation_key"] == "alice" and out.data["author"] == "csat"
    assert await counters(rt) == {"csat:sent": 1, "csat:sent:group:general": 1}
    # The send repeated (a retry after a lost reply): nothing again.
    lease = surveys.leases[rt.shards.of_conv(cid)]
    keys = rt.shards.conv_keys(cid)
    await rt.client.zadd(keys.csat_due, {cid: clock.now})
    assert await surveys.tick() + await other.tick() == 0 and len(await surveys_of(rt, cid)) == 1
    assert lease.fence is not None or other.leases[rt.shards.of_conv(cid)].fence is not None


async def test_a_group_delay_and_the_users_language(rt: Runtime, clock: FakeClock, surveys: CsatService) -> None:
    cid = await closed(rt, clock, "bo", "我的提现还没有到账，已经等了三个小时了")
    conv = await rt.conversations.get(cid)
    assert (conv.group, conv.language) == ("payments", "zh")
    clock.now += MIN
    assert await surveys.tick() == 1
    [survey] = await surveys_of(rt, cid)
    assert survey["text"] == "我们的服务怎么样？请为本次服务评分：1（很差）到 5（很好）。"


@pytest.mark.parametrize(
    ("text", "reason", "why"),
    [
        ("hello there", "spam", "a spam close"),
        ("hello there", "duplicate", "a duplicate"),
        ("my account was hacked", "resolved", "a group that skips (security)"),
    ],
)
async def test_skipped_closes_schedule_nothing(
    rt: Runtime, clock: FakeClock, surveys: CsatService, text: str, reason: str, why: str
) -> None:
    cid = await closed(rt, clock, "carl", text, reason)
    clock.now += 60 * MIN
    assert await surveys.tick() == 0, why
    assert await surveys_of(rt, cid) == []
    assert await rt.client.zscore(rt.shards.conv_keys(cid).csat_due, cid) is None


async def test_a_close_by_the_knowledge_base_is_not_surveyed(
    rt: Runtime, clock: FakeClock, surveys: CsatService
) -> None:
    bot = await answerer(rt)
    cid = await send(rt, "lea", FAQ)
    await bot.step()
    assert (await rt.conversations.get(cid)).status == "answered"
    entries = await rt.client.xrange(rt.shards.conv_keys(cid).outbox("sandbox"))
    [answer] = [i for i in (decode_outbox(f[b"item"]) for _, f in entries) if i.conversation == cid]
    await press(rt, "lea", answer.buttons[0].data, 1)  # "this solved it": the bot closes it
    await bot.press_step()
    await surveys.press_step()  # the survey service reads the same press, and ignores it
    assert (await rt.conversations.get(cid)).status == "closed"
    clock.now += 24 * 60 * MIN
    assert await surveys.tick() == 0
    assert await rt.client.zscore(rt.shards.conv_keys(cid).csat_due, cid) is None
    assert await surveys_of(rt, cid) == []


async def test_reopened_before_due_and_asked_within_the_cooldown_are_skipped(
    rt: Runtime, clock: FakeClock, surveys: CsatService
) -> None:
    cid = await closed(rt, clock, "dan", "hello there")
    await send(rt, "dan", "one more thing")  # reopens it
    assert (await rt.conversations.get(cid)).status == "new"
    clock.now += 10 * MIN
    assert await surveys.tick() == 0
    # Closed again later: surveyed then; the same user's next closed conversation is not.
    c = convs(rt, clock)
    await c.close(cid, "ann")
    clock.now += 10 * MIN
    assert await surveys.tick() == 1
    await rt.client.delete(rt.shards.shard[rt.shards.of_key("sandbox", "default", "dan")].conv_key(
        "sandbox", "default", "dan"
    ))  # the next message starts a new conversation  # fmt: skip
    second = await closed(rt, clock, "dan", "another question")
    assert second != cid
    clock.now += 10 * MIN
    assert await surveys.tick() == 0
    assert await surveys_of(rt, second) == []
    assert (await counters(rt))["csat:skipped:reopened"] == 1
    assert (await counters(rt))["csat:skipped:cooldown"] == 1


async def test_a_press_is_recorded_once_and_a_second_is_ignored(
    rt: Runtime, clock: FakeClock, surveys: CsatService
) -> None:
    cid, sid = await surveyed(rt, clock, surveys, "eve", "hello, how do fees work")
    await press(rt, "eve", button_data(cid, sid, 4), 1)
    await press(rt, "eve", button_data(cid, sid, 1), 2)  # changes her mind: the first stands
    await press(rt, "eve", button_data(cid, "01FORGED00000000000000000", 1), 3)
    await press(rt, "eve", "kb:123:solved", 4)  # another consumer's button
    await surveys.press_step()
    [entry] = csat_entries(await rt.conversations.history(cid))
    assert entry == {
        "survey": sid, "rating": 4, "comment": None, "at": clock.now, "agent": "ann", "group": "general",
        "channel": "sandbox", "language": "en",
    }  # fmt: skip
    assert await counters(rt) == {
        "csat:sent": 1, "csat:sent:group:general": 1, "csat:rating:4": 1, "csat:group:general:4": 1,
        "csat:agent:ann:4": 1, "csat:late": 1,
    }  # fmt: skip
    assert surveys.counts["rated"] == 1 and surveys.counts["late"] == 1
    assert len(await surveys_of(rt, cid)) == 1  # no follow-up above 3
    assert (await rt.conversations.get(cid)).status == "closed"
    assert await surveys._presses.read(block_ms=10) == []  # all acknowledged


async def test_a_press_whose_script_fails_is_said_and_not_read_again(rt: Runtime, surveys: CsatService) -> None:
    broken = "40004"
    await rt.client.set(rt.shards.conv_keys(broken).conv(broken), "not a hash")  # WRONGTYPE in the script
    await press(rt, "zed", button_data(broken, "01ABC", 3), 1)
    await surveys.press_step()  # logged, not raised: the loop goes on
    assert surveys.counts["ignored"] == 1
    assert await surveys._presses.read(block_ms=10) == []  # acknowledged: not read again


async def test_another_member_cannot_rate(rt: Runtime, clock: FakeClock, surveys: CsatService) -> None:
    cid, sid = await surveyed(rt, clock, surveys, "fay", "hello")
    await press(rt, "fay", button_data(cid, sid, 1), 1, by="mallory")
    await surveys.press_step()
    assert csat_entries(await rt.conversations.history(cid)) == []
    await press(rt, "fay", button_data(cid, sid, 5), 2)
    await surveys.press_step()
    assert [e["rating"] for e in csat_entries(await rt.conversations.history(cid))] == [5]


async def test_a_low_rating_asks_why_and_the_next_message_is_the_comment(
    rt: Runtime, clock: FakeClock, surveys: CsatService
) -> None:
    cid, sid = await surveyed(rt, clock, surveys, "gus", "hello, my deposit")
    await press(rt, "gus", button_data(cid, sid, 2), 1)
    await surveys.press_step()
    follow_up = [i for i in await surveys_of(rt, cid) if not i["buttons"]]
    assert [f["text"] for f in follow_up] == [
        "What could we have done better? Your next message here goes to our support lead."
    ]
    seed = "abandon ability able about above absent absorb abstract absurd abuse access accident"
    same = await send(rt, "gus", f"nobody answered for hours. my phrase: {seed}")
    assert same == cid
    conv = await rt.conversations.get(cid)
    assert conv.status == "closed" and conv.messages == 1  # not reopened, not a new message
    first, second = csat_entries(await rt.conversations.history(cid))
    assert (first["rating"], first["comment"], second["rating"], second["survey"]) == (2, None, 2, sid)
    assert second["comment"].startswith("nobody answered for hours.") and "abandon" not in second["comment"]
    assert (await counters(rt))["csat:comments"] == 1
    # The comment was the one: the next message reopens as any would.
    await send(rt, "gus", "and another thing")
    assert (await rt.conversations.get(cid)).status == "new"


async def test_a_message_after_the_window_reopens(rt: Runtime, clock: FakeClock, surveys: CsatService) -> None:
    cid = await closed(rt, clock, "hal", "hello, my deposit")
    clock.now += 10 * MIN
    await surveys.tick()
    await press(rt, "hal", button_data(cid, await survey_of(rt, cid), 3), 1)
    await surveys.press_step()
    await SandboxUsers(rt.channel_context()).send("hal", "too late for a comment")
    shard = rt.shards.of_key("sandbox", "default", "hal")
    late = FakeClock(clock.now + 61 * MIN)
    worker = Worker(rt, shard=shard, clock=late.now_ms)
    await worker.follow_published()
    await drain(worker)
    assert (await rt.conversations.get(cid)).status == "new"
    assert [e["comment"] for e in csat_entries(await rt.conversations.history(cid))] == [None]


async def test_a_paused_holder_sends_nothing(rt: Runtime, clock: FakeClock, surveys: CsatService) -> None:
    cid = await closed(rt, clock, "ida", "hello")
    clock.now += 10 * MIN
    shard = rt.shards.of_conv(cid)
    lease = surveys.leases[shard]
    assert await lease.acquire()
    # Paused past its lease: another replica took the shard over.
    clock.now += rt.settings.leases.ttl_ms + 1
    other = CsatService(rt, owner="B", clock=clock, block_ms=20)
    assert await other.leases[shard].acquire()
    # The paused one's send (with its old fence) is refused whole.
    with pytest.raises(LeaseLost):
        await surveys._shard(rt.shards.shard[shard], lease.fence or 0)
    assert await surveys_of(rt, cid) == []
    assert await other.tick() == 1
    assert len(await surveys_of(rt, cid)) == 1


async def test_the_sandbox_command_rates(
    rt: Runtime, clock: FakeClock, surveys: CsatService, env: dict[str, str]
) -> None:
    adapters = from_config(rt.channel_context(), {})
    for adapter in adapters:
        await adapter.start()
    try:
        cid = await closed(rt, clock, "jo", "hello, a question")
        clock.now += 10 * MIN
        await surveys.tick()
        users = SandboxUsers(rt.channel_context())
        for _ in range(100):
            if any((r.get("buttons") or []) for r in await users.inbox("jo")):
                break
            await asyncio.sleep(0.05)
        proc = await asyncio.create_subprocess_exec(
            *SWITCHBOARD, "sandbox", "press", "jo", "5", env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        assert out.decode().strip() == "pressed '5' as jo"
        await surveys.press_step()
        assert [e["rating"] for e in csat_entries(await rt.conversations.history(cid))] == [5]
        proc = await asyncio.create_subprocess_exec(*SWITCHBOARD, "stats", env=env, stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        assert "csat: 1 surveys sent, 1 rated (1:0 2:0 3:0 4:0 5:1), average 5.0, 0 comments" in out.decode()
    finally:
        for adapter in adapters:
            await adapter.close()


async def test_the_running_service_sends_and_records_then_stops(rt: Runtime, clock: FakeClock) -> None:
    svc = CsatService(
        rt, owner="A", clock=clock, block_ms=20, settings=rt.settings.csat.model_copy(update={"tick_s": 0.05})
    )
    cid = await closed(rt, clock, "kim", "hello, a question")
    clock.now += 10 * MIN
    async with running([svc]):
        for _ in range(200):
            if await surveys_of(rt, cid):
                break
            await asyncio.sleep(0.02)
        await press(rt, "kim", button_data(cid, await survey_of(rt, cid), 4), 1)
        for _ in range(200):
            if csat_entries(await rt.conversations.history(cid)):
                break
            await asyncio.sleep(0.02)
        health = svc.health()
        assert (health["connected"] and health["held"] == [rt.shards.of_conv(cid)]) or rt.shards.count > 1
    assert [e["rating"] for e in csat_entries(await rt.conversations.history(cid))] == [4]
    assert svc.counts["sent"] == 1 and svc.counts["rated"] == 1
    # Closed: its leases are released, another replica takes over at once.
    other = CsatService(rt, owner="B", clock=clock)
    await other.leases[0].acquire()
    assert other.leases[0].fence is not None


def test_button_data_parses_and_refuses_what_is_not_a_survey() -> None:
    assert parse_button(button_data("12", "01ABC", 3)) == ("12", "01ABC", 3)
    for bad in ("csat:12:01ABC:6", "csat:12:01ABC:0", "csat:x:01ABC:3", "kb:1:solved", "csat:12::3", "csat:1:2:3:4"):
        assert parse_button(bad) is None, bad


def test_texts_fall_back_to_the_base_language_then_english() -> None:
    s = CsatSettings(question={"ru": "Как мы?"})
    assert s.text("question", "zh-Hant").startswith("我们的服务")
    assert s.text("question", "ru") == "Как мы?"
    assert s.text("follow_up", "xx").startswith("What could we have done better?")


async def test_the_service_runs_only_when_on(rt: Runtime, settings: Settings) -> None:
    assert isinstance(service(rt), CsatService)
    off = settings.model_copy(update={"csat": CsatSettings()})
    assert service(cast(Runtime, SimpleNamespace(settings=off))) is None
