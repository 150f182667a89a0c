"""Lifecycles: the ``Service`` protocol, the one retry loop every long-running task uses, and the
one place that installs signal handlers.

Every piece that runs for the life of the process (workers, adapters, the console, samplers) is a
``Service``: ``start`` connects and starts its tasks, ``close`` stops taking work, finishes what is
in hand and disconnects, ``health`` says how it is doing. ``running`` starts services in order and
closes them in reverse order whatever happens; ``keep_running`` repeats a step with a jittered,
stoppable backoff after failures; ``signals_stop`` turns SIGTERM/SIGINT into a stop request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from typing import Any, Protocol, TypeVar

log = logging.getLogger("switchboard")

S = TypeVar("S", bound="Service")


class Service(Protocol):
    """Something that runs for the life of the process."""

    name: str

    async def start(self) -> None:
        """Connect and start the loops; raise a clear error on bad configuration or credentials."""

    async def close(self) -> None:
        """Stop taking new work, finish what is in hand, disconnect."""

    def health(self) -> dict[str, Any]:
        """A JSON-able status: at least ``connected`` (bool) and ``detail``."""


@contextlib.asynccontextmanager
async def running(services: Sequence[S]) -> AsyncIterator[list[S]]:
    """Start services in order, close them in reverse order, whatever happens in between."""
    started: list[S] = []
    try:
        for service in services:
            await service.start()
            started.append(service)
            log.info("%s started", service.name)
        yield started
    finally:
        for service in reversed(started):
            try:
                await service.close()
            except Exception:
                log.exception("closing %s failed", service.name)


class StopRequest:
    """A service's request that the whole process stop (a revoked token, say), with its reason:
    ``serve`` stops everything on the first and exits with it."""

    def __init__(self) -> None:
        self.reasons: list[str] = []
        self.asked = asyncio.Event()

    def __call__(self, reason: str) -> None:
        self.reasons.append(reason)
        self.asked.set()


class Backoff:
    """Jittered exponential delays (``base`` doubling up to ``cap``), back to ``base`` on ``reset``."""

    def __init__(self, base: float = 0.1, cap: float = 5.0) -> None:
        self.base = base
        self.cap = cap
        self.attempt = 0

    def reset(self) -> None:
        self.attempt = 0

    def next_delay(self) -> float:
        delay = min(self.cap, self.base * 2**self.attempt)
        self.attempt += 1
        return float(delay * random.uniform(0.5, 1.0))


async def cancel_all(tasks: Sequence[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and wait until each has ended (a service's loops, at its close)."""
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


class Guard(Protocol):
    """What a loop may run under: ``run`` calls ``body`` only while a condition holds (one replica
    of a deployment: router/leases.py ``Exclusive``), and returns once ``stopping`` is set."""

    async def run(self, body: Callable[[], Coroutine[Any, Any, None]], stopping: asyncio.Event) -> None: ...

    def state(self) -> dict[str, Any]: ...


class Loop:
    """A service's one background loop: ``step`` again and again (``keep_running``, errors of
    ``retry_on`` logged, kept in ``last_error`` and retried) from ``start`` until ``close``, which
    stops and awaits it. ``graceful``: ``close`` lets the step in hand finish (a store's
    transaction, a send) rather than cancel it; its waits (``wait_or_stop`` on ``stopping``) end
    at once. ``under``: the steps run only while that guard lets them (one replica at a time)."""

    def __init__(self, what: str, retry_on: tuple[type[BaseException], ...], *, graceful: bool = False) -> None:
        self.what = what
        self.retry_on = retry_on
        self.graceful = graceful
        self.stopping = asyncio.Event()
        self.last_error = ""  # the last failed step's error, until a step (a round) succeeds
        self._task: asyncio.Task[None] | None = None
        self._under: Guard | None = None

    def start(
        self,
        step: Callable[[], Awaitable[bool | None]],
        on_error: Callable[[BaseException], Awaitable[float | None]] | None = None,
        *,
        under: Guard | None = None,
    ) -> None:
        """Run ``step`` (True: stop); ``on_error`` as ``keep_running``'s, after ``last_error`` is set.
        A step that succeeds clears ``last_error``: health says an outage is over once it is.
        ``under``: only while that guard lets it (``Guard.run``)."""

        async def failed(exc: BaseException) -> float | None:
            self.last_error = str(exc) or type(exc).__name__
            return await on_error(exc) if on_error is not None else None

        async def stepped() -> bool | None:
            done = await step()
            self.last_error = ""
            return done

        async def body() -> None:
            await keep_running(stepped, self.stopping, what=self.what, retry_on=self.retry_on, on_error=failed)

        self.stopping.clear()
        self._under = under
        self._task = asyncio.create_task(body() if under is None else under.run(body, self.stopping))

    def rounds(
        self,
        round_: Callable[[], Awaitable[bool | None]],
        idle_s: Callable[[], float],
        on_error: Callable[[BaseException], Awaitable[float | None]] | None = None,
    ) -> None:
        """Run ``round_`` again at once while it returns True (more is waiting), else after
        ``idle_s()`` seconds; each round that succeeds clears ``last_error`` (before the wait)."""

        async def step() -> None:
            more = await round_()
            self.last_error = ""
            if not more:
                await wait_or_stop(self.stopping, idle_s())

        self.start(step, on_error)

    async def close(self) -> None:
        self.stopping.set()
        if self._task is not None:
            if self.graceful:
                await self._task
            else:
                await cancel_all([self._task])
            self._task = None

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    def health(self, detail: str) -> dict[str, Any]:
        """A service's ``connected`` and ``detail``: connected while the loop runs and its last
        step got through; else the step's error, else the service's own ``detail``. Under a
        guard, also its state (``lease``: held or standby, and by whom)."""
        out = {"connected": self.alive and not self.last_error, "detail": self.last_error or detail}
        return out if self._under is None else {**out, **self._under.state()}


async def wait_or_stop(stopping: asyncio.Event, delay: float) -> bool:
    """Wait ``delay`` seconds, or less if ``stopping`` is set meanwhile; True when stopping."""
    # Not asyncio.wait_for: on Python 3.11 it swallows a cancellation that arrives as the event is
    # set, and the cancelled loop would go on waiting and restarting.
    if not stopping.is_set():
        waiter = asyncio.ensure_future(stopping.wait())
        try:
            await asyncio.wait({waiter}, timeout=delay)
        finally:
            waiter.cancel()
    return stopping.is_set()


async def keep_running(
    step: Callable[[], Awaitable[bool | None]],
    stopping: asyncio.Event,
    *,
    what: str,
    retry_on: tuple[type[BaseException], ...],
    backoff: Backoff | None = None,
    on_error: Callable[[BaseException], Awaitable[float | None]] | None = None,
    describe: Callable[[BaseException], str] | None = None,
) -> None:
    """Run ``step`` again and again until ``stopping`` is set or it returns True.

    An error of ``retry_on`` is logged (``what`` names the loop) and followed by a jittered wait
    that ``stopping`` cuts short; each step that succeeds resets the backoff. ``on_error`` runs
    first: it may clean up, record the error in health, re-raise what is not to be retried, and
    choose the delay (None: the backoff's next one). ``describe`` words the error for the log
    (default: its text), e.g. without the token a platform's error quotes."""
    backoff = backoff or Backoff()
    while not stopping.is_set():
        try:
            if await step():
                return
        except retry_on as exc:
            delay = await on_error(exc) if on_error is not None else None
            if delay is None:
                delay = backoff.next_delay()
            text = describe(exc) if describe is not None else str(exc) or type(exc).__name__
            log.warning("%s: %s; retrying in %.2fs", what, text, delay)
            if await wait_or_stop(stopping, delay):
                return
        else:
            backoff.reset()


@contextlib.contextmanager
def signals_stop(stop: Callable[[], None], *, enabled: bool = True) -> Iterator[None]:
    """SIGTERM and SIGINT call ``stop`` while inside; ``enabled=False`` (embedded in a host that
    owns its signals, or in tests) leaves the handlers alone."""
    if not enabled:
        yield
        return
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    try:
        yield
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
