"""Published rule sets in Redis: versioned, with author, time and diff; rollback is one step.

A rule set is compiled before it is stored, so a bad file is refused and the running version
stays in force. Workers poll the active version number and swap engines without a restart.
Compiling runs in a thread (``RuleStore.compile``): a 10,000-rule set takes over a second, which
on the event loop would stall every request and consumer the process serves.
Publish and rollback take a request id and are safe to send twice (router/requests.py): a repeat
returns the version the first one made active, and makes no second version or log entry.
"""

from __future__ import annotations

import asyncio
import difflib
import gc
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from router.errors import NotFound
from router.keys import Keys
from router.requests import retry_once, run_once
from rules import Engine

if TYPE_CHECKING:
    from router.modelstore import ModelHolder

log = logging.getLogger("switchboard.rules")


@dataclass(frozen=True, slots=True)
class Published:
    number: int
    version: str
    author: str
    at: float
    comment: str
    source: str


#: Validates and compiles a rule file (source, filename); raises ``RuleSetError``.
Compiler = Callable[[str, str], Engine]


class RuleStore:
    def __init__(
        self,
        client: aioredis.Redis,
        keys: Keys,
        compiler: Compiler = Engine.from_yaml,
        before_publish: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._client = client
        self._keys = keys
        self._compiler = compiler
        # E.g. follow the live triage model first: a process that never routed (the CLI) must
        # validate a rule set against the model the workers use (router/modelstore.py).
        self._before_publish = before_publish

    async def compile(self, source: str, filename: str) -> Engine:
        """Validate and compile ``source`` in a thread, so the event loop keeps running."""
        return await asyncio.to_thread(self._compiler, source, filename)

    async def active_number(self) -> int | None:
        raw = await self._client.get(self._keys.rules_active)
        return int(raw) if raw else None

    async def get(self, number: int) -> Published:
        data = await self._client.hgetall(self._keys.rules_version(number))
        if not data:
            raise NotFound(f"rule set version {number}")
        d = {k.decode(): v.decode() for k, v in data.items()}
        return Published(number, d["version"], d["author"], float(d["at"]), d.get("comment", ""), d["source"])

    async def active(self) -> Published | None:
        number = await self.active_number()
        return await self.get(number) if number is not None else None

    async def publish(
        self,
        source: str,
        author: str,
        comment: str = "",
        filename: str = "<rules>",
        request_id: str | None = None,
    ) -> Published:
        """Validate (raises RuleSetError with every error) and make ``source`` the active rule set."""
        if self._before_publish is not None:
            await self._before_publish()
        engine = await self.compile(source, filename)
        at = time.time()

        async def stage(pipe: Pipeline) -> int:
            # Numbered inside the transaction, not by INCR before it: a run that does not commit
            # leaves no gap, and rollback's "the version before" stays number - 1.
            number = int(await pipe.get(self._keys.rules_seq) or 0) + 1
            pipe.multi()
            pipe.set(self._keys.rules_seq, number)
            pipe.hset(
                self._keys.rules_version(number),
                mapping={"source": source, "author": author, "at": at, "version": engine.version, "comment": comment},
            )
            pipe.set(self._keys.rules_active, number)
            pipe.xadd(
                self._keys.rules_log,
                {
                    "action": "publish",
                    "number": number,
                    "version": engine.version,
                    "author": author,
                    "at": at,
                    "comment": comment,
                },
            )
            return number

        number = await self._once(request_id, stage)
        published = await retry_once(lambda: self.get(number), str(number))
        log.info("rule set %s (%s) published by %s", number, published.version, author)
        return published

    async def rollback(self, author: str, to: int | None = None, request_id: str | None = None) -> Published:
        """Make an earlier version active again (the one before the active one by default)."""

        async def stage(pipe: Pipeline) -> int:
            raw = await pipe.get(self._keys.rules_active)
            current = int(raw) if raw else None
            target = to
            if target is None:
                if current is None or current <= 1:
                    raise NotFound("no earlier rule set version to roll back to")
                target = current - 1
            version = await pipe.hget(self._keys.rules_version(target), "version")
            if version is None:
                raise NotFound(f"rule set version {target}")
            pipe.multi()
            pipe.set(self._keys.rules_active, target)
            pipe.xadd(
                self._keys.rules_log,
                {
                    "action": "rollback",
                    "number": target,
                    "version": version.decode(),
                    "author": author,
                    "at": time.time(),
                    "comment": f"from {current}",
                },
            )
            return target

        number = await self._once(request_id, stage)
        return await retry_once(lambda: self.get(number), str(number))

    async def _once(self, request_id: str | None, stage: Callable[[Pipeline], Awaitable[int]]) -> int:
        return await run_once(
            self._client, self._keys, request_id, (self._keys.rules_active, self._keys.rules_seq), stage
        )

    async def log(self, count: int = 50) -> list[dict[str, str]]:
        entries = await self._client.xrevrange(self._keys.rules_log, count=count)
        return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in entries]

    async def diff(self, a: int, b: int) -> str:
        old, new = await self.get(a), await self.get(b)
        return "".join(
            difflib.unified_diff(
                old.source.splitlines(keepends=True),
                new.source.splitlines(keepends=True),
                f"v{a}",
                f"v{b}",
            )
        )


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
