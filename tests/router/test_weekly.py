"""Where the weekly summary reads the analytics store (router/weekly.py ``store_reader``): through
the exporter of its own process while that holds the file (DuckDB: one writing process, and in
that process no read-only second opening), and not at all while another process holds it — then
nothing is claimed, and the replica whose exporter holds the file sends. And each recipient is
marked on its own: one that failed is retried without sending the other again."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from router.config import ReportSettings
from router.exporter import Exporter
from router.lifecycle import running
from router.runtime import Runtime
from router.summary import Week
from router.weekly import WeeklyReports, store_reader
from tests.router.eventlog import write_store
from tests.router.test_summary import CONVS, LOG

SETTINGS = ReportSettings(weekly=True, telegram_chat=1, telegram_bot="bot")
SEND_MS = int(datetime(2026, 11, 9, 9, tzinfo=UTC).timestamp() * 1000)


@dataclass
class Clock:
    now: int = SEND_MS

    def now_ms(self) -> int:
        return self.now


@dataclass
class Recorder:
    """A recipient that keeps what it was given, after refusing the first ``fail`` sends (the
    real ones, against real servers: tests/email, tests/telegram)."""

    name: str = "telegram"
    fail: int = 0
    got: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return f"recorder {self.name}"

    async def send(self, subject: str, text: str, html: str) -> str:
        if self.fail:
            self.fail -= 1
            raise ConnectionError("far side down")
        self.got.append(subject)
        return "kept"


async def test_read_through_the_exporter_of_this_process(rt: Runtime) -> None:
    path = write_store(rt.settings.analytics.path(rt.settings.redis.data_dir), LOG, CONVS)
    exporter = Exporter(rt)
    async with running([exporter]):
        for _ in range(200):
            if exporter.reader() is not None:
                break
            await asyncio.sleep(0.05)
        # Read-only beside the exporter's read-write opening is refused inside one process.
        alone = WeeklyReports(rt, [], store_reader(path), settings=SETTINGS, clock=Clock())
        assert await alone.summary(Week(2026, 45)) is None
        through = WeeklyReports(rt, [Recorder()], store_reader(path, exporter), settings=SETTINGS, clock=Clock())
        summary = await through.summary(Week(2026, 45))
        assert summary is not None and "6 conversations (week before 2, +200%)" in summary.text
        assert await through.tick() == {"telegram": "sent"}


async def test_nothing_is_claimed_while_another_process_holds_the_store(rt: Runtime) -> None:
    path = write_store(rt.settings.analytics.path(rt.settings.redis.data_dir), LOG, CONVS)
    hold = "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('held', flush=True); sys.stdin.read()"
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", hold, str(path), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert holder.stdout is not None and await holder.stdout.readline() == b"held\n"
        recorder = Recorder()
        weekly = WeeklyReports(rt, [recorder], store_reader(path), settings=SETTINGS, clock=Clock())
        assert await weekly.tick() == {"telegram": "no store"}
        assert await rt.client.exists(rt.keys.weekly_report("2026-W45", "telegram")) == 0
        health = weekly.health()
        assert health["connected"]  # standing by is not a fault: the holder's replica sends
        assert health["detail"] == "2026-W45 due; the analytics store cannot be read here (another process holds it)"
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        await asyncio.wait_for(holder.wait(), 10)
    assert await weekly.tick() == {"telegram": "sent"}  # the file is free: read-only works
    assert recorder.got == ["Support weekly summary 2026-W45"]


async def test_each_recipient_is_marked_on_its_own(rt: Runtime, tmp_path: Path) -> None:
    path = write_store(tmp_path / "s.duckdb", LOG, CONVS)
    mail, chat = Recorder("email"), Recorder("telegram", fail=2)
    weekly = WeeklyReports(rt, [mail, chat], store_reader(path), settings=SETTINGS, clock=Clock())
    assert await weekly.tick() == {"email": "sent", "telegram": "failed: far side down"}
    assert not weekly.health()["connected"]
    # The e-mail is marked and not sent again; the chat is retried at each tick until it goes.
    assert await weekly.tick() == {"telegram": "failed: far side down"}
    assert await weekly.tick() == {"telegram": "sent"}
    assert await weekly.tick() == {}
    assert mail.got == chat.got == ["Support weekly summary 2026-W45"]
    assert weekly.health()["connected"]
