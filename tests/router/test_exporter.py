"""The analytics exporter (router/exporter.py): every event of the group event and press streams
into DuckDB exactly once, counted by event id against the streams themselves."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from router.config import AnalyticsSettings
from router.exporter import Batch, Exporter, Store, status
from router.redis import TRANSIENT_ERRORS
from router.runtime import Runtime
from router.worker import Workers
from tests.conftest import SWITCHBOARD, RedisProcess
from tests.router.helpers import drain, message


@pytest.fixture
def redis_proc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """A Redis of this module's own (overriding the session's): one test restarts it, and the
    session server, after most of the suite, holds every other test's keys (a longer restart,
    and every process of other tests on it would see the outage too)."""
    proc = RedisProcess(tmp_path_factory.mktemp("exporter-redis"))
    proc.start()
    yield proc
    proc.stop()


TEXTS = ["my account was hacked", "my deposit is missing", "how do I reset 2fa", "hello"]


async def _route(rt: Runtime, n: int, users: int, tag: str) -> None:
    msgs = [message(TEXTS[i % len(TEXTS)], user=f"{tag}{i % users}") for i in range(n)]
    for i in range(0, n, 500):
        await rt.inbox.append_many(msgs[i : i + 500])
    await drain(Workers(rt))


async def _stream_ids(rt: Runtime) -> set[str]:
    """Every entry of every event and press stream of every shard, named as the exporter names it."""
    out = set()
    for i, keys in enumerate(rt.shards.shard):
        names = [key.decode() async for key in rt.client.scan_iter(match=keys.events("*"), count=1000)]
        streams = {key.removeprefix(keys.prefix): key for key in names} | {"actions": keys.actions}
        for name, key in streams.items():
            out |= {f"{name}@{i}/{entry.decode()}" for entry, _ in await rt.client.xrange(key)}
    return out


def _rows(path: Path) -> list[str]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return [r[0] for r in con.execute("SELECT event_id FROM events").fetchall()]
    finally:
        con.close()


async def _export_all(exporter: Exporter) -> None:
    while await exporter.round():
        pass


@pytest.mark.cluster(shards=4)
async def test_every_event_once_then_catch_up(rt: Runtime, tmp_path: Path) -> None:
    await _route(rt, 300, users=40, tag="a")
    exporter = Exporter(rt, AnalyticsSettings(db=tmp_path / "a.duckdb", batch=50))
    await exporter._open()
    await _export_all(exporter)
    first = await _stream_ids(rt)
    assert len(first) >= 300  # a created or message event per routed message at least
    # The exporter stopped; more traffic meanwhile; a new exporter resumes from the stored cursors.
    await exporter.close()
    await _route(rt, 200, users=40, tag="b")
    exporter = Exporter(rt, AnalyticsSettings(db=tmp_path / "a.duckdb", batch=50))
    await exporter._open()
    await _export_all(exporter)
    assert exporter.exported == len(await _stream_ids(rt)) - len(first)
    await exporter.close()
    rows = _rows(tmp_path / "a.duckdb")
    assert sorted(rows) == sorted(await _stream_ids(rt))
    found = status(AnalyticsSettings(db=tmp_path / "a.duckdb"), tmp_path)
    assert found["rows"] == len(rows) and found["gaps"] == 0
    assert sum(c["rows"] for c in found["cursors"].values()) == len(rows)


async def test_row_fields(rt: Runtime, tmp_path: Path) -> None:
    await _route(rt, 1, users=1, tag="c")
    conv = await rt.conversations.claim("security", "alice")
    assert conv is not None
    exporter = Exporter(rt, AnalyticsSettings(db=tmp_path / "f.duckdb"))
    await exporter._open()
    await _export_all(exporter)
    await exporter.close()
    con = duckdb.connect(str(tmp_path / "f.duckdb"), read_only=True)
    got = con.execute(
        'SELECT type, conv, "group", channel, agent, prio, tags, sla FROM events WHERE conv = ? ORDER BY event_id',
        [conv],
    ).fetchall()
    con.close()
    assert got == [
        ("created", conv, "security", "telegram", None, "1", ["security", "lang:en"], None),
        ("claimed", conv, "security", "telegram", "alice", None, ["security", "lang:en"], None),
    ]


async def test_trimmed_past_the_cursor_is_a_reported_gap(rt: Runtime, tmp_path: Path) -> None:
    await _route(rt, 5, users=5, tag="d")
    exporter = Exporter(rt, AnalyticsSettings(db=tmp_path / "g.duckdb"))
    await exporter._open()
    await _export_all(exporter)
    assert exporter.gaps == 0
    await _route(rt, 5, users=5, tag="e")
    # What MAXLEN does to a stream whose exporter is down for longer than the cap.
    key = rt.keys.events("payments")
    await rt.client.xtrim(key, maxlen=1, approximate=False)
    await _export_all(exporter)
    await exporter.close()
    assert exporter.gaps == 1
    con = duckdb.connect(str(tmp_path / "g.duckdb"), read_only=True)
    (stream, after, first), *more = con.execute("SELECT stream, after_id, first_id FROM gaps").fetchall()
    con.close()
    assert not more
    assert stream == "events:payments@0"
    assert after < first and [first] == [e.decode() for e, _ in await rt.client.xrange(key)]


# -- the exporter as a process: SIGKILL mid-export, a Redis restart ----------------------------------


def _spawn(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as err:
        return subprocess.Popen([*SWITCHBOARD, "analytics", "export"], env=env, stdout=subprocess.DEVNULL, stderr=err)


async def _health(rt: Runtime, pid: int, service: str) -> dict[str, Any]:
    try:
        keys = await rt.client.keys(rt.keys.health("service", f"{service}@*-{pid}-*"))
        raw = await rt.client.get(keys[0]) if keys else None
    except TRANSIENT_ERRORS:  # the pool's connections to a restarted server fail once each
        return {}
    return json.loads(raw) if raw else {}


async def _wait(
    rt: Runtime,
    p: subprocess.Popen[bytes],
    log: Path,
    ok: str,
    seconds: float,
    check: Callable[[dict[str, Any]], bool],
    service: str = "exporter",
) -> dict[str, Any]:
    """``check`` holds for the health record of ``p``'s ``service`` (the exporter, or
    ``exporter-postgres``) within ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        h = await _health(rt, p.pid, service)
        if h and check(h):
            return h
        # An exporter that exited never gets there: say so now, with why, not after `seconds`.
        if p.poll() is not None:
            pytest.fail(f"exporter {p.pid} exited {p.returncode}: {(await asyncio.to_thread(log.read_text))[-2000:]}")
        assert time.monotonic() < deadline, f"{service} {p.pid}: not {ok} after {seconds}s: {h}"
        await asyncio.sleep(0.05)


async def exactly_once_across_sigkill_and_restarts(
    rt: Runtime,
    env: dict[str, str],
    redis_proc: RedisProcess,
    tmp_path: Path,
    rows: Callable[[], list[str]],
    service: str = "exporter",
    restart: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """An ``analytics export`` process killed mid-export, a second one catching up through
    ``restart`` (another server's, if given) and a Redis restart, with traffic after it: ``rows``
    (the event ids in the store) are then every stream entry, each once."""
    env = {
        **env,
        # Small transactions: the kill must land between two of them (or inside one).
        "SWITCHBOARD_ANALYTICS__BATCH": "1",
        "SWITCHBOARD_ANALYTICS__POLL_S": "0.1",
    }
    await _route(rt, 1500, users=300, tag="k")
    total = len(await _stream_ids(rt))
    a = _spawn(env, tmp_path / "a.log")
    try:
        await _wait(rt, a, tmp_path / "a.log", "exporting", 60, lambda h: int(h.get("exported", 0)) > 0, service)
    finally:
        os.kill(a.pid, signal.SIGKILL)
        a.wait()
    before = await asyncio.to_thread(rows)
    assert 0 < len(before) < total, "the kill must land mid-export"
    # The second exporter in larger transactions: it has to catch up, not to be killed (one
    # entry a transaction took it past the test's time limit on a CI machine).
    b = _spawn({**env, "SWITCHBOARD_ANALYTICS__BATCH": "200"}, tmp_path / "b.log")
    try:
        await _wait(rt, b, tmp_path / "b.log", "exporting", 60, lambda h: int(h.get("exported", 0)) > 0, service)
        if restart is not None:
            await restart()
        # Down for four heartbeats (SWITCHBOARD_WORKER__HEARTBEAT_S is 0.5), as a restart on a
        # loaded machine is: the exporter's health record is written while Redis is gone. That
        # ended the process (exit 1) once, and this test then timed out in CI (a restart of ~0.1 s
        # alone rarely met a heartbeat).
        redis_proc.stop()
        await asyncio.sleep(2)
        redis_proc.start()
        # Traffic after the restart, while the exporter catches up.
        for _ in range(50):
            try:
                await rt.client.ping()
                break
            except TRANSIENT_ERRORS:
                await asyncio.sleep(0.1)
        await _route(rt, 200, users=300, tag="k")
        routed_at = time.time()
        h = await _wait(
            rt,
            b,
            tmp_path / "b.log",
            "caught up",
            120,
            lambda h: (h.get("caught_up_at") or 0) > routed_at,  # type: ignore[operator]
            service,
        )
        assert h["gaps"] == 0
    finally:
        b.send_signal(signal.SIGTERM)
        b.wait(timeout=20)
    assert b.returncode == 0
    found = await asyncio.to_thread(rows)
    expected = await _stream_ids(rt)
    assert len(found) == len(set(found)), "no event twice"
    assert set(found) == expected, f"missing {len(expected - set(found))}, unexpected {len(set(found) - expected)}"
    assert len(expected) > total


async def test_exactly_once_across_sigkill_and_redis_restart(
    rt: Runtime, env: dict[str, str], redis_proc: RedisProcess, tmp_path: Path
) -> None:
    db = tmp_path / "x.duckdb"
    env = {**env, "SWITCHBOARD_ANALYTICS__DB": str(db)}
    await exactly_once_across_sigkill_and_restarts(rt, env, redis_proc, tmp_path, lambda: _rows(db))


def test_a_failed_commit_leaves_neither_rows_nor_cursor(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.duckdb")

    def row(entry: str) -> tuple[object, ...]:
        return (f"events:g@0/{entry}", "events:g", 0, "1", "created", 1, "g", None, None, None, "1", "{}", "[]", None)

    store.commit(Batch(rows=[row("1-0")], cursors={"events:g@0": ("1-0", 1)}))
    # A row exported twice is a bug: it fails the whole transaction, loudly, rather than being absorbed.
    with pytest.raises(duckdb.ConstraintException):
        store.commit(Batch(rows=[row("2-0"), row("1-0")], cursors={"events:g@0": ("2-0", 2)}))
    assert store.cursors() == {"events:g@0": "1-0"}
    assert store.status()["rows"] == 1
    store.close()


async def test_a_second_writer_stands_by_until_the_file_is_free(
    rt: Runtime, env: dict[str, str], tmp_path: Path
) -> None:
    db = tmp_path / "l.duckdb"
    await _route(rt, 3, users=3, tag="l")
    holder = duckdb.connect(str(db))  # another process's writer: this one holds DuckDB's file lock
    log = tmp_path / "p.log"
    p = _spawn({**env, "SWITCHBOARD_ANALYTICS__DB": str(db), "SWITCHBOARD_ANALYTICS__POLL_S": "0.1"}, log)
    try:
        h = await _wait(rt, p, log, "standing by", 60, lambda h: bool(h.get("standby")))
        assert "standby" in str(h["detail"]) and h["exported"] == 0
        holder.close()
        await _wait(rt, p, log, "exporting", 60, lambda h: not h.get("standby") and bool(h.get("caught_up_at")))
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=20)
    assert sorted(_rows(db)) == sorted(await _stream_ids(rt))
