"""``switchboard``: the command line, and the composition root (the only module importing everything).

Commands that need Redis use ``SWITCHBOARD_REDIS__URL`` when set; otherwise the embedded server of
the data directory — the running ``switchboard run``'s, or one started for the command's duration.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from router.config import Settings, load_settings
from router.conversations import CLOSE_REASONS
from router.errors import BadRequest, ConfigError, SwitchboardError

Handler = Callable[[argparse.Namespace, Settings], int]


def _print_json(value: Any) -> None:
    print(json.dumps(value, ensure_ascii=False, indent=None, default=str))


def _ago(ms: int) -> str:
    seconds = max(0.0, time.time() - ms / 1000)
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _with_runtime(fn: Callable[[Any, argparse.Namespace], Awaitable[int]]) -> Handler:
    """Run ``fn(runtime, args)`` against the configured (or embedded) Redis."""

    def handler(args: argparse.Namespace, settings: Settings) -> int:
        from router.redis import redis_server
        from router.runtime import Runtime

        async def main(url: str) -> int:
            async with Runtime(settings, url) as rt:
                return await fn(rt, args)

        with redis_server(settings) as url:
            return asyncio.run(main(url))

    return handler


def _weekly_recipients(settings: Settings) -> list[Any]:
    """The weekly summary's recipients from ``[reports]``, through the adapters' own settings
    (an [email] mailbox's SMTP, a [telegram] bot); ConfigError naming what is missing."""
    reports, out = settings.reports, list[Any]()
    if reports.email_to:
        from adapters.email.report import report_mail

        out.append(report_mail(settings.email, reports.email_mailbox, reports.email_to))
    if reports.telegram_chat is not None:
        from adapters.telegram.report import report_chat

        out.append(report_chat(settings.telegram, reports.telegram_bot, reports.telegram_chat))
    return out


# -- run / worker --------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    import adapters
    from router.redis import redis_server
    from router.runtime import Runtime
    from router.supervisor import serve, worker_processes

    if args.supervised_by:
        from router.processes import watch_parent

        watch_parent(args.supervised_by, settings.worker.stop_timeout_s)

    async def main(url: str) -> int:
        async with Runtime(settings, url) as rt:
            enabled: list[Any] = []
            if not args.workers_only:
                sections = {name: getattr(settings, name) for name in adapters.CHANNELS}
                enabled.extend(adapters.build(rt.channel_context(), sections))
                from router import archive, exporter
                from router.weekly import store_opener

                # Every conversation event into the analytics store (docs/analytics.md); started
                # below, it is made first: this process's readers (the console's reports and
                # archived conversations, the weekly summary) read through it.
                export = exporter.service(rt)
                store = settings.analytics.path(settings.redis.data_dir)
                if settings.web.enabled:
                    from adapters.sandbox import SandboxUsers
                    from router.console import ConsoleServer, create_app

                    # The console is one more service: started after the adapters, closed first.
                    enabled.append(
                        ConsoleServer(
                            create_app(rt, settings, SandboxUsers(rt.channel_context()), store_opener(store, export)),
                            settings.web.host,
                            settings.web.port,
                        )
                    )
                from router import answerer, review

                # The second opinion on unsure triage and the knowledge base's answers: off the
                # hot path, beside the workers.
                enabled.extend(x for x in [review.service(rt, settings)] if x is not None)
                enabled.extend(x for x in [answerer.service(rt, settings)] if x is not None)
                if settings.sla.timer:
                    from router.slatimer import SlaTimer

                    # Deadlines and escalations: every replica runs one, the timer leases decide.
                    enabled.append(SlaTimer(rt))
                from router.online import OnlineCounts

                # Agents online per group, copied where the wait estimates read them.
                enabled.append(OnlineCounts(rt, settings))
                # The same tables into PostgreSQL too, when configured (router/pgstore.py); closed
                # conversations into the archive, through the exporter's connection.
                if export is not None:
                    enabled.append(export)
                    others = [exporter.postgres_service(rt), archive.service(rt, export.reader)]
                    enabled.extend(x for x in others if x is not None)
                if settings.reports.weekly:
                    from router.weekly import WeeklyReports, store_reader

                    # The weekly summary: every replica runs one, a key per week decides who sends.
                    enabled.append(WeeklyReports(rt, _weekly_recipients(settings), store_reader(store, export)))
                from router import csat

                # Satisfaction surveys after close: every replica runs one, the survey leases decide.
                enabled.extend(x for x in [csat.service(rt)] if x is not None)
                if settings.incidents.enabled:
                    from router.incident_broadcast import Broadcaster
                    from router.incident_link import Linker

                    # Linking off the hot path; the resolution broadcast under per-shard leases.
                    enabled.extend([Linker(rt, rt.incidents), Broadcaster(rt, rt.incidents)])
            from router import assignment

            # Automatic assignment runs in the worker processes too (none without a policy file or
            # a published policy).
            enabled.extend(x for x in [await assignment.service(rt, settings)] if x is not None)
            where = "configured URL" if settings.redis_url else f"embedded, data in {settings.redis.data_dir}"
            print(
                f"Switchboard running (redis: {where}; "
                f"{args.workers} worker(s); adapters: {', '.join(a.name for a in enabled) or 'none'}).\n"
                'Try, in another terminal:  switchboard send --from alice "my withdrawal has not arrived"\n'
                "Stop with Ctrl-C.",
                file=sys.stderr,
                flush=True,
            )
            if not args.workers_only and settings.web.enabled:
                print(f"Web console: http://{settings.web.host}:{settings.web.port}/", file=sys.stderr, flush=True)
            # Rules evaluation is CPU-bound: more workers means more processes, not more tasks.
            processes = worker_processes(rt, args.workers - 1, args.config) if args.workers > 1 else None
            await serve(rt, enabled, processes=processes)
        return 0

    with redis_server(settings) as url:
        return asyncio.run(main(url))


def cmd_web(args: argparse.Namespace, settings: Settings) -> int:
    """The web console and API alone (workers run elsewhere), until SIGTERM/SIGINT."""
    from adapters.sandbox import SandboxUsers
    from router.console import ConsoleServer, create_app
    from router.redis import redis_server
    from router.runtime import Runtime
    from router.supervisor import serve
    from router.weekly import store_opener

    async def main(url: str) -> int:
        async with Runtime(settings, url) as rt:
            host, port = args.host or settings.web.host, args.port if args.port is not None else settings.web.port
            # No exporter in this process: the reports read the store when no process writes it.
            store = store_opener(settings.analytics.path(settings.redis.data_dir))
            server = ConsoleServer(create_app(rt, settings, SandboxUsers(rt.channel_context()), store), host, port)
            await serve(
                rt,
                [server],
                workers=0,
                announce=lambda: print(
                    f"Switchboard web console on {server.url}/ (stop with Ctrl-C)", file=sys.stderr, flush=True
                ),
            )
        return 0

    with redis_server(settings) as url:
        return asyncio.run(main(url))


# -- console users -------------------------------------------------------------------------------
async def _users(rt: Any, args: argparse.Namespace) -> int:
    from router.accounts import Users, load_secret

    users = Users(rt.client, rt.keys, await load_secret(rt.client, rt.keys, rt.settings.web), rt.settings.web)
    if args.action == "add":
        password = sys.stdin.readline().rstrip("\n") if args.password_stdin else None
        try:
            made = await users.add(args.name, args.role, args.group, password)
        except ValueError as exc:  # a bad name or a short password: the user's input, not a bug
            print(f"switchboard: {exc}", file=sys.stderr)
            return 2
        print(f"added {args.role} {args.name} ({', '.join(args.group) or 'no group'})")
        if password is None:
            print(f"one-time password (to be changed at first login): {made}")
    elif args.action == "list":
        listed = await users.all()
        if args.json:
            _print_json([u.to_dict() for u in listed])
        for u in [] if args.json else listed:
            print(f"{u.name:<20} {u.role:<6} {', '.join(u.groups) or '-'}{'  (token)' if u.has_token else ''}")
    elif args.action == "token":
        print(await users.issue_token(args.name))
    return 0


# -- sandbox -------------------------------------------------------------------------------------
async def _send(rt: Any, args: argparse.Namespace) -> int:
    from adapters.sandbox import envelope

    attrs = dict(kv.split("=", 1) for kv in args.attr)
    env = envelope(args.sender, args.text, subject=args.subject, attributes=attrs)
    appended = await rt.inbox.append(env)
    print(f"sent as {args.sender} (message {env.id}, inbox entry {appended.entry_id})")
    return 0


async def _sandbox(rt: Any, args: argparse.Namespace) -> int:
    from adapters.sandbox import SandboxUsers

    users = SandboxUsers(rt.channel_context())
    if args.action == "press":
        if args.button is None:
            raise BadRequest("which button? switchboard sandbox press USER N (N from 1, as the inbox lists them)")
        label = await users.press(args.user, args.button, args.reply)
        print(f"pressed {label!r} as {args.user}")
        return 0
    items = await users.inbox(args.user)
    if args.json:
        _print_json(items)
        return 0
    if not items:
        print(f"no replies for {args.user} yet")
    for item in items:
        who = "auto-reply" if item.get("auto") else item.get("author", "")
        print(f"[{time.strftime('%H:%M:%S', time.localtime(item.get('created_at', 0)))}] {who}: {item['text']}")
        for n, button in enumerate(item.get("buttons", []), 1):
            print(f"    [{n}] {button['label']}    (switchboard sandbox press {args.user} {n} --reply {item['id']})")
    return 0


# -- agents --------------------------------------------------------------------------------------
def _conv_line(c: Any) -> str:
    text = c.last_text.replace("\n", " ")
    return (
        f"#{c.id:<6} P{c.priority} {c.status:<8} {c.channel:<8} {c.sender_name[:16]:<16} "
        f"waiting {_ago(c.waiting_ms):>5}  {text[:60]}"
    )


async def _queue(rt: Any, args: argparse.Namespace) -> int:
    convs = await rt.queues.head(args.group, limit=args.limit)
    [stats] = await rt.queues.stats([args.group])
    # The list is cut at --limit: say so, in both forms, so that no one reads it as the whole queue.
    truncated = stats.depth > len(convs)
    # Conversations collapsed under an incident: one row each (switchboard incident claim).
    collapsed = await rt.incidents.collapsed(args.group)
    if args.json:
        _print_json(
            {
                "group": args.group,
                "depth": stats.depth,
                "shown": len(convs),
                "truncated": truncated,
                "conversations": [c.to_dict() for c in convs],
                "incidents": [{"id": inc.id, "title": inc.title, "collapsed": n} for inc, n in collapsed],
            }
        )
        return 0
    oldest = f", oldest waiting {stats.oldest_wait_s:.0f}s" if stats.oldest_wait_s is not None else ""
    print(f"queue {args.group}: {stats.depth} waiting{oldest}, {stats.overdue} past SLA")
    for inc, n in collapsed:
        print(f"Incident #{inc.id}: {inc.title} ({n:,})")
    for c in convs:
        print(_conv_line(c))
    if truncated:
        print(f"showing {len(convs)} of {stats.depth} (the most urgent first; more with --limit N)")
    return 0


async def _claim(rt: Any, args: argparse.Namespace) -> int:
    cid = await rt.conversations.claim(args.group, args.agent, args.conversation or "")
    if args.json:
        _print_json({"conversation": cid})
        return 0 if cid else 1
    if cid is None:
        print(
            f"queue {args.group} is empty"
            if not args.conversation
            else f"#{args.conversation} is not waiting in {args.group}"
        )
        return 1
    print(f"claimed #{cid} for {args.agent}")
    return 0


async def _mine(rt: Any, args: argparse.Namespace) -> int:
    convs = await rt.conversations.of_agent(args.agent)
    if args.json:
        _print_json([c.to_dict() for c in convs])
        return 0
    for c in convs:
        print(_conv_line(c))
    return 0


async def _show(rt: Any, args: argparse.Namespace) -> int:
    conv = await rt.conversations.get(args.conversation)
    history = await rt.conversations.history(args.conversation)
    deliveries = await rt.conversations.deliveries(args.conversation)
    if args.json:
        _print_json(
            {
                "conversation": conv.to_dict(),
                "history": [h.to_dict() for h in history],
                "deliveries": deliveries,
            }
        )
        return 0
    print(
        f"#{conv.id} {conv.channel}/{conv.account} from {conv.sender_name} — group {conv.group}, P{conv.priority}, "
        f"{conv.status}{' (' + conv.agent + ')' if conv.agent else ''}, tags {', '.join(conv.tags) or '-'}"
    )
    if conv.subject:
        print(f"subject: {conv.subject}")
    for h in history:
        at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(h.at_ms / 1000))
        d = h.data
        if h.type == "inbound":
            dec = d.get("decision", {})
            rules = ",".join(t["rule"] for t in dec.get("trace", []) if "rule" in t) or "defaults"
            print(f"{at} <- {d.get('sender', {}).get('name') or d.get('sender', {}).get('id')}: {d.get('text')}")
            for a in d.get("attachments", []):
                size = f", {a['size']} bytes" if a.get("size") is not None else ""
                print(f"{'':19}    attachment: {a.get('name')} ({a.get('type')}{size})")
            print(f"{'':19}    routed to {dec.get('group')} {dec.get('priority')} by {rules}")
        elif h.type == "outbound":
            status = deliveries.get(d.get("id", ""), "")
            print(f"{at} -> {d.get('author')}: {d.get('text')}  [{status}]")
        else:
            print(f"{at} {h.type}: {json.dumps(d, ensure_ascii=False)}")
    return 0


async def _reply(rt: Any, args: argparse.Namespace) -> int:
    reply_id = await rt.conversations.reply(args.conversation, args.text, args.agent)
    print(f"reply {reply_id} queued for #{args.conversation}")
    return 0


async def _close(rt: Any, args: argparse.Namespace) -> int:
    await rt.conversations.close(args.conversation, args.agent, args.reason)
    print(f"closed #{args.conversation}")
    return 0


async def _release(rt: Any, args: argparse.Namespace) -> int:
    await rt.conversations.release(args.conversation, args.agent)
    print(f"released #{args.conversation}")
    return 0


async def _transfer(rt: Any, args: argparse.Namespace) -> int:
    groups = set((await rt.engine()).groups)
    if args.group not in groups:
        print(f"unknown group {args.group!r} (groups: {', '.join(sorted(groups))})", file=sys.stderr)
        return 2
    await rt.conversations.transfer(args.conversation, args.group, args.agent, args.reason)
    print(f"transferred #{args.conversation} to {args.group}")
    return 0


async def _priority(rt: Any, args: argparse.Namespace) -> int:
    from router.conversations import parse_priority

    await rt.conversations.set_priority(args.conversation, parse_priority(args.priority), args.agent)
    print(f"#{args.conversation} is now {args.priority.upper()}")
    return 0


async def _waiting(rt: Any, args: argparse.Namespace) -> int:
    await rt.conversations.wait_on_user(args.conversation, args.state == "on", args.agent)
    state = "waiting on the user" if args.state == "on" else "no longer waiting on the user"
    print(f"#{args.conversation} is {state}")
    return 0


# -- operators -----------------------------------------------------------------------------------
def _print_answers(a: dict[str, Any]) -> None:
    """The knowledge-base answerer's lines of ``stats`` (none before it decided anything)."""

    def rate(value: float | None) -> str:
        return "-" if value is None else f"{value:.0%}"

    if a["eligible"]:
        outcomes = ", ".join(f"{k} {a[k]}" for k in ("confirmed", "assumed", "reopened", "human"))
        print(f"answers: {a['answered']} of {a['eligible']} eligible ({rate(a['rate'])}); {outcomes}")
        for lang, f in a["by_language"].items():
            print(f"  {lang}: {f['answered']}/{f['eligible']} ({rate(f['rate'])}), confirmed {f['confirmed']}, "
                  f"assumed {f['assumed']}, reopened {f['reopened']}, human {f['human']}")  # fmt: skip
        for article, f in a["by_article"].items():
            print(f"  {article}: answered {f['answered']}, confirmed {f['confirmed']}, assumed {f['assumed']}, "
                  f"reopened {f['reopened']}, human {f['human']}")  # fmt: skip
    shadow = a["shadow"]
    if shadow["eligible"]:
        print(f"answers (shadow): would answer {shadow['would']} of {shadow['eligible']} ({rate(shadow['rate'])})")


async def _stats(rt: Any, args: argparse.Namespace) -> int:
    stats = await rt.stats.read()
    if args.json:
        _print_json(stats)
        return 0
    print(f"inbox: {_flight(stats['inbox'])}; dead letters: {stats['dead_letters']}")
    for channel, box in stats["outbox"].items():
        print(f"outbox {channel}: {box['depth']} to send, {_flight(box)}")
    mem = stats["redis"]
    limit = f" of {mem['maxmemory']} ({mem['memory_ratio']:.0%})" if mem["maxmemory"] else " (no maxmemory)"
    print(f"redis memory: {mem['used_memory']} bytes{limit}")
    print("queues:")
    for group, q in stats["queues"].items():
        oldest = f"{q['oldest_wait_s']:.0f}s" if q["oldest_wait_s"] is not None else "-"
        print(f"  {group:<14} depth {q['depth']:<6} oldest {oldest:<8} past SLA {q['overdue']}")
    shown = ("kb:", "csat:")  # their own lines
    print("counters: " + ", ".join(f"{k}={v}" for k, v in sorted(stats["counters"].items()) if not k.startswith(shown)))
    _print_answers(stats["answers"])
    c = stats["csat"]
    if c["sent"]:
        ratings = " ".join(f"{r}:{n}" for r, n in c["ratings"].items())
        print(f"csat: {c['sent']} surveys sent, {c['rated']} rated ({ratings}), average {c['average'] or '-'}, "
              f"{c['comments']} comments")  # fmt: skip
    print("health:")
    for name, record in sorted(stats["health"].items()):
        print(f"  {name}: {json.dumps(record, ensure_ascii=False)}")
    if not stats["health"]:
        print("  no worker or adapter is running")
    if stats["shard_holders"]:
        held = (f"{shard}: {h['worker']} (fence {h['fence']})" for shard, h in stats["shard_holders"].items())
        print("shards held: " + "; ".join(held))
    for alert in stats["alerts"]:
        print(f"ALERT {alert}")
    return 0


def _flight(s: dict[str, Any]) -> str:
    oldest = "" if s["oldest_pending_s"] is None else f", oldest pending {s['oldest_pending_s']:.0f}s"
    return f"{s['length']} entries, lag {s['lag']}, {s['pending']} pending{oldest}"


async def _dead(rt: Any, args: argparse.Namespace) -> int:
    from router.deadletters import DeadLetters

    dead = DeadLetters(rt.client, rt.shards)
    if args.action == "list":
        items = await dead.entries(args.limit)
        if args.json:
            _print_json(items)
        else:
            for item in items:
                print(f"{item['id']}  entry {item['entry']}  attempts {item['attempts']}  {item['reason']}")
            print(f"{len(items)} dead letter(s)")
        return 0
    ids = None if args.all else args.ids
    if not args.all and not args.ids:
        print("name dead-letter ids, or --all", file=sys.stderr)
        return 2
    if args.action == "retry":
        result = await dead.retry(ids)
        for dead_id, why in result.skipped:
            print(f"skipped {dead_id}: {why}")
        print(f"{result.retried} dead letter(s) appended to the inbox again, {len(result.skipped)} skipped")
    else:
        n = await dead.drop(ids)
        print(f"{n} dead letter(s) dropped")
    return 0


async def _outbox(rt: Any, args: argparse.Namespace) -> int:
    from router.outbox import failed_replies, retry_failed

    failed = await failed_replies(rt.client, rt.shards, channel=args.channel, conversation=args.conversation)
    queued = await retry_failed(rt.client, rt.shards, failed, args.by) if args.action == "retry" else 0
    if args.json:
        _print_json({"failed": [f.to_dict() for f in failed], "queued": queued})
        return 0
    for f in failed:
        print(f"#{f.conversation:<6} {f.channel:<8} reply {f.reply}  {f.reason}")
    if args.action == "retry":
        print(f"{queued} failed reply(ies) queued to be sent again")
    else:
        print(f"{len(failed)} failed reply(ies); send them again with: switchboard outbox retry")
    return 0


async def _check(rt: Any, args: argparse.Namespace) -> int:
    from router.processes import missing

    stats = await rt.stats.read()
    workers = [k for k in stats["health"] if k.startswith("worker:")]
    print(f"{len(workers)} worker(s) alive")
    # Fewer supervised worker processes alive than expected fails too, naming each one missing.
    reasons = ([] if workers else ["no live router worker"]) + [f"missing: {line}" for line in missing(stats["health"])]
    for reason in reasons + stats["alerts"]:
        print(f"FAIL {reason}", file=sys.stderr)
    return 1 if reasons or stats["alerts"] else 0


async def _scrub(rt: Any, args: argparse.Namespace) -> int:
    from router.scrub import rewrite_aof

    done = await rewrite_aof(rt.client)
    if not done.aof_enabled:
        print("this Redis keeps no AOF: nothing to rewrite")
    else:
        print(f"AOF rewritten in {done.seconds:.1f}s: the files now hold the data as it is, nothing older")
    if done.rdb_saves:
        print("this Redis also writes RDB snapshots: older ones (and backups) may still hold old data")
    return 0


# -- rules ---------------------------------------------------------------------------------------
def cmd_rules_offline(args: argparse.Namespace, settings: Settings) -> int:
    from router import rules_cli
    from router.runtime import load_model

    # As the workers will run it: with the configured triage model ([rules] model).
    if args.action == "validate":
        return rules_cli.validate(args.file, sys.stdout, load_model(settings.rules))
    if args.action == "eval":
        return rules_cli.evaluate_samples(
            args.file, args.samples, args.json, sys.stdout, load_model(settings.rules), only_figures=args.figures_only
        )
    return rules_cli.schema(sys.stdout)


def cmd_model_eval(args: argparse.Namespace, settings: Settings) -> int:
    from router import rules_cli
    from router.review import load_semantic
    from router.runtime import load_model

    semantic = load_semantic(settings.rules, settings.review)
    return rules_cli.model_eval(
        args.file,
        args.samples,
        args.json,
        sys.stdout,
        load_model(settings.rules),
        semantic,
        only_figures=args.figures_only,
    )


def cmd_route(args: argparse.Namespace, settings: Settings) -> int:
    from router import rules_cli
    from router.runtime import load_model

    return rules_cli.route(args.rules, sys.stdin, sys.stdout, load_model(settings.rules))


async def _rules_published(rt: Any, args: argparse.Namespace) -> int:
    return await _published(rt.rules, "rule set", args)


async def _sla_published(rt: Any, args: argparse.Namespace) -> int:
    """``sla validate|publish|rollback|history|diff`` (router/slastore.py)."""
    if args.action != "validate":
        return await _published(rt.sla, "SLA policy", args)
    return await _validate(rt.sla, args, lambda policy: "")


async def _assign_published(rt: Any, args: argparse.Namespace) -> int:
    """``assign validate|publish|rollback|history|diff`` (router/assignstore.py)."""
    if args.action != "validate":
        first = args.action == "publish" and await rt.assignments.active_number() is None
        code = await _published(rt.assignments, "assignment policy", args)
        if first and code == 0 and rt.settings.assign.policy_file is None:
            # service() decided at their start that there was nothing to run (docs/assignment.md).
            print("workers started before this first publish start assigning at their next restart")
        return code
    return await _validate(
        rt.assignments, args, lambda policies: f", automatic groups: {', '.join(policies.automatic) or 'none'}"
    )


async def _validate(store: Any, args: argparse.Namespace, describe: Callable[[Any], str]) -> int:
    """``validate`` of a policy store: every error, or ok with the version (and ``describe``'s words)."""
    from rules import RuleSetError

    source = await asyncio.to_thread(Path(args.file).read_text, encoding="utf-8")
    try:
        policy = await store.validate(source, args.file)
    except RuleSetError as exc:  # SLA and assignment policy errors are ones
        for err in exc.errors:
            print(err, file=sys.stderr)
        print(f"{args.file}: {len(exc.errors)} error(s)", file=sys.stderr)
        return 1
    print(f"{args.file}: ok — version {policy.version}{describe(policy)}, groups checked against the rule set in force")
    return 0


async def _published(store: Any, noun: str, args: argparse.Namespace) -> int:
    """publish, rollback, history and diff of a versioned store (router/published.py)."""
    from rules import RuleSetError

    if args.action == "publish":
        source = await asyncio.to_thread(Path(args.file).read_text, encoding="utf-8")
        try:
            published = await store.publish(source, args.author, args.comment, args.file, args.request_id)
        except RuleSetError as exc:  # SLA and assignment policy errors are ones too
            for err in exc.errors:
                print(err, file=sys.stderr)
            print(f"refused: the running {noun} stays in force", file=sys.stderr)
            return 1
        print(f"published {noun} v{published.number} ({published.version}) by {published.author}")
    elif args.action == "rollback":
        target = await store.rollback(args.author, args.to, args.request_id)
        print(f"{noun} v{target.number} ({target.version}) is active again")
    elif args.action == "history":
        entries = await store.log(args.count)
        if args.json:
            _print_json(entries)
        for e in [] if args.json else entries:
            at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(e["at"])))
            print(f"{at}  {e['action']:<8} v{e['number']} ({e['version']}) by {e['author']}  {e.get('comment', '')}")
    elif args.action == "diff":
        print(await store.diff(args.a, args.b), end="")
    return 0


def _published_parsers(
    sub: Any,
    what: str,
    handler: Handler,
    *,
    source: str = "file",
    source_help: str | None = None,
    aliases: Sequence[str] = (),
) -> None:
    """publish (also under ``aliases``), rollback, history and diff subcommands of a versioned
    store; ``source`` names what publish reads (a file, or a directory)."""
    sp = sub.add_parser(
        "publish", aliases=aliases, help=f"validate and publish a {what}; every process switches within seconds"
    )
    sp.add_argument(source, help=source_help)
    sp.add_argument("--comment", default="", help="what changed (for the history)")
    _change_arguments(sp, handler)
    sp = sub.add_parser("rollback", help="make an earlier published version active again (default: the one before)")
    sp.add_argument("--to", type=int, help="the version to make active")
    _change_arguments(sp, handler)
    sp = sub.add_parser("history", help="who published or rolled back what, and when, newest first")
    sp.add_argument("--count", type=int, default=50, help="the newest N entries (50)")
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp.set_defaults(handler=handler)
    sp = sub.add_parser("diff", help="unified diff of two published versions")
    sp.add_argument("a", type=int)
    sp.add_argument("b", type=int)
    sp.set_defaults(handler=handler)


def _change_arguments(sp: argparse.ArgumentParser, handler: Handler) -> None:
    sp.add_argument("--author", required=True, help="who does it (recorded with the version)")
    sp.add_argument("--request-id", help="sent again with the same id, it changes nothing twice")
    sp.set_defaults(handler=handler)


def _policy_parsers(sub: Any, name: str, help_: str, what: str, handler: Handler) -> None:
    """``NAME validate|publish|rollback|history|diff`` of a policy store whose groups are checked
    against the rule set in force (SLA, assignment)."""
    psub = sub.add_parser(name, help=help_).add_subparsers(dest="action", required=True, metavar="ACTION")
    sp = psub.add_parser("validate", help="check a policy file, its groups against the rule set in force")
    sp.add_argument("file")
    sp.set_defaults(handler=handler)
    _published_parsers(psub, what, handler)


def cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    from router import simulate_cli

    return simulate_cli.run(args, sys.stdout, sys.stderr)


def cmd_staffing(args: argparse.Namespace, settings: Settings) -> int:
    from router import staffing_cli

    return staffing_cli.run(args, sys.stdout, sys.stderr)


# -- published triage models (router/model_cli.py) -----------------------------------------------
def _model_versions_parsers(msub: Any) -> None:
    """``model publish|live|shadow|rollback|versions|status|train`` (router/model_cli.py)."""
    from router import model_cli

    handler = _with_runtime(model_cli.run)

    def action(name: str, help_: str, *, writes: bool = False) -> argparse.ArgumentParser:
        sp: argparse.ArgumentParser = msub.add_parser(name, help=help_)
        sp.set_defaults(handler=handler)
        if writes:
            sp.add_argument("--by", default="operator", help="who does it (recorded with the version, audited)")
            sp.add_argument("--request-id", help="sent again with the same id, it changes nothing twice")
        else:
            sp.add_argument("--json", action="store_true", help="machine-readable output")
        return sp

    sp = action("publish", "validate and publish a model directory: live, or the shadow", writes=True)
    sp.add_argument("dir")
    sp.add_argument("--shadow", action="store_true", help="asked beside the live model, never routes")
    sp.add_argument("--comment", default="")
    action("live", "make a published version live; workers switch within seconds", writes=True).add_argument(
        "number", type=int
    )
    action("shadow", "make a published version the shadow ('off': none)", writes=True).add_argument(
        "number", type=model_cli.version_or_off
    )
    action("rollback", "make the previously live version live again", writes=True)
    action("versions", "the published versions: which is live, which the shadow")
    action("status", "the shadow's and the live model's agreement with agents' corrections")
    sp = msub.add_parser("train", help="train a model (the shipped corpus + --labels) in the trainer's environment")
    sp.add_argument("--out", type=Path, required=True)
    sp.add_argument("--labels", type=Path, help="a team's labels, as `switchboard model export` writes them")
    sp.add_argument("--seed", type=int, default=1)
    sp.add_argument("--params", help="fastText parameters over the default, as JSON (default: the trainer's)")
    sp.set_defaults(handler=lambda args, settings: model_cli.train(args, settings.rules.trainer_python))


# -- bench ---------------------------------------------------------------------------------------
async def _model_export(rt: Any, args: argparse.Namespace) -> int:
    from router.labels import Labels

    examples = await Labels(rt.client, rt.shards).examples()
    lines = "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in examples)
    if args.out is None:
        sys.stdout.write(lines)
    else:
        args.out.write_text(lines, encoding="utf-8")
        print(f"{len(examples)} labelled message(s) written to {args.out}", file=sys.stderr)
    return 0


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    if args.target == "kb":
        return _bench_kb(args, settings)
    if args.target == "rules":
        from router import bench_rules

        return bench_rules.run(args.json, sys.stdout)
    if args.target == "console":
        from router import bench_console

        seconds = (args.minutes or 1 / 6) * 60
        return bench_console.main(settings, args.json, args.rate, seconds, args.slow, args.scrapes, args.isolate)
    if args.target == "review":
        from router import bench_review

        return bench_review.main(settings, args.json, sys.stdout, args.messages or 50)
    if args.target == "reports":
        from router import bench_reports

        return bench_reports.main(settings, args.json, args.events, args.messages or 9_000, args.runs)
    if args.target == "assign":
        from router import bench_assign

        return bench_assign.main(settings, args.json, args.agents, args.messages or 10_000)
    if args.target == "cluster":  # its own servers: one shard on one, --shards on the other
        from router import bench_cluster

        return bench_cluster.main(settings, args.json, args.messages or 20_000, args.shards, args.primaries)
    if settings.redis.shards > 1:
        # Its figures read one shard's keys (the inbox, queues and events it measures).
        raise ConfigError(
            f"switchboard bench {args.target} measures a deployment of one shard; redis.shards is "
            f'{settings.redis.shards} (docs/architecture.md, "Virtual shards")'
        )
    if args.target == "surge":
        from router import bench_surge

        return bench_surge.main(settings, args.json, args.messages or 100_000, args.lane)
    if args.target == "soak":
        from router import bench_soak

        return bench_soak.main(settings, args.json, args.minutes or 10.0, args.rate, args.users)
    if args.target in ("failover", "wait"):
        from router import bench_failover

        if args.target == "wait":
            return bench_failover.wait_main(settings, args.json, args.messages or 4_000)
        kinds = list(bench_failover.FAILOVERS) if args.failover == "all" else [args.failover]
        return bench_failover.failover_main(settings, args.json, kinds, args.messages or 20_000, args.workers)
    from router import bench as core_bench

    if args.target == "append":
        return core_bench.append_main(settings, as_json=args.json, messages=args.messages or 4_000)
    return core_bench.main(settings, as_json=args.json, messages=args.messages or 20_000, sla=args.sla)


def _bench_kb(args: argparse.Namespace, settings: Settings) -> int:
    import kb
    from router import bench_kb, kb_cli

    base = kb_cli.load(args.kb, settings, sys.stderr)
    path = args.questions or bench_kb.TUNE
    try:
        questions = None if base is None else kb.load_questions(path, base)
    except kb.KBError as exc:
        print("\n".join(exc.errors), file=sys.stderr)
        return 1
    if base is None or questions is None:
        return 1
    calibration = args.calibration or kb.calibration_file()
    return bench_kb.run(base, questions, args.articles, calibration, args.json, sys.stdout)


# -- parser --------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="switchboard", description="Multi-channel support message router.")
    p.add_argument("--config", type=Path, help="TOML configuration file (default ./switchboard.toml)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Handler, help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.set_defaults(handler=handler)
        return sp

    def json_flag(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--json", action="store_true", help="machine-readable output")

    def figures_flag(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--figures-only",
            action="store_true",
            help="leave out the samples it got wrong (a test set that whoever tunes must not read)",
        )

    sp = add("run", cmd_run, "run everything: embedded Redis if needed, workers, adapters")
    sp.add_argument("--workers", type=int, default=1)
    sp.set_defaults(workers_only=False, supervised_by=None)
    sp = add("worker", cmd_run, "run router workers only")
    sp.add_argument("--workers", type=int, default=1)
    # Given by a supervising `run` to its worker processes (router/processes.py: watch_parent).
    sp.add_argument("--supervised-by", metavar="PID:FD", help=argparse.SUPPRESS)
    sp.set_defaults(workers_only=True)

    sp = add("web", cmd_web, "the web console and HTTP API alone (default 127.0.0.1:8080)")
    sp.add_argument("--host")
    sp.add_argument("--port", type=int)

    users = sub.add_parser("users", help="web console users: add, list, API tokens")
    usub = users.add_subparsers(dest="action", required=True, metavar="ACTION")
    sp = usub.add_parser("add", help="add a console user (prints a one-time password)")
    sp.add_argument("name")
    sp.add_argument("--role", choices=["admin", "supervisor", "agent"], default="agent")
    sp.add_argument("--group", action="append", default=[], metavar="G", help="a group the agent works (repeat)")
    sp.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    sp.set_defaults(handler=_with_runtime(_users))
    sp = usub.add_parser("list", help="console users with their role and groups")
    json_flag(sp)
    sp.set_defaults(handler=_with_runtime(_users))
    sp = usub.add_parser("token", help="issue a new API token for a user (revokes the previous one)")
    sp.add_argument("name")
    sp.set_defaults(handler=_with_runtime(_users))

    sp = add("send", _with_runtime(_send), "write as a sandbox user")
    sp.add_argument("--from", dest="sender", required=True, metavar="USER")
    sp.add_argument("--subject")
    sp.add_argument(
        "--attr",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="sender attribute, e.g. tier=vip",
    )
    sp.add_argument("text")
    sp = add("sandbox", _with_runtime(_sandbox), "read the replies a sandbox user received, or press a button")
    sp.add_argument("action", choices=["inbox", "press"])
    sp.add_argument("user")
    sp.add_argument("button", nargs="?", type=int, help="press: the button's number under the reply (from 1)")
    sp.add_argument("--reply", help="press: the reply's id (default: the latest reply with buttons)")
    json_flag(sp)

    sp = add("queue", _with_runtime(_queue), "list a group's queue, most urgent first")
    sp.add_argument("group")
    sp.add_argument("--limit", type=int, default=50, help="list at most N conversations (default 50)")
    json_flag(sp)
    sp = add("claim", _with_runtime(_claim), "claim the head of a group's queue (or one conversation)")
    sp.add_argument("group")
    sp.add_argument("--agent", required=True)
    sp.add_argument("--conversation")
    json_flag(sp)
    sp = add("mine", _with_runtime(_mine), "the conversations assigned to an agent")
    sp.add_argument("--agent", required=True)
    json_flag(sp)
    sp = add("show", _with_runtime(_show), "a conversation with its history")
    sp.add_argument("conversation")
    json_flag(sp)
    sp = add("reply", _with_runtime(_reply), "reply on the conversation's channel")
    sp.add_argument("conversation")
    sp.add_argument("text")
    sp.add_argument("--agent", required=True)
    sp = add("close", _with_runtime(_close), "close a conversation (the reason is a label for the triage model)")
    sp.add_argument("conversation")
    sp.add_argument("--agent", default="operator")
    sp.add_argument("--reason", choices=CLOSE_REASONS, default=CLOSE_REASONS[0])
    sp = add("release", _with_runtime(_release), "put a claimed conversation back in its queue")
    sp.add_argument("conversation")
    sp.add_argument("--agent", default="operator")
    sp = add("transfer", _with_runtime(_transfer), "move a conversation to another group's queue")
    sp.add_argument("conversation")
    sp.add_argument("group")
    sp.add_argument("--agent", default="operator")
    sp.add_argument("--reason", default="")
    sp = add("priority", _with_runtime(_priority), "change a conversation's priority")
    sp.add_argument("conversation")
    sp.add_argument("priority", choices=["P1", "P2", "P3", "P4", "p1", "p2", "p3", "p4"])
    sp.add_argument("--agent", default="operator")

    sp = add(
        "waiting",
        _with_runtime(_waiting),
        "mark a conversation waiting on the user (its SLA next-response and resolution clocks pause) or not",
    )
    sp.add_argument("conversation")
    sp.add_argument("state", choices=["on", "off"])
    sp.add_argument("--agent", default="operator")

    sp = add("stats", _with_runtime(_stats), "inbox, queues, dead letters, counters, health")
    json_flag(sp)
    add(
        "check",
        _with_runtime(_check),
        "exit 1, naming why, when no worker is alive, a supervised one is missing, an adapter stopped for good "
        "(e.g. a Discord token reset) or an [alerts] limit is passed",
    )
    add("scrub", _with_runtime(_scrub), "rewrite Redis's AOF so that deleted or old data leaves the disk")
    sp = add("dead", _with_runtime(_dead), "dead letters: list, retry, drop")
    sp.add_argument("action", choices=["list", "retry", "drop"])
    sp.add_argument("ids", nargs="*")
    sp.add_argument("--all", action="store_true")
    sp.add_argument("--limit", type=int, default=100)
    json_flag(sp)

    sp = add("outbox", _with_runtime(_outbox), "failed replies: list them, or send them again after a fix")
    sp.add_argument("action", choices=["list", "retry"])
    sp.add_argument("--channel", help="only the replies on this channel (e.g. email)")
    sp.add_argument("--conversation", help="only this conversation's replies")
    sp.add_argument("--by", default="operator", help="who sends them again (recorded in the history)")
    json_flag(sp)

    rules = sub.add_parser("rules", help="validate, evaluate, publish and roll back rule sets")
    rsub = rules.add_subparsers(dest="action", required=True, metavar="ACTION")
    sp = rsub.add_parser("validate", help="check a rule file; every error as FILE:LINE:COL: rule ID: reason")
    sp.add_argument("file")
    sp.set_defaults(handler=cmd_rules_offline)
    sp = rsub.add_parser("eval", help="accuracy of a rule file on labelled samples")
    sp.add_argument("file", nargs="?")
    sp.add_argument("--samples", required=True, help="labelled samples: a JSONL file, or a directory of them")
    figures_flag(sp)
    json_flag(sp)
    sp.set_defaults(handler=cmd_rules_offline)
    sp = rsub.add_parser("schema", help="print the rule file's JSON Schema")
    sp.set_defaults(handler=cmd_rules_offline)
    _published_parsers(rsub, "rule file", _with_runtime(_rules_published))

    _policy_parsers(
        sub,
        "sla",
        "validate, publish and roll back SLA policies (docs/sla.md)",
        "SLA policy",
        _with_runtime(_sla_published),
    )
    _policy_parsers(
        sub,
        "assign",
        "validate, publish and roll back assignment policies (docs/assignment.md)",
        "assignment policy",
        _with_runtime(_assign_published),
    )

    model = sub.add_parser("model", help="the triage model: labels, training, evaluation, published versions")
    msub = model.add_subparsers(dest="action", required=True, metavar="ACTION")
    sp = msub.add_parser("export", help="agents' corrections (transfers, priority changes) as corpus JSON lines")
    sp.add_argument("--out", type=Path, help="write to this file (default: standard output)")
    sp.set_defaults(handler=_with_runtime(_model_export))
    sp = msub.add_parser("eval", help="the rules eval table for the rules alone, the model alone and both")
    sp.add_argument("file", nargs="?", help="a rule file (default: the shipped rules)")
    sp.add_argument("--samples", required=True, help="labelled samples: a JSONL file, or a directory of them")
    figures_flag(sp)
    json_flag(sp)
    sp.set_defaults(handler=cmd_model_eval)
    _model_versions_parsers(msub)

    sp = add("route", cmd_route, "route JSON lines from stdin offline (no Redis)")
    sp.add_argument("--rules")

    from router import staffing_cli

    staffing_cli.arguments(add("staffing", cmd_staffing, "agents needed per group and hour of the week (Erlang C)"))
    from router import simulate_cli

    simulate_cli.arguments(
        add(
            "simulate", cmd_simulate, "replay arrivals through the SLA policy and N agents per group, in simulated time"
        )
    )

    sp = add(
        "bench",
        cmd_bench,
        "benchmarks: the router end to end (default), the rules engine, inbox appends, a soak, "
        "the cluster failover drill, the cost of WAIT, the work per primary of a sharded cluster, the knowledge base, "
        "the surge drill (P1 ahead of a backlog)",
    )
    targets = [
        "router",
        "rules",
        "append",
        "soak",
        "console",
        "review",
        "failover",
        "wait",
        "cluster",
        "kb",
        "assign",
        "surge",
        "reports",
    ]
    sp.add_argument("target", nargs="?", choices=targets, default="router")
    sp.add_argument(
        "--messages",
        type=int,
        help="messages per run (router, failover, cluster 20,000; append, wait 4,000 per mode; review 50; "
        "surge 100,000; reports 9,000)",
    )
    sp.add_argument(
        "--lane",
        choices=["off", "rules", "model"],
        help="surge: inbox.p1_lane for the run (default: as configured)",
    )
    sp.add_argument("--workers", type=int, default=3, help="failover: worker processes (one is SIGKILLed)")
    sp.add_argument("--agents", type=int, default=500, help="assign: agents (capacity 3 each)")
    sp.add_argument("--sla", help="router: publish this SLA policy first; then also time the SLA timer")
    sp.add_argument("--shards", type=int, default=6, help="cluster: virtual shards of the deployment")
    sp.add_argument("--primaries", type=int, default=3, help="cluster: primaries of the private cluster")
    sp.add_argument(
        "--failover",
        choices=["manual", "kill", "kill-lagging", "all"],
        default="all",
        help="failover: CLUSTER FAILOVER, the primary SIGKILLed, the same with the replica 0.2 s behind",
    )
    sp.add_argument("--minutes", type=float, help="soak: how long (10); console: each phase (1/6)")
    sp.add_argument("--rate", type=int, default=1000, help="soak, console: messages per second offered")
    sp.add_argument("--users", type=int, default=60_000, help="soak: distinct senders")
    sp.add_argument("--slow", type=int, default=5000, help="console: slow connections held")
    sp.add_argument("--scrapes", type=int, default=500, help="console: parallel /metrics requests")
    sp.add_argument(
        "--isolate", action="store_true", help="console: the console and its attackers on one CPU, routing on the rest"
    )
    sp.add_argument("--events", type=int, default=10_000_000, help="reports: events generated for the queries")
    sp.add_argument("--runs", type=int, default=20, help="reports: runs of each report query")
    sp.add_argument("--articles", type=int, help="kb: grow the knowledge base to N articles (generated, seeded)")
    sp.add_argument("--questions", type=Path, help="kb: labelled questions (default: the checkout's tune set)")
    sp.add_argument("--kb", type=Path, help="kb: a knowledge base directory (default: the shipped one)")
    sp.add_argument("--calibration", type=Path, help="kb: method and thresholds (default: the shipped ones)")
    json_flag(sp)

    from router import agent_cli, kb_cli

    ksub = kb_cli.add_parsers(sub, _with_runtime)
    _published_parsers(
        ksub,
        "knowledge base directory",
        _with_runtime(kb_cli.published),
        source="dir",
        source_help="<article id>/<lang>.md files (what `kb export` writes)",
        aliases=["import"],
    )
    agent_cli.add_parsers(sub, _with_runtime)
    from router import impostors_cli, incident_cli, sender_cli

    impostors_cli.add_parsers(sub, _with_runtime)
    sender_cli.add_parsers(sub, _with_runtime)
    incident_cli.add_parsers(sub, _with_runtime)
    from router import analytics_cli

    analytics_cli.add_parsers(sub, _with_runtime, _weekly_recipients)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
        from router import logs

        logs.setup(settings.log_level, settings.log_format)
        return int(args.handler(args, settings))
    except SwitchboardError as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
