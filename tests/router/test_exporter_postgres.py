"""The analytics tables in PostgreSQL (router/pgstore.py), against a real PostgreSQL server: the
same rows as the DuckDB file, exactly once across a SIGKILL of the exporter and a restart of
PostgreSQL and of Redis (counted by event id), one writer per database."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import psycopg
import pytest

from router.config import AnalyticsSettings
from router.exporter import Batch, Exporter, StoreBusy, StoreFailed
from router.pgstore import PgStore, redacted_url
from router.runtime import Runtime
from tests.conftest import RedisProcess
from tests.postgres import PostgresProcess
from tests.router.test_exporter import _export_all, _route, _stream_ids, exactly_once_across_sigkill_and_restarts
from tests.router.test_exporter import redis_proc as redis_proc  # this module restarts its Redis too


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresProcess]:
    server = PostgresProcess()
    server.start()
    yield server
    server.close()


@pytest.fixture
def pg_url(postgres: PostgresProcess) -> Iterator[str]:
    """A database of the test's own on the module's server."""
    name = f"t{os.getpid()}_{time.monotonic_ns()}"
    with psycopg.connect(postgres.url, autocommit=True) as con:
        con.execute(f"CREATE DATABASE {name}")
    yield postgres.url.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(postgres.url, autocommit=True) as con:
        con.execute(f"DROP DATABASE {name} WITH (FORCE)")


def _pg_ids(url: str) -> list[str]:
    with psycopg.connect(url) as con:
        return [r[0] for r in con.execute("SELECT event_id FROM events").fetchall()]


COLUMNS = 'event_id, stream, shard, conv, type, "at", "group", channel, lang, agent, prio, tags, sla'


@pytest.mark.cluster(shards=4)
async def test_the_same_rows_as_the_file(rt: Runtime, tmp_path: Path, pg_url: str) -> None:
    await _route(rt, 200, users=30, tag="p")
    await rt.conversations.claim("security", "alice")
    settings = AnalyticsSettings(db=tmp_path / "p.duckdb", batch=70)
    for exporter in (Exporter(rt, settings), Exporter(rt, settings, store=lambda: PgStore(pg_url))):
        await exporter._open()
        await _export_all(exporter)
        await exporter.close()
    con = duckdb.connect(str(tmp_path / "p.duckdb"), read_only=True)
    in_file = con.execute(f"SELECT {COLUMNS}, data FROM events ORDER BY event_id").fetchall()
    con.close()
    with psycopg.connect(pg_url) as pg:
        in_pg = pg.execute(f'SELECT {COLUMNS}, data FROM events ORDER BY event_id COLLATE "C"').fetchall()
        cursors = dict(pg.execute("SELECT stream, rows FROM cursors").fetchall())
    assert len(in_file) >= 201 and {r[0] for r in in_file} == await _stream_ids(rt)
    # JSON text from DuckDB, a parsed value from JSONB: compared as values.
    assert [(*r[:-1], json.loads(r[-1])) for r in in_file] == in_pg
    assert sum(cursors.values()) == len(in_pg)


async def test_one_writer_per_database(tmp_path: Path, pg_url: str) -> None:
    first = PgStore(pg_url)
    with pytest.raises(StoreBusy, match="another exporter"):
        PgStore(pg_url)
    first.close()  # the lock goes with the connection
    PgStore(pg_url).close()


async def test_a_failed_commit_leaves_neither_rows_nor_cursor(pg_url: str) -> None:
    store = PgStore(pg_url)

    def row(entry: str) -> tuple[object, ...]:
        return (f"events:g@0/{entry}", "events:g", 0, "1", "created", 1, "g", None, None, None, "1", "{}", "[]", None)

    store.commit(Batch(rows=[row("1-0")], cursors={"events:g@0": ("1-0", 1)}))
    with pytest.raises(StoreFailed, match="duplicate key"):
        store.commit(Batch(rows=[row("2-0"), row("1-0")], cursors={"events:g@0": ("2-0", 2)}))
    assert store.usable()  # the transaction failed, not the connection
    assert store.cursors() == {"events:g@0": "1-0"}
    assert store.status()["rows"] == 1
    store.close()


def test_the_url_in_health_records_has_no_password() -> None:
    assert redacted_url("postgresql://sb:s3cret@db.internal:5433/x") == "postgresql://sb:***@db.internal:5433/x"
    assert redacted_url("postgresql://sb@db/x") == "postgresql://sb@db/x"


async def test_exactly_once_across_sigkill_and_restarts(
    rt: Runtime,
    env: dict[str, str],
    redis_proc: RedisProcess,
    postgres: PostgresProcess,
    pg_url: str,
    tmp_path: Path,
) -> None:
    env = {**env, "SWITCHBOARD_ANALYTICS__DB": str(tmp_path / "x.duckdb"), "SWITCHBOARD_ANALYTICS__POSTGRES": pg_url}

    async def restart_postgres() -> None:
        # Under the exporter: its connection breaks; a new one, the cursors read again.
        await asyncio.to_thread(postgres.restart)

    await exactly_once_across_sigkill_and_restarts(
        rt, env, redis_proc, tmp_path, lambda: _pg_ids(pg_url), "exporter-postgres", restart_postgres
    )
