"""``switchboard bench console``: the console under attack while the router routes.

One private redis-server; a ``switchboard web`` process serves the console (its availability
settings as configured); a worker process routes ``--rate`` messages a second (router/bench.py's
latency run: append → the conversation's ``created`` event, p50/p99), measured twice in the same
run: alone (baseline), then while one attacker process holds ``--slow`` connections that never
finish their headers (reopening each one the server closes), another sends ``--scrapes`` parallel
``GET /metrics`` in a loop, and a prober process asks ``/healthz`` every 100 ms (a new connection
each time, like a load balancer), then alone again. The machine's cores are shared by all of them:
the p99 ratio (attacked / the mean of the two runs alone) is what the attack costs routing on the
same host, and the two runs alone say how much p99 moves with no attack at all (``noise_ratio``).
Every helper runs in a process of its own: a prober in the measuring process delayed the
measurement itself (p99 x2 with no attack). ``--isolate`` confines the console, the attackers and
the prober to the last CPU and routing (Redis, worker, measurement) to the others, as a deployment
that gives ``switchboard web`` its own CPU budget would (docs/security.md). Reported: the p99s and
ratios, the /healthz answers, the /metrics status codes (a 500 is a failure), the slow connections
the server closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import httpx

from router.bench import latency
from router.config import Settings
from router.redis import EmbeddedRedis
from router.runtime import Runtime


def _raise_fd_limit(need: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = need if hard == resource.RLIM_INFINITY else min(need, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def _attack(url: str, slow: int, scrapes: int, seconds: float) -> dict[str, Any]:
    """The attacker's side (run in a process of its own, see ``attack_main``)."""
    host, port = url.removeprefix("http://").split(":")
    stop = time.monotonic() + seconds
    closed = 0
    codes: Counter[str] = Counter()

    async def slow_client() -> None:
        nonlocal closed
        while time.monotonic() < stop:
            try:
                reader, writer = await asyncio.open_connection(host, int(port))
                writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                await asyncio.wait_for(reader.read(), max(0.01, stop - time.monotonic()))
                closed += 1
            except (OSError, TimeoutError):
                await asyncio.sleep(0.05)
            else:
                writer.close()

    async def scraper(client: httpx.AsyncClient) -> None:
        while time.monotonic() < stop:
            try:
                codes[str((await client.get("/metrics")).status_code)] += 1
            except httpx.HTTPError as exc:
                codes[type(exc).__name__] += 1

    # A new connection per scrape, as a scraper after a pause would: an idle kept-alive connection
    # is one the server may close to make room (a client then reconnects; httpx does not retry).
    limits = httpx.Limits(max_connections=scrapes, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        await asyncio.gather(*(slow_client() for _ in range(slow)), *(scraper(client) for _ in range(scrapes)))
    return {"slow_closed_by_server": closed, "metrics_status": dict(codes)}


def attack_main(url: str, slow: int, scrapes: int, seconds: float) -> None:
    """One attacker process: the slow connections or the scrapers (each in its own process, so
    that neither starves the other's event loop)."""
    _raise_fd_limit(slow + scrapes + 256)
    print(json.dumps(asyncio.run(_attack(url, slow, scrapes, seconds))))


async def _probe(url: str, seconds: float) -> dict[str, Any]:
    seen: Counter[str] = Counter()
    stop = time.monotonic() + seconds
    # A new connection per probe, like a load balancer's health check.
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=5, limits=limits) as client:
        while time.monotonic() < stop:
            try:
                seen[str((await client.get("/healthz")).status_code)] += 1
            except httpx.HTTPError as exc:
                seen[type(exc).__name__] += 1
            await asyncio.sleep(0.1)
    return {"healthz": dict(seen)}


def probe_main(url: str, seconds: float) -> None:
    """The prober process: /healthz every 100 ms for ``seconds``."""
    print(json.dumps(asyncio.run(_probe(url, seconds))))


def _pin(cpus: set[int] | None) -> Callable[[], None] | None:
    """A ``preexec_fn`` that confines a child process to ``cpus`` (None: anywhere)."""
    if cpus is None:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


async def _console_process(
    settings: Settings, url: str, cpus: set[int] | None
) -> tuple[asyncio.subprocess.Process, str]:
    """``switchboard web`` on a free loopback port, on the bench's Redis; up when /healthz answers."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "SWITCHBOARD_REDIS__URL": url, "SWITCHBOARD_PREFIX": settings.prefix}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "router",
        "web",
        "--port",
        str(port),
        env=env,
        stdin=subprocess.DEVNULL,
        preexec_fn=_pin(cpus),
    )
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base, timeout=2) as client:
        for _ in range(200):
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get("/healthz")).status_code == 200:
                    return proc, base
            await asyncio.sleep(0.1)
    proc.kill()
    raise RuntimeError("the console process did not start")


async def _helper(call: str, *args: object, cpus: set[int] | None) -> asyncio.subprocess.Process:
    """A process running ``router.bench_console.<call>(*args)``; it prints its result as JSON."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        f"import sys, json; from router.bench_console import {call}; {call}(*json.loads(sys.argv[1]))",
        json.dumps(args),
        stdout=asyncio.subprocess.PIPE,
        preexec_fn=_pin(cpus),
    )


async def _result(proc: asyncio.subprocess.Process) -> dict[str, Any]:
    out: dict[str, Any] = json.loads((await proc.communicate())[0] or b"{}")
    return out


async def _main(
    settings: Settings, rate: int, seconds: float, slow: int, scrapes: int, isolate: bool
) -> dict[str, Any]:
    cpus = sorted(os.sched_getaffinity(0))
    if isolate and len(cpus) < 2:
        raise SystemExit("switchboard bench console --isolate: needs 2 CPUs or more")
    web_cpus = {cpus[-1]} if isolate else None
    if isolate:  # this process, and so Redis and the worker it starts, on the others
        os.sched_setaffinity(0, set(cpus[:-1]))
    with (
        tempfile.TemporaryDirectory(prefix="sb-bench-console-") as tmp,
        EmbeddedRedis(Path(tmp) / "redis", private=True) as redis,
    ):
        # A key prefix per phase: the latency run appends the same messages each time, and they
        # must open new conversations again.
        names = ("console", "alone", "attacked", "after")
        phases = {name: settings.model_copy(update={"prefix": f"bench:{name}:"}) for name in names}
        console, url = await _console_process(phases["console"], redis.url, web_cpus)
        p99: dict[str, float] = {}
        p50: dict[str, float] = {}

        async def measure(name: str) -> None:
            async with Runtime(phases[name], redis.url) as rt:
                result = await latency(rt, redis.url, rate, seconds)
            p99[name], p50[name] = result["latency_p99_ms"], result["latency_p50_ms"]

        try:
            await measure("alone")
            # The slow connections and the scrapers each in a process of their own, so that
            # neither starves the other's event loop; the latency run starts its worker and waits
            # 1.5 s for it: the attack runs from before that until after the last message.
            attackers = [
                await _helper("attack_main", url, n, m, seconds + 6, cpus=web_cpus)
                for n, m in ((slow, 0), (0, scrapes))
            ]
            prober = await _helper("probe_main", url, seconds + 4, cpus=web_cpus)
            await asyncio.sleep(2)  # the slow connections pile up before routing is measured
            await measure("attacked")
            outs = [await _result(a) for a in (*attackers, prober)]
            await measure("after")
        finally:
            console.terminate()
            await console.wait()
    metrics_status = outs[1].get("metrics_status", {})
    healthz = outs[2].get("healthz", {})
    alone = (p99["alone"] + p99["after"]) / 2
    return {
        "rate_msgs_per_s": rate,
        "isolated": isolate,
        "seconds": seconds,
        "slow_connections": slow,
        "parallel_scrapes": scrapes,
        "max_connections": settings.web.max_connections,
        "request_timeout_s": settings.web.request_timeout_s,
        "baseline_p99_ms": round(p99["alone"], 2),
        "attacked_p99_ms": round(p99["attacked"], 2),
        "after_p99_ms": round(p99["after"], 2),
        "p99_ratio": round(p99["attacked"] / alone, 2),
        "noise_ratio": round(max(p99["alone"], p99["after"]) / min(p99["alone"], p99["after"]), 2),
        "baseline_p50_ms": round(p50["alone"], 2),
        "attacked_p50_ms": round(p50["attacked"], 2),
        "after_p50_ms": round(p50["after"], 2),
        "healthz": healthz,
        "healthz_green": set(healthz) == {"200"},
        "metrics_status": metrics_status,
        "metrics_500": metrics_status.get("500", 0),
        "slow_closed_by_server": outs[0].get("slow_closed_by_server"),
    }


def main(
    settings: Settings,
    as_json: bool,
    rate: int,
    seconds: float,
    slow: int,
    scrapes: int,
    isolate: bool = False,
    out: TextIO = sys.stdout,
) -> int:
    result = asyncio.run(_main(settings, rate, seconds, slow, scrapes, isolate))
    if as_json:
        print(json.dumps(result), file=out)
    else:
        for key, value in result.items():
            print(f"{key:>24}: {value}", file=out)
    return 0 if result["healthz_green"] and not result["metrics_500"] else 1
