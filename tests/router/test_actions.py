"""Button presses (router/actions.py): kept once per platform press, read by a consumer group,
handed again after a restart until acknowledged, taken over from a dead consumer."""

from __future__ import annotations

import pytest

from router.actions import Actions, Press
from router.runtime import Runtime

pytestmark = pytest.mark.cluster(shards=4)


def press(n: int, *, data: str = "kb:1:solved", user_key: str | None = None) -> Press:
    return Press(
        id=f"cq{n}", channel="telegram", account="bot", conversation_key=user_key or f"chat{n}",
        user=f"u{n}", data=data, at=1_700_000_000.0 + n,
    )  # fmt: skip


def actions(rt: Runtime) -> Actions:
    return Actions(rt.client, rt.shards, rt.scripts)


async def test_a_press_delivered_twice_is_kept_once_and_read_once(rt: Runtime) -> None:
    store = actions(rt)
    reader = store.reader("kb", "a")
    await reader.start()
    assert [await store.append(press(n)) for n in range(6)] == [True] * 6
    assert await store.append(press(3)) is False  # the platform sent it again
    got = await reader.read(block_ms=10)
    assert sorted(p.press.id for p in got) == [f"cq{n}" for n in range(6)]
    assert got[0].press == press(int(got[0].press.id[2:]))
    await reader.ack(got)
    assert await reader.read(block_ms=10) == []


async def test_unacknowledged_presses_come_again_after_a_restart_and_from_a_dead_consumer(rt: Runtime) -> None:
    store = actions(rt)
    first = store.reader("kb", "a")
    await first.start()
    for n in range(3):
        await store.append(press(n))
    taken = await first.read(block_ms=10)
    assert len(taken) == 3
    await first.ack(taken[:1])

    again = store.reader("kb", "a")  # the same consumer, restarted: its own pending first
    assert sorted(p.press.id for p in await again.read(block_ms=10)) == sorted(p.press.id for p in taken[1:])

    other = store.reader("kb", "b", claim_idle_ms=0)  # "a" died: its presses are taken over
    claimed = await other.read(block_ms=10)
    assert sorted(p.press.id for p in claimed) == sorted(p.press.id for p in taken[1:])
    await other.ack(claimed)
    assert await other.read(block_ms=10) == []


async def test_each_consumer_group_reads_every_press(rt: Runtime) -> None:
    store = actions(rt)
    readers = [store.reader(group, "x") for group in ("kb", "csat")]
    for reader in readers:
        await reader.start()
    await store.append(press(1, data="csat:9:5"))
    for reader in readers:
        assert [p.press.data for p in await reader.read(block_ms=10)] == ["csat:9:5"]


def test_button_data_is_bounded_ascii() -> None:
    import msgspec

    from router.model import Button

    for data in ("", "x" * 65, "ä", "with space"):
        with pytest.raises(msgspec.ValidationError):
            msgspec.convert({"label": "ok", "data": data}, Button)
    assert msgspec.convert({"label": "ok", "data": "kb:1:solved"}, Button).data == "kb:1:solved"
