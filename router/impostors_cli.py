"""``switchboard impostors eval|list|dismiss|confirm``: the impostor check from the command line.

``eval`` is offline (the labelled name pairs, impostors/pairs/); the others read and decide the
review queue of router/impostors.py in Redis.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from router.config import Settings

Handler = Callable[[argparse.Namespace, Settings], int]


def evaluate(args: argparse.Namespace, settings: Settings) -> int:
    """The catch and false-alarm rates on the tune and test pairs, with the configured thresholds."""
    from impostors import Thresholds
    from impostors.evaluate import PARTS, load, score, table

    limits = Thresholds(settings.impostors.impostor_ratio, settings.impostors.review_ratio)
    try:
        scores = [score(part, load(part), limits) for part in (args.part or PARTS)]
    except (OSError, ValueError) as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([s.as_dict() for s in scores], ensure_ascii=False, indent=2))
        return 0
    print(table(scores))
    for s in scores:
        for pair, verdict in s.misses:
            print(f"{s.part}: missed {pair.candidate!r} (staff {pair.staff!r}, {pair.trick}): {verdict.reason}")
        for pair, verdict in s.alarms:
            print(f"{s.part}: false alarm {pair.candidate!r} (staff {pair.staff!r}): {verdict.level}, {verdict.reason}")
    return 0


async def cases(rt: Any, args: argparse.Namespace) -> int:
    store = rt.impostor_cases
    if args.action == "list":
        found = await store.open_cases(args.limit)
        if args.json:
            print(json.dumps([c.as_dict() for c in found], ensure_ascii=False, indent=2))
            return 0
        for c in found:
            names = " / ".join(c.names)
            print(f"{c.id}  {c.level}  {names!r} like staff {c.staff_name!r} in {c.where}  seen {c.seen}x  {c.reason}")
        print(f"{len(found)} open case(s)")
        return 0
    from router.impostors import DECISIONS

    decision = DECISIONS[args.action]
    previous = await store.decide(args.case, decision, args.by)
    print(f"{args.case}: {previous} -> {decision} by {args.by}")
    return 0


def add_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    with_runtime: Callable[[Callable[[Any, argparse.Namespace], Awaitable[int]]], Handler],
) -> None:
    top = sub.add_parser("impostors", help="lookalikes of staff names: the review queue and the matcher's figures")
    isub = top.add_subparsers(dest="action", required=True, metavar="ACTION")
    sp = isub.add_parser("eval", help="catch and false-alarm rates on the labelled name pairs (offline)")
    sp.add_argument("--part", action="append", choices=["tune", "test"], help="only this part (repeatable)")
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp.set_defaults(handler=evaluate)
    sp = isub.add_parser("list", help="cases waiting for a moderator, oldest first")
    sp.add_argument("--limit", type=int, default=100)
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp.set_defaults(handler=with_runtime(cases))
    for action, help_ in (
        ("dismiss", "not an impostor: close the case (it opens again if the member takes new names)"),
        ("confirm", "an impostor: close the case as confirmed (act on the platform yourself: nothing is automatic)"),
    ):
        sp = isub.add_parser(action, help=help_)
        sp.add_argument("case", help="the case id, platform:account:user (from `impostors list`)")
        sp.add_argument("--by", required=True, help="the moderator deciding (recorded)")
        sp.set_defaults(handler=with_runtime(cases))
