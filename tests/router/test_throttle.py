"""Issue 13, finding 8 (the log that grew 300 MB in 50 s): the same error is logged at most once
per interval, and the next one says how many were left out. Real logging, an injected clock."""

from __future__ import annotations

import io
import logging

import pytest

from router.throttle import Throttle

pytestmark = pytest.mark.cluster


def test_a_repeated_error_is_logged_once_per_interval_with_a_count() -> None:
    now = [0.0]
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(Throttle(interval_s=10, clock=lambda: now[0]))
    log = logging.getLogger("switchboard.test_throttle")
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.INFO)
    try:
        for i in range(10_000):
            try:
                raise OSError(24, "Too many open files")
            except OSError:
                log.exception("accepting a connection failed")
            log.info("routine %d", i)  # below WARNING: never throttled
        now[0] = 10.5
        log.error("accepting a connection failed")
        log.warning("removed stale %s", "redis.sock")  # one template, two different messages
        log.warning("removed stale %s", "redis.pid")
    finally:
        log.removeHandler(handler)
    lines = [line for line in out.getvalue().splitlines() if "failed" in line or "stale" in line]
    assert lines == [
        "accepting a connection failed",
        "accepting a connection failed [9999 more like this in the last 10 s]",
        "removed stale redis.sock",
        "removed stale redis.pid",
    ]
    assert out.getvalue().count("[Errno 24] Too many open files") == 1
    assert out.getvalue().count("routine") == 10_000
