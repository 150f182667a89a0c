"""``switchboard staffing``: agents needed per group and hour of the week (Erlang C, sla/staffing.py).

Arrival rates come from an export of messages (``--arrivals``: JSON lines with ``received_at`` —
unix seconds, as in the envelope, or ISO 8601 with a zone — and ``group``), averaged per hour of
the week over the weeks the file spans; or are given (``--rate``). Offline: no Redis.
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sla import staffing

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
#: Bad lines listed before the rest are only counted.
MAX_REPORTED = 20


class InputError(Exception):
    """An arrivals file or an option that cannot be used; the message says where and why."""


def arguments(sp: argparse.ArgumentParser) -> None:
    """The command's options (registered by router/cli.py)."""
    source = sp.add_mutually_exclusive_group(required=True)
    source.add_argument("--arrivals", type=Path, metavar="FILE", help="JSON lines with received_at and group")
    source.add_argument(
        "--rate",
        action="append",
        metavar="[GROUP=]PER_HOUR",
        help="arrivals per hour, for every hour (repeat per group; without GROUP: the group 'all')",
    )
    sp.add_argument(
        "--aht",
        action="append",
        required=True,
        metavar="[GROUP=]SECONDS",
        help="average handle time (repeat per group; without GROUP: every group without its own)",
    )
    sp.add_argument("--target", type=float, default=0.8, help="share answered within --within (default 0.8)")
    sp.add_argument("--within", type=float, default=60.0, help="seconds (default 60)")
    sp.add_argument("--max-occupancy", type=float, default=0.85, help="at most this share busy (default 0.85)")
    sp.add_argument("--tz", default="UTC", help="time zone of the hours of the week (default UTC)")
    sp.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """Print the plan; exit 0, or 1 naming what in the input is wrong."""
    span: dict[str, str] = {}
    try:
        tz = _zone(args.tz)
        ahts = per_group(args.aht, "--aht")
        if args.arrivals is not None:
            arrivals = read_arrivals(args.arrivals)
            first, last = min(map(min, arrivals.values())), max(map(max, arrivals.values()))
            span = {"first": first.isoformat(), "last": last.isoformat()}
            rates = {g: staffing.weekly_rates(times, tz, first, last) for g, times in sorted(arrivals.items())}
        else:
            rates = {g: [r] for g, r in sorted(per_group(args.rate, "--rate").items())}
        rows = plan(rates, ahts, args.target, args.within, args.max_occupancy)
    except (InputError, ValueError) as exc:
        print(f"switchboard staffing: {exc}", file=err)
        return 1
    settings = {
        "target": args.target,
        "within_s": args.within,
        "max_occupancy": args.max_occupancy,
        "tz": args.tz,
        "arrivals": span or None,  # the span the rates are averaged over
    }
    if args.json:
        out.write(json.dumps({**settings, "rows": rows}) + "\n")
    else:
        _table(rows, settings, out)
    return 0


def plan(
    rates: dict[str, list[float]], ahts: dict[str, float], target: float, within: float, max_occupancy: float
) -> list[dict[str, Any]]:
    """One row per group and hour of the week (one per group for a steady rate)."""
    rows: list[dict[str, Any]] = []
    for group, slots in rates.items():
        aht = ahts.get(group, ahts.get(""))
        if aht is None:
            raise InputError(f"no handle time for group {group!r}: give --aht {group}=SECONDS or a default --aht")
        for slot, rate in enumerate(slots):
            need = staffing.agents_needed(rate, aht, target, within, max_occupancy)
            rows.append(
                {
                    "group": group,
                    "hour": None if len(slots) == 1 else f"{DAY_NAMES[slot // 24]} {slot % 24:02d}:00",
                    "rate_per_hour": round(rate, 4),
                    "aht_s": aht,
                    "erlangs": round(need.traffic, 4),
                    "agents": need.agents,
                    "service_level": round(need.service_level, 4),
                    "asa_s": round(need.asa, 2),
                    "occupancy": round(need.occupancy, 4),
                }
            )
    return rows


def read_arrivals(path: Path) -> dict[str, list[datetime]]:
    """Arrival instants per group; every bad line is named (the first MAX_REPORTED of them)."""
    arrivals: dict[str, list[datetime]] = defaultdict(list)
    problems: list[str] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read it ({exc})") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            group, at = _arrival(line)
        except InputError as exc:
            problems.append(f"{path}:{number}: {exc}")
            continue
        arrivals[group].append(at)
    if problems:
        more = f"\n… and {len(problems) - MAX_REPORTED} more bad line(s)" if len(problems) > MAX_REPORTED else ""
        raise InputError("\n".join(problems[:MAX_REPORTED]) + more)
    if not arrivals:
        raise InputError(f"{path}: no arrivals in it")
    return dict(arrivals)


def _arrival(line: str) -> tuple[str, datetime]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InputError(f"not JSON ({exc.msg})") from None
    if not isinstance(record, dict):
        raise InputError("a line is a JSON object with received_at and group")
    group, raw = record.get("group"), record.get("received_at")
    if not isinstance(group, str) or not group:
        raise InputError("group missing (a non-empty string)")
    if isinstance(raw, int | float) and not isinstance(raw, bool) and math.isfinite(raw):
        try:
            return group, datetime.fromtimestamp(raw, UTC)
        except (OverflowError, OSError, ValueError):
            raise InputError(f"received_at {raw} is out of range (unix seconds)") from None
    if isinstance(raw, str):
        return group, parse_instant(raw, "received_at")
    raise InputError("received_at missing (unix seconds, or ISO 8601 with a zone)")


def parse_instant(raw: str, what: str) -> datetime:
    """An ISO 8601 instant with its zone; ``what`` names the field or option in the error."""
    try:
        at = datetime.fromisoformat(raw)
    except ValueError:
        raise InputError(f"{what} {raw!r}: not ISO 8601") from None
    if at.tzinfo is None:
        raise InputError(f"{what} {raw!r} has no time zone (add Z or +HH:MM)")
    return at


def per_group(values: list[str], option: str) -> dict[str, float]:
    """``["300", "payments=600"]`` -> {"": 300.0, "payments": 600.0} (``--rate``: "" is "all")."""
    out: dict[str, float] = {}
    for value in values:
        group, _, number = value.rpartition("=")
        try:
            parsed = float(number)
        except ValueError:
            raise InputError(f"{option} {value!r}: expected [GROUP=]NUMBER") from None
        key = group or ("all" if option == "--rate" else "")
        if key in out:
            raise InputError(f"{option} given twice for {group or 'the default'}")
        out[key] = parsed
    return out


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InputError(f"unknown time zone {name!r} (an IANA name such as Europe/Berlin)") from None


def _table(rows: list[dict[str, Any]], settings: dict[str, Any], out: IO[str]) -> None:
    out.write(
        f"Erlang C: {settings['target']:.0%} answered within {settings['within_s']:g} s, "
        f"occupancy at most {settings['max_occupancy']:.0%}; hours in {settings['tz']}\n"
    )
    if settings["arrivals"]:
        out.write(f"arrival rates averaged from {settings['arrivals']['first']} to {settings['arrivals']['last']}\n")
    quiet = 0
    group = None
    for row in rows:
        if row["hour"] is not None and row["rate_per_hour"] == 0:
            quiet += 1
            continue
        if row["group"] != group:
            group = row["group"]
            out.write(f"\n{group} (handle time {row['aht_s']:g} s)\n")
            out.write(
                f"  {'hour':<9} {'arrivals/h':>10} {'erlangs':>8} {'agents':>6} {'SL':>7} {'ASA':>8} {'busy':>5}\n"
            )
        out.write(
            f"  {row['hour'] or 'any':<9} {row['rate_per_hour']:>10.2f} {row['erlangs']:>8.2f} {row['agents']:>6} "
            f"{row['service_level']:>7.1%} {row['asa_s']:>7.1f}s {row['occupancy']:>5.0%}\n"
        )
    if quiet:
        out.write(f"\n({quiet} group-hours without arrivals need no agents: not listed; --json lists them)\n")
