"""Published rule sets in Redis: versioned, with author, time and diff; rollback is one step.

A rule set is compiled before it is stored, so a bad file is refused and the running version
stays in force. Workers poll the active version number and swap engines without a restart.
Compiling runs in a thread (``RuleStore.compile``): a 10,000-rule set takes over a second, which
on the event loop would stall every request and consumer the process serves.
Publishing, rollback, the log and diffs are router/published.py's, shared with the SLA policies.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import redis.asyncio as aioredis

from router.keys import Keys
from router.published import Versions
from rules import Engine

if TYPE_CHECKING:
    from router.modelstore import ModelHolder

log = logging.getLogger("switchboard.rules")


#: Validates and compiles a rule file (source, filename); raises ``RuleSetError``.
Compiler = Callable[[str, str], Engine]


class RuleStore(Versions):
    def __init__(
        self,
        client: aioredis.Redis,
        keys: Keys,
        compiler: Compiler = Engine.from_yaml,
        before_publish: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(client, keys, "rules", "rule set")
        self._compiler = compiler
        # E.g. follow the live triage model first: a process that never routed (the CLI) must
        # validate a rule set against the model the workers use (router/modelstore.py).
        self._before_publish = before_publish

    async def compile(self, source: str, filename: str) -> Engine:
        """Validate and compile ``source`` in a thread, so the event loop keeps running."""
        return await asyncio.to_thread(self._compiler, source, filename)

    async def _checked(self, source: str, filename: str) -> str:
        """Compiled as the workers will (``RuleSetError`` with every error)."""
        if self._before_publish is not None:
            await self._before_publish()
        return (await self.compile(source, filename)).version


class EngineHolder:
    """The engine a worker uses now: the published one if any, else the configured file or default;
    compiled with the live triage model of ``models`` (router/modelstore.py) when given, and
    compiled again (``fallback`` builds the unpublished one) when that model changes."""

    def __init__(
        self,
        store: RuleStore,
        initial: Engine,
        clock: Callable[[], float] = time.monotonic,
        *,
        models: ModelHolder | None = None,
        fallback: Callable[[], Engine] | None = None,
    ) -> None:
        self._store = store
        self._number: int | None = None
        self._clock = clock
        self._checked: float | None = None
        self._models = models
        self._model = models.live if models is not None else None  # the one the engine was built with
        self._fallback = fallback
        self.engine = initial

    async def current(self, *, fresh: bool = False) -> Engine:
        """The engine in force, its version checked at most once a second (``fresh``: now, e.g.
        after a publish): for readers that ask per request (the console, the CLI)."""
        now = self._clock()
        if fresh or self._checked is None or now - self._checked >= 1.0:
            self._checked = now
            await self.refresh()
        return self.engine

    async def refresh(self) -> bool:
        """Swap in the active published version when it or the live model changed; a broken one is
        logged and skipped."""
        remodel = False
        if self._models is not None:
            await self._models.refresh()
            remodel = self._models.live is not self._model
        number = await self._store.active_number()
        if not remodel and (number is None or number == self._number):
            return False
        model = self._models.live if self._models is not None else None
        try:
            if number is not None:
                published = await self._store.get(number)
                engine = await self._store.compile(published.source, f"published-v{number}")
            elif self._fallback is not None:
                engine = await asyncio.to_thread(self._fallback)
            else:
                return False
        except Exception:  # the old engine stays in force whatever went wrong
            log.exception("rule set %s does not compile; keeping %s", number or "(configured)", self.engine.version)
            self._number, self._model = number, model
            return False
        self.engine, self._number, self._model = engine, number, model
        settle_heap()
        log.info("now routing with rule set %s (%s)", number or "(configured)", engine.version)
        return True


def settle_heap() -> None:
    """Move the long-lived objects (the compiled engine: ~70k of them) out of the collector's view.

    A full collection over them takes ~20 ms, which showed as the p99 of routing latency; frozen,
    they are never scanned again. Called after an engine is built; the previous engine is released
    by unfreezing, collecting once, then freezing again.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()
