"""`switchboard impostors eval|list|dismiss|confirm` through the real command against the test Redis."""

from __future__ import annotations

import json

from router.config import ImpostorSettings
from router.impostors import ImpostorGuard
from router.runtime import Runtime
from tests.router.test_cli import sb

SETTINGS = ImpostorSettings.model_validate({"staff": {"telegram": [{"id": 1, "names": ["Anna Kovacs"]}]}})


def test_eval_prints_both_parts_and_their_misses(env: dict[str, str]) -> None:
    table = sb(env, "impostors", "eval").stdout
    assert "| tune | 58 |" in table and "| test | 63 |" in table
    parts = json.loads(sb(env, "impostors", "eval", "--json", "--part", "tune").stdout)
    assert [p["part"] for p in parts] == ["tune"]
    assert parts[0]["catch_rate"] >= 0.95 and parts[0]["false_alarm_rate"] <= 0.02


async def test_list_dismiss_and_confirm(rt: Runtime, env: dict[str, str]) -> None:
    guard = ImpostorGuard(SETTINGS, rt.impostor_cases)
    await guard.check("telegram", "bot", "7", ["Аnna Kovacs"], "chat -100")
    await guard.check("telegram", "bot", "8", ["Anna Kovacs"], "chat -100")
    listed = sb(env, "impostors", "list")
    assert "telegram:bot:7  impostor  'Аnna Kovacs' like staff 'Anna Kovacs' in chat -100" in listed.stdout
    assert listed.stdout.rstrip().endswith("2 open case(s)")
    assert sb(env, "impostors", "dismiss", "telegram:bot:8", "--by", "mod").stdout.strip() == (
        "telegram:bot:8: open -> dismissed by mod"
    )
    sb(env, "impostors", "confirm", "telegram:bot:7", "--by", "mod")
    assert json.loads(sb(env, "impostors", "list", "--json").stdout) == []
    missing = sb(env, "impostors", "confirm", "telegram:bot:9", "--by", "mod", check=False)
    assert missing.returncode == 2 and "no impostor case telegram:bot:9" in missing.stderr
