"""The weekly summary in a Telegram chat (router/weekly.py, adapters/telegram/report.py), sent by
the real aiogram client to the Bot API emulator: a send the server refused is not marked and goes
at the next tick, once; a bot that is not configured is refused."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from adapters.telegram.report import report_chat
from router.config import ReportSettings
from router.errors import ConfigError
from router.runtime import Runtime
from router.weekly import WeeklyReports, due_week, store_reader
from tests.conftest import SWITCHBOARD
from tests.router.eventlog import write_store
from tests.router.test_summary import CONVS, LOG
from tests.telegram.conftest import ACCOUNT, section, until
from tests.telegram.emulator import Emulator

LEADS = -100777
SEND_MS = int(datetime(2026, 11, 9, 9, tzinfo=UTC).timestamp() * 1000)
SETTINGS = ReportSettings(weekly=True, telegram_chat=LEADS, telegram_bot=ACCOUNT)


@dataclass
class FakeClock:
    now: int

    def now_ms(self) -> int:
        return self.now


async def test_a_refused_send_is_retried_at_the_next_tick_and_sent_once(rt: Runtime, emu: Emulator) -> None:
    store = write_store(rt.settings.analytics.path(rt.settings.redis.data_dir), LOG, CONVS)
    chat = report_chat(section(emu), ACCOUNT, LEADS)
    weekly = WeeklyReports(rt, [chat], store_reader(store), settings=SETTINGS, clock=FakeClock(SEND_MS))
    emu.fail("sendMessage", 502, "Bad Gateway")
    [outcome] = (await weekly.tick()).values()
    assert outcome.startswith("failed: ") and "Bad Gateway" in outcome
    assert await rt.client.exists(rt.keys.weekly_report("2026-W45", "telegram")) == 0
    assert emu.sent == []
    assert await weekly.tick() == {"telegram": "sent"}
    assert await weekly.tick() == {}
    [sent] = emu.sent
    assert sent["chat_id"] == LEADS and sent["parse_mode"] is None
    assert sent["text"].startswith("Support weekly summary 2026-W45\n")
    assert "  average 3.50 of 5 over 2 ratings\n" in sent["text"]
    assert weekly.sent == {"telegram": "2026-W45"}


def test_a_bot_that_is_not_configured_is_refused(emu: Emulator) -> None:
    with pytest.raises(ConfigError, match="telegram_bot 'otherbot': no such \\[telegram\\] bot \\(supportbot\\)"):
        report_chat(section(emu), "otherbot", LEADS)
    with pytest.raises(ConfigError, match="none configured"):
        report_chat({}, ACCOUNT, LEADS)


def start_run(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as err:
        return subprocess.Popen([*SWITCHBOARD, "run"], env=env, stdout=subprocess.DEVNULL, stderr=err)


async def test_two_run_replicas_sharing_a_store_send_the_week_once(
    rt: Runtime, emu: Emulator, env: dict[str, str], tmp_path: Path
) -> None:
    """Two real `switchboard run` processes on one data directory: one exporter holds the DuckDB
    file, so only its process can read the store; the other claims nothing. The due week is the
    wall clock's, so the figures are not checked here (tests/router/test_summary.py does). On a
    failure the processes' stderr is in tmp_path/a.log and b.log."""
    data = tmp_path / "var"
    data.mkdir()
    settings = ReportSettings(weekly=True, telegram_chat=LEADS, telegram_bot=ACCOUNT)
    write_store(data / "analytics.duckdb", LOG, CONVS)
    env = {
        **env,
        "SWITCHBOARD_TELEGRAM": json.dumps(section(emu)),
        "SWITCHBOARD_WEB__ENABLED": "false",
        "SWITCHBOARD_ANALYTICS__ENABLED": "true",
        "SWITCHBOARD_REDIS__DATA_DIR": str(data),
        "SWITCHBOARD_REPORTS__WEEKLY": "true",
        "SWITCHBOARD_REPORTS__TELEGRAM_CHAT": str(LEADS),
        "SWITCHBOARD_REPORTS__TELEGRAM_BOT": ACCOUNT,
        "SWITCHBOARD_REPORTS__TICK_S": "0.2",
    }
    procs = []

    async def details() -> list[str]:
        records = await rt.stats.health()
        return [r["detail"] for k, r in records.items() if k.startswith("service:weekly-report@")]

    try:
        procs += [start_run(env, tmp_path / f"{name}.log") for name in ("a", "b")]

        async def settled() -> bool:
            # Both services report; one sent it. The other found it marked, or the store held by
            # the first (whichever it saw first).
            found = await details()
            return len(found) == 2 and sum("sent by this process: telegram" in d for d in found) == 1

        try:
            # Two processes start, one opens the store and embeds the week's complaints: on a busy
            # two-core machine that took over 30 s; test_replicas.py gives one start 60 s.
            await until(settled, 120, "one replica to send the summary, the other to stand by")
        except BaseException:
            said = "\n".join(await details())
            logs = "\n".join(f"{n}.log: {(tmp_path / f'{n}.log').read_text()[-3000:]}" for n in ("a", "b"))
            print(f"the weekly services said:\n{said}\n{logs}")  # shown by pytest with the failure
            raise
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(30)
    week = due_week(datetime.now(UTC), settings).label
    reports = [m for m in emu.sent if m["chat_id"] == LEADS]
    assert [m["text"].splitlines()[0] for m in reports] == [f"Support weekly summary {week}"]
    mark = await rt.client.get(rt.keys.weekly_report(week, "telegram"))
    assert mark is not None and mark.decode().startswith("sent ")
