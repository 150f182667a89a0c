"""``switchboard report complaints``: real messages routed by the real worker (the shipped rules
tag the complaints) into a real Redis, then grouped into causes with the previous week's sizes."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

import insight
from router import analytics_cli
from router.complaints import DAY_MS, complaint_causes
from router.conversations import HistoryEntry
from router.reports import ReportError
from router.runtime import Runtime
from router.worker import Worker
from tests.router.helpers import drain, message

pytestmark = pytest.mark.cluster(shards=4)

DEFAULT_RULES = Path(__file__).resolve().parents[2] / "rules" / "default.yaml"

ROUTER_RULES = (Path(__file__).parent / "rules.yaml").read_text()
# Every message but a question is a complaint here, so that the labelled texts (which carry no
# complaint keyword of the shipped rules) can be routed as they are written.
TAG_ALL = """
  - id: complaint
    when: {not: {contains_any: [2fa]}}
    then: {tags: [complaint]}
"""
NOT_A_COMPLAINT = "how do I enable 2FA on my account?"

# A week of complaints from the dev set (insight/complaints/dev.jsonl): 14 withdrawals stuck
# (3 the week before: a spike) and 10 of each of five other causes (10 the week before).
DEV = [
    json.loads(line) for line in (Path(insight.__file__).parent / "complaints" / "dev.jsonl").read_text().splitlines()
]
OTHERS = ["p2p_dispute", "outage", "fees", "account_frozen", "liquidation"]


def _of(cause: str) -> list[str]:
    return [row["text"] for row in DEV if row["cause"] == cause]


THIS_WEEK = _of("withdrawal_delay")[:14] + [t for c in OTHERS for t in _of(c)[:10]]
LAST_WEEK = _of("withdrawal_delay")[14:17] + [t for c in OTHERS for t in _of(c)[10:20]]
CAUSE = {row["text"]: row["cause"] for row in DEV}

# Each carries a word the shipped rules tag as a complaint (compensation, 投诉).
SHIPPED = [
    "my withdrawal has been pending for 3 days, I want compensation",
    "withdrawal of USDT stuck in processing since monday, I will file a complaint",
    "提现三天了还没到账，我要投诉你们",
]


@pytest.fixture
def rules_file(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """The router tests' rules and a rule tagging every message a complaint; a test given
    ``DEFAULT_RULES`` (indirect) routes with the shipped rules instead."""
    given: Path | None = getattr(request, "param", None)
    if given is not None:
        return given
    (tmp_path / "rules.yaml").write_text(ROUTER_RULES + TAG_ALL)
    return tmp_path / "rules.yaml"


@dataclass
class Clock:
    ms: int

    def __call__(self) -> int:
        return self.ms


async def route(rt: Runtime, clock: Clock, texts: list[str]) -> list[str]:
    """Route ``texts`` (one conversation each) at the clock's time; their conversation ids."""
    workers = [Worker(rt, shard=s, clock=clock) for s in range(rt.shards.count)]
    envs = [message(text, user=f"u{clock.ms}-{n}") for n, text in enumerate(texts)]
    for env in envs:
        await rt.inbox.append(env)
    for w in workers:
        await drain(w)
    ids = []
    for env in envs:
        keys = rt.shards.shard[rt.shards.of_key(env.channel, env.account, env.conversation_key)]
        cid = await rt.client.get(keys.conv_key(env.channel, env.account, env.conversation_key))
        assert cid is not None, env.text
        ids.append(cid.decode())
    return ids


async def test_causes_sizes_and_the_week_over_week_change(rt: Runtime) -> None:
    now = 1_800_000_000_000
    clock = Clock(now - 10 * DAY_MS)
    await route(rt, clock, LAST_WEEK)
    clock.ms = now - 15 * DAY_MS  # in neither period
    await route(rt, clock, _of("withdrawal_delay")[17:])
    clock.ms = now - 2 * DAY_MS
    current = await route(rt, clock, [*THIS_WEEK, NOT_A_COMPLAINT])
    assert "complaint" not in (await rt.conversations.get(current[-1])).tags
    text_of = dict(zip(current, THIS_WEEK, strict=False))

    report = await complaint_causes(rt, days=7, now_ms=now)

    found = report.found
    assert (found.complaints, found.previous) == (len(THIS_WEEK), len(LAST_WEEK)) == (64, 53)
    assert sum(c.size for c in found.causes) == 64
    assert sum(c.previous for c in found.causes) + found.unmatched == 53
    spikes = [c for c in found.causes if c.spike]
    assert len(spikes) == 1, [(c.name, c.size, c.previous) for c in found.causes]
    (spike,) = spikes
    # The spike is the withdrawals: every example of it is one, and it holds most of them.
    assert {CAUSE[text_of[cid]] for cid in spike.examples} == {"withdrawal_delay"}
    assert {CAUSE[q.text] for q in spike.quotes} == {"withdrawal_delay"}  # quoted as written
    assert spike.size >= 9 and spike.previous <= 3 and spike.change == spike.size - spike.previous
    assert "提现" in spike.terms.get("zh", ())
    # The causes of the same volume as last week are no spikes, and changed little.
    for cause in found.causes:
        if cause is not spike:
            assert abs(cause.change) <= 4, (cause.name, cause.size, cause.previous)
    # As measured, within what a machine moves (a larger change is a change in the clustering:
    # docs/complaints.md): 9 causes on the machine that pinned it, 10 on an AVX-512 Xeon, where the
    # same code splits a small cause differently (tests/insight/test_sets.py says the same of the sets).
    assert abs(len(found.causes) - CAUSES_MEASURED) <= 2, [(c.size, c.previous) for c in found.causes]


CAUSES_MEASURED = 9


def _args(*argv: str) -> argparse.Namespace:
    from router.cli import build_parser

    return build_parser().parse_args(["report", "complaints", *argv])


@pytest.mark.parametrize("rules_file", [DEFAULT_RULES], indirect=True)
async def test_the_shipped_rules_complaints_reported_by_the_cli(rt: Runtime) -> None:
    import time

    clock = Clock(int(time.time() * 1000) - DAY_MS)
    ids = await route(rt, clock, SHIPPED)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert await analytics_cli.report(rt, _args("--json", "--days", "3")) == 0
    out = json.loads(buf.getvalue())
    assert out["complaints"] == 3 and out["days"] == 3
    assert sorted(ex for c in out["causes"] for ex in c["examples"]) == sorted(ids)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert await analytics_cli.report(rt, _args()) == 0
    assert "complaints" in buf.getvalue() and SHIPPED[0] in buf.getvalue()


async def test_the_cli_refuses_what_it_does_not_take(rt: Runtime) -> None:
    with pytest.raises(ReportError, match="--days and --json only"):
        await analytics_cli.report(rt, _args("--group", "payments"))
    with pytest.raises(ReportError, match="must be positive"):
        await analytics_cli.report(rt, _args("--days", "0"))


def test_low_rated_survey_comments_are_complaints() -> None:
    from router.complaints import _complaints_of

    history = [
        HistoryEntry("1-0", "inbound", 1, {"text": "where is my deposit"}),
        HistoryEntry("2-0", "csat", 2, {"survey": "s1", "rating": 2, "comment": None}),
        HistoryEntry("3-0", "csat", 3, {"survey": "s1", "rating": 2, "comment": "nobody answered for days"}),
    ]
    found = _complaints_of("c1", ["deposit"], "en", True, history)
    assert [(c.text, c.tags) for c in found] == [("nobody answered for days", ("deposit", "csat"))]
    both = _complaints_of("c1", ["complaint"], "en", True, history)
    assert [c.text for c in both] == ["where is my deposit", "nobody answered for days"]
    rated_well = [HistoryEntry("2-0", "csat", 2, {"survey": "s1", "rating": 5, "comment": "great"})]
    assert _complaints_of("c1", [], "en", False, rated_well) == []
