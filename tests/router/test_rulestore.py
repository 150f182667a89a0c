"""Publishing and picking up a rule set compile in a thread: the event loop keeps running meanwhile."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import pytest

from router.rulestore import Compiler, EngineHolder, RuleStore
from router.runtime import Runtime
from rules import Engine

pytestmark = pytest.mark.cluster

SOURCE = """\
version: 1
groups: [{id: general}, {id: payments}]
defaults: {group: general}
rules:
  - {id: pay, when: {contains_any: [withdraw]}, then: {route: payments}}
"""
# Only a guard against hanging: the compile below waits for the loop, which on the loop never runs.
GUARD_S = 10


class LoopWatch:
    """A ticker task on the event loop, and a compiler that returns only once the ticker has
    ticked after the compile began, recording whether it did: a compile that runs on the loop
    itself holds the ticker back until the guard runs out."""

    def __init__(self) -> None:
        self.ticked = threading.Event()
        self.loop_ran_during_compile: list[bool] = []

    def compiler(self) -> Compiler:
        def compile_(source: str, filename: str) -> Engine:
            self.ticked.clear()
            self.loop_ran_during_compile.append(self.ticked.wait(GUARD_S))
            return Engine.from_yaml(source, filename)

        return compile_

    async def tick(self) -> None:
        while True:
            await asyncio.sleep(0.001)
            self.ticked.set()


@pytest.fixture
async def watch() -> AsyncIterator[LoopWatch]:
    watch = LoopWatch()
    ticker = asyncio.create_task(watch.tick())
    yield watch
    ticker.cancel()


async def test_publish_compiles_while_the_event_loop_runs(rt: Runtime, watch: LoopWatch) -> None:
    store = RuleStore(rt.client, rt.keys, watch.compiler())
    published = await store.publish(SOURCE, "admin")
    assert watch.loop_ran_during_compile == [True]
    assert published.version == Engine.from_yaml(SOURCE).version


async def test_a_worker_picks_a_new_version_up_while_the_event_loop_runs(rt: Runtime, watch: LoopWatch) -> None:
    await RuleStore(rt.client, rt.keys).publish(SOURCE, "admin")
    holder = EngineHolder(RuleStore(rt.client, rt.keys, watch.compiler()), Engine.default())
    assert await holder.refresh() is True
    assert watch.loop_ran_during_compile == [True]
    assert holder.engine.rule_count == 1
