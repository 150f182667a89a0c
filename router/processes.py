"""Supervised child processes: restarted when they die, stopped when their parent dies, reported.

The parent side is ``ProcessSupervisor``: one slot per child, each kept by an asyncio task that waits on its
process (so a death is seen, and the child reaped, at once) and starts it again after a jittered
exponential delay (``Backoff``), back to the shortest delay once a child has run ``reset_after_s``.
It never gives up: a child that keeps dying is restarted at the capped delay, with an error logged
each time and the count of restarts in the health record, which ``switchboard check`` reads.

The child side is ``watch_parent``, called first thing in a supervised child: on Linux the kernel
sends it SIGTERM when the parent dies (``PR_SET_PDEATHSIG``); everywhere, a thread reading a pipe
whose only writer is the parent sees end-of-file when the parent is gone, however it died. Either
way the child stops as on SIGTERM (finishing its batch), and is killed if that takes longer than
the grace period: no child outlives its supervisor.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from router.children import exit_status, set_parent_death_signal
from router.config import WorkerSettings
from router.lifecycle import Backoff, wait_or_stop
from router.redis import TRANSIENT_ERRORS

log = logging.getLogger("switchboard.supervisor")


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    backoff_s: float = 1.0
    backoff_cap_s: float = 60.0
    #: A child that ran this long before it died is restarted after the shortest delay again.
    reset_after_s: float = 60.0
    #: How long a child may take to stop after SIGTERM before it is killed.
    stop_timeout_s: float = 30.0

    @classmethod
    def of(cls, worker: WorkerSettings) -> RestartPolicy:
        w = worker
        return cls(w.restart_backoff_s, w.restart_backoff_cap_s, w.restart_reset_s, w.stop_timeout_s)


@dataclass(slots=True)
class _Slot:
    name: str
    pid: int | None = None
    alive: bool = False
    restarts: int = 0
    last_exit: str | None = None
    since: float = 0.0  # wall time of the last start or exit

    def record(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "alive": self.alive,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
            "since": self.since,
        }


class ProcessSupervisor:
    """``count`` copies of the command ``argv`` kept running until ``run``'s ``stopping`` is set.

    Each child gets ``--supervised-by PID:FD`` appended (see ``watch_parent``). The health record
    (JSON at ``health_key``, TTL three periods) says how many children are expected and alive, each
    child's pid and restarts; ``kind`` names the heartbeat its children publish themselves
    (``health:{kind}:…`` with their pid), which ``missing`` checks too.
    """

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        count: int,
        policy: RestartPolicy,
        *,
        kind: str,
        client: aioredis.Redis,
        health_key: str,
        health_every_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.argv = list(argv)
        self.env = dict(env)
        self.policy = policy
        self.kind = kind
        self.client = client
        self.health_key = health_key
        self.health_every_s = health_every_s
        self.clock = clock  # how long a child ran, for the backoff reset
        self.slots = [_Slot(f"{kind}-{i + 1}") for i in range(count)]
        self._changed = asyncio.Event()
        self._pipe: tuple[int, int] | None = None

    def health(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "expected": len(self.slots),
            "alive": sum(s.alive for s in self.slots),
            "restarts": sum(s.restarts for s in self.slots),
            "children": {s.name: s.record() for s in self.slots},
            "at": time.time(),
        }

    async def run(self, stopping: asyncio.Event) -> None:
        """Start the children and keep them running; once ``stopping`` is set, stop them (SIGTERM,
        then SIGKILL after ``stop_timeout_s``) and return."""
        # The parent holds the only write end (os.pipe is not inheritable): its death, however it
        # happens, closes it and every child reads end-of-file.
        self._pipe = os.pipe()
        finished = asyncio.Event()
        publisher = asyncio.create_task(self._publish(finished))
        keepers = [asyncio.create_task(self._keep(slot, stopping), name=slot.name) for slot in self.slots]
        try:
            await asyncio.gather(*keepers)
        finally:
            for task in keepers:
                task.cancel()  # when one failed: the others stop (and kill) their children too
            await asyncio.gather(*keepers, return_exceptions=True)
            # Told to finish rather than cancelled: a cancellation that lands in a Redis command
            # can be lost (the client's own shielding), and the loop would go on forever.
            finished.set()
            self._changed.set()
            await publisher
            with contextlib.suppress(*TRANSIENT_ERRORS):
                await self.client.delete(self.health_key)
            for fd in self._pipe:
                os.close(fd)
            self._pipe = None

    async def _keep(self, slot: _Slot, stopping: asyncio.Event) -> None:
        backoff = Backoff(self.policy.backoff_s, self.policy.backoff_cap_s)
        while True:
            started = self.clock()
            code = await self._run_once(slot, stopping)
            ran = self.clock() - started
            if stopping.is_set():
                return
            if ran >= self.policy.reset_after_s:
                backoff.reset()
            delay = backoff.next_delay()
            log.error(
                "%s process %s (pid %s) died (%s) after %.1fs; restart #%d in %.2fs",
                self.kind,
                slot.name,
                slot.pid,
                exit_status(code),
                ran,
                slot.restarts + 1,
                delay,
            )
            if await wait_or_stop(stopping, delay):
                return
            slot.restarts += 1

    async def _run_once(self, slot: _Slot, stopping: asyncio.Event) -> int | None:
        """Start the slot's child and wait until it exits, or stop it once ``stopping`` is set;
        its exit code, None when it could not be started."""
        assert self._pipe is not None
        read_end = self._pipe[0]
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.argv,
                "--supervised-by",
                f"{os.getpid()}:{read_end}",
                env=self.env,
                pass_fds=(read_end,),
                # Ctrl-C in a terminal reaches the parent only, which stops the children in order.
                start_new_session=True,
            )
        except OSError as exc:
            slot.alive, slot.last_exit, slot.since = False, f"cannot start: {exc}", time.time()
            self._changed.set()
            return None
        slot.pid, slot.alive, slot.since = proc.pid, True, time.time()
        self._changed.set()
        log.info("%s process %s started (pid %d)", self.kind, slot.name, proc.pid)
        exited = asyncio.ensure_future(proc.wait())
        stopper = asyncio.ensure_future(stopping.wait())
        try:
            await asyncio.wait({exited, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if not exited.done():
                proc.terminate()
                try:
                    await asyncio.wait_for(asyncio.shield(exited), self.policy.stop_timeout_s)
                except TimeoutError:
                    log.warning("%s process %s (pid %d) did not stop in time: killed", self.kind, slot.name, proc.pid)
                    proc.kill()
            code = await exited
        finally:
            stopper.cancel()
            if proc.returncode is None:  # cancelled: never leave a child behind
                proc.kill()
        slot.alive, slot.last_exit, slot.since = False, exit_status(code), time.time()
        self._changed.set()
        return code

    async def _publish(self, finished: asyncio.Event) -> None:
        """Write the health record every ``health_every_s``, and at once when a child starts or dies."""
        # One second longer than a heartbeat's (3 beats, at least 1 s): after an outright kill the
        # record must outlive the heartbeats of this process's own workers, or `check` would see
        # one of those still alive and no record naming the children whose heartbeats are gone.
        ttl = max(1, round(self.health_every_s * 3)) + 1
        while not finished.is_set():
            self._changed.clear()
            try:
                await self.client.set(self.health_key, json.dumps(self.health()), ex=ttl)
            except TRANSIENT_ERRORS as exc:
                log.warning("cannot publish the health of %s processes: %s", self.kind, exc)
            await wait_or_stop(self._changed, self.health_every_s)


def missing(health: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The supervised children that should be alive and are not, one line each, from the records of
    ``StatsReader.read()["health"]`` (router/stats.py): a child is alive when its supervisor says so and a heartbeat of
    its kind carries its host and pid (a supervisor killed outright leaves its record until the TTL
    ends, while its children, stopped by ``watch_parent``, remove their heartbeats)."""
    found = []
    for key, record in sorted(health.items()):
        if not key.startswith("supervisor:"):
            continue
        where, kind = key.removeprefix("supervisor:"), record.get("kind")
        beating = {(r.get("host"), r.get("pid")) for k, r in health.items() if k.startswith(f"{kind}:")}
        for name, child in sorted(record.get("children", {}).items()):
            if not child.get("alive"):
                found.append(
                    f"{name} of {where}: {child.get('last_exit')}, {child.get('restarts', 0)} restart(s) so far"
                )
            elif (record.get("host"), child.get("pid")) not in beating:
                found.append(f"{name} of {where} (pid {child.get('pid')}): running but no {kind} heartbeat")
    return found


def watch_parent(spec: str, grace_s: float) -> None:
    """In a supervised child, first thing: stop when the parent (``spec``: ``PID:FD``) dies.

    SIGTERM to this process lets it stop as it would when told to; after ``grace_s`` it is killed.
    """
    parent, fd = (int(part) for part in spec.split(":"))
    failed = set_parent_death_signal(signal.SIGTERM)
    if failed:
        log.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", failed)
    # The parent may have died between the fork and the prctl above: then nothing would signal us.
    if os.getppid() != parent:
        log.warning("parent process %d is gone before this one started: exiting", parent)
        raise SystemExit(1)
    threading.Thread(target=_stop_at_eof, args=(fd, grace_s), name="watch-parent", daemon=True).start()


def _stop_at_eof(fd: int, grace_s: float) -> None:
    with contextlib.suppress(OSError):
        while os.read(fd, 1):
            pass
    log.warning("parent process gone: stopping")
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(grace_s)
    log.error("still running %.0fs after the parent died: exiting", grace_s)
    os._exit(1)
