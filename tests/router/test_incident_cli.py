"""`switchboard incident open|list|show|update|resolve|claim` and the queue's incident row, through
the real command against the test Redis."""

from __future__ import annotations

import json

from router.runtime import Runtime
from tests.router.test_cli import sb
from tests.router.test_incidents import FakeClock, link_all, linker, send

MATCH = "all: [{contains_any: [withdrawal]}, {contains_any: [tron]}]"


async def test_the_incident_commands(rt: Runtime, env: dict[str, str]) -> None:
    link = await linker(rt, FakeClock())
    bad = sb(
        env, "incident", "open", "TRON", "--match", "{keyword: tron}", "--text", "en=x", "--by", "ops", check=False
    )
    assert bad.returncode == 2 and "matcher: when: unknown condition 'keyword'" in bad.stderr
    no_en = sb(env, "incident", "open", "TRON", "--match", MATCH, "--text", "zh=仅中文", "--by", "ops", check=False)
    assert no_en.returncode == 2 and "a text in 'en' is required" in no_en.stderr
    opened = sb(env, "incident", "open", "TRON withdrawals delayed", "--match", MATCH,
                "--text", "en=Delayed, on it.", "--text", "zh=延迟，处理中。", "--by", "ops")  # fmt: skip
    assert opened.stdout.startswith("opened incident #1: TRON withdrawals delayed")

    cids = [await send(rt, f"c{i}", "my tron withdrawal is late") for i in range(3)]
    await link_all(link)
    queue = sb(env, "queue", "payments").stdout
    assert "Incident #1: TRON withdrawals delayed (3)" in queue and not any(f"#{c} " in queue for c in cids)
    assert json.loads(sb(env, "queue", "payments", "--json").stdout)["incidents"] == [
        {"id": "1", "title": "TRON withdrawals delayed", "collapsed": 3}
    ]
    claimed = sb(env, "incident", "claim", "1", "--group", "payments", "--agent", "ann").stdout
    assert claimed.startswith("claimed #") and claimed.split()[1][1:] in cids

    sb(env, "incident", "update", "1", "--text", "en=Still delayed.", "--by", "ops")
    shown = json.loads(sb(env, "incident", "show", "1", "--json").stdout)
    assert shown["texts"] == {"en": "Still delayed."} and shown["counts"]["linked"] == 3
    assert shown["counts"]["held"] == {"payments": 2} and sorted(shown["linked"]) == sorted(cids)
    assert [h["event"] for h in shown["history"]] == ["opened", "updated"]

    resolved = sb(env, "incident", "resolve", "1", "--text", "en=Fixed.", "--mode", "requeue", "--by", "ops")
    assert "incident #1 resolving" in resolved.stdout
    assert "#1    resolving" in sb(env, "incident", "list").stdout
    again = sb(env, "incident", "update", "1", "--title", "x", "--by", "ops", check=False)
    assert again.returncode == 2 and "only an open incident changes" in again.stderr
