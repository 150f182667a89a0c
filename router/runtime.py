"""The runtime: one Redis client and the services built on it, with a symmetric lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import redis.asyncio as aioredis

from adapters.base import Adapter, AdapterContext
from router.config import Settings
from router.conversations import Conversations
from router.errors import ConfigError
from router.inbox import Inbox
from router.keys import Keys
from router.model import new_id
from router.queues import Queues
from router.redis import check_version, connect
from router.rulestore import EngineHolder, RuleStore
from router.scripts import Scripts
from router.stats import StatsReader
from router.supervisor import RestartPolicy, Supervisor
from router.worker import Worker
from rules import Engine

log = logging.getLogger("switchboard")


class Runtime:
    """Everything that talks to Redis, built once: ``async with Runtime(settings, url) as rt``."""

    def __init__(self, settings: Settings, url: str, *, max_connections: int = 64, wait_s: float | None = None) -> None:
        self.settings = settings
        self.url = url
        self.keys = Keys(settings.prefix)
        self.client: aioredis.Redis = connect(url, max_connections=max_connections, wait_s=wait_s)
        self.scripts = Scripts.register(self.client)
        self.inbox = Inbox(self.client, self.keys, settings.inbox, self.scripts)
        self.conversations = Conversations(self.client, settings, self.scripts)
        self.queues = Queues(self.client, self.keys, self.conversations)
        self.rules = RuleStore(self.client, self.keys)
        self.stats = StatsReader(self.client, self.keys, self.scripts, self.queues, self.rules, self.engine, settings)
        self.instance = f"{socket.gethostname()}-{os.getpid()}-{new_id()[-6:]}"
        self._engines: EngineHolder | None = None
        self._engine_checked = 0.0
        #: Why an adapter asked the whole process to stop (``serve`` stops on the first).
        self.stop_reasons: list[str] = []
        self.stop_asked = asyncio.Event()

    async def __aenter__(self) -> Runtime:
        try:
            await check_version(self.client)
            await self.inbox.start()
        except BaseException:
            await self.client.aclose()  # __aexit__ does not run when entering fails
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()

    def for_console(self) -> Runtime:
        """A runtime on the same Redis with a pool of its own (``web.redis_connections``), whose
        commands wait up to ``web.redis_wait_s`` for a free connection: a burst of console
        requests queues for its own connections, and never takes the workers' and adapters'."""
        web = self.settings.web
        return Runtime(self.settings, self.url, max_connections=web.redis_connections, wait_s=web.redis_wait_s)

    async def engine(self, *, fresh: bool = False) -> Engine:
        """The rule set in force (published, else the configured file or the default): compiled once
        per version, its version checked at most once a second (``fresh``: now, e.g. after a publish)."""
        if self._engines is None:
            self._engines = EngineHolder(self.rules, self.settings.rules.file)
        now = time.monotonic()
        if fresh or now - self._engine_checked >= 1.0:
            self._engine_checked = now
            await self._engines.refresh()
        return self._engines.engine

    def adapter_context(self) -> AdapterContext:
        return AdapterContext(self.client, self.keys, self.inbox, self.instance, self._stop_all)

    def _stop_all(self, reason: str) -> None:
        self.stop_reasons.append(reason)
        self.stop_asked.set()


async def publish_health(rt: Runtime, adapters: list[Adapter]) -> None:
    """Write each adapter's health record (renewed every ``worker.heartbeat_s`` by ``serve``)."""
    ttl = max(15, math.ceil(3 * rt.settings.worker.heartbeat_s))
    for adapter in adapters:
        # The console is a plain service: no channel.
        record = {**adapter.health(), "channel": getattr(adapter, "channel", None), "at": time.time()}
        await rt.client.set(rt.keys.health("adapter", f"{adapter.name}@{rt.instance}"), json.dumps(record), ex=ttl)


async def _publish_health(rt: Runtime, adapters: list[Adapter], stopping: asyncio.Event) -> None:
    # As often as the workers' heartbeat (1 s by default): `stats` reads these records, and one
    # written every 5 s showed "received: 0" well after the messages were routed.
    every_s = rt.settings.worker.heartbeat_s
    while not stopping.is_set():
        await publish_health(rt, adapters)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), every_s)


@contextlib.asynccontextmanager
async def running_adapters(adapters: list[Adapter]) -> AsyncIterator[list[Adapter]]:
    """Start adapters in order, close them in reverse order, whatever happens in between."""
    started: list[Adapter] = []
    try:
        for adapter in adapters:
            await adapter.start()
            started.append(adapter)
            log.info("adapter %s started", adapter.name)
        yield started
    finally:
        for adapter in reversed(started):
            try:
                await adapter.close()
            except Exception:
                log.exception("closing adapter %s failed", adapter.name)


def worker_processes(rt: Runtime, n: int, config: Path | None) -> Supervisor:
    """``n`` extra ``switchboard worker`` processes on the same Redis, supervised (``serve`` runs them)."""
    env = {**os.environ, "SWITCHBOARD_REDIS__URL": rt.url}
    cmd = [sys.executable, "-m", "router", *(["--config", str(config)] if config else []), "worker"]
    return Supervisor(
        cmd,
        env,
        n,
        RestartPolicy.of(rt.settings.worker),
        kind="worker",
        client=rt.client,
        health_key=rt.keys.health("supervisor", rt.instance),
        health_every_s=rt.settings.worker.heartbeat_s,
    )


async def serve(rt: Runtime, adapters: list[Adapter], workers: int = 1, processes: Supervisor | None = None) -> None:
    """Run router workers, adapters and supervised ``processes`` until SIGTERM/SIGINT, or until an
    adapter asks the process to stop (``AdapterContext.stop_all``: then ConfigError with its reason
    once everything stopped): workers finish their batch first."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    pool = [Worker(rt.client, rt.settings) for _ in range(workers)]

    def stop() -> None:
        stopping.set()
        for w in pool:
            w.stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    try:
        async with running_adapters(adapters) as started:
            tasks = [asyncio.create_task(w.run(handle_signals=False)) for w in pool]
            tasks.append(asyncio.create_task(_publish_health(rt, started, stopping)))
            if processes is not None:
                tasks.append(asyncio.create_task(processes.run(stopping)))
            stopper = asyncio.create_task(stopping.wait())
            asked = asyncio.create_task(rt.stop_asked.wait())
            # A crashed worker must bring the process down (and be restarted by its supervisor),
            # not leave the others running with the signal handlers of a process that looks alive.
            await asyncio.wait([*tasks, stopper, asked], return_when=asyncio.FIRST_COMPLETED)
            asked.cancel()
            stop()
            await asyncio.gather(*tasks)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    if rt.stop_reasons:
        raise ConfigError(rt.stop_reasons[0])
