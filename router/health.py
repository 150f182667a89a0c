"""Reading the health records: which adapters stopped for good (``switchboard check`` fails on them)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any


def dead_adapters(health: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One alert line per adapter whose record carries a ``fatal`` reason (``StatsReader.read()["health"]``).

    A disconnected adapter that keeps reconnecting is not dead; one that gave up (its token was
    reset, an intent revoked) is, and stays so until it is reconfigured and restarted.
    """
    found = []
    for key, record in sorted(health.items()):
        reason = record.get("fatal")
        if not key.startswith("adapter:") or not reason:
            continue
        at = record.get("fatal_at")
        since = f" since {dt.datetime.fromtimestamp(at, dt.UTC):%Y-%m-%d %H:%M:%S} UTC" if at else ""
        found.append(f"adapter {key.removeprefix('adapter:')} stopped{since}: {reason}")
    return found
