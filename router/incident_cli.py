"""``switchboard incident open|list|show|update|resolve|claim``: incidents from the command line
(router/incidents.py, docs/incidents.md)."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import yaml

from router.config import Settings
from router.errors import BadRequest
from router.incidents import MODES, Incident

Handler = Callable[[argparse.Namespace, Settings], int]


def _texts(pairs: list[str] | None, what: str) -> dict[str, str] | None:
    """``--text LANG=TEXT`` options as a mapping (None: none given)."""
    if not pairs:
        return None
    out = {}
    for pair in pairs:
        lang, sep, text = pair.partition("=")
        if not sep:
            raise BadRequest(f"{what}: LANG=TEXT, e.g. en='Withdrawals are delayed', not {pair!r}")
        out[lang] = text
    return out


def _matcher(args: argparse.Namespace) -> Any:
    """The matcher of ``--match`` (YAML or JSON text) or ``--match-file``; None when neither."""
    source = Path(args.match_file).read_text(encoding="utf-8") if args.match_file else args.match
    if source is None:
        return None
    try:
        return yaml.safe_load(source)
    except yaml.YAMLError as exc:
        raise BadRequest(f"matcher: not YAML: {exc}") from None


def _when(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000)) if ms else "-"


def _line(inc: Incident) -> str:
    return f"#{inc.id:<4} {inc.state:<9} opened {_when(inc.created_ms)} by {inc.created_by:<12} {inc.title}"


async def run(rt: Any, args: argparse.Namespace) -> int:
    store = rt.incidents
    groups = sorted((await rt.engine()).groups)
    if args.action == "open":
        texts = _texts(args.text, "--text")
        when = _matcher(args)
        if when is None or texts is None:
            raise BadRequest("open needs a matcher (--match or --match-file) and --text en=... (and other languages)")
        inc = await store.open(args.title, when, texts, args.by)
        print(f"opened incident #{inc.id}: {inc.title} (conversations that match are linked from now on)")
        return 0
    if args.action == "list":
        found = await store.recent(args.state)
        if args.json:
            print(json.dumps([i.to_dict() for i in found], ensure_ascii=False, indent=2))
            return 0
        for inc in found:
            print(_line(inc))
        print(f"{len(found)} incident(s)")
        return 0
    if args.action == "show":
        inc = await store.get(args.incident)
        counts = await store.counts(inc.id, groups)
        history = await store.history(inc.id)
        linked = await store.linked(inc.id, args.limit)
        if args.json:
            out = {**inc.to_dict(), "counts": counts.to_dict(), "history": history, "linked": linked}
            print(json.dumps(out, ensure_ascii=False, indent=2))
            return 0
        print(_line(inc))
        print(f"matcher: {json.dumps(inc.when, ensure_ascii=False)}")
        for lang, text in sorted(inc.texts.items()):
            print(f"status [{lang}]: {text}")
        for lang, text in sorted(inc.resolution.items()):
            print(f"resolution [{lang}]: {text}  ({inc.mode})")
        held = ", ".join(f"{g} {n}" for g, n in counts.held.items()) or "none"
        print(f"linked {counts.linked}, collapsed now: {held}; resolution sent to {counts.sent}")
        for h in history:
            print(f"{_when(h['at_ms'])} {h['event']} by {h['by']}")
        if linked:
            print("linked conversations: " + " ".join(f"#{c}" for c in linked))
        return 0
    if args.action == "update":
        inc = await store.update(
            args.incident, args.by, title=args.title, texts=_texts(args.text, "--text"), when=_matcher(args)
        )
        print(f"updated incident #{inc.id}")
        return 0
    if args.action == "resolve":
        texts = _texts(args.text, "--text")
        if texts is None:
            raise BadRequest("resolve needs the resolution text: --text en=... (and other languages)")
        inc = await store.resolve(args.incident, args.by, texts, args.mode)
        print(f"incident #{inc.id} {inc.state}: the resolution goes to every linked conversation, then {args.mode}")
        return 0
    if args.action == "suggest":
        from router.surge import suggestions

        found = await suggestions(rt.client, rt.shards, rt.settings.incidents, int(time.time() * 1000))
        if args.json:
            print(json.dumps([s.to_dict() for s in found], ensure_ascii=False, indent=2))
            return 0
        for s in found:
            ratio = f"{s.ratio}x its baseline ({s.baseline} per {s.window_m} min)" if s.ratio else "no baseline"
            print(f"tag {s.tag}: {s.recent} new conversations in the last {s.window_m} min, {ratio}")
        print(f"{len(found)} suggested incident(s)")
        return 0
    cid = await store.claim(args.incident, args.group, args.agent, args.conversation or "")
    if cid is None:
        print(f"no conversation of {args.group} collapsed under incident #{args.incident}")
        return 1
    print(f"claimed #{cid} for {args.agent}")
    return 0


def add_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    with_runtime: Callable[[Callable[[Any, argparse.Namespace], Awaitable[int]]], Handler],
) -> None:
    top = sub.add_parser("incident", help="incidents: open, list, show, update, resolve (docs/incidents.md)")
    isub = top.add_subparsers(dest="action", required=True, metavar="ACTION")
    handler = with_runtime(run)

    def matcher_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--match", help="the matcher: a rule's conditions, YAML or JSON (docs/rules.md)")
        sp.add_argument("--match-file", help="the matcher from a YAML file")
        sp.add_argument("--text", action="append", metavar="LANG=TEXT", help="status text in a language (repeat)")

    sp = isub.add_parser("open", help="open an incident: new matching conversations are linked, answered, collapsed")
    sp.add_argument("title")
    matcher_args(sp)
    sp.add_argument("--by", required=True, help="the admin (recorded)")
    sp.set_defaults(handler=handler)
    sp = isub.add_parser("list", help="incidents, newest first")
    sp.add_argument("--state", choices=["open", "resolving", "resolved"])
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(handler=handler)
    sp = isub.add_parser("show", help="an incident: texts, counts, history, linked conversations")
    sp.add_argument("incident")
    sp.add_argument("--limit", type=int, default=200, help="linked conversations listed")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(handler=handler)
    sp = isub.add_parser("update", help="change an open incident's title, status texts or matcher")
    sp.add_argument("incident")
    sp.add_argument("--title")
    matcher_args(sp)
    sp.add_argument("--by", required=True)
    sp.set_defaults(handler=handler)
    sp = isub.add_parser("resolve", help="send the resolution to every linked conversation, then close or re-queue")
    sp.add_argument("incident")
    sp.add_argument("--text", action="append", metavar="LANG=TEXT", help="resolution text in a language (repeat)")
    sp.add_argument("--mode", choices=MODES, default="close", help="what happens to collapsed conversations")
    sp.add_argument("--by", required=True)
    sp.set_defaults(handler=handler)
    sp = isub.add_parser("suggest", help="tags whose rate rose N times above their baseline: suggested incidents")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(handler=handler)
    sp = isub.add_parser("claim", help="take a conversation collapsed under the incident (the most urgent)")
    sp.add_argument("incident")
    sp.add_argument("--group", required=True)
    sp.add_argument("--agent", required=True)
    sp.add_argument("--conversation", help="this one")
    sp.set_defaults(handler=handler)
