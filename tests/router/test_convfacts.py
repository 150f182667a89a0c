"""The per-conversation table (router/convfacts.py) the exporter keeps beside the events: after
any sequence of commits it equals a whole fold of the events (the reports' old per-run
``conv_facts``), an old store gets it at its first opening, and a failed commit changes it as
little as it changes the events."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
import pytest

from router import convfacts
from router.config import AnalyticsSettings
from router.exporter import Batch, Exporter, Store
from router.reports import REPORTS, Reports
from router.runtime import Runtime
from sla.calendar import Calendar
from tests.router import test_reports, test_summary
from tests.router.eventlog import Log, ms, rows_of, write_store
from tests.router.test_exporter import _export_all, _route

# Lists are sets to the reports (list_contains), except moves and ratings (counted): all compared sorted.
LISTS = ("tags", "groups", "agents", "breached", "moves", "ratings")


def _table(con: duckdb.DuckDBPyConnection, sql: str) -> dict[str, dict[str, Any]]:
    cur = con.execute(sql)
    names = [d[0] for d in cur.description or []]
    out = {}
    for row in cur.fetchall():
        record = dict(zip(names, row, strict=True))
        for name in LISTS:
            if record[name] is not None:
                record[name] = sorted(record[name], key=repr)
        out[record["conv"]] = record
    return out


def _kept_and_folded(path: Path) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """The table as kept, and a whole fold of the store's events now."""
    with duckdb.connect(str(path), read_only=True) as con:
        return (
            _table(con, f"SELECT * FROM {convfacts.TABLE}"),
            _table(con, convfacts.FOLD.format(source="events")),
        )


@pytest.mark.parametrize("module", [test_reports, test_summary], ids=["reports-log", "summary-log"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_kept_in_batches_in_any_order_it_equals_a_whole_fold(module: Any, seed: int, tmp_path: Path) -> None:
    """The test logs committed in shuffled batches of 1-5 events (streams of different groups are
    read in any order, and a conversation's events span many commits): the merged rows are the
    whole fold, column for column, and every report's figures are those of the hand-checked tests."""
    rows = rows_of(module.LOG, module.CONVS)
    random.Random(seed).shuffle(rows)
    store = Store(tmp_path / "b.duckdb")
    i = 0
    while i < len(rows):
        n = random.Random(seed + i).randint(1, 5)
        store.commit(Batch(rows=rows[i : i + n], cursors={"events:all@0": (f"{i + 1}-0", n)}))
        i += n
    store.close()
    kept, folded = _kept_and_folded(tmp_path / "b.duckdb")
    assert kept == folded
    assert set(kept) == set(module.CONVS)
    # And the reports over it: the same figures as over the store written in one commit.
    one = write_store(tmp_path / "one.duckdb", module.LOG, module.CONVS)
    with (
        duckdb.connect(str(tmp_path / "b.duckdb"), read_only=True) as batched,
        duckdb.connect(str(one), read_only=True) as whole,
    ):
        for name in REPORTS:
            assert Reports(batched).run(name) == Reports(whole).run(name), name


def test_a_batch_updates_a_conversation_already_in_the_table(tmp_path: Path) -> None:
    store = Store(tmp_path / "u.duckdb")
    convs = {"c1": ("telegram", "en", ["security"], 1)}
    first: Log = [
        ("c1", "security", "created", "02 10:00", {"prio": 2}),
        ("c1", "security", "claimed", "02 10:01", {"agent": "alice"}),
    ]
    store.commit(Batch(rows=rows_of(first, convs), cursors={"events:security@0": ("1-0", 2)}))
    row = store.con.execute(f"SELECT opened, first_reply, closed, agents FROM {convfacts.TABLE}").fetchall()
    assert row == [(_at("02 10:00"), None, None, ["alice"])]
    later: Log = [
        ("c1", "security", "replied", "02 10:05", {"by": "bob"}),
        ("c1", "security", "closed", "02 11:00", {"by": "bob"}),
        ("c1", "security", "closed", "02 09:00", {"by": "carol"}),  # late, and earlier: not the last close
        ("c1", "security", "closed", "02 12:00", {}),  # the last close, by nobody: closed_by is the last named
    ]
    rows = [(f"{r[0]}x", *r[1:]) for r in rows_of(later, convs)]
    store.commit(Batch(rows=rows, cursors={"events:security@0": ("2-0", 4)}))
    got = store.con.execute(
        f"SELECT opened, first_reply, first_agent, closed, closed_by, list_sort(agents) FROM {convfacts.TABLE}"
    ).fetchall()
    assert got == [(_at("02 10:00"), _at("02 10:05"), "bob", _at("02 12:00"), "bob", ["alice", "bob", "carol"])]
    store.close()
    kept, folded = _kept_and_folded(tmp_path / "u.duckdb")
    assert kept == folded


def _at(when: str) -> Any:
    with duckdb.connect() as con:
        return con.execute("SELECT epoch_ms(?::BIGINT)", [ms(when)]).fetchone()[0]  # type: ignore[index]


def test_a_failed_commit_leaves_the_table_as_it_was(tmp_path: Path) -> None:
    store = Store(tmp_path / "f.duckdb")
    convs = {"c1": ("telegram", "en", ["security"], 1)}
    rows = rows_of([("c1", "security", "created", "02 10:00", {"prio": 2})], convs)
    store.commit(Batch(rows=rows, cursors={"events:security@0": ("1-0", 1)}))
    before = store.con.execute(f"SELECT * FROM {convfacts.TABLE}").fetchall()
    closed = rows_of([("c1", "security", "closed", "02 11:00", {"by": "bob"})], convs)
    renamed = [(f"{closed[0][0]}x", *closed[0][1:])]
    # The close and a row exported twice: the duplicate fails the whole transaction, the close's fold too.
    with pytest.raises(duckdb.ConstraintException):
        store.commit(Batch(rows=[*renamed, *rows], cursors={"events:security@0": ("2-0", 2)}))
    assert store.con.execute(f"SELECT * FROM {convfacts.TABLE}").fetchall() == before
    store.close()


def test_a_store_made_before_the_table_gets_it_at_its_first_opening(tmp_path: Path) -> None:
    path = write_store(tmp_path / "old.duckdb", test_reports.LOG, test_reports.CONVS)
    with duckdb.connect(str(path)) as con:  # as a store of before this table was
        con.execute(f"DROP TABLE {convfacts.TABLE}")
    with duckdb.connect(str(path), read_only=True) as con:
        expected = {name: Reports(con).run(name) for name in REPORTS}  # read-only: a TEMP fold of its own
        assert not convfacts.exists(con)
    Store(path).close()  # the exporter's opening: the migration
    kept, folded = _kept_and_folded(path)
    assert kept == folded and set(kept) == set(test_reports.CONVS)
    with duckdb.connect(str(path), read_only=True) as con:
        assert convfacts.exists(con)
        assert {name: Reports(con).run(name) for name in REPORTS} == expected
    # Opened again: nothing folded twice.
    Store(path).close()
    assert _kept_and_folded(path)[0] == kept


async def test_the_exporter_keeps_it_over_real_streams(rt: Runtime, tmp_path: Path) -> None:
    """Routed traffic, claims and closes, exported in rounds of a few entries per stream (each
    conversation's events over several commits): the table is the whole fold."""
    await _route(rt, 120, users=15, tag="k")
    for group in ("security", "payments"):
        conv = await rt.conversations.claim(group, "alice")
        assert conv is not None
    exporter = Exporter(rt, AnalyticsSettings(db=tmp_path / "k.duckdb", batch=7))
    await exporter._open()
    await _export_all(exporter)
    await exporter.close()
    kept, folded = _kept_and_folded(tmp_path / "k.duckdb")
    assert kept == folded
    assert len(kept) == 15 and sum(len(r["agents"] or []) for r in kept.values()) == 2


def test_business_seconds_across_utc_midnight_are_the_calendars(tmp_path: Path) -> None:
    """Los Angeles office hours (09:00-18:00 local: 17:00-02:00 UTC, across UTC midnight) with a
    holiday: each conversation's first response (one agent each, so p50 is its own figure) is
    ``Calendar.business_seconds`` of its span, over spans of minutes to days."""
    tz = ZoneInfo("America/Los_Angeles")
    weekdays = tuple(((9 * 60, 18 * 60),) if d < 5 else () for d in range(7))
    office = Calendar(tz, weekdays, {date(2026, 11, 26): ((0, 1440),)})  # Thanksgiving closed
    rng = random.Random(7)
    log: Log = []
    convs = {}
    expected = {}
    for i in range(40):
        start = ms("02 00:00") + rng.randrange(0, 20 * 86_400_000, 60_000)
        end = start + rng.choice([60_000, 3_600_000, 86_400_000]) * rng.randint(1, 9)
        conv, agent = f"c{i}", f"agent{i}"
        convs[conv] = ("telegram", "en", [], None)
        log += [
            (conv, "la", "created", _when(start), {}),
            (conv, "la", "replied", _when(end), {"by": agent}),
        ]
        expected[agent] = office.business_seconds(
            datetime.fromtimestamp(start / 1000, UTC), datetime.fromtimestamp(end / 1000, UTC)
        )
    with duckdb.connect(str(write_store(tmp_path / "la.duckdb", log, convs)), read_only=True) as con:
        rows = Reports(con, lambda group: office).first_response(by="agent").rows
    assert {agent: p50 for agent, _, p50, _ in rows} == pytest.approx(expected)
    assert any(0 < s < 9 * 3600 for s in expected.values()) and any(s > 9 * 3600 for s in expected.values())


def _when(at_ms: int) -> str:
    """``eventlog``'s "DD HH:MM:SS" of an instant in November 2026."""
    at = datetime.fromtimestamp(at_ms / 1000, UTC)
    assert at.month == 11
    return at.strftime("%d %H:%M:%S")
