"""Reading the health records: which adapters stopped for good (``switchboard check`` fails on them),
which worker process holds which shard."""

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


def shard_holders(health: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Which worker process runs each shard's loop under its lease (``worker.shard_leases``), by
    shard number: its loop's name (``<process>-s<i>``), pid and fence. Empty with leases off or
    one shard; a shard missing is between holders or has none."""
    found: dict[str, dict[str, Any]] = {}
    for key, record in sorted(health.items()):
        if key.startswith("worker:") and "fence" in record:
            found[str(record["shard"])] = {
                "worker": key.removeprefix("worker:"),
                "pid": record.get("pid"),
                "fence": record["fence"],
            }
    return dict(sorted(found.items(), key=lambda item: int(item[0])))
