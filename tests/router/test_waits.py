"""Wait estimates (docs/waits.md) against a real Redis, single and cluster: placeholders in
auto-replies filled with exact numbers for a known queue and known departures, the fallback
phrase with nothing measured, unknown placeholders refused, and the error report's figures."""

from __future__ import annotations

import argparse
import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from router import analytics_cli
from router.audit import Audit
from router.conversations import Conversations
from router.errors import BadRequest
from router.incident_link import Linker
from router.incidents import Incidents
from router.lifecycle import running
from router.model import Envelope, decode_outbox
from router.online import OnlineCounts
from router.presence import Presence
from router.reports import ReportError
from router.rulestore import RuleStore
from router.runtime import Runtime
from router.waits import Observed, accuracy, observations
from router.worker import Worker
from rules.model import RuleSetError
from rules.placeholders import without_estimate
from tests.router.helpers import drain, message

pytestmark = pytest.mark.cluster(shards=4)

T0 = 1_800_000_000_000  # the injected clock's start (ms): a whole minute
MIN = 60_000
WAIT_TEXT = "Thanks. You are number {queue_position} in line. Expected wait: {wait_min} to {wait_max} minutes."
RULES = f"""
  - id: urgent-wait
    when: {{contains_any: [urgent queue]}}
    then: {{priority: P1, route: general, auto_reply: {{en: "{WAIT_TEXT}"}}, stop: true}}
  - id: wait
    when: {{contains_any: [queue]}}
    then: {{route: general, auto_reply: {{en: "{WAIT_TEXT}"}}}}
"""


ROUTER_RULES = (Path(__file__).parent / "rules.yaml").read_text()


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    """The router tests' rule set and two rules whose auto-replies say the wait."""
    (tmp_path / "rules.yaml").write_text(ROUTER_RULES + RULES)
    return tmp_path / "rules.yaml"


@dataclass
class Clock:
    """The injected clock (ms), moved by the test."""

    ms: int = T0

    def __call__(self) -> int:
        return self.ms

    def now_ms(self) -> int:
        return self.ms


class Shard:
    """Messages whose conversations all fall in one shard (the first key's), so that the test
    knows that shard's queue and departures; a worker of that shard on the injected clock."""

    def __init__(self, rt: Runtime, clock: Clock) -> None:
        self.rt = rt
        self.n = 0
        self.shard = rt.shards.of_key("telegram", "bot1", "w0")
        self.worker = Worker(rt, shard=self.shard, clock=clock)

    def message(self, text: str) -> Envelope:
        while True:
            self.n += 1
            key = f"w{self.n}"
            if self.rt.shards.of_key("telegram", "bot1", key) == self.shard:
                return message(text, user=key)

    async def route(self, text: str) -> tuple[str, bytes]:
        """Route one message: its conversation id and its auto-reply's outbox item as stored."""
        env = self.message(text)
        await self.rt.inbox.append(env)
        await drain(self.worker)
        keys = self.rt.shards.shard[self.shard]
        cid = await self.rt.client.get(keys.conv_key(env.channel, env.account, env.conversation_key))
        assert cid is not None
        for _, fields in await self.rt.client.xrange(keys.outbox("telegram")):
            if decode_outbox(fields[b"item"]).conversation == cid.decode():
                return cid.decode(), fields[b"item"]
        raise AssertionError(f"no auto-reply for {cid!r}")


def text_of(raw: bytes) -> str:
    return decode_outbox(raw).text


async def test_fallback_phrase_without_measurements(rt: Runtime) -> None:
    clock = Clock()
    shard = Shard(rt, clock)
    _, first = await shard.route("where am I in the queue?")
    clock.ms += 1  # a due time of its own: ties in a queue go by id, as text
    _, second = await shard.route("queue again, another user")
    phrase = rt.settings.waits.fallback["en"]
    assert text_of(first) == f"Thanks. You are number 1 in line. {phrase}"
    # One ahead in the shard's partition, scaled by the shard count.
    assert text_of(second) == f"Thanks. You are number {1 + rt.shards.count} in line. {phrase}"


async def test_placeholders_filled_from_the_queue_and_the_departures(rt: Runtime) -> None:
    clock = Clock()
    shard = Shard(rt, clock)
    conversations = Conversations(rt.client, rt.settings, rt.scripts, shards=rt.shards, clock=clock)
    waiting = [(await shard.route(f"queue {i}"))[0] for i in range(10)]
    # 6 departures in the window: 3 claims at minute 2, 3 at minute 5 (a claim, a reply, a close).
    clock.ms = T0 + 2 * MIN
    for cid in waiting[:3]:
        assert await conversations.claim("general", "ann", cid) == cid
    clock.ms = T0 + 5 * MIN
    assert await conversations.claim("general", "bob", waiting[3]) == waiting[3]
    await conversations.reply(waiting[4], "bob", "hello")
    await conversations.close(waiting[5], "bob")
    # Minute 15: the window (15 minutes, 0..14) holds all 6: 0.4 a minute. 4 P3 still wait.
    clock.ms = T0 + 15 * MIN
    p3, p3_reply = await shard.route("queue, me too")
    # Position 5: 5 / 0.4 = 12.5 min, band 0.5: floor(6.25) = 6 to ceil(18.75) = 19.
    shown = 4 * rt.shards.count + 1
    assert text_of(p3_reply) == f"Thanks. You are number {shown} in line. Expected wait: 6 to 19 minutes."
    # A P1 goes before every P3: position 1, 2.5 min: 1 to 4.
    p1, p1_reply = await shard.route("urgent queue!")
    assert text_of(p1_reply) == "Thanks. You are number 1 in line. Expected wait: 1 to 4 minutes."
    assert json.loads(p1_reply)["conversation"] == p1

    # The real waits: the P1 claimed 3 minutes later (error 30 s, inside 1..4), the P3 at 20
    # minutes (error 450 s, outside 6..19). Conversations routed with nothing measured have none.
    clock.ms = T0 + 18 * MIN
    assert await conversations.claim("general", "ann", p1) == p1
    clock.ms = T0 + 35 * MIN
    assert await conversations.claim("general", "ann", p3) == p3
    # A second departure of the same conversation adds nothing.
    await conversations.release(p3, "ann")
    assert await conversations.claim("general", "ann", p3) == p3

    out = await _printed(rt, _report_args(group=None))
    assert out == [{"group": "general", "n": 2, "median_abs_error_s": 240.0, "inside": 0.5}]
    assert await _printed(rt, _report_args(group="security")) == []


async def test_the_rate_is_scaled_by_the_agents_online(rt: Runtime) -> None:
    clock = Clock()
    shard = Shard(rt, clock)
    conversations = Conversations(rt.client, rt.settings, rt.scripts, shards=rt.shards, clock=clock)
    presence = Presence(rt.client, rt.keys, rt.settings.assign, clock)
    online = OnlineCounts(rt, rt.settings, clock=clock)

    async def staffed(names: list[str], status: str = "online") -> dict[str, int]:
        for name in names:  # a status is a heartbeat
            await presence.set_profile(name, groups=["general"])
            await presence.set_status(name, status)
        return await online.write()

    # Two agents served the window (counted at minutes 0 and 7; the minutes between have no count).
    assert await staffed(["ann", "bob"]) == {"general": 2}
    waiting = [(await shard.route(f"queue {i}"))[0] for i in range(10)]
    clock.ms = T0 + 2 * MIN
    for cid in waiting[:3]:
        assert await conversations.claim("general", "ann", cid) == cid
    clock.ms = T0 + 5 * MIN
    for cid in waiting[3:6]:
        assert await conversations.claim("general", "bob", cid) == cid
    clock.ms = T0 + 7 * MIN
    await staffed(["ann", "bob"])
    # Minute 15: four online now, twice the window's mean, so twice the rate: the 12.5 minutes of
    # test_placeholders_filled_from_the_queue_and_the_departures become 6.25: 3 to 10.
    clock.ms = T0 + 15 * MIN
    assert await staffed(["ann", "bob", "cat", "dan"]) == {"general": 4}
    _, reply = await shard.route("queue, me too")
    shown = 4 * rt.shards.count + 1
    assert text_of(reply) == f"Thanks. You are number {shown} in line. Expected wait: 3 to 10 minutes."
    # Nobody online now: no number, whatever the window says.
    assert await staffed(["ann", "bob", "cat", "dan"], "offline") == {"general": 0}
    _, reply = await shard.route("queue, and me")
    phrase = rt.settings.waits.fallback["en"]
    assert text_of(reply) == f"Thanks. You are number {shown + rt.shards.count} in line. {phrase}"
    # Only the groups agents with a presence belong to are written: others stay unscaled.
    keys = rt.shards.shard[shard.shard]
    assert await rt.client.get(keys.online("security")) is None
    assert await rt.client.get(keys.online("general", (T0 + 7 * MIN) // MIN)) == b"2"


async def test_the_online_counts_service_writes_at_start_and_stops(rt: Runtime) -> None:
    clock = Clock()
    presence = Presence(rt.client, rt.keys, rt.settings.assign, clock)
    await presence.set_profile("ann", groups=["general"])
    await presence.set_status("ann", "online")
    service = OnlineCounts(rt, rt.settings, clock=clock)
    key = rt.shards.shard[-1].online("general")
    async with running([service]):
        for _ in range(200):
            if await rt.client.get(key) == b"1":
                break
            await asyncio.sleep(0.01)
        assert service.health() == {"connected": True, "detail": "general 1", "online": {"general": 1}}
    assert service.health()["connected"] is False


def _report_args(**given: object) -> argparse.Namespace:
    """``switchboard report waits`` as parsed (``--json``, ``given``)."""
    from router.cli import build_parser

    args = build_parser().parse_args(["report", "waits", "--json"])
    for k, v in given.items():
        setattr(args, k, v)
    return args


async def test_report_waits_refuses_options_it_does_not_take(rt: Runtime) -> None:
    with pytest.raises(ReportError, match="--group and --json only"):
        await analytics_cli.waits(rt, _report_args(start="2026-11-01"))


async def _printed(rt: Runtime, args: argparse.Namespace) -> object:
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert await analytics_cli.waits(rt, args) == 0
    return json.loads(buf.getvalue())


async def test_texts_without_placeholders_go_as_before(rt: Runtime) -> None:
    shard = Shard(rt, Clock())
    env = shard.message("my seed phrase is " + " ".join(["abandon"] * 11) + " about")
    await rt.inbox.append(env)
    await drain(shard.worker)
    keys = rt.shards.shard[shard.shard]
    cid = (await rt.client.get(keys.conv_key(env.channel, env.account, env.conversation_key))).decode()
    [(_, fields)] = await rt.client.xrange(keys.outbox("telegram"))
    raw = fields[b"item"]
    # As the router encoded it, the conversation id put first: not decoded and encoded again.
    assert raw.startswith(b'{"conversation":"' + cid.encode() + b'","id":"')
    assert text_of(raw) == "Never share your recovery phrase. Move your funds to a new wallet now."
    assert await rt.client.hget(keys.conv(cid), "wait_est") is None


async def test_unknown_placeholder_refused_and_the_running_version_stays(rt: Runtime) -> None:
    store = RuleStore(rt.client, rt.keys)
    good = ROUTER_RULES + RULES
    first = await store.publish(good, "admin")
    bad = good.replace("{wait_max} minutes", "{wait_max} minutes ({eta})", 1)
    with pytest.raises(RuleSetError, match=r"unknown placeholder \{eta\}"):
        await store.publish(bad, "admin")
    active = await store.active()
    assert active is not None and active.number == first.number


def test_without_estimate_replaces_the_sentence_only() -> None:
    assert without_estimate("Hi.\nPosition {queue_position}. Wait {wait_min}-{wait_max} min! Bye.", "Soon.") == (
        "Hi.\nPosition {queue_position}. Soon. Bye."
    )
    assert without_estimate("您排在第{queue_position}位。预计等待{wait_min}至{wait_max}分钟。", "请稍候。") == (
        "您排在第{queue_position}位。请稍候。"
    )


def test_accuracy_by_hand() -> None:
    found = [
        Observed("payments", "1", 60_000, 0, 2, 90_000),  # |30 s|, inside
        Observed("payments", "2", 120_000, 1, 3, 240_000),  # |120 s|, outside (4 min > 3)
        Observed("payments", "3", 120_000, 1, 3, 60_000),  # |60 s|, inside (1 min)
        Observed("security", "4", 60_000, 0, 2, 60_000),
    ]
    [payments] = accuracy(found, "payments")
    assert (payments.n, payments.median_abs_error_s, payments.inside) == (3, 60.0, 2 / 3)
    assert [a.group for a in accuracy(found)] == ["payments", "security"]


TRON = {"all": [{"contains_any": ["withdrawal"]}, {"contains_any": ["tron"]}]}
STATUS = (
    "TRON withdrawals are delayed. You are number {queue_position} in line. Wait: {wait_min} to {wait_max} minutes."
)


async def test_incident_status_text_says_the_position_and_the_wait(rt: Runtime) -> None:
    clock = Clock()
    shard = Shard(rt, clock)
    conversations = Conversations(rt.client, rt.settings, rt.scripts, shards=rt.shards, clock=clock)
    incidents = Incidents(rt.client, rt.shards, rt.scripts, Audit(rt.client, rt.keys, 1000), clock=clock)
    link = Linker(rt, incidents, clock=clock, block_ms=20)
    await link.resume()
    # Payments (P2): two taken at minutes 1 and 2, one still waiting.
    first, second, third = [(await shard.route(f"my withdrawal is late, queue {i}"))[0] for i in range(3)]
    for minute, cid in ((1, first), (2, second)):
        clock.ms = T0 + minute * MIN
        assert await conversations.claim("payments", "ann", cid) == cid
    inc = await incidents.open("TRON withdrawals delayed", TRON, {"en": STATUS}, "admin")
    clock.ms = T0 + 15 * MIN
    tron, _ = await shard.route("my tron withdrawal is stuck in the queue")
    for _ in range(50):  # linker steps until it reads nothing more (a cluster answers slot by slot)
        before = dict(link._positions)
        await link.step()
        if link._positions == before:
            break
    # One ahead (third): position 2; 2 departures in 15 minutes: 2 / (2 / 15) = 15 min: 7 to 23.
    status = [
        decode_outbox(f[b"item"]).text
        for _, f in await rt.client.xrange(rt.shards.conv_keys(tron).outbox("telegram"))
        if decode_outbox(f[b"item"]).conversation == tron and decode_outbox(f[b"item"]).author != "auto"
    ]
    shown = 1 * rt.shards.count + 1
    assert status == [f"TRON withdrawals are delayed. You are number {shown} in line. Wait: 7 to 23 minutes."]
    assert (await conversations.get(tron)).status == "incident"
    # Taken from the incident 12 minutes later: error 180 s, inside 7..23.
    clock.ms = T0 + 27 * MIN
    assert await incidents.claim(inc.id, "payments", "bob") == tron
    assert await _printed(rt, _report_args(group="payments")) == [
        {"group": "payments", "n": 1, "median_abs_error_s": 180.0, "inside": 1.0}
    ]
    assert third  # still waiting: not counted


async def test_incident_texts_with_unknown_placeholders_are_refused(rt: Runtime) -> None:
    with pytest.raises(BadRequest, match=r"texts.en: unknown placeholder \{eta\}"):
        await rt.incidents.open("x", TRON, {"en": "Delayed, back at {eta}."}, "admin")
    inc = await rt.incidents.open("x", TRON, {"en": STATUS}, "admin")
    with pytest.raises(BadRequest, match="status texts only"):
        await rt.incidents.resolve(inc.id, "admin", {"en": "Fixed. You were number {queue_position}."}, "close")


async def test_an_estimate_is_compared_once_and_only_for_the_wait_it_was_about(rt: Runtime) -> None:
    clock = Clock()
    shard = Shard(rt, clock)
    conversations = Conversations(rt.client, rt.settings, rt.scripts, shards=rt.shards, clock=clock)
    first, _ = await shard.route("queue first")
    clock.ms = T0 + MIN
    assert await conversations.claim("general", "ann", first) == first  # one departure: 1 in 15 min
    clock.ms = T0 + 2 * MIN
    said: dict[str, str] = {}
    for name in ("moved", "held", "closed", "kept"):
        clock.ms += 1  # a due time of its own: ties in a queue go by id, as text
        cid, raw = await shard.route(f"queue {name}")
        said[name] = cid
        assert "Expected wait:" in text_of(raw)
    await conversations.transfer(said["moved"], "payments", "ann")
    await conversations.hold(said["held"], "admin", "spam")
    await conversations.restore(said["held"], "admin")
    await conversations.close(said["closed"], "ann")
    clock.ms = T0 + 10 * MIN
    assert await conversations.claim("payments", "ann", said["moved"]) == said["moved"]
    assert await conversations.claim("general", "ann", said["held"]) == said["held"]
    assert await conversations.claim("general", "ann", said["kept"]) == said["kept"]
    await conversations.release(said["kept"], "ann")
    assert await conversations.claim("general", "ann", said["kept"]) == said["kept"]
    # Only "kept": 3 ahead of it when said (moved, held, closed were not yet gone): 4 / (1 / 15) = 60
    # min, said 30 to 90; taken after 8 minutes (less the 4 ms it was routed after minute 2), once.
    found = await observations(rt.client, rt.shards)
    assert [(o.conv, o.group, o.est_ms, o.min_m, o.max_m, o.real_ms) for o in found] == [
        (said["kept"], "general", 60 * MIN, 30, 90, 8 * MIN - 4)
    ]
