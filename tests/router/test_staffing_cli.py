"""``switchboard staffing`` on a generated export: its numbers are the pure functions' (sla/staffing.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from router.cli import main
from sla import staffing

ROOT = Path(__file__).resolve().parents[2]
WEEK1 = datetime(2026, 11, 30, tzinfo=UTC)  # a Monday, 00:00 UTC


def at(week: int, day: int, hour: int, minute: int) -> datetime:
    return WEEK1 + timedelta(weeks=week, days=day, hours=hour, minutes=minute)


@pytest.fixture
def export(tmp_path: Path) -> Path:
    """Two weeks: payments gets 10 then 30 messages on Monday 09:00-10:00 (20/h on average);
    security 4 on the first Tuesday 14:00 only (2/h over the two weeks); general one message at
    each end, so the file spans exactly the two weeks."""
    lines = [{"group": "general", "received_at": at(0, 0, 0, 0).isoformat()}]
    lines += [{"group": "payments", "received_at": at(0, 0, 9, m * 6).timestamp()} for m in range(10)]
    lines += [{"group": "payments", "received_at": at(1, 0, 9, m * 2).isoformat()} for m in range(30)]
    lines += [{"group": "security", "received_at": at(0, 1, 14, m).isoformat()} for m in range(4)]
    lines += [{"group": "general", "received_at": at(1, 6, 23, 59).isoformat()}]
    path = tmp_path / "arrivals.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, object]:
    assert main(["staffing", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


def test_rates_per_hour_of_week_and_the_agents_they_need(export: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = run_json(capsys, "--arrivals", str(export), "--aht", "300", "--aht", "security=900", "--within", "30")
    rows = {(r["group"], r["hour"]): r for r in out["rows"]}  # type: ignore[attr-defined]
    assert len(rows) == 3 * 168
    payments = rows[("payments", "mon 09:00")]
    assert payments["rate_per_hour"] == 20.0
    need = staffing.agents_needed(20.0, 300, 0.8, 30, 0.85)
    assert (payments["agents"], payments["service_level"], payments["asa_s"]) == (
        need.agents,
        round(need.service_level, 4),
        round(need.asa, 2),
    )
    security = rows[("security", "tue 14:00")]
    assert (security["rate_per_hour"], security["aht_s"]) == (2.0, 900.0)
    assert security["agents"] == staffing.agents_needed(2.0, 900, 0.8, 30, 0.85).agents
    assert rows[("general", "mon 00:00")]["rate_per_hour"] == 0.5
    assert rows[("payments", "mon 10:00")]["agents"] == 0
    assert out["arrivals"] == {"first": "2026-11-30T00:00:00+00:00", "last": "2026-12-13T23:59:00+00:00"}


def test_hours_of_week_in_a_time_zone(export: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = run_json(capsys, "--arrivals", str(export), "--aht", "300", "--tz", "Asia/Shanghai")
    rows = {(r["group"], r["hour"]): r for r in out["rows"]}  # type: ignore[attr-defined]
    assert rows[("payments", "mon 17:00")]["rate_per_hour"] == 20.0  # 09:00 UTC is 17:00 in Shanghai


def test_a_steady_rate_reproduces_the_classic_example(capsys: pytest.CaptureFixture[str]) -> None:
    args = ("--rate", "200", "--aht", "180", "--target", "0.8", "--within", "20", "--max-occupancy", "1")
    (row,) = run_json(capsys, *args)["rows"]  # type: ignore[misc]
    assert (row["group"], row["hour"], row["agents"], row["service_level"], row["asa_s"]) == (
        "all",
        None,
        14,
        0.8884,
        7.84,
    )


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"group": "g"}'], "arrivals.jsonl:1: received_at missing"),
        (['{"received_at": 1}'], "arrivals.jsonl:1: group missing"),
        (["not json"], "arrivals.jsonl:1: not JSON"),
        (['{"group": "g", "received_at": "2026-12-07T09:00:00"}'], "has no time zone"),
        (['{"group": "g", "received_at": "yesterday"}'], "'yesterday': not ISO 8601"),
        (['{"group": "g", "received_at": 1e300}'], "out of range"),
        (["", "  "], "no arrivals in it"),
    ],
)
def test_bad_exports_are_named_line_by_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], lines: list[str], message: str
) -> None:
    path = tmp_path / "arrivals.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert main(["staffing", "--arrivals", str(path), "--aht", "300"]) == 1
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--rate", "payments=40", "--aht", "security=300"], "no handle time for group 'payments'"),
        (["--rate", "40", "--aht", "five minutes"], "--aht 'five minutes': expected [GROUP=]NUMBER"),
        (["--rate", "40", "--aht", "300", "--aht", "600"], "--aht given twice for the default"),
        (["--rate", "40", "--aht", "300", "--target", "80"], "service level target 80.0"),
        (["--rate", "40", "--aht", "300", "--tz", "Mars/Olympus"], "unknown time zone 'Mars/Olympus'"),
    ],
)
def test_bad_options(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    assert main(["staffing", *argv]) == 1
    assert message in capsys.readouterr().err


def test_the_command_line(export: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "router", "staffing", "--arrivals", str(export), "--aht", "300"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    assert "\npayments (handle time 300 s)\n" in done.stdout
    need = staffing.agents_needed(20.0, 300, 0.8, 60, 0.85)
    assert f"  mon 09:00      20.00     1.67      {need.agents}   {need.service_level:.1%}" in done.stdout
    assert "group-hours without arrivals need no agents" in done.stdout
