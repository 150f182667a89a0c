"""router/lifecycle.py: the retry loop every long-running task uses, the signal installer, running()."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import pytest

from router.lifecycle import Backoff, Loop, keep_running, running, signals_stop

pytestmark = pytest.mark.cluster


class Flaky(Exception):
    pass


async def test_keep_running_retries_resets_after_success_and_stops() -> None:
    stopping = asyncio.Event()
    backoff = Backoff(base=0.001, cap=0.004)
    outcomes = iter([Flaky("a"), Flaky("b"), None, Flaky("c"), None, "stop"])
    attempts_seen: list[int] = []

    async def step() -> bool:
        attempts_seen.append(backoff.attempt)
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        if outcome == "stop":
            stopping.set()
        return False

    await keep_running(step, stopping, what="test", retry_on=(Flaky,), backoff=backoff)
    # Two failures raise the attempt count; the success resets it, the next failure starts over.
    assert attempts_seen == [0, 1, 2, 0, 1, 0]


async def test_keep_running_lets_other_errors_through_and_on_error_chooses_the_delay() -> None:
    stopping = asyncio.Event()
    delays: list[BaseException] = []
    calls = 0

    async def step() -> bool:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise Flaky("retry me")
        raise KeyError("a bug")

    async def on_error(exc: BaseException) -> float:
        delays.append(exc)
        return 0.0

    with pytest.raises(KeyError):
        await keep_running(step, stopping, what="test", retry_on=(Flaky,), on_error=on_error)
    assert [str(e) for e in delays] == ["retry me"] and calls == 2


async def test_keep_running_returns_when_the_step_says_done_or_stopping_cuts_the_wait() -> None:
    stopping = asyncio.Event()
    assert await asyncio.wait_for(keep_running(_done, stopping, what="t", retry_on=(Flaky,)), 5) is None

    async def fail() -> bool:
        raise Flaky("down")

    # An hour's backoff: only `stopping` can end the wait.
    loop = asyncio.create_task(keep_running(fail, stopping, what="t", retry_on=(Flaky,), backoff=Backoff(3600, 3600)))
    await asyncio.sleep(0.05)
    assert not loop.done()
    stopping.set()
    await asyncio.wait_for(loop, 5)


async def _done() -> bool:
    return True


async def test_loop_rounds_go_on_at_once_while_there_is_more_and_keep_the_last_error() -> None:
    """``Loop.rounds``: again at once after a round that says there is more, after ``idle_s``
    otherwise (here a day: the test ends long before, so a wait would show); a failed round's
    error is ``last_error`` until a round succeeds; a graceful close lets the round in hand end."""
    loop = Loop("test", (Flaky,), graceful=True)
    outcomes = iter([True, Flaky("disk full"), "hold", True, False])
    seen: list[str] = []
    held, release, failed_errors = asyncio.Event(), asyncio.Event(), []

    async def round_() -> bool:
        outcome = next(outcomes)
        seen.append(str(outcome))
        if isinstance(outcome, Exception):
            raise outcome
        if outcome == "hold":
            assert loop.last_error == "disk full"  # until this round succeeds
            held.set()
            await release.wait()
            return True
        return bool(outcome)

    async def on_error(exc: BaseException) -> float:
        failed_errors.append(loop.last_error)
        return 0.0  # no backoff: straight to the next round

    loop.rounds(round_, lambda: 86400.0, on_error)
    await asyncio.wait_for(held.wait(), 5)
    closing = asyncio.create_task(loop.close())
    await asyncio.sleep(0.05)
    assert not closing.done()  # graceful: the round in hand goes on
    release.set()
    await asyncio.wait_for(closing, 5)
    assert failed_errors == ["disk full"] and loop.last_error == "" and not loop.alive
    # The held round said "more", but the loop was stopping: no round after it.
    assert seen == ["True", "disk full", "hold"]


async def test_a_loop_keeps_a_failed_steps_error_until_a_step_succeeds() -> None:
    """``Loop.start``: what a service's health reports (``Loop.health``) is the outage while it
    lasts, and the service's own detail once a step got through again."""
    loop = Loop("test", (Flaky,))
    outcomes = iter([Flaky("redis down"), "check", None, "check again"])
    checked, seen = asyncio.Event(), []

    async def step() -> bool:
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        seen.append((outcome, loop.health("fine")))
        if outcome == "check again":
            checked.set()
            return True
        return False

    async def on_error(exc: BaseException) -> float:
        return 0.0

    loop.start(step, on_error)
    await asyncio.wait_for(checked.wait(), 5)
    await loop.close()
    # During the step after the failure the error stands; once that step succeeded, it is gone.
    down, up = {"connected": False, "detail": "redis down"}, {"connected": True, "detail": "fine"}
    assert seen == [("check", down), (None, up), ("check again", up)]
    assert loop.health("fine") == {"connected": False, "detail": "fine"}, "a closed loop is not connected"


async def test_a_loop_that_is_not_graceful_cancels_the_step_in_hand() -> None:
    loop, started = Loop("test", (Flaky,)), asyncio.Event()

    async def step() -> None:
        started.set()
        await asyncio.Event().wait()  # never set

    loop.start(step)
    await asyncio.wait_for(started.wait(), 5)
    await asyncio.wait_for(loop.close(), 5)
    assert not loop.alive


async def test_signals_stop_installs_and_removes_the_handlers() -> None:
    asked = asyncio.Event()
    with signals_stop(asked.set):
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(asked.wait(), 5)
    # Removed on the way out: the default disposition is back.
    assert not asyncio.get_running_loop().remove_signal_handler(signal.SIGTERM)
    with signals_stop(asked.set, enabled=False):
        assert not asyncio.get_running_loop().remove_signal_handler(signal.SIGINT)


class _Svc:
    def __init__(self, name: str, log: list[str], fail_start: bool = False) -> None:
        self.name, self.log, self.fail_start = name, log, fail_start

    async def start(self) -> None:
        if self.fail_start:
            raise RuntimeError(f"{self.name} cannot start")
        self.log.append(f"start {self.name}")

    async def close(self) -> None:
        self.log.append(f"close {self.name}")

    def health(self) -> dict[str, Any]:
        return {"connected": True, "detail": ""}


async def test_running_closes_in_reverse_order_and_only_what_started() -> None:
    log: list[str] = []
    async with running([_Svc("a", log), _Svc("b", log)]) as started:
        assert [s.name for s in started] == ["a", "b"]
    assert log == ["start a", "start b", "close b", "close a"]
    log.clear()
    with pytest.raises(RuntimeError, match="c cannot start"):
        async with running([_Svc("a", log), _Svc("c", log, fail_start=True), _Svc("d", log)]):
            pass
    assert log == ["start a", "close a"]
