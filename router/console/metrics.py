"""Prometheus ``/metrics``: the only module importing prometheus_client.

The numbers live in Redis, shared by every process, and are read through the one stats reader
(router/stats.py); each scrape exposes a snapshot through a throw-away registry — any
console process answers for the whole deployment, and nothing double-counts across processes.

Routing latency is measured on the last messages routed into each group: from the message's
``received_at`` (the platform's time for the message, or the sandbox's append time) to the time the
route script wrote it (the history entry's time).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import statistics
import time
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from router.backlog import Backlog
from router.config import read_secret
from router.stats import LATENCY_SAMPLE, OUTCOMES, answer_stats, csat_stats

from .http import client_ip, console
from .service import Console


class _Snapshot(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return iter(self._families)


async def collect(c: Console) -> list[Metric]:
    stats = c.stats
    groups = await stats.groups()
    totals = await stats.totals()
    flight = await stats.backlog()
    qstats = await stats.queues(groups)
    workers = await stats.workers_alive()

    depth = GaugeMetricFamily("switchboard_queue_depth", "Unassigned open conversations in the queue", labels=["group"])
    oldest = GaugeMetricFamily(
        "switchboard_queue_oldest_wait_seconds",
        "How long the longest-waiting queued conversation waits",
        labels=["group"],
    )
    breaches = GaugeMetricFamily(
        "switchboard_sla_breaches", "Queued conversations past their SLA due time", labels=["group"]
    )
    for q in qstats:
        depth.add_metric([q.group], q.depth)
        oldest.add_metric([q.group], q.oldest_wait_s or 0.0)
        breaches.add_metric([q.group], q.overdue)

    families: list[Metric] = [depth, oldest, breaches]
    for name, prefix, doc in (
        ("switchboard_messages_in", "in:", "Messages appended to the inbox"),
        ("switchboard_messages_routed", "routed:", "Messages routed into a conversation"),
        ("switchboard_replies_out", "out:", "Replies (agents' and auto-replies) queued for sending"),
        ("switchboard_delivery_failures", "delivery_failed:", "Replies the channel could not deliver"),
    ):
        fam = CounterMetricFamily(name, doc, labels=["channel"])
        for channel, value in totals.by_prefix(prefix).items():
            fam.add_metric([channel], value)
        families.append(fam)
    # The dead-letter script counts without a channel: an unreadable entry may have none.
    families.append(
        CounterMetricFamily(
            "switchboard_dead_lettered",
            "Inbox entries moved to the dead-letter stream",
            value=totals.counters.get("dead", 0),
        )
    )
    families.append(
        GaugeMetricFamily("switchboard_dead_letters", "Entries in the dead-letter stream", value=totals.dead_letters)
    )
    families += _in_flight(flight)
    families.append(
        GaugeMetricFamily("switchboard_workers_alive", "Router workers with a live heartbeat", value=workers)
    )
    families += sla_families(totals.sla())
    families += assignment_families(totals.assignment())

    families += _answers(answer_stats(totals))
    families += csat_families(csat_stats(totals))

    latencies = await stats.routing_latencies(groups)
    lat = GaugeMetricFamily(
        "switchboard_routing_latency_seconds",
        f"Reception-to-routing latency over the last {LATENCY_SAMPLE} messages routed per group",
        labels=["quantile"],
    )
    if latencies:
        ordered = sorted(latencies)
        lat.add_metric(["0.5"], statistics.median(ordered))
        lat.add_metric(["0.95"], ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))])
        lat.add_metric(["1"], ordered[-1])
    families.append(lat)
    return families


def _answers(a: dict[str, Any]) -> list[Metric]:
    """The knowledge-base answerer's counters (router/stats.py answer_stats): eligible, answered
    and each outcome, in all and per language and per article; the shadow's would-answers."""
    kinds = ("answered", *OUTCOMES)
    eligible = CounterMetricFamily(
        "switchboard_kb_eligible", "New conversations the answerer could answer", labels=["lang"]
    )
    answers = CounterMetricFamily(
        "switchboard_kb_answers",
        "Knowledge-base answers sent (outcome answered) and their outcomes (confirmed, assumed, reopened, human)",
        labels=["outcome"],
    )
    by_lang = CounterMetricFamily(
        "switchboard_kb_answers_by_language", "Answers and outcomes per user language", labels=["outcome", "lang"]
    )
    by_article = CounterMetricFamily(
        "switchboard_kb_answers_by_article", "Answers and outcomes per article", labels=["outcome", "article"]
    )
    for kind in kinds:
        answers.add_metric([kind], a[kind])
    for lang, f in a["by_language"].items():
        eligible.add_metric([lang], f["eligible"])
        for kind in kinds:
            by_lang.add_metric([kind, lang], f[kind])
    for article, f in a["by_article"].items():
        for kind in kinds:
            by_article.add_metric([kind, article], f[kind])
    rate = GaugeMetricFamily(
        "switchboard_kb_auto_answer_ratio", "Answered / eligible new conversations (absent: none eligible yet)"
    )
    if a["rate"] is not None:
        rate.add_metric([], a["rate"])
    shadow = CounterMetricFamily(
        "switchboard_kb_shadow_would_answer", "Answers the shadow mode would have sent, per article", labels=["article"]
    )
    for article, n in a["shadow"]["by_article"].items():
        shadow.add_metric([article], n)
    shadow_eligible = CounterMetricFamily(
        "switchboard_kb_shadow_eligible", "New conversations the shadow mode decided on", value=a["shadow"]["eligible"]
    )
    return [eligible, answers, by_lang, by_article, rate, shadow, shadow_eligible]


def csat_families(c: dict[str, Any]) -> list[Metric]:
    """The satisfaction surveys (router/csat.py): what became of them, and the ratings per group."""
    surveys = CounterMetricFamily(
        "switchboard_csat_surveys",
        "Satisfaction surveys: sent, skipped (reopened, cooldown), presses after the first, follow-ups, comments",
        labels=["outcome"],
    )
    surveys.add_metric(["sent"], c["sent"])
    for why, n in c["skipped"].items():
        surveys.add_metric([f"skipped_{why}"], n)
    for outcome in ("late", "follow_ups", "comments"):
        surveys.add_metric([outcome], c[outcome])
    ratings = CounterMetricFamily(
        "switchboard_csat_ratings", "Satisfaction ratings (1-5) per group", labels=["group", "rating"]
    )
    for group, counts in c["by_group"].items():
        for rating, n in counts.items():
            ratings.add_metric([group, rating], n)
    return [surveys, ratings]


def sla_families(targets: dict[str, dict[str, Any]]) -> list[Metric]:
    """SLA outcomes per target, as the SLA timer counted them (docs/sla.md), and the share met."""
    outcomes = CounterMetricFamily(
        "switchboard_sla_outcomes",
        "SLA measurements (one per conversation, per next-response cycle) met or breached",
        labels=["target", "outcome"],
    )
    attainment = GaugeMetricFamily(
        "switchboard_sla_attainment", "Share of SLA measurements met (met / (met + breached))", labels=["target"]
    )
    for target, figures in targets.items():
        outcomes.add_metric([target, "met"], figures["met"])
        outcomes.add_metric([target, "breached"], figures["breached"])
        if figures["attainment"] is not None:
            attainment.add_metric([target], figures["attainment"])
    return [outcomes, attainment]


#: The Prometheus family of each assigner counter (router/stats.py ``ASSIGN_COUNTERS``).
_ASSIGN_FAMILIES = {
    "assigned": ("switchboard_assignments", "Conversations assigned automatically to an agent"),
    "reoffered": ("switchboard_assignment_reoffers", "Assignments re-offered after no first reply in time"),
    "overflowed": ("switchboard_assignment_overflows", "Conversations moved to the overflow group (group: from)"),
    "requeued_offline": (
        "switchboard_assignment_offline_requeues",
        "Open conversations of agents gone offline put back in their queue",
    ),
}


def assignment_families(counters: dict[str, dict[str, int]]) -> list[Metric]:
    """The assigner's counters per group (docs/assignment.md)."""
    families: list[Metric] = []
    for name, (metric, doc) in _ASSIGN_FAMILIES.items():
        fam = CounterMetricFamily(metric, doc, labels=["group"])
        for group, value in counters.get(name, {}).items():
            fam.add_metric([group], value)
        families.append(fam)
    return families


def _in_flight(flight: Backlog) -> list[Metric]:
    """Inbox and outboxes (see router/backlog.py) and Redis memory."""
    inbox = flight.inbox
    families: list[Metric] = [
        GaugeMetricFamily("switchboard_inbox_length", "Entries in the inbox stream", value=inbox.length),
        GaugeMetricFamily("switchboard_inbox_lag", "Inbox entries no router worker has read yet", value=inbox.lag),
        GaugeMetricFamily("switchboard_inbox_pending", "Inbox entries read, not acknowledged", value=inbox.pending),
        GaugeMetricFamily(
            "switchboard_inbox_oldest_pending_seconds",
            "Age of the oldest inbox entry read and not acknowledged (0: none)",
            value=inbox.oldest_pending_s or 0.0,
        ),
        GaugeMetricFamily("switchboard_redis_used_memory_bytes", "Redis used_memory", value=flight.used_memory),
        GaugeMetricFamily("switchboard_redis_maxmemory_bytes", "Redis maxmemory (0: no limit)", value=flight.maxmemory),
    ]
    depth = GaugeMetricFamily("switchboard_outbox_depth", "Replies not sent and recorded yet", labels=["channel"])
    pending = GaugeMetricFamily("switchboard_outbox_pending", "Replies a sender has in hand", labels=["channel"])
    oldest = GaugeMetricFamily(
        "switchboard_outbox_oldest_pending_seconds",
        "Age of the oldest reply read by a sender and not recorded (0: none)",
        labels=["channel"],
    )
    for channel, box in flight.outboxes.items():
        depth.add_metric([channel], box.depth)
        pending.add_metric([channel], box.pending)
        oldest.add_metric([channel], box.oldest_pending_s or 0.0)
    return [*families, depth, pending, oldest]


class Scrapes:
    """Who may scrape, and the last exposition, shared by the scrapes of the next ``cache_s``.

    A scrape costs a dozen Redis round trips and a SCAN; 500 scrapers at once (or one looping)
    must cost one collection per interval, not 500 — the ones arriving during a collection wait
    for it instead of starting their own.
    """

    def __init__(self, c: Console, clock: Callable[[], float] = time.monotonic) -> None:
        web = c.web
        configured = (web.metrics_token and web.metrics_token.get_secret_value()) or web.metrics_token_file
        self.token = read_secret(web.metrics_token, web.metrics_token_file, "web.metrics_token") if configured else ""
        self.cache_s = web.metrics_cache_s
        self.clock = clock
        self._console = c
        self._lock = asyncio.Lock()
        self._body = b""
        self._at = -float("inf")

    def refusal(self, request: Request) -> Response | None:
        """With a token: the scraper's Bearer token; without: a loopback client only (None: allowed).
        Plain text, for a scraper: not the console's login redirect."""
        if self.token:
            sent = request.headers.get("authorization", "")
            if sent.lower().startswith("bearer ") and hmac.compare_digest(
                sent[7:].strip().encode(), self.token.encode()
            ):
                return None
            return PlainTextResponse(
                "/metrics needs the metrics token (Authorization: Bearer ...)\n",
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        try:
            loopback = ipaddress.ip_address(client_ip(request)).is_loopback
        except ValueError:
            loopback = False
        if loopback:
            return None
        return PlainTextResponse("/metrics answers loopback clients only unless web.metrics_token is set\n", 403)

    async def exposition(self) -> bytes:
        async with self._lock:
            if self.clock() - self._at >= self.cache_s:
                registry = CollectorRegistry(auto_describe=False)
                registry.register(_Snapshot(await collect(self._console)))
                self._body = generate_latest(registry)
                self._at = self.clock()
            return self._body


async def metrics(request: Request) -> Response:
    """Prometheus text exposition, for the metrics token or loopback clients (see ``Scrapes``)."""
    state = request.app.state
    if getattr(state, "scrapes", None) is None:
        state.scrapes = Scrapes(console(request))
    scrapes: Scrapes = state.scrapes
    refused = scrapes.refusal(request)
    if refused is not None:
        return refused
    return Response(await scrapes.exposition(), media_type=CONTENT_TYPE_LATEST)
