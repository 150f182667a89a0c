"""Throttled logging: the same warning or error at most once per interval, with a count.

A failure that repeats on every request or connection (out of file descriptors, Redis gone) would
otherwise write a traceback per occurrence — 300 MB in 50 s under a connection flood — and fill
the disk the rest of the system needs. The first occurrence is logged in full; the next ones within
``interval_s`` are counted, and the first one after it says how many were left out. Messages are
compared as written (logger, level and text), not by template.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

Key = tuple[str, int, str]


class Throttle(logging.Filter):
    """A handler filter (handlers see every logger's records; a logger's filter only its own)."""

    def __init__(
        self, interval_s: float = 10.0, clock: Callable[[], float] = time.monotonic, max_keys: int = 10_000
    ) -> None:
        super().__init__()
        self.interval_s = interval_s
        self.clock = clock
        self.max_keys = max_keys
        self._seen: dict[Key, tuple[float, int]] = {}  # key -> (when last let through, left out since)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        # By the message as written: two different messages from one template (two stale files
        # removed) both get through, a failure repeated word for word does not.
        key = (record.name, record.levelno, record.getMessage())
        now = self.clock()
        last = self._seen.get(key)
        if last is not None and now - last[0] < self.interval_s:
            self._seen[key] = (last[0], last[1] + 1)
            return False
        if len(self._seen) >= self.max_keys:
            self._seen.clear()  # bounded memory; at worst a few repeats get through
        self._seen[key] = (now, 0)
        if last is not None and last[1]:
            record.msg, record.args = f"{key[2]} [{last[1]} more like this in the last {now - last[0]:.0f} s]", None
        return True
