"""``switchboard simulate``: arrivals (an export, or a synthetic surge) through the SLA clock and a
simple assignment model in simulated time (sla/simulate.py); waiting times, first-response
attainment and occupancy per group. Offline: no Redis.

  switchboard simulate --traffic export.jsonl --policy sla.yaml --agents payments=4x3,security=2 \\
      --aht 300 --aht security=600 [--priority P3 --priority security=P1] [--handle exp|fixed] [--json]
  switchboard simulate --traffic surge:payments=400,security=60 --hours 3 --start 2026-12-07T09:00+01:00 ...
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

from router.staffing_cli import InputError, parse_instant, per_group, read_arrivals
from sla import PolicyError, load_file
from sla.simulate import Arrival, GroupResult, Staff, simulate

SURGE = "surge:"


def arguments(sp: argparse.ArgumentParser) -> None:
    """The command's options (registered by router/cli.py)."""
    sp.add_argument(
        "--traffic",
        required=True,
        metavar="FILE|surge:GROUP=PER_HOUR,…",
        help="JSON lines with received_at and group (as staffing --arrivals), or a synthetic Poisson surge",
    )
    sp.add_argument("--policy", required=True, type=Path, help="the SLA policy file (docs/sla.md)")
    sp.add_argument("--agents", required=True, metavar="GROUP=N[xCAPACITY],…", help="agents (and capacity) per group")
    sp.add_argument("--aht", action="append", required=True, metavar="[GROUP=]SECONDS", help="mean handle time")
    sp.add_argument("--handle", choices=["exp", "fixed"], default="exp", help="handle times: exponential or fixed")
    sp.add_argument("--priority", action="append", default=[], metavar="[GROUP=]P1..P4", help="default P3")
    sp.add_argument("--hours", type=float, default=1.0, help="surge: how long it lasts")
    sp.add_argument("--start", help="surge: when it starts (ISO 8601 with a zone; default now)")
    sp.add_argument("--seed", type=int, default=1, help="random draws (surge arrivals, handle times)")
    sp.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """Print the figures per group; exit 0, or 1 naming what in the input is wrong."""
    rnd = random.Random(args.seed)
    try:
        policy = load_file(args.policy)
        staff = parse_agents(args.agents)
        ahts = per_group(args.aht, "--aht")
        priorities = {g: _priority(p) for g, p in _pairs(args.priority, "--priority").items()}
        if args.traffic.startswith(SURGE):
            arrivals = surge(args.traffic, args.hours, _start(args.start), rnd)
        else:
            arrivals = [a for g, times in read_arrivals(Path(args.traffic)).items() for a in _arrivals(g, times)]
        arrivals = [Arrival(a.at, a.group, priorities.get(a.group, priorities.get("", 3))) for a in arrivals]
        results = simulate(policy, arrivals, staff, _handle(ahts, args.handle, rnd))
    except PolicyError as exc:
        for error in exc.errors:
            print(error, file=err)
        return 1
    except (InputError, ValueError, OSError) as exc:
        print(f"switchboard simulate: {exc}", file=err)
        return 1
    if args.json:
        out.write(json.dumps({"policy": policy.version, "groups": [_row(r) for r in results]}) + "\n")
        return 0
    print(
        f"{'group':<14} {'arrivals':>8} {'agents':>8} {'wait p50':>9} {'wait p90':>9} {'SLA met':>8} {'busy':>6}",
        file=out,
    )
    for r in results:
        staffed = f"{r.agents}x{r.capacity}"
        att = "-" if r.attainment is None else f"{r.attainment:.1%}"
        print(
            f"{r.group:<14} {r.arrivals:>8} {staffed:>8} {_s(r.wait_p50_s):>9} {_s(r.wait_p90_s):>9} "
            f"{att:>8} {r.occupancy:>6.1%}",
            file=out,
        )
    return 0


def parse_agents(spec: str) -> dict[str, Staff]:
    """``payments=4x3,security=2`` -> 4 agents of capacity 3, 2 of capacity 1."""
    staff: dict[str, Staff] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        group, _, count = part.partition("=")
        agents, _, capacity = count.partition("x")
        if not group or not agents.isdigit() or (capacity and not capacity.isdigit()):
            raise InputError(f"--agents {part!r}: expected GROUP=N or GROUP=NxCAPACITY")
        if group in staff:
            raise InputError(f"--agents gives {group} twice")
        staff[group] = Staff(int(agents), int(capacity or 1))
    if not staff:
        raise InputError("--agents names no group")
    return staff


def surge(spec: str, hours: float, start: datetime, rnd: random.Random) -> list[Arrival]:
    """Poisson arrivals at each group's rate per hour, for ``hours`` from ``start``."""
    if hours <= 0:
        raise InputError("--hours must be above 0")
    rates = per_group(spec.removeprefix(SURGE).split(","), "--traffic")
    end = start + timedelta(hours=hours)
    out = []
    for group, per_hour in rates.items():
        if not group or group == "all" or per_hour <= 0:
            raise InputError(f"--traffic surge: give GROUP=PER_HOUR (above 0), not {group or 'a bare rate'}")
        at = start
        while (at := at + timedelta(seconds=rnd.expovariate(per_hour / 3600))) < end:
            out.append(Arrival(at, group, 3))
    return out


def _arrivals(group: str, times: list[datetime]) -> list[Arrival]:
    return [Arrival(t, group, 3) for t in times]


def _handle(ahts: dict[str, float], kind: str, rnd: random.Random) -> Callable[[str], float]:
    def draw(group: str) -> float:
        mean = ahts.get(group, ahts.get(""))
        if mean is None:
            raise InputError(f"no handle time for group {group!r}: give --aht {group}=SECONDS or a default --aht")
        return rnd.expovariate(1 / mean) if kind == "exp" and mean > 0 else mean

    return draw


def _pairs(values: list[str], option: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        group, _, rest = value.rpartition("=")
        if group in out:
            raise InputError(f"{option} given twice for {group or 'the default'}")
        out[group] = rest
    return out


def _priority(value: str) -> int:
    text = value.upper().removeprefix("P")
    if text not in {"1", "2", "3", "4"}:
        raise InputError(f"--priority {value!r}: expected P1..P4")
    return int(text)


def _start(value: str | None) -> datetime:
    return datetime.now(UTC) if value is None else parse_instant(value, "--start")


def _s(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.0f}s"


def _row(r: GroupResult) -> dict[str, object]:
    return {
        "group": r.group,
        "arrivals": r.arrivals,
        "agents": r.agents,
        "capacity": r.capacity,
        "wait_p50_s": r.wait_p50_s,
        "wait_p90_s": r.wait_p90_s,
        "first_response_met": r.met,
        "first_response_breached": r.breached,
        "attainment": r.attainment,
        "occupancy": round(r.occupancy, 4),
    }
