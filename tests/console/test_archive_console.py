"""The console shows a conversation retention deleted from Redis from the archive (router/archive.py):
its page and the API's conversation, read-only and marked archived, to the agents of its group only;
and says so clearly when this process cannot read the store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from router.archive import Archiver
from router.config import Settings
from router.exporter import Exporter
from router.retention import DAY_MS, Retention
from router.runtime import Runtime
from router.weekly import store_opener
from tests.console.conftest import Served, serving
from tests.router.test_archive import Clock, archive_settings, closed_at, in_redis

pytestmark = pytest.mark.cluster


@pytest.fixture
async def exporter(rt: Runtime, web_settings: Settings, tmp_path: Path) -> AsyncIterator[Exporter]:
    export = Exporter(rt, archive_settings(web_settings, tmp_path).analytics)
    await export._open()  # holds the file, as in `switchboard run`
    try:
        yield export
    finally:
        await export.close()


@pytest.fixture
async def served(rt: Runtime, web_settings: Settings, tmp_path: Path, exporter: Exporter) -> AsyncIterator[Served]:
    settings = archive_settings(web_settings, tmp_path)
    async with serving(
        rt, settings, store_opener(settings.analytics.path(settings.redis.data_dir), exporter)
    ) as console:
        yield console


async def _archived_and_deleted(served: Served, exporter: Exporter, tmp_path: Path) -> tuple[str, str, list[str]]:
    """A conversation replied to, closed, archived and deleted from Redis: its id, group and the
    types of its history as Redis had it."""
    rt = served.rt
    cid = await served.route("my withdrawal never arrived", user="zoe")
    await rt.conversations.reply(cid, "we found it, it is on its way", "agent-a")
    await rt.conversations.close(cid, "agent-a", "resolved")
    group = (await rt.conversations.get(cid)).group
    types = [h.type for h in await rt.conversations.history(cid)]
    closed = await closed_at(rt, cid)
    settings = archive_settings(rt.settings, tmp_path)
    # The archiver runs until the sweep (retention waits for the stores whose archivers run).
    archiver = Archiver(rt, exporter.reader, settings=settings, clock=Clock(closed + 31 * DAY_MS))
    assert not await archiver.round() and archiver.archived == 1
    assert (await Retention(rt.client, settings, "sweeper").sweep(closed + 31 * DAY_MS)).conversations == 1
    assert not await in_redis(rt, cid)
    return cid, group, types


async def test_a_deleted_conversation_is_shown_from_the_archive(
    served: Served, exporter: Exporter, tmp_path: Path
) -> None:
    cid, group, types = await _archived_and_deleted(served, exporter, tmp_path)
    await served.user("ann", groups=(group,))
    token = await served.user("olga", groups=("nobody-else",))

    client, _ = await served.browser_session("ann")
    try:
        page = await client.get(f"/conversations/{cid}")
        assert page.status_code == 200, page.text
        assert "archived" in page.text and "From the archive" in page.text
        assert "my withdrawal never arrived" in page.text and "we found it, it is on its way" in page.text
        assert 'action="/conversations/' + cid + '/reply"' not in page.text  # read-only
        assert "data-live-url" not in page.text
        timeline = await client.get(f"/conversations/{cid}/timeline")
        assert timeline.status_code == 200 and "we found it, it is on its way" in timeline.text
    finally:
        await client.aclose()

    api_token = await served.console.users.issue_token("ann")
    async with served.api(api_token) as api:
        got = await api.get(f"/api/conversations/{cid}")
        assert got.status_code == 200, got.text
        body = got.json()
        assert body["archived"] is not None and body["archived"]["archived_ms"] > body["archived"]["closed_ms"]
        assert body["conversation"]["status"] == "closed" and body["conversation"]["group"] == group
        assert [h["type"] for h in body["history"]] == types
        assert list(body["deliveries"].values()) == ["queued"]
        # Read-only: the writes find no conversation in Redis.
        refused = await api.post(f"/api/conversations/{cid}/note", json={"text": "late note"})
        assert refused.status_code == 404

    async with served.api(token) as outsider:  # an agent outside its group: not disclosed
        assert (await outsider.get(f"/api/conversations/{cid}")).status_code == 404


async def test_no_archive_readable_here_says_so(
    rt: Runtime, served: Served, exporter: Exporter, web_settings: Settings, tmp_path: Path
) -> None:
    cid, _, _ = await _archived_and_deleted(served, exporter, tmp_path)
    settings = archive_settings(web_settings, tmp_path)
    # A console without the exporter: the file is held (here by this process's own exporter, as by
    # another process's in `switchboard web`), so a read-only opening is refused.
    async with serving(rt, settings, store_opener(settings.analytics.path(settings.redis.data_dir))) as elsewhere:
        token = await served.console.users.issue_token("admin")
        async with elsewhere.api(token) as api:
            got = await api.get(f"/api/conversations/{cid}")
    assert got.status_code == 404
    assert "not in Redis, and the archive cannot be read by this process" in got.json()["error"]
