"""``switchboard agent``: an agent's status and heartbeat, an admin's view and edit of profiles.

``agent online`` sets the status and keeps beating (every ``assign.heartbeat_s``) until Ctrl-C,
then sets ``offline``: the agent's open conversations go back to the queue after the grace
period (router/presence.py). ``agent away|offline`` set the status once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from router.presence import STATUSES, AgentState, Presence, parse_capacity

Runner = Callable[[Callable[[Any, argparse.Namespace], Awaitable[int]]], Any]


def _presence(rt: Any) -> Presence:
    return Presence(rt.client, rt.keys, rt.settings.assign)


def _print(state: AgentState, presence: Presence, as_json: bool) -> None:
    d = state.to_dict(presence.clock.now_ms(), presence.grace_ms)
    if as_json:
        print(json.dumps(d, ensure_ascii=False))
        return
    cap = ", ".join(f"{ch} {state.load.get(ch, 0)}/{n}" for ch, n in sorted(state.capacity.items())) or "no capacity"
    print(
        f"{d['name']:<16} {d['status']:<8} groups: {','.join(d['groups']) or '-'}  "
        f"languages: {','.join(d['languages']) or 'any'}  tags: {','.join(d['tags']) or '-'}  load: {cap}"
    )


async def status(rt: Any, args: argparse.Namespace) -> int:
    presence = _presence(rt)
    name = args.name or getpass.getuser()
    state = await presence.set_status(name, args.action)
    _print(state, presence, False)
    if args.action != "online" or args.once:
        return 0
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"{name} is online; beating every {rt.settings.assign.heartbeat_s:g}s. Ctrl-C goes offline.", file=sys.stderr)
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), rt.settings.assign.heartbeat_s)
            if not stop.is_set():
                await presence.beat(name)
    finally:
        await presence.set_status(name, "offline")
        print(f"{name} is offline.", file=sys.stderr)
    return 0


def _split(value: str | None) -> list[str] | None:
    return None if value is None else [x for x in value.split(",") if x.strip()]


async def edit(rt: Any, args: argparse.Namespace) -> int:
    presence = _presence(rt)
    state = await presence.set_profile(
        args.name,
        groups=_split(args.groups),
        languages=_split(args.languages),
        tags=_split(args.tags),
        capacity=parse_capacity(args.capacity) if args.capacity else None,
    )
    _print(state, presence, args.json)
    return 0


async def listing(rt: Any, args: argparse.Namespace) -> int:
    presence = _presence(rt)
    agents = await presence.all()
    if args.json:
        now = presence.clock.now_ms()
        print(json.dumps([a.to_dict(now, presence.grace_ms) for a in agents], ensure_ascii=False))
        return 0
    for state in agents:
        _print(state, presence, False)
    if not agents:
        print("no agents (switchboard agent set NAME --capacity telegram=3 ...)", file=sys.stderr)
    return 0


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser], with_runtime: Runner) -> None:
    """``agent online|away|offline|set|list`` under the CLI's subcommands."""
    top = sub.add_parser("agent", help="agents: status and heartbeat, skills and capacity (automatic assignment)")
    asub = top.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name in STATUSES:
        what = "set online and keep beating until Ctrl-C (then offline)" if name == "online" else f"set {name}"
        sp = asub.add_parser(name, help=what)
        sp.add_argument("--name", help="the agent (default: your login name)")
        # Only `online` keeps beating; the others set the status and return.
        sp.set_defaults(handler=with_runtime(status), once=name != "online")
        if name == "online":
            sp.add_argument("--once", action="store_true", help="set the status and return (a heartbeat of its own)")
    sp = asub.add_parser("set", help="an agent's groups, languages, skill tags and capacity per channel (admins)")
    sp.add_argument("name")
    sp.add_argument("--groups", help="comma-separated (default: the console user's groups)")
    sp.add_argument("--languages", help="comma-separated ISO 639-1 codes, e.g. en,zh (none: any language)")
    sp.add_argument("--tags", "--skills", dest="tags", help="comma-separated skill tags, e.g. vip,api")
    sp.add_argument("--capacity", action="append", metavar="CHANNEL=N", help="e.g. telegram=3 (repeat)")
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp.set_defaults(handler=with_runtime(edit))
    sp = asub.add_parser("list", help="agents with their status, groups, skills and load per channel")
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp.set_defaults(handler=with_runtime(listing))
