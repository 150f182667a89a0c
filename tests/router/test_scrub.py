"""`switchboard scrub`: after the rewrite, deleted data is gone from the files on disk."""

from __future__ import annotations

import asyncio
from pathlib import Path

from router.runtime import Runtime
from router.scrub import rewrite_aof
from tests.conftest import RedisProcess


def _on_disk(data_dir: Path, needle: bytes) -> list[str]:
    return [p.name for p in data_dir.rglob("*") if p.is_file() and needle in p.read_bytes()]


async def test_scrub_removes_deleted_data_from_the_aof(rt: Runtime, redis_proc: RedisProcess) -> None:
    needle = f"leaked-{rt.keys.prefix}-correct-horse".encode()
    key = rt.keys.prefix + "scrub-test"
    await rt.client.set(key, needle)
    await rt.client.delete(key)
    data_dir = Path(redis_proc.server.data_dir)
    # Written with appendfsync everysec: wait for the write to reach the file.
    for _ in range(50):
        if _on_disk(data_dir, needle):
            break
        await asyncio.sleep(0.05)
    assert _on_disk(data_dir, needle), "the deleted value is in the AOF before the scrub"
    done = await rewrite_aof(rt.client)
    assert done.aof_enabled
    assert not _on_disk(data_dir, needle)
