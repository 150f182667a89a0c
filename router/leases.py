"""Fenced leases: one owner at a time for a named resource, across processes and machines.

A ``Lease`` is acquired when free or expired, renewed and released only by its holder, each step
one atomic script (lua/fenced_lease.lua). Each acquisition hands out a **fence**, a number that
only grows per resource: a holder that was paused (GC, a stopped VM) past its expiry and woke up
still believing it holds the lease is told apart by ``Lease.check(fence)`` — or by any script that
compares the fence with ``lease:{name}``'s — since a later holder has a larger fence.

Expiry is judged by the clock the caller passes (``Clock``: wall time in production, a fake one in
tests); the key also carries a PX TTL so that a dead holder's lease disappears without any caller.
Two clocks judge one lease, the holder's (its expiry) and another replica's (whether it expired):
they must agree within ``max_skew_ms``, far below the TTL, and the holder gives the lease up that
much before its expiry (docs/architecture.md, "Leases").

``Holder`` keeps an acquired lease: ``async with Holder(lease) as held`` renews it every TTL/3 in
the background, sets ``held.lost`` and cancels the tasks it guards once the lease is lost (a renewal
refused, or none confirmed before the local deadline), and releases it on exit. ``Exclusive`` is
what an adapter runs its per-account loop under: it stands by, retrying every ``retry_s``, while
another replica holds the lease, runs the loop while it holds it, and stops it at once on loss.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

import redis.asyncio as aioredis

from router.config import LeaseSettings
from router.keys import Shards
from router.lifecycle import wait_or_stop
from router.redis import reply_text
from router.scripts import Scripts

log = logging.getLogger("switchboard.leases")


class Clock(Protocol):
    def now_ms(self) -> int:
        """Wall time in milliseconds (what judges a lease's expiry)."""


class WallClock:
    def now_ms(self) -> int:
        return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class Held:
    """Who holds a lease: its owner token, fence and expiry (ms, the holder's clock)."""

    owner: str
    fence: int
    until_ms: int


class Lease:
    """The lease ``name`` as seen by ``owner`` (a token unique to this process, or to one holder).

    ``fence`` is the fence of the current holding (None when not held); ``deadline`` the monotonic
    time (``time.monotonic``) until which this process may act as the holder: TTL minus the
    allowed clock skew after the acquisition or renewal was *sent* (not answered), so it never
    outlasts the lease as any replica's clock judges it.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        scripts: Scripts,
        prefix: str,
        name: str,
        owner: str,
        *,
        ttl_ms: int,
        max_skew_ms: int = 500,
        clock: Clock | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 <= max_skew_ms < ttl_ms / 3:
            raise ValueError(f"lease {name}: max_skew_ms ({max_skew_ms}) must be under a third of ttl_ms ({ttl_ms})")
        self._client = client
        self._script = scripts.fenced_lease
        self._prefix = prefix
        self.name = name
        self.owner = owner
        self.ttl_ms = ttl_ms
        self.max_skew_ms = max_skew_ms
        self.clock = clock or WallClock()
        self.monotonic = monotonic
        self.fence: int | None = None
        self.deadline = 0.0

    async def _call(self, op: str, *args: Any) -> Any:
        return await self._script(args=[self._prefix, self.clock.now_ms(), op, self.name, self.owner, *args])

    def _valid_from(self, sent: float) -> None:
        self.deadline = sent + (self.ttl_ms - self.max_skew_ms) / 1000

    async def acquire(self) -> Held:
        """Take the lease if free or expired. The result is the holding: this owner's (then
        ``fence`` is set) or the other owner's that holds it."""
        sent = self.monotonic()
        got, owner, fence, until = await self._call("acquire", self.ttl_ms)
        self.fence = int(fence) if got == 1 else None
        if got == 1:
            self._valid_from(sent)
        return Held(reply_text(owner), int(fence), int(until))

    async def renew(self) -> bool:
        """Push the expiry TTL ahead; False (and ``fence`` None) when the lease was lost."""
        if self.fence is None:
            return False
        sent = self.monotonic()
        if await self._call("renew", self.fence, self.ttl_ms) == 1:
            self._valid_from(sent)
            return True
        self.fence = None
        return False

    async def release(self) -> bool:
        """Free the lease for the next taker at once; False when it was not held any more."""
        if self.fence is None:
            return False
        fence, self.fence = self.fence, None
        return bool(await self._call("release", fence) == 1)

    async def check(self, fence: int) -> bool:
        """Whether the holding of ``fence`` is still current (whoever asks)."""
        return bool(await self._call("check", fence) == 1)

    async def holder(self) -> Held | None:
        """The current holding, None when the lease is free or expired."""
        found = await self._call("holder")
        if not found:
            return None
        owner, fence, until = found
        return Held(reply_text(owner), int(fence), int(until))

    @property
    def held(self) -> bool:
        """Whether this owner may act as the holder now (acquired, and before its deadline)."""
        return self.fence is not None and self.monotonic() < self.deadline


def shard_leases(
    client: aioredis.Redis,
    scripts: Scripts,
    shards: Shards,
    settings: LeaseSettings,
    name: str,
    owner: str,
    clock: Clock,
) -> list[Lease]:
    """The lease ``name`` of every shard, under its prefix (beside the keys its holder writes, so
    that its scripts can check the fence): a per-shard service's, the SLA timer's or the surveys'."""
    return [
        Lease(
            client,
            scripts,
            keys.prefix,
            name,
            owner,
            ttl_ms=settings.ttl_ms,
            max_skew_ms=settings.max_skew_ms,
            clock=clock,
        )
        for keys in shards.shard
    ]


async def keep_or_take(lease: Lease) -> int | None:
    """The fence ``lease`` is held under once renewed, or taken again when it lapsed (a pause past
    its expiry) or was never held; None while another owner holds it."""
    if not await lease.renew():
        await lease.acquire()
    return lease.fence


class Holder:
    """Keep an acquired lease: renew it every TTL/3, report its loss, release it at the end.

    ``start`` (``__aenter__``) starts the renewals of a lease already acquired; ``close``
    (``__aexit__``) stops them and releases the lease. Once the lease is lost — a renewal refused,
    or no renewal confirmed before ``Lease.deadline`` — ``lost`` is set and every task given to
    ``guard`` is cancelled.
    """

    def __init__(self, lease: Lease, *, retry_s: float = 0.2) -> None:
        self.lease = lease
        self.lost = asyncio.Event()
        self._retry_s = retry_s  # after a failed renewal, while the deadline allows
        self._guarded: set[asyncio.Task[Any]] = set()
        self._renewer: asyncio.Task[None] | None = None
        self._closing = False

    async def __aenter__(self) -> Holder:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def start(self) -> None:
        if self.lease.fence is None:
            raise RuntimeError(f"lease {self.lease.name}: not acquired")
        self._renewer = asyncio.create_task(self._renew(), name=f"lease-{self.lease.name}")

    async def close(self) -> None:
        if self._renewer is not None:
            # The flag as well as the cancel: a cancel that lands inside a Redis command can be
            # swallowed there (seen once in CI: the renewer went on renewing and close() waited
            # forever), and the loop then ends at its next turn instead.
            self._closing = True
            self._renewer.cancel()
            await asyncio.wait({self._renewer})
            self._renewer = None
        try:
            await self.lease.release()
        except Exception as exc:  # unreleased, it expires after its TTL
            log.warning("lease %s: release failed: %s", self.lease.name, exc or type(exc).__name__)

    def guard(self, task: asyncio.Task[Any]) -> None:
        """Cancel ``task`` as soon as the lease is lost (at once if it is already)."""
        if self.lost.is_set():
            task.cancel()
            return
        self._guarded.add(task)
        task.add_done_callback(self._guarded.discard)

    def _lose(self, why: str) -> None:
        log.warning("lease %s lost (%s)", self.lease.name, why)
        self.lease.fence = None
        self.lost.set()
        for task in list(self._guarded):
            task.cancel()

    async def _renew(self) -> None:
        lease = self.lease
        every = lease.ttl_ms / 3000
        wait = every
        while True:
            # Never sleep past the deadline: a lease found lost must stop its tasks in time.
            await asyncio.sleep(max(0.0, min(wait, lease.deadline - lease.monotonic())))
            if self._closing:
                return
            left = lease.deadline - lease.monotonic()
            if left <= 0:
                return self._lose("no renewal confirmed before its deadline")
            try:
                async with asyncio.timeout(left):
                    renewed = await lease.renew()
            except Exception as exc:
                # Any error (a lost connection, a refused write when Redis is out of memory): try
                # again while the deadline allows; this task must never end without deciding.
                log.warning("lease %s: renewal failed: %s", lease.name, exc or type(exc).__name__)
                wait = self._retry_s
                continue
            if not renewed:
                return self._lose("another owner holds it, or it expired")
            wait = every


class Exclusive:
    """Run one loop on one replica only: the holder of the lease ``name``.

    ``run(body, stopping)`` stands by while another owner holds the lease (trying again every
    ``retry_s``), runs ``body()`` while this process holds it, and cancels it at once when the
    lease is lost, then stands by again. It returns when ``stopping`` is set (``body`` must return
    then too; one that returns ends ``run`` as well) and releases the lease, so that a standby
    takes over without waiting for the TTL.
    ``state()`` says which, for the adapter's health record.
    """

    def __init__(self, lease: Lease, *, retry_s: float) -> None:
        self.lease = lease
        self.retry_s = retry_s
        self._holder: Held | None = None
        self._holding = False
        #: Set once the first attempt answered: this process runs the loop, or stands by.
        self.decided = asyncio.Event()

    @classmethod
    def named(
        cls, client: aioredis.Redis, scripts: Scripts, prefix: str, name: str, owner: str, settings: LeaseSettings
    ) -> Exclusive:
        """The lease ``name`` under ``prefix`` (``lease:{name}``), for ``owner``, with the
        deployment's lease settings: an adapter's per-account loop, a service one replica runs."""
        lease = Lease(client, scripts, prefix, name, owner, ttl_ms=settings.ttl_ms, max_skew_ms=settings.max_skew_ms)
        return cls(lease, retry_s=settings.retry_s)

    @property
    def held(self) -> bool:
        """Whether this process may act as the holder now: a loop checks it before each step
        that only the holder may take (a long poll), in case the process was paused past the
        lease's deadline and its renewals did not run yet to cancel the loop."""
        return self.lease.held

    def state(self) -> dict[str, Any]:
        """``{"lease": "held" | "standby", "holder": owner token or None, "fence": n}``."""
        if self._holding:
            return {"lease": "held", "holder": self.lease.owner, "fence": self.lease.fence}
        holder = self._holder
        return {
            "lease": "standby",
            "holder": holder.owner if holder else None,
            "fence": holder.fence if holder else None,
        }

    def resuming(
        self, resume: Callable[[], Awaitable[None]], step: Callable[[], Awaitable[None]]
    ) -> Callable[[], Awaitable[None]]:
        """``step``, with ``resume`` before the first step of each holding: whoever held the lease
        in between moved what it shares on (a service's cursor), so this process reads it again."""
        resumed: int | None = None

        async def stepped() -> None:
            nonlocal resumed
            fence = self.lease.fence
            if fence is None or fence != resumed:
                await resume()
                resumed = fence
            await step()

        return stepped

    async def run(self, body: Callable[[], Coroutine[Any, Any, None]], stopping: asyncio.Event) -> None:
        lease = self.lease
        while not stopping.is_set():
            try:
                got = await lease.acquire()
            except Exception as exc:
                # Redis unreachable or refusing writes: stand by and try again, never give up.
                log.warning("lease %s: cannot acquire: %s", lease.name, exc or type(exc).__name__)
                got = None
            if got is None or got.owner != lease.owner:
                if got is not None and (self._holder is None or self._holder.owner != got.owner):
                    log.info("lease %s held by %s: standing by", lease.name, got.owner)
                self._holder = got
                self.decided.set()
                if await wait_or_stop(stopping, self.retry_s):
                    return
                continue
            log.info("lease %s acquired (fence %d): running", lease.name, got.fence)
            self._holder = None  # a standby later logs whoever holds it then
            if await self._hold(body, stopping):
                return

    async def _hold(self, body: Callable[[], Coroutine[Any, Any, None]], stopping: asyncio.Event) -> bool:
        """Run ``body`` under the acquired lease; True when it ended because ``stopping`` is set."""
        async with Holder(self.lease) as holder:
            self._holding = True
            self.decided.set()
            task = asyncio.create_task(body())
            holder.guard(task)
            try:
                await asyncio.wait({task})
            finally:
                self._holding = False
                if not task.done():  # run() itself cancelled
                    task.cancel()
                    await asyncio.wait({task})
        # A loop that returned because the lease ran out (``held`` false) stands by again too.
        if not stopping.is_set() and (holder.lost.is_set() or not self.lease.held):
            if not task.cancelled() and task.exception() is not None:
                log.error("lease %s: the loop failed as the lease was lost", self.lease.name, exc_info=task.exception())
            return False  # the loop stopped at once; stand by again
        task.result()  # a loop that failed fails the run
        return True
