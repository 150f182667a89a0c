"""The answerer (router/answerer.py, lua/answer.lua): knowledge-base answers to new conversations,
the buttons' outcomes, the follow-up that reopens, the assumed-resolved sweeper, shadow mode.

Real Redis, real workers and the real sandbox channel; the knowledge base is the small fixture one
(tests/kb/fixtures) with the lexical retriever (no embeddings: building the shipped answerer takes
20-150 s). Time is an injected clock.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from adapters.sandbox import SandboxUsers
from kb import Answerer as KBAnswerer
from kb import Method, Policy, Retriever, calibration_file, load_dir
from router.actions import Actions, Press
from router.answerer import Answerer, eligibility, parse_button, service, shadow_answers
from router.config import AnswerSettings, KBSettings
from router.errors import ConfigError
from router.keys import ANSWER_GROUP
from router.model import decode_outbox
from router.retention import Retention
from router.runtime import Runtime
from router.worker import Workers
from tests.conftest import SWITCHBOARD
from tests.router.helpers import THREE_GROUPS, drain

pytestmark = pytest.mark.cluster(shards=4)

FIXTURES = Path(__file__).resolve().parents[1] / "kb" / "fixtures" / "kb"
GROUPS = ("payments", "security", "verification", "trading", "general", "complaints")
DAY = 86_400.0

RULES = (
    THREE_GROUPS
    + """\
  - id: txid-tag
    when: {detector: txid}
    then: {tags: [txid]}
  - id: hacked
    when: {contains_any: [hacked]}
    then: {tags: [security], priority: P1, route: security}
  - id: secret
    when: {detector: [seed_phrase, private_key]}
    then: {tags: [security], priority: P1, route: security}
  - id: payments
    when: {contains_any: [withdrawal]}
    then: {tags: [faq], priority: P3, route: payments}
"""
)

FAQ = "I forgot my password, how do I reset it"


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES, encoding="utf-8")
    return path


class FixtureSource:
    """The fixture knowledge base's answerer, as version 7 of a store would give it."""

    def __init__(self) -> None:
        base = load_dir(FIXTURES, GROUPS)
        self._answerer = KBAnswerer(Retriever(base, Method("lexical")), Policy(min_score=0.5, min_gap=0.1))

    async def answerer(self) -> tuple[int | None, KBAnswerer]:
        return 7, self._answerer


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


async def answerer(
    rt: Runtime, clock: Clock | None = None, *, claim_idle_ms: int = 30_000, consumer: str = "a", **kw: object
) -> Answerer:
    settings = AnswerSettings(mode=kw.pop("mode", "live"), **kw)  # type: ignore[arg-type]
    a = Answerer(
        rt, settings, FixtureSource(), clock=clock or Clock(), block_ms=20, claim_idle_ms=claim_idle_ms,
        consumer=consumer,
    )  # fmt: skip
    await a.follow_groups()  # the consumer groups start at the streams' ends: made before routing
    await a._presses.start()
    return a


async def send(rt: Runtime, user: str, text: str) -> str:
    """A sandbox message from ``user``, routed; its conversation id."""
    await SandboxUsers(rt.channel_context()).send(user, text)
    await drain(Workers(rt))
    ref = f"sandbox:default:{user}"
    keys = rt.shards.shard[rt.shards.of_key("sandbox", "default", user)]
    cid = await rt.client.get(keys.prefix + "ck:" + ref)
    assert cid is not None
    return str(cid.decode())


async def press(rt: Runtime, user: str, data: str, n: int = 1) -> None:
    p = Press(
        id=f"{user}-{n}", channel="sandbox", account="default", conversation_key=user, user=user, data=data, at=0.0
    )
    await Actions(rt.client, rt.shards, rt.scripts).append(p)


async def outbox(rt: Runtime, cid: str) -> list[dict[str, object]]:
    entries = await rt.client.xrange(rt.shards.conv_keys(cid).outbox("sandbox"))
    items = [decode_outbox(f[b"item"]) for _, f in entries]
    return [{"text": i.text, "buttons": [(b.label, b.data) for b in i.buttons]} for i in items if i.conversation == cid]


async def counters(rt: Runtime) -> dict[str, int]:
    return {k: v for k, v in (await rt.stats.totals()).counters.items() if k.startswith("kb:") and v}


async def record(rt: Runtime, cid: str) -> dict[str, str]:
    raw = await rt.client.hgetall(rt.shards.conv_keys(cid).answer(cid))
    return {k.decode(): v.decode() for k, v in raw.items()}


async def queued(rt: Runtime, cid: str, group: str = "general") -> bool:
    return cid in {c.id for c in await rt.queues.head(group)}


async def answered(rt: Runtime, a: Answerer, user: str) -> tuple[str, str]:
    """A FAQ conversation of ``user`` answered; (conversation id, answer id)."""
    cid = await send(rt, user, FAQ)
    await a.step()
    [item] = await outbox(rt, cid)
    buttons = item["buttons"]
    assert isinstance(buttons, list)
    parsed = parse_button(buttons[0][1])
    assert parsed is not None
    return cid, parsed[0]


async def test_a_faq_message_on_the_sandbox_gets_the_answer_with_buttons(rt: Runtime) -> None:
    a = await answerer(rt)
    cid = await send(rt, "alice", FAQ)
    assert await queued(rt, cid)
    await a.step()
    conv = await rt.conversations.get(cid)
    assert conv.status == "answered" and not await queued(rt, cid)
    [item] = await outbox(rt, cid)
    assert str(item["text"]).startswith("Resetting your password\n\nForgot your password?")
    rec = await record(rt, cid)
    answer_id = rec["id"]
    assert item["buttons"] == [
        ("This solved it", f"kb:{answer_id}:solved"),
        ("Talk to a person", f"kb:{answer_id}:human"),
    ]
    assert (rec["article"], rec["lang"], rec["variant"], rec["kb"], rec["outcome"]) == (
        "password-reset", "en", "en", "7", ""
    )  # fmt: skip
    history = await rt.conversations.history(cid)
    [entry] = [h for h in history if h.type == "answer"]
    assert entry.data["article"] == "password-reset" and entry.data["score"] > 0.5 and entry.data["gap"] > 0.1
    assert [h.type for h in history] == ["inbound", "answer", "outbound"]
    assert await counters(rt) == {
        "kb:eligible": 1, "kb:eligible:lang:en": 1,
        "kb:answered": 1, "kb:answered:lang:en": 1, "kb:answered:article:password-reset": 1,
    }  # fmt: skip
    # Read again (a restart before the acknowledgement): nothing twice.
    [event] = [e for e in await a._read_all("0", None) if e.conv == cid] or [None]
    assert event is None  # acknowledged
    assert await a._answer_op(rt.shards.conv_keys(cid), "answer", {"conv": cid, "lang": "en"}) == "done"


async def test_solved_closes_and_the_first_outcome_stands(rt: Runtime) -> None:
    a = await answerer(rt)
    cid, answer_id = await answered(rt, a, "bob")
    await press(rt, "bob", f"kb:{answer_id}:solved")
    await press(rt, "bob", f"kb:{answer_id}:human", 2)
    await press(rt, "bob", "kb:01FORGED0000000000000000:human", 3)
    await a.press_step()
    conv = await rt.conversations.get(cid)
    assert conv.status == "closed" and not await queued(rt, cid)
    assert (await record(rt, cid))["outcome"] == "confirmed"
    closes = [h.data for h in await rt.conversations.history(cid) if h.type == "status"]
    assert closes == [{"status": "closed", "by": "kb", "reason": "resolved"}]
    c = await counters(rt)
    assert c["kb:confirmed"] == 1 and c["kb:confirmed:article:password-reset"] == 1 and "kb:human" not in c
    assert await a._presses.read(block_ms=10) == []  # all acknowledged
    # The retention sweep deletes the answer record with the closed conversation.
    keys = rt.shards.conv_keys(cid)
    await Retention(rt.client, rt.settings, "sweeper", keys=keys).sweep(int((time.time() + 31 * DAY) * 1000))
    assert await record(rt, cid) == {}


async def test_talk_to_a_person_queues_at_once(rt: Runtime) -> None:
    a = await answerer(rt)
    cid, answer_id = await answered(rt, a, "carol")
    await press(rt, "carol", f"kb:{answer_id}:human")
    await a.press_step()
    conv = await rt.conversations.get(cid)
    assert conv.status == "new" and await queued(rt, cid)
    assert (await record(rt, cid))["outcome"] == "human"
    assert (await counters(rt))["kb:human:lang:en"] == 1


async def test_a_follow_up_requeues_with_the_answer_in_the_history(rt: Runtime) -> None:
    a = await answerer(rt)
    cid, _ = await answered(rt, a, "dave")
    assert await send(rt, "dave", "that did not help, the link never arrives") == cid
    conv = await rt.conversations.get(cid)
    assert conv.status == "new" and await queued(rt, cid) and conv.messages == 2
    types = [h.type for h in await rt.conversations.history(cid)]
    assert types == ["inbound", "answer", "outbound", "inbound", "status"]
    assert (await record(rt, cid))["outcome"] == "reopened"
    assert (await counters(rt))["kb:reopened"] == 1
    await a.step()  # the follow-up is no new conversation: nothing more sent
    assert len(await outbox(rt, cid)) == 1


async def test_the_sweeper_assumes_resolved_after_the_silence_and_a_later_message_reopens(rt: Runtime) -> None:
    clock = Clock()
    a = await answerer(rt, clock)
    cid, _ = await answered(rt, a, "erin")
    clock.offset = DAY - 60
    assert await a.sweep() == 0
    clock.offset = DAY + 1
    assert await a.sweep() == 1
    assert (await rt.conversations.get(cid)).status == "closed"
    assert (await record(rt, cid))["outcome"] == "assumed"
    assert (await counters(rt))["kb:assumed"] == 1
    assert await a.sweep() == 0
    # Another process's sweeper waits while this one holds the shard's lock.
    other = await answerer(rt, clock, consumer="b")
    zoe, _ = await answered(rt, a, "zoe")
    clock.offset = 2 * DAY + 2
    assert await other.sweep() == 0
    assert await a.sweep() == 1
    assert (await rt.conversations.get(zoe)).status == "closed"
    assert (await counters(rt))["kb:assumed"] == 2
    # Reopened after it was assumed: counted as reopened, no longer as assumed.
    assert await send(rt, "erin", "still not working") == cid
    assert (await record(rt, cid))["outcome"] == "reopened"
    c = await counters(rt)
    assert c["kb:reopened"] == 1 and c["kb:assumed"] == 1 and c["kb:assumed:lang:en"] == 1


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("I forgot my password, my account was hacked", "p1"),
        (
            "forgot my password, my words: abandon abandon abandon abandon abandon abandon abandon abandon "
            "abandon abandon abandon about",
            "p1",
        ),
        ("forgot my password, the tx 4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b", "sensitive"),
    ],
)
async def test_p1_secret_and_txid_messages_are_never_answered(rt: Runtime, text: str, why: str) -> None:
    a = await answerer(rt)
    cid = await send(rt, "frank", text)
    [message] = [h.data for h in await rt.conversations.history(cid) if h.type == "inbound"]
    assert eligibility(message, a.settings) == why
    await a.step()
    assert (await rt.conversations.get(cid)).status == "new"
    assert await outbox(rt, cid) == [] and await counters(rt) == {}


async def test_groups_and_tags_decide_what_is_eligible(rt: Runtime) -> None:
    a = await answerer(rt)  # groups ["general"]
    cid = await send(rt, "gina", "how long does a withdrawal take")  # payments, tag faq
    await a.step()
    assert (await rt.conversations.get(cid)).status == "new"
    b = await answerer(rt, tags=["faq"], groups=[])
    cid = await send(rt, "hank", "how long does a withdrawal take")
    await b.step()
    assert (await rt.conversations.get(cid)).status == "answered"
    assert (await record(rt, cid))["article"] == "withdrawal-times"


async def test_shadow_mode_changes_nothing_and_records(rt: Runtime) -> None:
    a = await answerer(rt, mode="shadow")
    cid = await send(rt, "ivy", FAQ)
    await send(rt, "jack", "what will the btc price be tomorrow")  # eligible, no answer sure enough
    await a.step()
    assert (await rt.conversations.get(cid)).status == "new" and await queued(rt, cid)
    assert await outbox(rt, cid) == [] and await record(rt, cid) == {}
    assert [h.type for h in await rt.conversations.history(cid)] == ["inbound"]
    [row] = await shadow_answers(rt)
    assert (row["conversation"], row["article"], row["group"], row["status"]) == (
        cid,
        "password-reset",
        "general",
        "new",
    )
    assert not row["agent_replied"] and row["score"] > 0.5 and row["kb"] == "7"
    # What the agent then did is shown beside it.
    await rt.conversations.reply(cid, "Use the reset link on the login page.", "agent1")
    await rt.conversations.close(cid, "agent1")
    [row] = await shadow_answers(rt)
    assert (row["status"], row["group_now"], row["agent_replied"]) == ("closed", "general", True)
    assert await counters(rt) == {
        "kb:shadow:eligible": 2,
        "kb:shadow:would": 1, "kb:shadow:would:lang:en": 1, "kb:shadow:would:article:password-reset": 1,
    }  # fmt: skip


async def test_an_agent_who_claimed_first_wins(rt: Runtime) -> None:
    a = await answerer(rt)
    cid = await send(rt, "kate", FAQ)
    assert await rt.conversations.claim("general", "agent1", cid) == cid
    await a.step()
    conv = await rt.conversations.get(cid)
    assert (conv.status, conv.agent) == ("assigned", "agent1")
    assert await outbox(rt, cid) == []
    assert (await counters(rt))["kb:taken"] == 1


async def test_a_conversation_moved_before_the_answer_is_left_to_its_new_group(rt: Runtime) -> None:
    a = await answerer(rt)
    cid = await send(rt, "lisa", FAQ)
    await rt.conversations.transfer(cid, "payments", "agent1", "not a password question")
    await a.step()
    assert (await rt.conversations.get(cid)).status == "new" and await queued(rt, cid, "payments")
    assert await outbox(rt, cid) == [] and (await counters(rt))["kb:taken"] == 1


async def test_an_event_the_streams_cap_deleted_while_pending_is_counted_and_acknowledged(rt: Runtime) -> None:
    first = await answerer(rt, consumer="first")
    cid = await send(rt, "ruth", FAQ)
    assert cid in {e.conv for e in await first.read()}
    stream = rt.shards.conv_keys(cid).events("general")
    await rt.client.xtrim(stream, maxlen=0)
    again = await answerer(rt, consumer="first")  # the same consumer after a restart
    await again.step()
    assert again.counts["trimmed"] == 1
    assert (await rt.client.xpending(stream, ANSWER_GROUP))["pending"] == 0
    assert (await rt.conversations.get(cid)).status == "new"  # left to the agents


async def test_an_answerer_that_fails_leaves_the_conversation_to_the_agents(
    rt: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        async def answerer(self) -> tuple[int | None, KBAnswerer]:
            raise ValueError("the knowledge base is being rebuilt")

    a = await answerer(rt)
    a._source = Broken()
    cid = await send(rt, "pete", FAQ)
    await a.step()
    assert a.counts["failed"] == 1 and "left to the agents" in caplog.text
    assert (await rt.conversations.get(cid)).status == "new" and await queued(rt, cid)
    await a.step()  # acknowledged: not read again
    assert a.counts["failed"] == 1


async def test_a_restart_misses_nothing_and_answers_nothing_twice(rt: Runtime) -> None:
    first = await answerer(rt, claim_idle_ms=0, consumer="first")
    early = await send(rt, "lena", FAQ)
    read = await first.read()  # read, then the process dies before handling
    assert early in {e.conv for e in read}
    # Routed while no answerer runs.
    late = await send(rt, "mike", FAQ)
    second = await answerer(rt, claim_idle_ms=0, consumer="second")  # another process: takes the dead one's events over
    for _ in range(3):
        await second.step()
    for cid in (early, late):
        assert (await rt.conversations.get(cid)).status == "answered"
        assert len(await outbox(rt, cid)) == 1
    # The first process handles what it had read after all: nothing twice.
    for event in read:
        assert await first.handle(event) in {"done", "ignored"}
    assert len(await outbox(rt, early)) == 1
    assert (await counters(rt))["kb:answered"] == 2
    pending = 0
    for keys in rt.shards.shard:
        for group in ("general", "payments", "security"):
            pending += (await rt.client.xpending(keys.events(group), ANSWER_GROUP))["pending"]
    assert pending == 0  # the second took the first one's over and acknowledged them


async def test_the_cli_shows_the_figures_and_the_shadows_would_be_answers(rt: Runtime, env: dict[str, str]) -> None:
    live = await answerer(rt)
    cid, answer_id = await answered(rt, live, "nina")
    await press(rt, "nina", f"kb:{answer_id}:solved")
    await live.press_step()
    shadow = await answerer(rt, mode="shadow", consumer="s")
    other = await send(rt, "otto", FAQ)
    await shadow.step()

    def cli(*args: str) -> str:
        done = subprocess.run([*SWITCHBOARD, *args], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    figures = json.loads(cli("stats", "--json"))["answers"]
    assert (figures["eligible"], figures["answered"], figures["rate"], figures["confirmed"]) == (1, 1, 1.0, 1)
    assert figures["by_language"]["en"]["confirmed"] == 1
    assert figures["by_article"]["password-reset"] == {
        "answered": 1, "confirmed": 1, "assumed": 0, "reopened": 0, "human": 0
    }  # fmt: skip
    assert (figures["shadow"]["eligible"], figures["shadow"]["would"]) == (1, 1)
    text = cli("stats")
    assert "answers: 1 of 1 eligible (100%); confirmed 1, assumed 0, reopened 0, human 0" in text
    assert "answers (shadow): would answer 1 of 1 (100%)" in text
    [row] = json.loads(cli("kb", "shadow", "--json"))
    assert (row["conversation"], row["article"], row["status"]) == (other, "password-reset", "new")
    assert f"#{other} (general, en): password-reset" in cli("kb", "shadow")
    assert cid != other


async def test_the_service_is_off_by_default_and_refuses_a_bad_knowledge_base(rt: Runtime, tmp_path: Path) -> None:
    assert service(rt, rt.settings) is None
    article = tmp_path / "kb" / "fees"
    article.mkdir(parents=True)
    front = "---\nid: fees\nlang: en\ntitle: Fees\ntags: [fees]\ngroups: [{}]\nauto: true\n---\nFees are 0.1%.\n"
    (article / "en.md").write_text(front.format("trading"), encoding="utf-8")  # no such group here
    live = rt.settings.model_copy(
        update={"answers": AnswerSettings(mode="live"), "kb": KBSettings(directory=tmp_path / "kb")}
    )
    with pytest.raises(ConfigError, match=r"kb.directory: .*fees/en.md: unknown group\(s\) trading"):
        service(rt, live)
    (article / "en.md").write_text(front.format("general"), encoding="utf-8")
    # The shipped calibration's example questions are about the default articles.
    with pytest.raises(ConfigError, match=r"kb.calibration: .*article 'withdrawal-times' is not in"):
        service(rt, live)
    (tmp_path / "questions.jsonl").write_text('{"id": "q1", "lang": "en", "text": "fees?", "article": "fees"}\n')
    calibration = json.loads(calibration_file().read_text(encoding="utf-8"))
    calibration["examples"] = str(tmp_path / "questions.jsonl")
    (tmp_path / "calibration.json").write_text(json.dumps(calibration), encoding="utf-8")
    live.kb.calibration = tmp_path / "calibration.json"
    built = service(rt, live)
    assert isinstance(built, Answerer) and built.settings.mode == "live"


def test_button_data_fits_and_parses() -> None:
    assert parse_button("kb:01HZY:solved") == ("01HZY", "solved")
    assert parse_button("kb:01HZY:maybe") is None and parse_button("survey:1:5") is None
    assert len(f"kb:{'0' * 26}:solved") <= 64


def test_labels_per_language() -> None:
    s = AnswerSettings(labels={"en": ("Fixed", "Human please")})
    assert s.button_labels("en") == ("Fixed", "Human please")
    assert s.button_labels("zh") == ("已解决", "转人工客服")
    assert s.button_labels("xx") == ("Fixed", "Human please")
    with pytest.raises(ValueError, match="1 to 80"):
        AnswerSettings(labels={"en": ("", "x")})
    assert json.loads(AnswerSettings().model_dump_json())["mode"] == "off"
