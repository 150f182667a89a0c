"""The router worker: consume the inbox through one consumer group, route, write and ack atomically.

A ``Worker`` reads one shard's inbox (router/keys.py Shards) and writes with that shard's prefix;
``Workers``, what a worker process runs, is a ``Worker`` per shard: with one shard (the default)
one loop over the one inbox, shared with every other worker process through the consumer group;
with several shards, a loop for each shard this process holds the lease of (router/shardlease.py),
its lease fence passed to every script that writes (a paused worker whose lease expired is
refused), or, with ``worker.shard_leases`` off, a loop for every shard.

One loop per worker:

1. read a batch (XREADGROUP ... ``>``), and ask for the next one at once (read ahead, answered
   while this one is evaluated). After a start or a Redis error, first this consumer's own pending
   entries, oldest first, with XPENDING and XRANGE: re-reading them with XREADGROUP would count
   one more delivery of each, and an entry delivered ``max_attempts`` times is dead-lettered. No
   read ahead then: it would leave new entries pending behind the recovery;
2. look up the state of the batch's conversations (one read-only script call), when a rule reads it;
3. evaluate the rules for every message (pure CPU, no I/O), while Redis still writes the previous
   batch;
4. send the batch's ``route`` script calls (``SCRIPT_CHUNK`` messages each) at once: for each
   message the script writes the conversation, the queue entry, the history, the auto-reply and
   the group event, and XACKs its entry, atomically.
   An entry already acknowledged is skipped by the script, so a reclaimed entry that its first
   worker did finish has no second effect.

Stopping finishes the batch in flight and the one read ahead. After a Redis error the batch read
ahead is dropped: recovery reads it again with the rest of this consumer's pending entries.

Entries that do not parse or validate (router/model.py), are of an unknown envelope version or
are too large go straight to the dead-letter stream. An entry whose processing raises stays
pending; the reclaim pass hands entries idle longer than ``claim_idle_ms`` to a live worker, and
dead-letters those delivered ``max_attempts`` times, with the last error as the reason. The
entries of a consumer whose heartbeat key has expired (a dead worker) are taken over sooner, once
idle ``claim_dead_idle_ms``: should that worker be alive after all, the route script's XACK makes
whichever of the two routes an entry second do nothing. A shard's lease holder takes over every
other consumer's entries so (the previous holder's, dead or paused): only it may write the shard.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from redis.exceptions import ResponseError

from router.admission import BlockList, hold_of
from router.config import Settings
from router.errors import LeaseLost
from router.inbox import ensure_group
from router.keys import ROUTER_GROUP
from router.lifecycle import keep_running
from router.membership import Membership
from router.model import ENVELOPE_VERSION, Envelope, decode_envelope, new_id
from router.modelstore import OBSERVED_MAXLEN, observation
from router.redis import TRANSIENT_ERRORS
from router.retention import Retention
from router.routing import conversation_ref, message_in, route_arguments, shared_argument
from router.rulestore import EngineHolder, settle_heap
from router.runtime import Runtime
from router.scripts import argv, run_many
from router.shardlease import GROUP, ShardLeases, lease_name

log = logging.getLogger("switchboard.worker")

Entry = tuple[bytes, dict[bytes, bytes]]

# Messages per route script call. One call per message costs Redis a script invocation and the
# client a command to pack and a reply to parse per message; one call per batch holds Redis (and
# the next batch's reads) for the whole batch, ~5 ms. 25 measured ~10% faster than 10 and no
# slower than 50 or 100 (three interleaved runs of 10,000 messages), and a call stays near 1 ms.
SCRIPT_CHUNK = 25
# The longest a batch's evaluation holds the event loop (s): a batch takes ~5 ms of CPU (more on a
# busy machine), and the P1 lane's loop, in the same event loop, must not wait for it. Each
# yield lets one event-loop turn in (its I/O polled, ready tasks run); ~5 µs each.
YIELD_S = 0.001


@dataclass(slots=True)
class _Batch:
    """A prepared batch: its dead-letter script calls and failed entries (usually none), its
    route script calls (one per ``SCRIPT_CHUNK`` messages: entry ids and arguments), and the
    conversation keys it touches."""

    dead: list[list[Any]]
    failed: dict[bytes, str]
    calls: list[tuple[list[bytes], list[Any]]]
    cks: set[str]
    observed: list[dict[str, str]]  # the shadow model's answers (router/modelstore.py)


def _stream_ms(entry_id: bytes | str) -> int:
    """The millisecond part of a stream id ('1700000000000-3' -> 1700000000000)."""
    raw = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(raw.split("-", 1)[0])


def _unique_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{new_id()[-6:]}"


def worker_name(rt: Runtime, shard: int, base: str | None = None) -> str:
    """A worker's consumer name (``base``, else unique: host, pid, a random part), followed by
    ``-s<shard>`` when there are several shards."""
    base = base or _unique_name()
    return f"{base}-s{shard}" if rt.shards.count > 1 else base


def _raise_if_fenced(exc: BaseException) -> None:
    """Raise a script's refusal of this worker's fence (lua/common.lua) as ``LeaseLost``."""
    if isinstance(exc, ResponseError) and str(exc).startswith("FENCED"):
        raise LeaseLost(str(exc)) from exc


class Workers:
    """What a worker process runs: a ``Worker`` per shard, run and stopped together — every shard,
    or with several shards and ``worker.shard_leases``, those it holds the lease of
    (``leases``, router/shardlease.py)."""

    def __init__(self, rt: Runtime, name: str | None = None, *, settings: Settings | None = None) -> None:
        base = name or _unique_name()
        cfg = settings or rt.settings
        self.each: list[Worker] = []
        self.leases: ShardLeases | None = None
        if rt.shards.count > 1 and cfg.worker.shard_leases:
            lcfg = cfg.leases
            ttl_ms = lcfg.ttl_ms

            def make(shard: int, fence: int) -> Worker:
                return Worker(rt, worker_name(rt, shard, base), settings=settings, shard=shard, fence=fence)

            self.leases = ShardLeases(
                rt.client,
                shards=rt.shards,
                scripts=rt.scripts,
                membership=Membership(rt.client, rt.keys, GROUP, base, ttl_ms=ttl_ms),
                make=make,
                ttl_ms=ttl_ms,
                max_skew_ms=lcfg.max_skew_ms,
                retry_s=lcfg.retry_s,
                health_key=rt.keys.health("worker", base),
            )
        else:
            self.each = [
                Worker(rt, worker_name(rt, shard, base), settings=settings, shard=shard)
                for shard in range(rt.shards.count)
            ]

    @property
    def processed(self) -> int:
        return self.leases.processed if self.leases else sum(w.processed for w in self.each)

    def stop(self) -> None:
        """Finish the batches in hand, then return from ``run``."""
        if self.leases:
            self.leases.stop()
        for w in self.each:
            w.stop()

    async def run(self) -> None:
        if self.leases:
            await self.leases.run()
        await asyncio.gather(*(w.run() for w in self.each))


class Worker:
    """One router worker of one shard's inbox; several (in one or more processes) share the
    shard's consumer group; ``Workers`` runs one per shard."""

    def __init__(
        self,
        rt: Runtime,
        name: str | None = None,
        *,
        settings: Settings | None = None,
        shard: int = 0,
        fence: int = 0,
        clock: Callable[[], int] | None = None,
        stream: str = "inbox",
        rules: EngineHolder | None = None,
    ) -> None:
        """A worker of ``shard`` on ``rt``'s client, scripts and rule set; ``settings`` other than
        the runtime's (tests: a smaller batch, say) on the same key prefix; ``fence``, its lease
        fence on the shard (0: leases off), which every script that writes checks; ``clock``, the
        time (ms) its routing records (tests of SLA clocks inject one; default: wall time).

        ``stream``: the stream it reads (router/keys.py STREAMS). A worker of the inbox runs a
        worker of the shard's P1 lane beside it (``lane``, consumer ``{name}-lane``, its own loop
        in the same event loop): a lane entry is read as soon as it is appended and routed
        between two of the inbox's batches, ahead of the backlog (docs/surge.md). ``rules``: the
        engine holder to share (the lane's loop shares its inbox loop's)."""
        self.client = rt.client
        self.settings = settings or rt.settings
        #: The shard's keys (its inbox, conversations, queues ...); health records are home keys.
        self.keys = rt.shards.shard[shard]
        self.home = rt.keys
        self.shard = shard
        self.fence = fence
        # What the dead-letter script checks the fence with (nothing with leases off).
        self._fence_args: tuple[str | int, ...] = (lease_name(shard), fence) if fence else ()
        self.name = name or worker_name(rt, shard)
        self.stream = stream
        self.source = self.keys.stream(stream)
        self.failures = self.keys.failures_of(stream)
        # Heartbeats: health:worker:{name} for the inbox's loop (what `check`, the supervisor and
        # the worker count read), health:lane:{name} for the lane's.
        self._beat_kind = "worker" if stream == "inbox" else "lane"
        self.scripts = rt.scripts
        # Settings of its own may name another rule file: then an engine of its own too (shared
        # with its lane's loop).
        self.rules = rules or (rt.engines if settings is None else rt.engine_holder(self.settings))
        self.lane: Worker | None = None
        if stream == "inbox":
            self.lane = Worker(
                rt,
                f"{self.name}-lane",
                settings=settings,
                shard=shard,
                fence=fence,
                clock=clock,
                stream="lane",
                rules=self.rules,
            )
        self.triage = rt.triage
        self.retention = Retention(self.client, self.settings, self.name, self.scripts, keys=self.keys)
        self.routed = 0  # by this loop (``processed``: with its lane's)
        self._shared = shared_argument(self.settings, shard, fence, stream=stream)
        # Bans and mutes (router/admission.py), read with the rule set's poll.
        self.blocked = BlockList(rt.senders, self.settings.worker.rules_poll_s)
        self._sla = rt.sla_policies
        self._sla_number: int | None = None
        self._clock = clock
        self._reopen_ms = self.settings.conversations.reopen_window_s * 1000
        self._stopping = asyncio.Event()
        self._recover = True  # read own pending entries before new ones
        self._recover_after = "-"  # the last own pending entry read while recovering
        self._inflight: asyncio.Task[None] | None = None
        self._inflight_cks: set[str] = set()
        self._next: asyncio.Task[list[Entry]] | None = None
        self._last_reclaim = 0.0
        self._last_beat = 0.0
        self._last_rules = 0.0
        self._last_trim = 0.0

    @property
    def processed(self) -> int:
        """Messages routed by this worker and its lane's."""
        return self.routed + (self.lane.routed if self.lane else 0)

    # -- lifecycle -----------------------------------------------------------------------------
    def stop(self) -> None:
        """Finish the batch in hand, then return from ``run``."""
        self._stopping.set()
        if self.lane is not None:
            self.lane.stop()

    async def run(self) -> None:
        """Route until ``stop()``, the lane's loop beside this one; the two stop together (a lane
        loop that failed stops this one, and its error is raised)."""
        if self.lane is None:
            await self._run()
            return
        lane = asyncio.create_task(self.lane.run())

        def failed(done: asyncio.Task[None]) -> None:
            if not done.cancelled() and done.exception() is not None:
                self.stop()

        lane.add_done_callback(failed)
        try:
            await self._run()
        finally:
            self.stop()
            await lane

    async def _run(self) -> None:
        """Route until ``stop()``; Redis errors are waited out (``keep_running``), and the entries
        in hand then are recovered from this consumer's pending ones."""
        settle_heap()
        log.info("worker %s started", self.name)
        try:
            await keep_running(
                self._turn,
                self._stopping,
                what=f"worker {self.name}: redis unavailable",
                retry_on=TRANSIENT_ERRORS,
                on_error=self._lost_redis,
            )
        finally:
            await self.retention.close()
            # A lost lease: what is in hand stays pending, for the shard's next holder.
            with contextlib.suppress(*TRANSIENT_ERRORS, LeaseLost):
                await self.flush()
                await self._finish_next()
            with contextlib.suppress(*TRANSIENT_ERRORS):
                await self.client.delete(self.home.health(self._beat_kind, self.name))
            log.info("worker %s stopped after %d messages", self.name, self.processed)

    async def _turn(self) -> None:
        try:
            await self._housekeeping()
            await self.step()
        except ResponseError as exc:
            _raise_if_fenced(exc)
            if "NOGROUP" not in str(exc):
                raise
            await ensure_group(self.client, self.source, ROUTER_GROUP)

    async def _lost_redis(self, exc: BaseException) -> None:
        # What was read ahead is dropped: recovery reads it again from this consumer's pending.
        self._recover, self._recover_after = True, "-"
        await self._drop_next()

    async def _housekeeping(self) -> None:
        now = time.monotonic()
        if now - self._last_beat >= self.settings.worker.heartbeat_s:
            self._last_beat = now
            await self._heartbeat()
            await self.take_over()
        if now - self._last_rules >= self.settings.worker.rules_poll_s:
            self._last_rules = now
            await self.follow_published()
        if now - self._last_reclaim >= self.settings.worker.claim_idle_ms / 2000:
            self._last_reclaim = now
            await self.reclaim()
            await self.forget_consumers()
        if self.lane is None:
            return  # a lane's worker: the inbox's trims the inbox and runs the retention
        if self.settings.inbox.max_age_s and now - self._last_trim >= self.settings.worker.trim_every_s:
            self._last_trim = now
            await self.trim()
        await self.retention.tick()

    async def follow_published(self) -> None:
        """Take up the rule set and the SLA policy in force, if either changed."""
        await self.rules.refresh()
        number = await self._sla.refresh()
        if number != self._sla_number:
            self._sla_number = number
            self._shared = shared_argument(self.settings, self.shard, self.fence, number, self.stream)

    async def _heartbeat(self) -> None:
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "processed": self.routed,
            "rules": self.rules.engine.version,
            "model": self.triage.state.live,  # the published triage model version; null: the configured one
            "shard": self.shard,
            **({"fence": self.fence} if self.fence else {}),
            "at": time.time(),
        }
        ttl = max(1, int(self.settings.worker.heartbeat_s * 3))
        await self.client.set(self.home.health(self._beat_kind, self.name), json.dumps(record), ex=ttl)

    # -- the loop ------------------------------------------------------------------------------
    async def step(self) -> int:
        """Read and route one batch; returns how many entries it handled."""
        if self._recover:
            entries = await self._read_own()
            if not entries:
                self._recover, self._recover_after = False, "-"
                return 0
        elif self._next is not None:
            next_read, self._next = self._next, None
            entries = await next_read
        else:
            # With a batch in flight, do not wait for more: finish that batch first.
            entries = await self._read(block=self._inflight is None)
        if entries and not self._recover:
            # Ask for the next batch now (sent before the CPU-bound evaluation below): Redis
            # answers between the scripts it runs, and the next step finds it read. Waiting for
            # it then cost ~14% of the time at full load.
            self._next = asyncio.create_task(self._read())
            await asyncio.sleep(0)
        # Evaluate this batch while Redis still runs the previous one's scripts, then send it.
        batch = await self._prepare(entries, attempts=1) if entries else None
        await self.flush()
        if batch is not None:
            self._inflight_cks = batch.cks
            self._inflight = asyncio.create_task(self._commit(batch))
            await asyncio.sleep(0)  # its scripts go out now, not after the next evaluation
        return len(entries)

    async def drain(self) -> int:
        """Route this loop's stream until a read finds nothing (its own pending entries first),
        then wait for the last batch; the entries handled. For a known backlog: ``switchboard
        bench`` and the tests."""
        total = 0
        while True:
            n = await self.step()
            total += n
            if n == 0 and not self._recover:
                n = await self.step()
                total += n
                if n == 0:
                    await self.flush()
                    return total

    async def _finish_next(self) -> None:
        """Route the batch read ahead, if any: it is in hand (pending for this consumer)."""
        next_read, self._next = self._next, None
        if next_read is not None and (entries := await next_read):
            await self.process(entries, attempts=1)

    async def _drop_next(self) -> None:
        """Forget the batch read ahead: recovery reads it again, from this consumer's pending."""
        next_read, self._next = self._next, None
        if next_read is not None:
            next_read.cancel()
            await asyncio.wait([next_read])
            if not next_read.cancelled():
                next_read.exception()  # retrieved: a failed read ahead is no news

    async def _read(self, *, block: bool = False) -> list[Entry]:
        """A batch of new entries."""
        streams = await self.client.xreadgroup(
            ROUTER_GROUP,
            self.name,
            {self.source: ">"},
            count=self.settings.worker.batch,
            block=self.settings.worker.block_ms if block else None,
        )
        return streams[0][1] if streams else []

    async def _read_own(self) -> list[Entry]:
        """The next batch of this consumer's pending entries, after those read since recovery
        began (the previous batch may still be in flight), without delivering them again."""
        if self._recover_after == "-":
            # Join the group now, as XREADGROUP ">" does only once it delivers something: a quiet
            # worker is a consumer too (forget_consumers tells it from one that left).
            await self.client.xgroup_createconsumer(self.source, ROUTER_GROUP, self.name)
        pending = await self.client.xpending_range(
            self.source,
            ROUTER_GROUP,
            min=self._recover_after,
            max="+",
            count=self.settings.worker.batch,
            consumername=self.name,
        )
        if not pending:
            return []
        self._recover_after = "(" + pending[-1]["message_id"].decode()
        return await self._entries([p["message_id"] for p in pending])

    async def _entries(self, ids: Sequence[bytes]) -> list[Entry]:
        """The inbox entries of ``ids``; one gone from the stream (trimmed) has no fields."""
        pipe = self.client.pipeline(transaction=False)
        for entry_id in ids:
            pipe.xrange(self.source, entry_id, entry_id)
        found = await pipe.execute()
        return [(entry_id, got[0][1] if got else {}) for entry_id, got in zip(ids, found, strict=True)]

    async def flush(self) -> None:
        """Wait for the batch in flight (its errors surface here)."""
        inflight, self._inflight = self._inflight, None
        if inflight is not None:
            try:
                await inflight
            finally:
                self._inflight_cks = set()

    async def process(self, entries: Sequence[Entry], attempts: int) -> None:
        """Route ``entries`` now (used for reclaimed entries; the loop pipelines via ``step``)."""
        await self._commit(await self._prepare(entries, attempts))

    async def _prepare(self, entries: Sequence[Entry], attempts: int) -> _Batch:
        engine = self.rules.engine
        parsed: list[tuple[bytes, Envelope]] = []
        dead: list[tuple[bytes, str]] = []
        limit = self.settings.inbox.max_message_bytes
        for entry_id, fields in entries:
            raw = fields.get(b"env") if fields else None
            if raw is None:
                # A pending entry whose data was trimmed, or a foreign writer's entry.
                dead.append((entry_id, "entry has no 'env' field (trimmed or not an envelope)"))
                continue
            if len(raw) > limit:
                dead.append((entry_id, f"oversize: {len(raw)} bytes > max_message_bytes {limit}"))
                continue
            try:
                env = decode_envelope(raw)
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                dead.append((entry_id, f"invalid envelope: {exc}"))
                continue
            if env.v != ENVELOPE_VERSION:
                dead.append(
                    (
                        entry_id,
                        f"unsupported envelope version {env.v} (this worker reads {ENVELOPE_VERSION})",
                    )
                )
                continue
            parsed.append((entry_id, env))

        for entry_id, reason in dead:
            log.warning("dead-lettering %s: %s", entry_id.decode(), reason)
        calls: list[tuple[list[bytes], list[Any]]] = []
        failed: dict[bytes, str] = {}
        observed: list[dict[str, str]] = []
        shadow = self.triage.shadow  # asked beside the live model, never routes (router/modelstore.py)
        if parsed:
            # The state lookup is a round trip per batch, on the latency path: only when a rule
            # asks whether the conversation is new (the default rules do not).
            if engine.reads_conversation_state:
                follow_up = await self._known_conversations([env for _, env in parsed])
            else:
                follow_up = [False] * len(parsed)
            await self.blocked.refresh()  # I/O only once every rules_poll_s
            now_ms = self._clock() if self._clock else int(time.time() * 1000)
            blocks = self.blocked.blocks
            yielded = time.perf_counter()
            for (entry_id, env), known in zip(parsed, follow_up, strict=True):
                if time.perf_counter() - yielded > YIELD_S:
                    # Let the other loops of this process in: the P1 lane's, whose read or route
                    # reply may be waiting (docs/surge.md).
                    await asyncio.sleep(0)
                    yielded = time.perf_counter()
                try:
                    decision = engine.evaluate(message_in(env, new_conversation=not known))
                    hold = hold_of(blocks, env.channel, env.sender.id, decision.tags, now_ms)
                    args = route_arguments(
                        entry_id, env, decision, retry=attempts > 1, hold=hold, waits=self.settings.waits
                    )
                except Exception as exc:  # a rule-engine bug must not stop the other messages
                    log.exception("routing %s failed", entry_id.decode())
                    failed[entry_id] = f"{type(exc).__name__}: {exc}"
                    continue
                if not calls or len(calls[-1][0]) == SCRIPT_CHUNK:
                    calls.append(([], argv(self.keys.prefix, self._shared, at=self._clock() if self._clock else None)))
                calls[-1][0].append(entry_id)
                calls[-1][1].extend((entry_id, *args))
                if shadow is not None and random.random() < self.settings.rules.shadow_sample:
                    state, live = self.triage.state, self.triage.live
                    observed.append(observation(env.id, conversation_ref(env), state, decision, shadow, live))
        dead_calls = [
            argv(self.keys.prefix, entry_id, self.stream, reason, attempts, *self._fence_args)
            for entry_id, reason in dead
        ]
        return _Batch(dead_calls, failed, calls, {conversation_ref(env) for _, env in parsed}, observed)

    async def _commit(self, batch: _Batch) -> None:
        try:
            await run_many(self.client, self.scripts.dead, batch.dead)
        except ResponseError as exc:
            _raise_if_fenced(exc)
            raise
        if batch.failed:
            await self.client.hset(self.failures, mapping=batch.failed)
        results = await run_many(
            self.client, self.scripts.route, [args for _, args in batch.calls], raise_on_error=False
        )
        for (entry_ids, _), result in zip(batch.calls, results, strict=True):
            await self._check(entry_ids, result)
        if batch.observed:
            pipe = self.client.pipeline(transaction=False)
            for entry in batch.observed:
                pipe.xadd(self.home.model_observed, entry, maxlen=OBSERVED_MAXLEN, approximate=True)
            await pipe.execute()

    async def _check(self, entry_ids: list[bytes], result: Any) -> None:
        """Count a route call's routed messages; log and record what failed."""
        if isinstance(result, Exception):
            if isinstance(result, TRANSIENT_ERRORS):
                raise result
            _raise_if_fenced(result)
            log.error("route script failed for %d entries from %s: %s", len(entry_ids), entry_ids[0].decode(), result)
            await self.client.hset(
                self.failures, mapping={entry_id: f"route script: {result}" for entry_id in entry_ids}
            )
            return
        done, *failed = result
        self.routed += done
        for entry_id, reason in zip(failed[::2], failed[1::2], strict=True):  # dead-lettered by the script
            log.error("routing %s failed in Redis, dead-lettered: %s", entry_id.decode(), reason.decode())

    async def _known_conversations(self, envs: Sequence[Envelope]) -> list[bool]:
        """Whether each message joins an existing conversation (the rules' follow-up state)."""
        cks = [conversation_ref(e) for e in envs]
        states = await self.scripts.lookup(args=argv(self.keys.prefix, *cks))
        now_ms = time.time() * 1000
        known: list[bool] = []
        # The batch still in flight has not created its conversations yet: its keys are known.
        seen: set[str] = set(self._inflight_cks)
        for ck, (status, closed_ms) in zip(cks, states, strict=True):
            open_ = bool(status) and (status != b"closed" or now_ms - float(closed_ms or 0) <= self._reopen_ms)
            # A second message of the same conversation in one batch is a follow-up too.
            known.append(open_ or ck in seen)
            seen.add(ck)
        return known

    async def trim(self) -> None:
        """Drop inbox entries older than ``max_age_s`` — but never one not yet routed."""
        cutoff = (int(time.time()) - self.settings.inbox.max_age_s) * 1000
        pending = await self.client.xpending(self.keys.inbox, ROUTER_GROUP)
        groups = await self.client.xinfo_groups(self.keys.inbox)
        bounds = [
            _stream_ms(g["last-delivered-id"]) + 1 for g in groups if g["name"] in (ROUTER_GROUP.encode(), ROUTER_GROUP)
        ]
        if pending["pending"]:
            bounds.append(_stream_ms(pending["min"]))
        await self.client.xtrim(self.keys.inbox, minid=min([cutoff, *bounds]), approximate=False)

    # -- reclaiming ----------------------------------------------------------------------------
    async def forget_consumers(self) -> list[str]:
        """Remove the group's consumers that have nothing pending and have been idle longer than
        ``forget_consumer_s`` (workers that exited or died; their entries were reclaimed)."""
        limit_ms = self.settings.worker.forget_consumer_s * 1000
        gone: list[str] = []
        for consumer in await self.client.xinfo_consumers(self.source, ROUTER_GROUP):
            raw = consumer["name"]
            name = raw.decode() if isinstance(raw, bytes) else str(raw)
            if name == self.name or consumer["pending"] or consumer["idle"] <= limit_ms:
                continue
            # The script checks "nothing pending" again, atomically with the removal.
            if await self.scripts.forget(args=argv(self.keys.prefix, ROUTER_GROUP, name, self.stream)):
                gone.append(name)
        if gone:
            log.info("removed %d idle consumers from the group: %s", len(gone), ", ".join(gone))
        return gone

    async def reclaim(self) -> int:
        """Take over entries idle ``claim_idle_ms`` in any consumer (a dead worker, or a live one
        whose routing of them raised); dead-letter those tried too often. Returns how many
        entries were claimed or dead-lettered."""
        wcfg = self.settings.worker
        pending = await self.client.xpending_range(
            self.source, ROUTER_GROUP, min="-", max="+", count=wcfg.batch, idle=wcfg.claim_idle_ms
        )
        if self._recover:
            # Its own entries, idle while Redis was away, are being recovered: claiming them would
            # count one more delivery of each for nothing.
            me = self.name.encode()
            pending = [p for p in pending if p["consumer"] != me]
        return await self._claim(pending, wcfg.claim_idle_ms)

    async def take_over(self) -> int:
        """Take over the entries of consumers whose heartbeat key is gone (dead workers) once idle
        ``claim_dead_idle_ms``, rather than ``claim_idle_ms``; the holder of the shard's lease
        (``fence``) takes over every other consumer's at once, alive or not: only it may route the
        shard, and a previous holder's heartbeat may outlive its lease by seconds. Returns how
        many entries were claimed or dead-lettered."""
        wcfg = self.settings.worker
        holders = []
        for consumer in await self.client.xinfo_consumers(self.source, ROUTER_GROUP):
            raw = consumer["name"]
            name = raw.decode() if isinstance(raw, bytes) else str(raw)
            if consumer["pending"] and name != self.name:
                holders.append(name)
        if not holders:
            return 0
        alive: list[int] = [0] * len(holders)
        if not self.fence:
            pipe = self.client.pipeline(transaction=False)
            for name in holders:
                pipe.exists(self.home.health(self._beat_kind, name))
            alive = await pipe.execute()
        # Two takers at once need the idle time to tell each other apart; a lease holder is alone.
        idle = 0 if self.fence else wcfg.claim_dead_idle_ms
        taken = 0
        for name in (name for name, live in zip(holders, alive, strict=True) if not live):
            while True:
                pending = await self.client.xpending_range(
                    self.source,
                    ROUTER_GROUP,
                    min="-",
                    max="+",
                    count=wcfg.batch,
                    idle=idle,
                    consumername=name,
                )
                if pending:
                    log.info("taking over %d entries of %s (no heartbeat)", len(pending), name)
                taken += await self._claim(pending, idle)
                if len(pending) < wcfg.batch:
                    break
        return taken

    async def _claim(self, pending: Sequence[dict[str, Any]], min_idle_ms: int) -> int:
        """Dead-letter the ``pending`` entries delivered ``max_attempts`` times; claim and route
        the others. XCLAIM's own idle test (``min_idle_ms``) makes a second worker claiming the
        same entries at once get none of them: each is delivered once more, not twice."""
        if not pending:
            return 0
        wcfg = self.settings.worker
        exhausted = [p for p in pending if p["times_delivered"] >= wcfg.max_attempts]
        retry = [p["message_id"] for p in pending if p["times_delivered"] < wcfg.max_attempts]
        try:
            dead = await run_many(
                self.client,
                self.scripts.dead,
                [
                    argv(self.keys.prefix, p["message_id"], self.stream, "", p["times_delivered"], *self._fence_args)
                    for p in exhausted
                ],
            )
        except ResponseError as exc:
            _raise_if_fenced(exc)
            raise
        entries: list[Entry] = []
        if retry:
            claimed = await self.client.xclaim(self.source, ROUTER_GROUP, self.name, min_idle_ms, retry)
            # XCLAIM returns (id, None) for entries deleted from the stream meanwhile.
            entries = [(eid, fields or {}) for eid, fields in claimed]
            if entries:
                log.info("reclaimed %d pending entries", len(entries))
                await self.process(entries, attempts=max(p["times_delivered"] for p in pending) + 1)
        return int(sum(dead)) + len(entries)
