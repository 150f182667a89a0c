"""Prometheus ``/metrics``: the only module importing prometheus_client.

The numbers live in Redis (queue zsets, the ``stats`` counters hash, health keys), shared by every
process, so each scrape reads them and exposes a snapshot through a throw-away registry — any
console process answers for the whole deployment, and nothing double-counts across processes.

Routing latency is measured on the last messages routed into each group: from the message's
``received_at`` (the platform's time for the message, or the sandbox's append time) to the time the
route script wrote it (the history entry's time).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import statistics
import time
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from router.backlog import Backlog, read_backlog
from router.config import read_secret

from .http import client_ip, console
from .service import Console

LATENCY_SAMPLE = 20  # recent routed messages per group


class _Snapshot(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return iter(self._families)


def _by_prefix(counters: dict[str, int], prefix: str) -> Iterator[tuple[str, int]]:
    for key, value in sorted(counters.items()):
        if key.startswith(prefix):
            yield key[len(prefix) :], value


async def routing_latencies(c: Console, groups: list[str]) -> list[float]:
    """Seconds from reception to routing of the last few messages routed into each group."""
    client = c.rt.client
    pipe = client.pipeline(transaction=False)
    for g in groups:
        pipe.xrevrange(c.keys.events(g), count=LATENCY_SAMPLE * 3)
    convs: list[tuple[str, int]] = []
    for entries in await pipe.execute():
        picked = 0
        for _, fields in entries:
            if fields.get(b"type") in (b"created", b"message", b"reopened") and picked < LATENCY_SAMPLE:
                convs.append((fields[b"conv"].decode(), int(fields[b"at"])))
                picked += 1
    pipe = client.pipeline(transaction=False)
    for cid, _ in convs:
        pipe.xrevrange(c.keys.history(cid), count=5)
    out: list[float] = []
    for (_, at_ms), entries in zip(convs, await pipe.execute(), strict=True):
        for _, fields in entries:
            if fields.get(b"type") == b"inbound" and int(fields[b"at"]) == at_ms:
                received = json.loads(fields[b"data"]).get("received_at")
                if received:
                    out.append(max(0.0, at_ms / 1000 - float(received)))
                break
    return out


async def collect(c: Console) -> list[Metric]:
    groups = await c.all_groups()
    client = c.rt.client
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(c.keys.stats)
    pipe.xlen(c.keys.dead)
    raw_counters, dead_len = await pipe.execute()
    flight = await read_backlog(client, c.keys, c.rt.scripts)
    counters = {k.decode(): int(v) for k, v in raw_counters.items()}
    qstats = await c.rt.queues.stats(groups)
    workers = 0
    async for _ in client.scan_iter(match=c.keys.health("worker", "*"), count=500):
        workers += 1

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
        for channel, value in _by_prefix(counters, prefix):
            fam.add_metric([channel], value)
        families.append(fam)
    # The dead-letter script counts without a channel: an unreadable entry may have none.
    families.append(
        CounterMetricFamily(
            "switchboard_dead_lettered", "Inbox entries moved to the dead-letter stream", value=counters.get("dead", 0)
        )
    )
    families.append(GaugeMetricFamily("switchboard_dead_letters", "Entries in the dead-letter stream", value=dead_len))
    families += _in_flight(flight)
    families.append(
        GaugeMetricFamily("switchboard_workers_alive", "Router workers with a live heartbeat", value=workers)
    )

    latencies = await routing_latencies(c, groups)
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
