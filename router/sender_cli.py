"""``switchboard sender ban|mute|unban|list|restore``: admission control's admin actions
(router/admission.py, docs/admission.md), each audited."""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from router.admission import parse_duration
from router.config import Settings

Handler = Callable[[argparse.Namespace, Settings], int]


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


async def senders(rt: Any, args: argparse.Namespace) -> int:
    store = rt.senders
    if args.action in ("ban", "mute"):
        for_s = parse_duration(args.for_) if args.for_ else None
        block = await store.block(args.action, args.sender, by=args.by, for_s=for_s, reason=args.reason)
        until = f"until {_when(block.until_ms)}" if block.until_ms else "until unbanned"
        poll = rt.settings.worker.rules_poll_s
        print(f"{block.channel}:{block.sender} {block.mode} {until}; workers apply it within {poll:g} s")
    elif args.action == "unban":
        if not await store.unban(args.sender, by=args.by):
            print(f"{args.sender} was neither banned nor muted")
            return 1
        print(f"{args.sender} unbanned")
    elif args.action == "restore":
        await store.restore(args.conversation, by=args.by)
        print(f"conversation {args.conversation} is back in its queue")
    else:
        found = await store.list()
        if args.json:
            print(json.dumps([b.to_dict() for b in found], ensure_ascii=False, indent=2))
            return 0
        for b in found:
            until = _when(b.until_ms) if b.until_ms else "until unbanned"
            print(f"{b.channel}:{b.sender}  {b.mode}  {until}  by {b.by} at {_when(b.at_ms)}  {b.reason}")
        print(f"{len(found)} sender(s) banned or muted")
    return 0


def add_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    with_runtime: Callable[[Callable[[Any, argparse.Namespace], Awaitable[int]]], Handler],
) -> None:
    top = sub.add_parser("sender", help="ban, mute or unban a sender; restore a held conversation (docs/admission.md)")
    ssub = top.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(name: str, help_: str, target: tuple[str, str] | None = None) -> argparse.ArgumentParser:
        sp = ssub.add_parser(name, help=help_)
        if target is not None:
            sp.add_argument(target[0], help=target[1])
            sp.add_argument("--by", default="operator", help="who does it (audited)")
        sp.set_defaults(handler=with_runtime(senders))
        return sp

    sender = ("sender", "CHANNEL:ID, the sender's platform id on that channel (telegram:123456789)")
    for name, help_ in (
        ("ban", "keep a sender's messages out of the queues (kept in history, tagged banned)"),
        ("mute", "the same, tagged muted (for a while, say: --for 1h)"),
    ):
        sp = action(name, help_, sender)
        sp.add_argument("--for", dest="for_", metavar="DURATION", help="30m, 1h, 7d (default: until unbanned)")
        sp.add_argument("--reason", default="", help="why (audited, shown in `sender list`)")
    action("unban", "lift a ban or mute (exit 1 when there was none)", sender)
    action("list", "the bans and mutes in force").add_argument(
        "--json", action="store_true", help="machine-readable output"
    )
    action("restore", "put a held conversation (banned, muted, spam) back in its queue", ("conversation", "its id"))
