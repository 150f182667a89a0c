"""The analytics tables in PostgreSQL (issue 20, item 1): the exporter's second target.

DuckDB is the store the reports read (router/reports.py: its SQL is DuckDB's). A team that wants
the events where its other data is, or read by its BI tools from several machines, sets
``[analytics] postgres`` and a second exporter writes the same ``events``, ``cursors`` and ``gaps``
tables into PostgreSQL, with the same exactly-once argument as the DuckDB file
(router/exporter.py): each stream's cursor is saved in the transaction of the rows it covers, rows
are plain inserts under the ``event_id`` primary key, and a crash leaves both or neither.

The types are PostgreSQL's for DuckDB's: ``TEXT`` for VARCHAR, ``JSONB`` for JSON, ``TEXT[]`` for
VARCHAR[]; ``at`` is a ``TIMESTAMP`` in UTC as in the file. Rows go in with COPY (one per batch,
inside the transaction).

One writer per database, as DuckDB's file lock gives one per file: the store holds a session
advisory lock while open; a second exporter on the same database stands by (``StoreBusy``) until
the first one's connection ends.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

from router.exporter import Batch, StoreBusy, StoreFailed, tables_status

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    event_id TEXT PRIMARY KEY,
    stream TEXT NOT NULL,
    shard INTEGER NOT NULL,
    conv TEXT,
    type TEXT NOT NULL,
    "at" TIMESTAMP NOT NULL,
    "group" TEXT,
    channel TEXT,
    lang TEXT,
    agent TEXT,
    prio TEXT,
    data JSONB,
    tags TEXT[],
    sla INTEGER
);
CREATE TABLE IF NOT EXISTS cursors (
    stream TEXT PRIMARY KEY,
    last_id TEXT NOT NULL,
    rows BIGINT NOT NULL,
    updated TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS gaps (
    stream TEXT NOT NULL,
    after_id TEXT NOT NULL,
    first_id TEXT NOT NULL,
    exact BOOLEAN NOT NULL,
    found TIMESTAMP NOT NULL
);
"""
NOW_UTC = "(now() AT TIME ZONE 'UTC')"
SAVE_CURSOR = f"""
INSERT INTO cursors VALUES (%s, %s, %s, {NOW_UTC})
ON CONFLICT (stream) DO UPDATE SET last_id = excluded.last_id, rows = cursors.rows + excluded.rows,
    updated = excluded.updated
"""
INSERT_GAP = f"INSERT INTO gaps VALUES (%s, %s, %s, %s, {NOW_UTC})"
COPY_EVENTS = (
    'COPY events (event_id, stream, shard, conv, type, "at", "group", channel, lang, agent, prio, data, tags, sla)'
    " FROM STDIN"
)
# The one writer's lock: an arbitrary constant, the same in every Switchboard.
LOCK_ID = 0x5B0A_4D20


def redacted_url(url: str) -> str:
    """``url`` without its password (for logs and health records)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


@contextmanager
def _failing() -> Iterator[None]:
    # What the server says goes into the exporter's health record; the exporter retries.
    try:
        yield
    except psycopg.Error as exc:
        raise StoreFailed(f"PostgreSQL: {exc}") from exc


def _pg_row(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """An exporter row (router/exporter.py ``_row``: the time in ms, tags as JSON) in the table's
    types."""
    *head, at_ms, group, channel, lang, agent, prio, data, tags, sla = row
    at = datetime.fromtimestamp(at_ms / 1000, UTC).replace(tzinfo=None)
    return (*head, at, group, channel, lang, agent, prio, data, json.loads(tags) if tags is not None else None, sla)


class PgStore:
    """The tables in the database at ``url``: created if missing; the writer's lock taken at open."""

    def __init__(self, url: str) -> None:
        try:
            self.con = psycopg.connect(url, autocommit=True, connect_timeout=5)
        except psycopg.OperationalError as exc:
            # Not there now (down, restarting): the exporter retries, as for a held file.
            raise StoreBusy(f"PostgreSQL: {exc}") from exc
        try:
            locked = self.con.execute("SELECT pg_try_advisory_lock(%s)", [LOCK_ID]).fetchone()
            if not (locked and locked[0]):
                raise StoreBusy("another exporter writes to this PostgreSQL database")
            self.con.execute(SCHEMA)
        except BaseException:
            self.con.close()
            raise

    def usable(self) -> bool:
        """False once the connection broke (the server restarted): the exporter opens a new store,
        reading the cursors again."""
        return not (self.con.closed or self.con.broken)

    def cursors(self) -> dict[str, str]:
        with _failing():
            return {s: last for s, last in self.con.execute("SELECT stream, last_id FROM cursors").fetchall()}

    def commit(self, batch: Batch) -> None:
        with _failing(), self.con.transaction(), self.con.cursor() as cur:
            if batch.rows:
                with cur.copy(COPY_EVENTS) as copy:
                    for row in batch.rows:
                        copy.write_row(_pg_row(row))
            if batch.gaps:
                cur.executemany(INSERT_GAP, batch.gaps)
            cur.executemany(SAVE_CURSOR, [(s, last, n) for s, (last, n) in batch.cursors.items()])

    def status(self) -> dict[str, Any]:
        with _failing():
            return tables_status(self.con)

    def close(self) -> None:
        self.con.close()
