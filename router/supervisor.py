"""Serving: a process's services, router workers and worker processes, from start to stop.

``serve`` is the one place a Switchboard process runs until told to stop. It installs the
SIGTERM/SIGINT handlers (``router.lifecycle.signals_stop``; not when embedded), starts the services
in order (the adapters, then the console) and closes them in reverse order, runs the router
workers as tasks and the supervised worker processes (``router.processes``), and publishes every
service's health record each heartbeat. It stops on a signal, when a service asks the whole process
to stop (``Runtime.stop_request``: a revoked token, say), or when a worker task crashes — a crashed
worker must bring the process down (to be restarted by its supervisor), not leave the others
running in a process that looks alive.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from router.errors import ConfigError
from router.lifecycle import Service, keep_running, running, signals_stop, wait_or_stop
from router.processes import ProcessSupervisor, RestartPolicy
from router.redis import TRANSIENT_ERRORS
from router.runtime import Runtime
from router.worker import Workers


async def publish_health(rt: Runtime, services: Sequence[Service]) -> None:
    """Write each service's health record, with a TTL of three heartbeats (at least 15 s).

    A channel adapter's record is ``adapter:{name}@{instance}`` and names its channel
    (``switchboard check`` fails on a fatal one); another service's (the console) is ``service:…``."""
    ttl = max(15, math.ceil(3 * rt.settings.worker.heartbeat_s))
    for service in services:
        channel = getattr(service, "channel", None)
        record = {**service.health(), **({"channel": channel} if channel else {}), "at": time.time()}
        key = rt.keys.health("adapter" if channel else "service", f"{service.name}@{rt.instance}")
        await rt.client.set(key, json.dumps(record), ex=ttl)


async def _publish_health(rt: Runtime, services: Sequence[Service], stopping: asyncio.Event) -> None:
    # As often as the workers' heartbeat (1 s by default): `stats` reads these records, and one
    # written every 5 s showed "received: 0" well after the messages were routed.
    async def step() -> bool:
        await publish_health(rt, services)
        return await wait_or_stop(stopping, rt.settings.worker.heartbeat_s)

    # A Redis restart or failover is retried like every other loop's: this task ending would stop
    # the whole process (serve stops on the first task to end), and it did: an exporter whose
    # heartbeat landed while Redis restarted exited 1 (tests/router/test_exporter.py).
    await keep_running(step, stopping, what="health records", retry_on=TRANSIENT_ERRORS)


def worker_processes(rt: Runtime, n: int, config: Path | None) -> ProcessSupervisor:
    """``n`` extra ``switchboard worker`` processes on the same Redis, supervised (``serve`` runs them)."""
    env = {**os.environ, "SWITCHBOARD_REDIS__URL": rt.url}
    cmd = [sys.executable, "-m", "router", *(["--config", str(config)] if config else []), "worker"]
    return ProcessSupervisor(
        cmd,
        env,
        n,
        RestartPolicy.of(rt.settings.worker),
        kind="worker",
        client=rt.client,
        health_key=rt.keys.health("supervisor", rt.instance),
        health_every_s=rt.settings.worker.heartbeat_s,
    )


async def serve(
    rt: Runtime,
    services: Sequence[Service],
    *,
    workers: int = 1,
    processes: ProcessSupervisor | None = None,
    handle_signals: bool = True,
    announce: Callable[[], None] | None = None,
) -> None:
    """Run ``services``, ``workers`` router workers and the supervised ``processes`` until
        SIGTERM/SIGINT (``handle_signals``), a stop request (then ConfigError with its reason, once
        everything stopped) or a crashed task. Workers finish their batch first. ``announce`` runs once
    the services started (to print where the console listens, say)."""
    stopping = asyncio.Event()
    pool = [Workers(rt) for _ in range(workers)]

    def stop() -> None:
        stopping.set()
        for w in pool:
            w.stop()

    with signals_stop(stop, enabled=handle_signals):
        async with running(services) as started:
            if announce is not None:
                announce()
            tasks = [asyncio.create_task(w.run()) for w in pool]
            tasks.append(asyncio.create_task(_publish_health(rt, started, stopping)))
            if processes is not None:
                tasks.append(asyncio.create_task(processes.run(stopping)))
            stopper = asyncio.create_task(stopping.wait())
            asked = asyncio.create_task(rt.stop_request.asked.wait())
            await asyncio.wait([*tasks, stopper, asked], return_when=asyncio.FIRST_COMPLETED)
            asked.cancel()
            stop()
            await asyncio.gather(*tasks)
    if rt.stop_request.reasons:
        raise ConfigError(rt.stop_request.reasons[0])
