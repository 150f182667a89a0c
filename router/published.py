"""Versioned, published texts in Redis: rule sets, SLA and assignment policies (DESIGN.md: "one
mechanism serves them all").

A version is validated by its store (the subclass) before it is published, so a bad text is
refused and the active version stays in force. Publish numbers the version inside the transaction
and records author, time, comment and the text's digest; rollback makes an earlier number active
again; both take a request id and are safe to send twice (router/requests.py): a repeat returns
the version the first one made active, and makes no second version or log entry. Readers poll the
active number and switch without a restart; ``Compiled`` keeps each version a process uses
compiled once.
"""

from __future__ import annotations

import difflib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from router.errors import NotFound
from router.keys import Keys
from router.requests import retry_once, run_once

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Published:
    number: int
    version: str
    author: str
    at: float
    comment: str
    source: str


class Versions(ABC):
    """The published versions of one ``kind`` (its keys ``{kind}:active``, ``{kind}:v:{n}``,
    ``{kind}:log``, ``{kind}:seq``); ``noun`` names it in errors and logs ("rule set"). A store
    says how a text is validated (``_checked``)."""

    def __init__(self, client: aioredis.Redis, keys: Keys, kind: str, noun: str) -> None:
        self._client = client
        self._keys = keys
        self._noun = noun
        self._active = keys.published_active(kind)
        self._seq = keys.published_seq(kind)
        self._log = keys.published_log(kind)
        self._kind = kind
        # Each kind logs under its own name (switchboard.rules, .sla, .assignment), so a filter set
        # for one keeps working.
        self._logger = logging.getLogger(f"switchboard.{kind}")

    def _version_key(self, number: int) -> str:
        return self._keys.published_version(self._kind, number)

    async def active_number(self) -> int | None:
        raw = await self._client.get(self._active)
        return int(raw) if raw else None

    async def get(self, number: int) -> Published:
        data = await self._client.hgetall(self._version_key(number))
        if not data:
            raise NotFound(f"{self._noun} version {number}")
        d = {k.decode(): v.decode() for k, v in data.items()}
        return Published(number, d["version"], d["author"], float(d["at"]), d.get("comment", ""), d["source"])

    async def active(self) -> Published | None:
        number = await self.active_number()
        return await self.get(number) if number is not None else None

    @abstractmethod
    async def _checked(self, source: str, filename: str) -> str:
        """Validate ``source`` whole, raising the store's error (a ``RuleSetError``) with every
        reason; its version digest."""

    async def publish(
        self,
        source: str,
        author: str,
        comment: str = "",
        filename: str | None = None,
        request_id: str | None = None,
    ) -> Published:
        """Validate ``source`` (``filename`` names it in errors, default ``<{kind}>``) and make it
        the active version; a refused text raises and the active version stays."""
        version = await self._checked(source, filename or f"<{self._kind}>")
        at = time.time()

        async def stage(pipe: Pipeline) -> int:
            # Numbered inside the transaction, not by INCR before it: a run that does not commit
            # leaves no gap, and rollback's "the version before" stays number - 1.
            number = int(await pipe.get(self._seq) or 0) + 1
            pipe.multi()
            pipe.set(self._seq, number)
            pipe.hset(
                self._version_key(number),
                mapping={"source": source, "author": author, "at": at, "version": version, "comment": comment},
            )
            pipe.set(self._active, number)
            pipe.xadd(
                self._log,
                {
                    "action": "publish",
                    "number": number,
                    "version": version,
                    "author": author,
                    "at": at,
                    "comment": comment,
                },
            )
            return number

        number = await self._once(request_id, stage)
        published = await retry_once(lambda: self.get(number), str(number))
        self._logger.info("%s %s (%s) published by %s", self._noun, published.number, published.version, author)
        return published

    async def rollback(self, author: str, to: int | None = None, request_id: str | None = None) -> Published:
        """Make an earlier version active again (the one before the active one by default)."""

        async def stage(pipe: Pipeline) -> int:
            raw = await pipe.get(self._active)
            current = int(raw) if raw else None
            target = to
            if target is None:
                if current is None or current <= 1:
                    raise NotFound(f"no earlier {self._noun} version to roll back to")
                target = current - 1
            version = await pipe.hget(self._version_key(target), "version")
            if version is None:
                raise NotFound(f"{self._noun} version {target}")
            pipe.multi()
            pipe.set(self._active, target)
            pipe.xadd(
                self._log,
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
        return await run_once(self._client, self._keys, request_id, (self._active, self._seq), stage)

    async def log(self, count: int = 50) -> list[dict[str, str]]:
        entries = await self._client.xrevrange(self._log, count=count)
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


class Compiled(Generic[T]):
    """The published versions of ``versions`` a process asks for, each compiled once by
    ``compiler(source, filename)`` and kept: a published version never changes, and a reader may
    need any of them (a conversation keeps the number of the SLA policy it started under).
    ``name`` makes the filename errors show (``{name}-v{number}``)."""

    def __init__(self, versions: Versions, compiler: Callable[[str, str], T], name: str) -> None:
        self._versions = versions
        self._compiler = compiler
        self._name = name
        self._done: dict[int, T] = {}

    async def get(self, number: int) -> T:
        """Version ``number`` compiled: ``NotFound`` if it was never published, and what
        ``compiler`` raises when a stored text no longer compiles (a newer validator refusing an
        old text; it is not kept, so each call raises again)."""
        found = self._done.get(number)
        if found is None:
            published = await self._versions.get(number)
            found = self._compiler(published.source, f"{self._name}-v{number}")
            self._done[number] = found
        return found
