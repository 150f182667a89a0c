"""The archive of closed conversations (router/archive.py) with retention (router/retention.py),
against a real Redis (single server and cluster) and a real DuckDB file: a closed conversation is
archived, then deleted from Redis; never deleted before the archive holds it as it is.

Time is a number handed to the archiver's clock and to ``Retention.sweep``, never a sleep.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest

from router.archive import Archiver, Snapshot, read, store_id, write
from router.config import AnalyticsSettings, Settings
from router.exporter import Exporter
from router.keys import Keys
from router.retention import DAY_MS, Retention
from router.runtime import Runtime
from router.scripts import argv
from router.worker import Workers
from tests.router.helpers import drain, message

pytestmark = pytest.mark.cluster

HOUR_MS = 3_600_000


@dataclass
class Clock:
    now: int = 0

    def now_ms(self) -> int:
        return self.now


@dataclass
class Setup:
    rt: Runtime
    settings: Settings
    exporter: Exporter
    archiver: Archiver
    clock: Clock
    store: str  # the store id of the exporter's file

    def retention(self, keys: Keys | None = None) -> Retention:
        return Retention(self.rt.client, self.settings, "sweeper", keys=keys)

    async def alive(self, now: int) -> None:
        """This store's archiver runs at ``now``: its record refreshed, as every round does, and
        nothing archived."""
        await self.rt.client.hset(self.rt.keys.archive_stores, self.store, now)

    async def sweep(self, now: int) -> int:
        """A retention sweep at ``now`` while this store's archiver runs; how many conversations
        it deleted."""
        await self.alive(now)
        return (await self.retention().sweep(now)).conversations

    def rows(self) -> list[tuple[Any, ...]]:
        con = self.exporter.reader()
        assert con is not None
        try:
            return con.execute("SELECT conv, history FROM archive ORDER BY conv").fetchall()
        finally:
            con.close()

    def archived(self, cid: str) -> Any:
        con = self.exporter.reader()
        assert con is not None
        try:
            return read(con, cid)
        finally:
            con.close()

    async def round_at(self, now: int) -> int:
        """One archiver round at ``now``; how many conversations it archived."""
        before = self.archiver.archived
        self.clock.now = now
        while await self.archiver.round():
            pass
        return self.archiver.archived - before


def archive_settings(settings: Settings, tmp_path: Path) -> Settings:
    retention = settings.retention.model_copy(update={"archive": True, "archive_after_s": 3600.0})
    analytics = AnalyticsSettings(db=tmp_path / "store.duckdb")
    return settings.model_copy(update={"retention": retention, "analytics": analytics})


@pytest.fixture
async def setup(rt: Runtime, tmp_path: Path) -> AsyncIterator[Setup]:
    settings = archive_settings(rt.settings, tmp_path)
    exporter = Exporter(rt, settings.analytics)
    await exporter._open()  # holds the file, as in `switchboard run`
    clock = Clock()
    con = exporter.reader()
    assert con is not None
    store = store_id(con)
    con.close()
    try:
        archiver = Archiver(rt, exporter.reader, settings=settings, clock=clock)
        yield Setup(rt, settings, exporter, archiver, clock, store)
    finally:
        await exporter.close()


async def route(rt: Runtime, user: str, text: str = "my deposit is missing") -> str:
    await rt.inbox.append(message(text, user=user))
    await drain(Workers(rt))
    raw = await rt.client.get(
        rt.shards.shard[rt.shards.of_key("telegram", "bot1", user)].conv_key("telegram", "bot1", user)
    )
    assert raw is not None
    return str(raw.decode())


async def closed_at(rt: Runtime, cid: str) -> int:
    raw = await rt.client.hget(rt.shards.conv_keys(cid).conv(cid), "closed_ms")
    assert raw is not None
    return int(raw)


async def in_redis(rt: Runtime, cid: str) -> bool:
    return bool(await rt.client.exists(rt.shards.conv_keys(cid).conv(cid)))


async def test_archived_then_deleted_with_its_whole_history(setup: Setup) -> None:
    rt = setup.rt
    cid = await route(rt, "alice")
    reply = await rt.conversations.reply(cid, "we are looking into it", "agent-a")
    await rt.conversations.note(cid, "agent-a", "checked the chain")
    await rt.conversations.close(cid, "agent-a", "resolved")
    closed = await closed_at(rt, cid)
    history = await rt.conversations.history(cid)
    state = await rt.conversations.get(cid)

    assert await setup.round_at(closed + HOUR_MS - 1) == 0  # not due before archive_after_s
    assert await setup.round_at(closed + HOUR_MS) == 1
    assert await setup.round_at(closed + 2 * HOUR_MS) == 0  # archived as it is: not again

    assert await setup.sweep(closed + 31 * DAY_MS) == 1
    assert not await in_redis(rt, cid)
    marks = rt.shards.conv_keys(cid).archived(setup.archiver.store)
    assert not await rt.client.hexists(marks, cid)  # the mark goes too

    archived = setup.archived(cid)
    assert archived is not None
    assert archived.conv == state
    assert [(h.id, h.type, h.data) for h in archived.history] == [(h.id, h.type, h.data) for h in history]
    assert archived.deliveries == {reply: "queued"}
    assert archived.closed_ms == closed and archived.archived_ms == closed + HOUR_MS


async def test_a_conversation_not_archived_is_never_deleted(setup: Setup) -> None:
    rt = setup.rt
    cid = await route(rt, "bob")
    await rt.conversations.close(cid, "agent-a")
    closed = await closed_at(rt, cid)
    keys = rt.shards.conv_keys(cid)

    # Due for deletion, never archived (the archiver down, or its store held elsewhere): kept.
    assert await setup.sweep(closed + 31 * DAY_MS) == 0
    assert await in_redis(rt, cid)
    assert await rt.client.zscore(keys.archive_again(setup.store), cid) is not None  # handed to its archiver
    assert await rt.client.zscore(keys.closed, cid) is not None

    standby = Archiver(rt, lambda: None, settings=setup.settings, clock=Clock(closed + 2 * HOUR_MS))
    assert not await standby.round() and standby.standby and standby.archived == 0
    assert await setup.sweep(closed + 32 * DAY_MS) == 0
    assert await in_redis(rt, cid)

    assert await setup.round_at(closed + 32 * DAY_MS) == 1
    assert await rt.client.zcard(keys.archive_again(setup.store)) == 0
    assert await setup.sweep(closed + 32 * DAY_MS) == 1
    assert not await in_redis(rt, cid)


async def test_changed_after_archiving_is_archived_again_before_deleting(setup: Setup) -> None:
    rt = setup.rt
    cid = await route(rt, "carol")
    reply = await rt.conversations.reply(cid, "sent to your address", "agent-a")
    await rt.conversations.close(cid, "agent-a")
    closed = await closed_at(rt, cid)
    assert await setup.round_at(closed + HOUR_MS) == 1
    # The reply's delivery is recorded after the archive took the conversation.
    record = {"reply": reply, "status": "delivered", "detail": "", "at": closed + 2 * HOUR_MS, "entry": ""}
    await rt.scripts.conv(args=argv(rt.shards.conv_keys(cid).prefix, "delivery", cid, json.dumps(record)))

    assert await setup.sweep(closed + 31 * DAY_MS) == 0
    assert await in_redis(rt, cid)
    assert await setup.round_at(closed + 31 * DAY_MS) == 1
    assert await setup.sweep(closed + 31 * DAY_MS) == 1
    archived = setup.archived(cid)
    assert archived is not None and archived.deliveries == {reply: "delivered"}
    assert archived.history[-1].type == "delivery"


async def test_reopened_after_archiving_is_not_deleted_and_closed_again_has_one_row(setup: Setup) -> None:
    rt = setup.rt
    cid = await route(rt, "dave")
    await rt.conversations.close(cid, "agent-a")
    closed = await closed_at(rt, cid)
    assert await setup.round_at(closed + HOUR_MS) == 1
    assert await route(rt, "dave", "still nothing") == cid  # reopened (within the reopen window)

    assert await setup.sweep(closed + 31 * DAY_MS) == 0
    assert (await rt.conversations.get(cid)).status == "new"
    assert await setup.round_at(closed + 31 * DAY_MS) == 0  # open: nothing to archive

    await rt.conversations.close(cid, "agent-b")
    again = await closed_at(rt, cid)
    assert await setup.round_at(again + HOUR_MS) == 1
    history = await rt.conversations.history(cid)
    assert await setup.sweep(again + 31 * DAY_MS) == 1
    rows = setup.rows()
    assert [conv for conv, _ in rows] == [cid]
    assert [h["id"] for h in json.loads(rows[0][1])] == [h.id for h in history]
    archived = setup.archived(cid)
    assert archived is not None and archived.history[-1].data["by"] == "agent-b"
    assert [h.data.get("text") for h in archived.history if h.type == "inbound"] == [
        "my deposit is missing",
        "still nothing",
    ]


async def test_crash_between_commit_and_mark_archives_again_once(setup: Setup) -> None:
    rt = setup.rt
    cid = await route(rt, "erin")
    await rt.conversations.close(cid, "agent-a")
    closed = await closed_at(rt, cid)
    keys = rt.shards.conv_keys(cid)
    shard = rt.shards.of_conv(cid)

    # The round's first steps alone: the snapshot, then the commit; the process dies before the mark.
    con = setup.exporter.reader()
    assert con is not None
    replies = await rt.scripts.archive(args=argv(keys.prefix, store_id(con), cid))
    write(con, [Snapshot.parse(shard, r) for r in replies], closed + HOUR_MS)
    assert len(setup.rows()) == 1
    assert not await rt.client.hexists(keys.archived(store_id(con)), cid)
    con.close()
    assert await setup.sweep(closed + 31 * DAY_MS) == 0  # not marked: kept

    # Reopened and closed again before the archiver's next round: archived again, one row.
    assert await route(rt, "erin", "hello again") == cid
    await rt.conversations.close(cid, "agent-a")
    again = await closed_at(rt, cid)
    assert await setup.round_at(again + HOUR_MS) == 1
    rows = setup.rows()
    assert len(rows) == 1
    assert [h["id"] for h in json.loads(rows[0][1])] == [h.id for h in await rt.conversations.history(cid)]
    assert await setup.sweep(again + 31 * DAY_MS) == 1


async def test_every_store_holds_it_before_it_is_deleted(setup: Setup, tmp_path: Path) -> None:
    """Two machines, a store each (as for the events): deleted once both hold it."""
    rt = setup.rt
    cid = await route(rt, "gail")
    await rt.conversations.close(cid, "agent-a")
    closed = await closed_at(rt, cid)
    other = Exporter(rt, AnalyticsSettings(db=tmp_path / "other.duckdb"))
    await other._open()
    try:
        assert await setup.round_at(closed + 30 * DAY_MS) == 1
        # The second store's archiver runs, and has not archived it yet (its file was busy, say).
        second = Archiver(rt, other.reader, settings=setup.settings, clock=Clock(closed))
        assert not await second.round() and second.archived == 0  # registers its store
        await rt.client.hset(rt.keys.archive_stores, second.store, closed + 30 * DAY_MS)
        assert second.store and second.store != setup.archiver.store
        assert await setup.sweep(closed + 31 * DAY_MS) == 0
        assert await in_redis(rt, cid)
        keys = rt.shards.conv_keys(cid)  # handed back to the store that lacks it only
        assert await rt.client.zscore(keys.archive_again(second.store), cid) is not None
        assert await rt.client.zscore(keys.archive_again(setup.store), cid) is None

        second.clock = Clock(closed + 31 * DAY_MS)
        assert not await second.round() and second.archived == 1
        assert await setup.sweep(closed + 31 * DAY_MS) == 1
        con = other.reader()
        assert con is not None
        try:
            assert read(con, cid) is not None
        finally:
            con.close()
    finally:
        await other.close()


async def test_a_store_gone_for_good_is_no_longer_waited_for(setup: Setup) -> None:
    rt = setup.rt
    cid = await route(rt, "hugo")
    await rt.conversations.close(cid, "agent-a")
    closed = await closed_at(rt, cid)
    assert await setup.round_at(closed + 31 * DAY_MS) == 1
    # Another store's archiver last ran 6 days before the sweep: waited for ...
    await rt.client.hset(rt.keys.archive_stores, "elsewhere", closed + 25 * DAY_MS)
    assert await setup.sweep(closed + 31 * DAY_MS) == 0
    # ... 8 days before it (archive_forget_store_days = 7): no longer.
    await rt.client.hset(rt.keys.archive_stores, "elsewhere", closed + 23 * DAY_MS)
    assert await setup.sweep(closed + 31 * DAY_MS) == 1


async def test_nothing_is_deleted_before_an_archiver_ran(setup: Setup) -> None:
    rt = setup.rt
    cid = await route(rt, "ines")
    await rt.conversations.close(cid, "agent-a")
    closed = await closed_at(rt, cid)
    assert await rt.client.hlen(rt.keys.archive_stores) == 0
    assert (await setup.retention().sweep(closed + 31 * DAY_MS)).conversations == 0
    assert await in_redis(rt, cid)


async def test_archive_off_deletes_as_before(rt: Runtime, tmp_path: Path) -> None:
    cid = await route(rt, "frank")
    await rt.conversations.close(cid, "agent-a")
    closed = await closed_at(rt, cid)
    assert (await Retention(rt.client, rt.settings, "sweeper").sweep(closed + 31 * DAY_MS)).conversations == 1
    assert not await in_redis(rt, cid)


async def test_retention_goes_past_the_conversations_it_keeps(setup: Setup) -> None:
    """Kept ones stay at the head of the index: the next calls of the sweep skip them."""
    rt = setup.rt
    ids = [await route(rt, f"user{i}") for i in range(5)]
    for cid in ids:
        await rt.conversations.close(cid, "agent-a")
    last = max([await closed_at(rt, cid) for cid in ids])
    assert await setup.round_at(last + HOUR_MS) == 5
    for cid in ids[:3]:  # changed since archived (as a survey's rating changes it): kept
        await rt.client.hset(rt.shards.conv_keys(cid).conv(cid), "csat_state", "rated")
    settings = setup.settings.model_copy(update={"retention": setup.settings.retention.model_copy(update={"batch": 2})})
    await setup.alive(last + 31 * DAY_MS)
    result = await Retention(rt.client, settings, "sweeper").sweep(last + 31 * DAY_MS)
    assert result.conversations == 2
    assert [await in_redis(rt, cid) for cid in ids] == [True, True, True, False, False]


def test_archive_after_must_come_before_deletion() -> None:
    from router.config import RetentionSettings

    with pytest.raises(ValueError, match="archive_after_s"):
        RetentionSettings(archive=True, closed_conversation_days=1, archive_after_s=86400)
    RetentionSettings(archive=False, closed_conversation_days=1, archive_after_s=86400)


def test_the_store_without_an_archive_reads_nothing(tmp_path: Path) -> None:
    con = duckdb.connect(str(tmp_path / "empty.duckdb"))
    try:
        assert read(con, "1") is None
    finally:
        con.close()


@pytest.mark.cluster(shards=4)
async def test_every_shard_is_archived_then_swept(setup: Setup) -> None:
    rt = setup.rt
    ids = [await route(rt, f"shard-user{i}") for i in range(12)]
    for cid in ids:
        await rt.conversations.close(cid, "agent-a")
    last = max([await closed_at(rt, cid) for cid in ids])
    if rt.shards.count > 1:
        assert len({rt.shards.of_conv(cid) for cid in ids}) > 1
    assert await setup.round_at(last + HOUR_MS) == len(ids)
    await setup.alive(last + 31 * DAY_MS)
    deleted = 0
    for keys in rt.shards.shard:  # each shard's retention, as each shard's worker runs it
        deleted += (await setup.retention(keys).sweep(last + 31 * DAY_MS)).conversations
    assert deleted == len(ids)
    assert [await in_redis(rt, cid) for cid in ids] == [False] * len(ids)
    assert sorted(conv for conv, _ in setup.rows()) == sorted(ids)
